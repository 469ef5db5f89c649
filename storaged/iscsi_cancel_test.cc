// A cancelled read against a target that stopped answering returns at once
// instead of waiting out the command timeout and the reconnect (a minute and
// a half with the defaults), and the volume works again once the target is
// back.
#include <signal.h>

#include <atomic>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "storaged/iscsi_volume.h"
#include "storaged/testing/tgtd_fixture.h"

namespace storaged {
namespace {

class IscsiCancelTest : public TgtdFixture {};

TEST_F(IscsiCancelTest, CancelledReadReturnsWhileTheTargetHangs) {
  constexpr uint64_t kSize = 64 << 20;
  tests::Lun lun = MakeLun(kSize, /*thin=*/false);
  auto volume = IscsiVolume::Open(lun.url);  // default timeouts: 60 s + 30 s
  ASSERT_TRUE(volume.ok()) << volume.status();
  const pid_t tgtd = san_->pid();
  ASSERT_GT(tgtd, 0);

  std::atomic<bool> cancel{false};
  absl::Time cancelled_at = absl::InfiniteFuture();
  std::thread canceller;
  absl::Cleanup resume = [&] {
    kill(tgtd, SIGCONT);
    if (canceller.joinable()) canceller.join();
  };
  ReadOptions options;
  options.cancelled = &cancel;
  uint64_t read = 0;
  absl::Status status = (*volume)->ReadExtents(
      {{0, kSize}}, options, [&](uint64_t, absl::string_view data) -> absl::Status {
        if (read == 0) {
          // The target hangs with commands in flight; the read blocks on
          // one of them, and then the cancel comes.
          if (kill(tgtd, SIGSTOP) != 0) return absl::InternalError("SIGSTOP tgtd failed");
          canceller = std::thread([&] {
            absl::SleepFor(absl::Seconds(1));
            cancelled_at = absl::Now();
            cancel = true;
          });
        }
        read += data.size();
        return absl::OkStatus();
      });
  const absl::Time returned = absl::Now();
  canceller.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(read, kSize);
  EXPECT_LT(returned - cancelled_at, absl::Seconds(5))
      << "the cancelled read waited for the hung target";

  // Back: the session logs in again and reads.
  kill(tgtd, SIGCONT);
  uint64_t again = 0;
  absl::Status second = (*volume)->ReadExtents(
      {{0, 1 << 20}}, ReadOptions(), [&](uint64_t, absl::string_view data) {
        again += data.size();
        return absl::OkStatus();
      });
  EXPECT_TRUE(second.ok()) << second;
  EXPECT_EQ(again, uint64_t{1} << 20);
}

}  // namespace
}  // namespace storaged
