// Background upkeep of a node's image store: garbage collection shortly after
// images are deleted (a burst of deletes makes one collection) and on an
// interval, and a scrub (VerifyImage of every image) on a longer interval, so
// damage is found before a restore needs the data; a damaged chunk a scrub
// finds is stored again by the next capture holding it (image_store_repair.cc).
// Without this, space of deleted templates came back only when someone called
// CollectGarbage by hand.
#ifndef STORAGED_STORE_MAINTENANCE_H_
#define STORAGED_STORE_MAINTENANCE_H_

#include <atomic>
#include <functional>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace storaged {

struct StoreMaintenanceOptions {
  // A collection this long after the first delete not yet collected;
  // InfiniteDuration(): deletes wait for the interval.
  absl::Duration gc_after_delete = absl::Minutes(1);
  // Collections and scrubs at these intervals; InfiniteDuration(): never.
  absl::Duration gc_interval = absl::Hours(6);
  absl::Duration scrub_interval = absl::Hours(24 * 7);
  // The first collection this soon after the start (at most gc_interval;
  // none with an infinite gc_interval):
  // it reclaims what a crash left, such as captures that never committed.
  absl::Duration first_gc_after = absl::Minutes(10);
  // When the last scrub finished (kept by the caller across restarts), so a
  // node restarted more often than scrub_interval still scrubs;
  // InfinitePast(): unknown, the first scrub an interval after the start.
  absl::Time last_scrub = absl::InfinitePast();
  // A task that failed (store unavailable, I/O error) runs again this soon,
  // doubling with each failure in a row up to its interval.
  absl::Duration retry_after = absl::Minutes(1);
};

// When each task is due. Pure: tests drive it with their own clock.
class MaintenanceSchedule {
 public:
  enum class Task { kNone, kCollectGarbage, kScrub };

  MaintenanceSchedule(const StoreMaintenanceOptions& options, absl::Time start);

  void ImageDeleted(absl::Time now);
  // The task due at `now`; kNone, and in `*wake` when to ask again, if none.
  Task Due(absl::Time now, absl::Time* wake) const;
  // `task`, started at `started`, ended at `now`. Deletes after `started`
  // still get their collection.
  void Ran(Task task, absl::Time started, absl::Time now, bool ok);

 private:
  const StoreMaintenanceOptions options_;
  absl::Time next_gc_;
  absl::Time next_scrub_;
  absl::Time first_uncollected_delete_ = absl::InfiniteFuture();
  absl::Time last_delete_ = absl::InfinitePast();
  int gc_failures_ = 0;  // in a row
  int scrub_failures_ = 0;
};

// Runs the schedule on its own thread. Thread-safe.
class StoreMaintenance {
 public:
  // `collect` and `scrub` run on the maintenance thread, one at a time;
  // `scrub` should return soon once its argument is set (stopping).
  StoreMaintenance(StoreMaintenanceOptions options, std::function<absl::Status()> collect,
                   std::function<absl::Status(const std::atomic<bool>& stop)> scrub);
  // Stops: waits for a running collection, and for a scrub to notice.
  ~StoreMaintenance();
  StoreMaintenance(const StoreMaintenance&) = delete;
  StoreMaintenance& operator=(const StoreMaintenance&) = delete;

  void Start();
  void ImageDeleted();

 private:
  void Run();

  const std::function<absl::Status()> collect_;
  const std::function<absl::Status(const std::atomic<bool>&)> scrub_;
  std::atomic<bool> stop_{false};
  absl::Mutex mu_;
  MaintenanceSchedule schedule_ ABSL_GUARDED_BY(mu_);
  bool changed_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace storaged

#endif  // STORAGED_STORE_MAINTENANCE_H_
