#include "storaged/store_maintenance.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "common/log.h"

namespace storaged {

MaintenanceSchedule::MaintenanceSchedule(const StoreMaintenanceOptions& options,
                                         absl::Time start)
    : options_(options),
      next_gc_(options.gc_interval == absl::InfiniteDuration()
                   ? absl::InfiniteFuture()
                   : start + std::min(options.gc_interval, options.first_gc_after)),
      next_scrub_((options.last_scrub == absl::InfinitePast() ? start : options.last_scrub) +
                  options.scrub_interval) {}

void MaintenanceSchedule::ImageDeleted(absl::Time now) {
  first_uncollected_delete_ = std::min(first_uncollected_delete_, now);
  last_delete_ = now;
}

MaintenanceSchedule::Task MaintenanceSchedule::Due(absl::Time now, absl::Time* wake) const {
  const absl::Time gc = std::min(next_gc_, first_uncollected_delete_ + options_.gc_after_delete);
  if (now >= gc) return Task::kCollectGarbage;
  if (now >= next_scrub_) return Task::kScrub;
  *wake = std::min(gc, next_scrub_);
  return Task::kNone;
}

void MaintenanceSchedule::Ran(Task task, absl::Time started, absl::Time now, bool ok) {
  // A failure that persists (an unreadable manifest, a bad sector) backs
  // off: retry_after, twice that, ... up to the interval.
  auto again = [&](absl::Duration interval, int* failures) {
    *failures = ok ? 0 : std::min(*failures + 1, 20);
    return ok ? interval : std::min(interval, options_.retry_after * (1 << (*failures - 1)));
  };
  if (task == Task::kCollectGarbage) {
    next_gc_ = now + again(options_.gc_interval, &gc_failures_);
    // A failed collection leaves the deletes to its retry; one may have
    // missed the deletes after it started.
    first_uncollected_delete_ =
        ok && last_delete_ > started ? last_delete_ : absl::InfiniteFuture();
  } else if (task == Task::kScrub) {
    next_scrub_ = now + again(options_.scrub_interval, &scrub_failures_);
  }
}

StoreMaintenance::StoreMaintenance(
    StoreMaintenanceOptions options, std::function<absl::Status()> collect,
    std::function<absl::Status(const std::atomic<bool>& stop)> scrub)
    : collect_(std::move(collect)),
      scrub_(std::move(scrub)),
      schedule_(options, absl::Now()) {}

StoreMaintenance::~StoreMaintenance() {
  stop_ = true;
  {
    absl::MutexLock lock(&mu_);
    changed_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void StoreMaintenance::Start() {
  thread_ = std::thread([this] { Run(); });
}

void StoreMaintenance::ImageDeleted() {
  absl::MutexLock lock(&mu_);
  schedule_.ImageDeleted(absl::Now());
  changed_ = true;
}

void StoreMaintenance::Run() {
  using Task = MaintenanceSchedule::Task;
  while (!stop_) {
    Task task;
    {
      absl::MutexLock lock(&mu_);
      absl::Time wake;
      task = schedule_.Due(absl::Now(), &wake);
      if (task == Task::kNone) {
        mu_.AwaitWithDeadline(absl::Condition(&changed_), wake);
        changed_ = false;
        continue;
      }
    }
    const absl::Time started = absl::Now();
    absl::Status status = task == Task::kCollectGarbage ? collect_() : scrub_(stop_);
    if (!status.ok()) {
      common::LogWarning("store maintenance: %s failed: %s",
                         task == Task::kCollectGarbage ? "garbage collection" : "scrub",
                         status.ToString());
    }
    absl::MutexLock lock(&mu_);
    schedule_.Ran(task, started, absl::Now(), status.ok());
  }
}

}  // namespace storaged
