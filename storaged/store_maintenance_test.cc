#include "storaged/store_maintenance.h"

#include <atomic>

#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace storaged {
namespace {

using Task = MaintenanceSchedule::Task;

const absl::Time kStart = absl::FromUnixSeconds(1'000'000);

StoreMaintenanceOptions Options() {
  StoreMaintenanceOptions o;
  o.gc_after_delete = absl::Minutes(1);
  o.first_gc_after = absl::Hours(6);
  o.gc_interval = absl::Hours(6);
  o.scrub_interval = absl::Hours(24);
  o.retry_after = absl::Minutes(5);
  return o;
}

TEST(MaintenanceScheduleTest, NothingIsDueBeforeTheFirstInterval) {
  MaintenanceSchedule schedule(Options(), kStart);
  absl::Time wake;
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(1), &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Hours(6));
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(6), &wake), Task::kCollectGarbage);
  schedule.Ran(Task::kCollectGarbage, kStart + absl::Hours(6), kStart + absl::Hours(6), true);
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(11), &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Hours(12));
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(12), &wake), Task::kCollectGarbage);
  schedule.Ran(Task::kCollectGarbage, kStart + absl::Hours(12), kStart + absl::Hours(12), true);
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(17), &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Hours(18));
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(24), &wake), Task::kCollectGarbage);
  schedule.Ran(Task::kCollectGarbage, kStart + absl::Hours(24), kStart + absl::Hours(24), true);
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(24), &wake), Task::kScrub);
  schedule.Ran(Task::kScrub, kStart + absl::Hours(24), kStart + absl::Hours(25), true);
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(26), &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Hours(30));
}

TEST(MaintenanceScheduleTest, FirstCollectionSoonAfterStartAndScrubsFollowTheLastOne) {
  StoreMaintenanceOptions o = Options();
  o.first_gc_after = absl::Minutes(10);
  o.last_scrub = kStart - absl::Hours(20);  // before a restart
  MaintenanceSchedule schedule(o, kStart);
  absl::Time wake;
  EXPECT_EQ(schedule.Due(kStart, &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Minutes(10));
  ASSERT_EQ(schedule.Due(wake, &wake), Task::kCollectGarbage);
  schedule.Ran(Task::kCollectGarbage, kStart + absl::Minutes(10), kStart + absl::Minutes(10),
               true);
  EXPECT_EQ(schedule.Due(kStart + absl::Minutes(10), &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Hours(4));  // a day after the last scrub
  // Overdue (the node was down for longer than the interval): right away.
  o.last_scrub = kStart - absl::Hours(48);
  MaintenanceSchedule overdue(o, kStart);
  EXPECT_EQ(overdue.Due(kStart, &wake), Task::kScrub);
}

TEST(MaintenanceScheduleTest, DeletesShareOneCollectionSoonAfterTheFirst) {
  MaintenanceSchedule schedule(Options(), kStart);
  absl::Time wake;
  schedule.ImageDeleted(kStart + absl::Seconds(10));
  schedule.ImageDeleted(kStart + absl::Seconds(50));  // does not postpone it
  EXPECT_EQ(schedule.Due(kStart + absl::Seconds(69), &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Seconds(70));
  EXPECT_EQ(schedule.Due(kStart + absl::Seconds(70), &wake), Task::kCollectGarbage);
  schedule.Ran(Task::kCollectGarbage, kStart + absl::Seconds(70), kStart + absl::Seconds(75),
               true);
  // Both deletes were before the collection started: nothing more until
  // the interval.
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(1), &wake), Task::kNone);
  EXPECT_EQ(wake, kStart + absl::Seconds(75) + absl::Hours(6));
}

TEST(MaintenanceScheduleTest, ADeleteDuringACollectionGetsItsOwn) {
  MaintenanceSchedule schedule(Options(), kStart);
  absl::Time wake;
  schedule.ImageDeleted(kStart);
  const absl::Time started = kStart + absl::Minutes(1);
  ASSERT_EQ(schedule.Due(started, &wake), Task::kCollectGarbage);
  schedule.ImageDeleted(started + absl::Seconds(2));  // the collection may miss it
  schedule.Ran(Task::kCollectGarbage, started, started + absl::Seconds(5), true);
  EXPECT_EQ(schedule.Due(started + absl::Seconds(61), &wake), Task::kNone);
  EXPECT_EQ(wake, started + absl::Seconds(62));
  EXPECT_EQ(schedule.Due(wake, &wake), Task::kCollectGarbage);
}

TEST(MaintenanceScheduleTest, FailedTasksRetrySoonerThanTheirInterval) {
  MaintenanceSchedule schedule(Options(), kStart);
  absl::Time wake;
  const absl::Time scrub = kStart + absl::Hours(24);
  schedule.Ran(Task::kCollectGarbage, kStart, kStart, true);  // keep GC out of the way
  schedule.ImageDeleted(scrub);
  ASSERT_EQ(schedule.Due(scrub + absl::Minutes(1), &wake), Task::kCollectGarbage);
  schedule.Ran(Task::kCollectGarbage, scrub + absl::Minutes(1), scrub + absl::Minutes(1), false);
  // The failed collection's retry serves the delete; the scrub is due now.
  ASSERT_EQ(schedule.Due(scrub + absl::Minutes(1), &wake), Task::kScrub);
  schedule.Ran(Task::kScrub, scrub + absl::Minutes(1), scrub + absl::Minutes(2), false);
  EXPECT_EQ(schedule.Due(scrub + absl::Minutes(3), &wake), Task::kNone);
  EXPECT_EQ(wake, scrub + absl::Minutes(6));  // the collection's retry
  EXPECT_EQ(schedule.Due(scrub + absl::Minutes(6), &wake), Task::kCollectGarbage);
  schedule.Ran(Task::kCollectGarbage, scrub + absl::Minutes(6), scrub + absl::Minutes(6), true);
  EXPECT_EQ(schedule.Due(scrub + absl::Minutes(6), &wake), Task::kNone);
  EXPECT_EQ(wake, scrub + absl::Minutes(7));  // the scrub's retry
  // Failing again and again backs off (5, 10, 20 min ...), up to the interval.
  absl::Time t = scrub + absl::Minutes(7);
  for (absl::Duration backoff : {absl::Minutes(10), absl::Minutes(20), absl::Minutes(40)}) {
    ASSERT_EQ(schedule.Due(t, &wake), Task::kScrub);
    schedule.Ran(Task::kScrub, t, t, false);
    EXPECT_EQ(schedule.Due(t, &wake), Task::kNone);
    EXPECT_EQ(wake, t + backoff);
    t = wake;
  }
  // Collections (succeeding) interleave; the scrub's gaps stop at a day.
  absl::Time last_scrub = t;
  absl::Duration gap;
  for (int scrubs = 0; scrubs < 12;) {
    const Task task = schedule.Due(t, &wake);
    if (task == Task::kNone) {
      t = wake;
      continue;
    }
    if (task == Task::kScrub) {
      gap = t - last_scrub;
      last_scrub = t;
      ++scrubs;
    }
    schedule.Ran(task, t, t, task == Task::kCollectGarbage);
  }
  EXPECT_EQ(gap, absl::Hours(24));
}

TEST(MaintenanceScheduleTest, NeverMeansNever) {
  StoreMaintenanceOptions o = Options();
  o.gc_after_delete = absl::InfiniteDuration();
  o.gc_interval = absl::InfiniteDuration();
  o.scrub_interval = absl::InfiniteDuration();
  MaintenanceSchedule schedule(o, kStart);
  schedule.ImageDeleted(kStart);
  absl::Time wake;
  EXPECT_EQ(schedule.Due(kStart + absl::Hours(24 * 365), &wake), Task::kNone);
  EXPECT_EQ(wake, absl::InfiniteFuture());
}

// Polls `done` for up to 30 s (no timing assertion: shared machines).
bool Eventually(const std::function<bool()>& done) {
  for (absl::Time end = absl::Now() + absl::Seconds(30); absl::Now() < end;) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(5));
  }
  return done();
}

TEST(StoreMaintenanceTest, ADeleteStartsACollectionAndStopEndsAScrub) {
  StoreMaintenanceOptions o;
  o.gc_after_delete = absl::Milliseconds(1);
  o.gc_interval = absl::InfiniteDuration();
  o.scrub_interval = absl::InfiniteDuration();
  std::atomic<int> collections{0};
  StoreMaintenance maintenance(
      o, [&] { ++collections; return absl::OkStatus(); },
      [](const std::atomic<bool>&) { return absl::OkStatus(); });
  maintenance.Start();
  absl::SleepFor(absl::Milliseconds(20));
  EXPECT_EQ(collections, 0);  // nothing deleted yet
  maintenance.ImageDeleted();
  EXPECT_TRUE(Eventually([&] { return collections == 1; }));
  maintenance.ImageDeleted();
  EXPECT_TRUE(Eventually([&] { return collections == 2; }));
}

TEST(StoreMaintenanceTest, DestructionStopsAScrubInProgress) {
  StoreMaintenanceOptions o;
  o.gc_interval = absl::InfiniteDuration();
  o.scrub_interval = absl::Milliseconds(1);
  absl::Notification scrubbing;
  std::atomic<bool> saw_stop{false};
  {
    StoreMaintenance maintenance(
        o, [] { return absl::OkStatus(); },
        [&](const std::atomic<bool>& stop) {
          if (!scrubbing.HasBeenNotified()) scrubbing.Notify();
          while (!stop) absl::SleepFor(absl::Milliseconds(1));
          saw_stop = true;
          return absl::CancelledError("stopped");
        });
    maintenance.Start();
    ASSERT_TRUE(scrubbing.WaitForNotificationWithTimeout(absl::Seconds(30)));
  }  // would hang here if the scrub were not told to stop
  EXPECT_TRUE(saw_stop);
}

}  // namespace
}  // namespace storaged
