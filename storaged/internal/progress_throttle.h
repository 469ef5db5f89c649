// Progress callbacks at a bounded rate, shared by the capturer, the restorer
// and the copier (each has `on_progress` and `progress_interval` options).
#ifndef STORAGED_INTERNAL_PROGRESS_THROTTLE_H_
#define STORAGED_INTERNAL_PROGRESS_THROTTLE_H_

#include <functional>

#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace storaged {
namespace internal {

// Not thread-safe: one per operation, used from the thread that reports.
template <typename Progress>
class ProgressThrottle {
 public:
  // Nothing is reported if `on_progress` is empty. The first report is due
  // `interval` after `last` (absl::InfinitePast(): at once). `on_progress`
  // must outlive the throttle.
  ProgressThrottle(const std::function<void(const Progress&)>& on_progress,
                   absl::Duration interval, absl::Time last)
      : on_progress_(on_progress), interval_(interval), last_(last) {}

  // Calls on_progress with `progress` if `force`, or if `interval` has
  // passed since the last call.
  void Report(const Progress& progress, bool force) {
    if (!on_progress_) return;
    absl::Time now = absl::Now();
    if (!force && now - last_ < interval_) return;
    last_ = now;
    on_progress_(progress);
  }

 private:
  const std::function<void(const Progress&)>& on_progress_;
  const absl::Duration interval_;
  absl::Time last_;
};

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_PROGRESS_THROTTLE_H_
