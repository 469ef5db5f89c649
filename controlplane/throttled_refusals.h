// Counts the refusals of addresses throttled for failed authentications, so
// that a flood of them costs the audit log one summary event per (address,
// method) and interval instead of one row per call.
#ifndef CONTROLPLANE_THROTTLED_REFUSALS_H_
#define CONTROLPLANE_THROTTLED_REFUSALS_H_

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "imagetemplates/v1/common.pb.h"

namespace controlplane {

// Thread-safe. Holds counts only; the owner writes the summaries it is
// handed, so nothing here does I/O or reads a clock.
class ThrottledRefusals {
 public:
  struct Options {
    // A (address, method) window is handed out once it spans this long.
    absl::Duration interval = absl::Seconds(10);
    // Windows open at once; past it every window is handed out.
    size_t max_windows = 10000;
  };

  // The refused calls of one address to one method in [first, last].
  struct Summary {
    std::string address;
    std::string method;
    // The calls' target when they all named the same one; otherwise only
    // the type when that is shared, else empty.
    imagetemplates::v1::ResourceReference target;
    int64_t count = 0;
    absl::Time first;
    absl::Time last;
    // What the last of them was answered.
    absl::Status last_outcome;
  };

  explicit ThrottledRefusals(Options options) : options_(options) {}
  ThrottledRefusals(const ThrottledRefusals&) = delete;
  ThrottledRefusals& operator=(const ThrottledRefusals&) = delete;

  // Counts one call refused at `now`. Returns the summaries to write now:
  // this window's once it spans the interval, or every window when there are
  // more than max_windows.
  std::vector<Summary> Add(absl::string_view address, absl::string_view method,
                           const imagetemplates::v1::ResourceReference& target,
                           const absl::Status& outcome, absl::Time now);
  // Removes and returns the windows that span the interval at `now` (the
  // flood stopped or slowed), oldest first.
  std::vector<Summary> TakeDue(absl::Time now);
  // Removes and returns every window (at shutdown), oldest first.
  std::vector<Summary> TakeAll();

  // The audit outcome message of a summary: "summary of N refused calls from
  // ADDRESS between FIRST and LAST (RFC 3339, UTC) ...; last: MESSAGE".
  static std::string Message(const Summary& summary);

 private:
  using Key = std::pair<std::string, std::string>;  // address, method
  std::vector<Summary> TakeLocked(bool all, absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const Options options_;
  absl::Mutex mu_;
  absl::flat_hash_map<Key, Summary> windows_ ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_THROTTLED_REFUSALS_H_
