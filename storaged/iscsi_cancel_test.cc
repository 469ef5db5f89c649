// A cancelled read, restore or capture against a target that stopped
// answering returns at once instead of waiting out the command timeout and
// the reconnect, the volume's session is released while the target still
// hangs, and the target works again once it is back.
#include <signal.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <thread>

#include "absl/cleanup/cleanup.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "storaged/image_capturer.h"
#include "storaged/image_restorer.h"
#include "storaged/image_store.h"
#include "storaged/iscsi_volume.h"
#include "storaged/testing/temp_store.h"
#include "storaged/testing/tgtd_fixture.h"

namespace storaged {
namespace {

class IscsiCancelTest : public TgtdFixture {};

// Timeouts far longer than any bound below, so that a call or release that
// waited for them (instead of honouring the cancel) cannot pass.
IscsiVolumeOptions HangingTimeouts() {
  IscsiVolumeOptions options;
  options.command_timeout = absl::Minutes(10);
  options.connect_timeout = absl::Minutes(10);
  options.reconnect_timeout = absl::Minutes(10);
  return options;
}

// What a test measures against the hung target (SIGSTOPped tgtd). Hang()
// stops tgtd and cancels one second later; if the call under test has not
// returned 40 s after that (it waits for the target), a watchdog resumes
// tgtd so that the test fails on its timing instead of hanging until the
// test timeout. The destructor resumes tgtd in any case.
class HungTarget {
 public:
  explicit HungTarget(pid_t tgtd) : tgtd_(tgtd) {}
  HungTarget(const HungTarget&) = delete;
  HungTarget& operator=(const HungTarget&) = delete;
  ~HungTarget() {
    Resume();
    if (canceller_.joinable()) canceller_.join();
  }

  const std::atomic<bool>* flag() const { return &cancel_; }

  // Called from inside the I/O under test, once.
  absl::Status Hang() {
    if (hung_.exchange(true)) return absl::OkStatus();
    if (kill(tgtd_, SIGSTOP) != 0) return absl::InternalError("SIGSTOP tgtd failed");
    canceller_ = std::thread([this] {
      absl::SleepFor(absl::Seconds(1));
      cancelled_at_ = absl::Now();
      cancel_ = true;
      absl::Time watchdog = absl::Now() + absl::Seconds(40);
      while (!done_ && absl::Now() < watchdog) absl::SleepFor(absl::Milliseconds(50));
      if (!done_) kill(tgtd_, SIGCONT);
    });
    return absl::OkStatus();
  }

  // Marks the end of what is measured; the time since the cancel.
  absl::Duration Done() {
    absl::Time now = absl::Now();
    done_ = true;
    if (canceller_.joinable()) canceller_.join();
    return now - cancelled_at_;
  }

  bool hung() const { return hung_; }
  void Resume() { kill(tgtd_, SIGCONT); }

 private:
  const pid_t tgtd_;
  std::atomic<bool> cancel_{false};
  std::atomic<bool> hung_{false};
  std::atomic<bool> done_{false};
  absl::Time cancelled_at_ = absl::InfiniteFuture();
  std::thread canceller_;
};

// Back from the hang: a new session reads the LUN.
void ExpectTargetWorks(const tests::Lun& lun) {
  auto volume = IscsiVolume::Open(lun.url);
  ASSERT_TRUE(volume.ok()) << volume.status();
  uint64_t read = 0;
  absl::Status status = (*volume)->ReadExtents(
      {{0, 1 << 20}}, ReadOptions(), [&](uint64_t, absl::string_view data) {
        read += data.size();
        return absl::OkStatus();
      });
  EXPECT_TRUE(status.ok()) << status;
  EXPECT_EQ(read, uint64_t{1} << 20);
}

TEST_F(IscsiCancelTest, CancelledRestoreReturnsAndReleasesTheSessionWhileTheTargetHangs) {
  constexpr uint64_t kSize = 64 << 20;
  tests::Lun lun = MakeLun(kSize, /*thin=*/false);
  std::unique_ptr<ImageStore> store = testing::OpenTempStore("restore-store");
  ASSERT_NE(store, nullptr);
  {
    // Incompressible, so the restore has 64 MiB to send.
    auto writer = store->BeginImage("img", kSize, 512);
    ASSERT_TRUE(writer.ok()) << writer.status();
    std::mt19937_64 rng(3);
    std::string chunk(store->options().chunk_size, '\0');
    for (uint64_t i = 0; i < (*writer)->chunk_count(); ++i) {
      for (size_t j = 0; j + 8 <= chunk.size(); j += 8) {
        uint64_t word = rng();
        std::memcpy(&chunk[j], &word, 8);
      }
      ASSERT_TRUE((*writer)->AddChunk(i, chunk).ok());
    }
    ASSERT_TRUE((*writer)->Commit().ok());
  }
  auto image = store->OpenImage("img");
  ASSERT_TRUE(image.ok()) << image.status();
  auto volume = IscsiVolume::Open(lun.url, HangingTimeouts());
  ASSERT_TRUE(volume.ok()) << volume.status();

  HungTarget target(san_->pid());
  RestoreOptions options;
  options.cancelled = target.flag();
  options.progress_interval = absl::ZeroDuration();
  // After the first batch is queued the target hangs; the restore blocks on
  // the writer's full queue, then the cancel comes.
  absl::Status hang;
  options.on_progress = [&](const RestoreProgress&) {
    if (!target.hung()) hang = target.Hang();
  };
  absl::StatusOr<RestoreProgress> result = RestoreImage(**image, **volume, options);
  const absl::Duration returned_after = target.Done();
  ASSERT_TRUE(hang.ok()) << hang;
  ASSERT_TRUE(target.hung()) << "the restore finished before the target hung";
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_LT(returned_after, absl::Seconds(15))
      << "the cancelled restore waited for the hung target";

  // The session goes too, without waiting for the target.
  absl::Time release = absl::Now();
  volume->reset();
  EXPECT_LT(absl::Now() - release, absl::Seconds(15))
      << "releasing the session waited for the hung target";

  target.Resume();
  ExpectTargetWorks(lun);
}

TEST_F(IscsiCancelTest, CancelledCaptureReleasesTheSessionWhileTheTargetHangs) {
  constexpr uint64_t kSize = 64 << 20;
  tests::Lun lun = MakeLun(kSize, /*thin=*/false);
  std::unique_ptr<ImageStore> store = testing::OpenTempStore("capture-store");
  ASSERT_NE(store, nullptr);
  auto volume = IscsiVolume::Open(lun.url, HangingTimeouts());
  ASSERT_TRUE(volume.ok()) << volume.status();

  HungTarget target(san_->pid());
  CaptureOptions options;
  options.read.cancelled = target.flag();
  options.progress_interval = absl::ZeroDuration();
  absl::Status hang;
  options.on_progress = [&](const CaptureProgress&) {
    if (!target.hung()) hang = target.Hang();
  };
  absl::StatusOr<ManifestSummary> result = CaptureVolume(**volume, *store, "cap", 0, options);
  // The read gives up on its commands at the cancel; the I/O thread must
  // not then spend the reconnect timeout logging in to the hung target.
  volume->reset();
  const absl::Duration released_after = target.Done();
  ASSERT_TRUE(hang.ok()) << hang;
  ASSERT_TRUE(target.hung()) << "the capture finished before the target hung";
  EXPECT_EQ(result.status().code(), absl::StatusCode::kCancelled) << result.status();
  EXPECT_LT(released_after, absl::Seconds(15))
      << "the cancelled capture or the session's release waited for the hung target";
  EXPECT_EQ(store->OpenImage("cap").status().code(), absl::StatusCode::kNotFound);

  target.Resume();
  ExpectTargetWorks(lun);
}

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
  EXPECT_LT(returned - cancelled_at, absl::Seconds(20))
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
