#include "controlplane/failed_auth_limiter.h"

#include "controlplane/authenticator.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

class FailedAuthLimiterTest : public ::testing::Test {
 protected:
  FailedAuthLimiter::Options Options(double burst, double per_second, size_t max_addresses) {
    FailedAuthLimiter::Options options;
    options.burst = burst;
    options.per_second = per_second;
    options.max_addresses = max_addresses;
    return options;
  }
  absl::Time now_ = absl::FromUnixSeconds(1000);
  std::function<absl::Time()> clock_ = [this] { return now_; };
};

TEST_F(FailedAuthLimiterTest, AddressDropsThePort) {
  EXPECT_EQ(FailedAuthLimiter::AddressOf("ipv4:10.1.2.3:51234"), "ipv4:10.1.2.3");
  EXPECT_EQ(FailedAuthLimiter::AddressOf("ipv6:[::1]:443"), "ipv6:[::1]");
  EXPECT_EQ(FailedAuthLimiter::AddressOf("unix:/run/cp.sock"), "unix:/run/cp.sock");
  EXPECT_EQ(FailedAuthLimiter::AddressOf("ipv4:"), "ipv4:");
}

TEST_F(FailedAuthLimiterTest, BurstThenRefusedUntilRefilled) {
  FailedAuthLimiter limiter(Options(3, 0.5, 100), clock_);
  const std::string a = "ipv4:10.0.0.1";
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.Check(a).ok()) << i;
    limiter.RecordFailure(a);
  }
  absl::Status refused = limiter.Check(a);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(refused.message().find("too many failed authentications from ipv4:10.0.0.1"),
            absl::string_view::npos)
      << refused;
  EXPECT_NE(refused.message().find("retry in 2 s"), absl::string_view::npos) << refused;
  // Another address is not affected.
  EXPECT_TRUE(limiter.Check("ipv4:10.0.0.2").ok());
  // 0.5 per second: one more try after 2 s, not after 1 s.
  now_ += absl::Seconds(1);
  EXPECT_FALSE(limiter.Check(a).ok());
  now_ += absl::Seconds(1);
  ASSERT_TRUE(limiter.Check(a).ok());
  limiter.RecordFailure(a);
  EXPECT_FALSE(limiter.Check(a).ok());
  // A long quiet spell earns back the burst, no more.
  now_ += absl::Hours(1);
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(limiter.Check(a).ok()) << i;
    limiter.RecordFailure(a);
  }
  EXPECT_FALSE(limiter.Check(a).ok());
}

TEST_F(FailedAuthLimiterTest, TracksBoundedAddressesAndKeepsThrottledOnes) {
  FailedAuthLimiter limiter(Options(1, 0.001, 4), clock_);
  limiter.RecordFailure("ipv4:10.0.0.1");  // throttled for a long time
  for (int i = 2; i <= 20; ++i) {
    limiter.RecordFailure("ipv4:10.0.0." + std::to_string(i));
  }
  // Every address is throttled (burst 1), so when the table overflowed it
  // started over; memory stays bounded either way.
  int throttled = 0;
  for (int i = 1; i <= 20; ++i) {
    throttled += !limiter.Check("ipv4:10.0.0." + std::to_string(i)).ok();
  }
  EXPECT_GE(throttled, 1);
  EXPECT_LE(throttled, 4);

  // Idle addresses are forgotten first: a throttled one survives them.
  FailedAuthLimiter idle(Options(2, 1, 3), clock_);
  idle.RecordFailure("ipv4:10.9.9.9");
  idle.RecordFailure("ipv4:10.9.9.9");  // throttled
  idle.RecordFailure("ipv4:10.0.0.1");
  now_ += absl::Seconds(1.5);  // 10.0.0.1 is full again; 10.9.9.9 has 1.5
  idle.RecordFailure("ipv4:10.9.9.9");
  idle.RecordFailure("ipv4:10.0.0.2");
  idle.RecordFailure("ipv4:10.0.0.3");  // table full: 10.0.0.1 (full) goes
  EXPECT_FALSE(idle.Check("ipv4:10.9.9.9").ok());
}

TEST_F(FailedAuthLimiterTest, ThrottledUntilTheWholeBurstIsEarnedBack) {
  FailedAuthLimiter limiter(Options(3, 1, 100), clock_);
  const std::string a = "ipv4:10.0.0.1";
  // The burst's failures are not marked, not even the one that empties it.
  for (int i = 0; i < 3; ++i) EXPECT_FALSE(limiter.RecordFailure(a)) << i;
  absl::Status refused = limiter.Check(a);
  EXPECT_EQ(refused.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_EQ(ThrottledAddress(refused), a);
  // A try earned back while throttled fails marked: the flood goes on.
  now_ += absl::Seconds(1);
  ASSERT_TRUE(limiter.Check(a).ok());
  EXPECT_TRUE(limiter.RecordFailure(a));
  // 2.9 s quiet: 2.9 tokens, not the whole burst; still throttled.
  now_ += absl::Seconds(2.9);
  ASSERT_TRUE(limiter.Check(a).ok());
  EXPECT_TRUE(limiter.RecordFailure(a));
  // 3 s quiet from empty-ish: full again, so the next failures are a new
  // burst, audited one by one.
  now_ += absl::Seconds(3);
  ASSERT_TRUE(limiter.Check(a).ok());
  EXPECT_FALSE(limiter.RecordFailure(a));
  EXPECT_FALSE(limiter.RecordFailure(a));
  EXPECT_FALSE(limiter.RecordFailure(a));
  EXPECT_TRUE(ThrottledAddress(limiter.Check(a)).has_value());
  // Other addresses and OK statuses carry no mark.
  EXPECT_FALSE(ThrottledAddress(limiter.Check("ipv4:10.0.0.2")).has_value());
  EXPECT_FALSE(ThrottledAddress(absl::UnauthenticatedError("x")).has_value());
}

}  // namespace
}  // namespace controlplane
