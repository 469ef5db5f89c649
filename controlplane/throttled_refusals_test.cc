#include "controlplane/throttled_refusals.h"

#include "gtest/gtest.h"

namespace controlplane {
namespace {

using imagetemplates::v1::RESOURCE_TYPE_IMAGE_TEMPLATE;
using imagetemplates::v1::RESOURCE_TYPE_SERVER;
using imagetemplates::v1::ResourceReference;

ResourceReference Target(imagetemplates::v1::ResourceType type, const std::string& id) {
  ResourceReference target;
  target.set_type(type);
  target.set_id(id);
  return target;
}

class ThrottledRefusalsTest : public ::testing::Test {
 protected:
  ThrottledRefusals::Options Options(absl::Duration interval, size_t max_windows) {
    ThrottledRefusals::Options options;
    options.interval = interval;
    options.max_windows = max_windows;
    return options;
  }
  const absl::Time t0_ = absl::FromUnixSeconds(1800000000);
  const absl::Status throttled_ = absl::UnauthenticatedError("too many failed authentications");
  const std::string a_ = "ipv4:192.0.2.7";
  const std::string b_ = "ipv4:192.0.2.8";
  const std::string share_ = "/imagetemplates.v1.ImageTemplateService/ShareImageTemplate";
  const std::string create_ = "/imagetemplates.v1.InventoryService/CreateDatacenter";
};

TEST_F(ThrottledRefusalsTest, OneWindowPerAddressAndMethodHandedOutAfterTheInterval) {
  ThrottledRefusals refusals(Options(absl::Seconds(10), 100));
  const ResourceReference t1 = Target(RESOURCE_TYPE_IMAGE_TEMPLATE, "t1");
  for (int i = 0; i < 5; ++i) {
    EXPECT_TRUE(refusals.Add(a_, share_, t1, throttled_, t0_ + absl::Seconds(i)).empty()) << i;
  }
  EXPECT_TRUE(refusals.Add(a_, create_, ResourceReference(), throttled_, t0_).empty());
  EXPECT_TRUE(refusals.Add(b_, share_, t1, throttled_, t0_ + absl::Seconds(3)).empty());
  // Not yet due at 9.999 s.
  EXPECT_TRUE(refusals.TakeDue(t0_ + absl::Seconds(10) - absl::Milliseconds(1)).empty());

  // The call that makes the window span the interval is counted in it.
  std::vector<ThrottledRefusals::Summary> due =
      refusals.Add(a_, share_, t1, absl::UnauthenticatedError("unknown API key"),
                   t0_ + absl::Seconds(10));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].address, a_);
  EXPECT_EQ(due[0].method, share_);
  EXPECT_EQ(due[0].count, 6);
  EXPECT_EQ(due[0].first, t0_);
  EXPECT_EQ(due[0].last, t0_ + absl::Seconds(10));
  EXPECT_EQ(due[0].target.type(), RESOURCE_TYPE_IMAGE_TEMPLATE);
  EXPECT_EQ(due[0].target.id(), "t1");
  EXPECT_EQ(due[0].last_outcome.message(), "unknown API key");
  // A new window starts with the next call.
  EXPECT_TRUE(refusals.Add(a_, share_, t1, throttled_, t0_ + absl::Seconds(11)).empty());

  // The quiet windows come out when due, oldest first; b's is not due yet.
  due = refusals.TakeDue(t0_ + absl::Seconds(12));
  ASSERT_EQ(due.size(), 1u);
  EXPECT_EQ(due[0].method, create_);
  EXPECT_EQ(due[0].count, 1);
  due = refusals.TakeAll();
  ASSERT_EQ(due.size(), 2u);
  EXPECT_EQ(due[0].address, b_);
  EXPECT_EQ(due[0].count, 1);
  EXPECT_EQ(due[1].address, a_);
  EXPECT_EQ(due[1].first, t0_ + absl::Seconds(11));
  EXPECT_TRUE(refusals.TakeAll().empty());
}

TEST_F(ThrottledRefusalsTest, MixedTargetsKeepOnlyWhatTheyShare) {
  ThrottledRefusals refusals(Options(absl::Seconds(10), 100));
  refusals.Add(a_, share_, Target(RESOURCE_TYPE_IMAGE_TEMPLATE, "t1"), throttled_, t0_);
  refusals.Add(a_, share_, Target(RESOURCE_TYPE_IMAGE_TEMPLATE, "t2"), throttled_, t0_);
  refusals.Add(b_, share_, Target(RESOURCE_TYPE_IMAGE_TEMPLATE, "t1"), throttled_, t0_);
  refusals.Add(b_, share_, Target(RESOURCE_TYPE_SERVER, "t1"), throttled_, t0_);
  std::vector<ThrottledRefusals::Summary> all = refusals.TakeAll();
  ASSERT_EQ(all.size(), 2u);
  for (const auto& summary : all) {
    EXPECT_EQ(summary.count, 2);
    if (summary.address == a_) {
      EXPECT_EQ(summary.target.type(), RESOURCE_TYPE_IMAGE_TEMPLATE);
      EXPECT_EQ(summary.target.id(), "");
    } else {
      EXPECT_EQ(summary.target.type(), imagetemplates::v1::RESOURCE_TYPE_UNSPECIFIED);
      EXPECT_EQ(summary.target.id(), "t1");
    }
  }
}

TEST_F(ThrottledRefusalsTest, TooManyWindowsHandsThemAllOut) {
  ThrottledRefusals refusals(Options(absl::Hours(1), 3));
  int64_t handed_out = 0;
  for (int i = 0; i < 10; ++i) {
    for (const auto& summary : refusals.Add("ipv4:10.0.0." + std::to_string(i), share_,
                                            ResourceReference(), throttled_, t0_)) {
      handed_out += summary.count;
    }
  }
  // 4 windows overflow the table: out go 1-4 and 5-8; 9 and 10 stay.
  EXPECT_EQ(handed_out, 8);
  EXPECT_EQ(refusals.TakeAll().size(), 2u);
}

TEST_F(ThrottledRefusalsTest, MessageSaysCountAddressWindowAndLastOutcome) {
  ThrottledRefusals::Summary summary;
  summary.address = a_;
  summary.count = 1234;
  summary.first = t0_ + absl::Microseconds(5);
  summary.last = t0_ + absl::Seconds(9);
  summary.last_outcome = throttled_;
  EXPECT_EQ(ThrottledRefusals::Message(summary),
            "summary of 1234 refused calls from ipv4:192.0.2.7 between "
            "2027-01-15T08:00:00.000005Z and 2027-01-15T08:00:09.000000Z, counted instead of "
            "audited one by one while the address was throttled for failed authentications; "
            "last: too many failed authentications");
}

}  // namespace
}  // namespace controlplane
