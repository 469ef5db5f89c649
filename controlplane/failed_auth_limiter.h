// Throttles API key guessing: a token bucket per client address of failed
// authentications (ApiKeyAuthenticator counts unknown keys in one instance,
// and every refusal in a second that only decides what the audit log
// summarizes). While an address's
// bucket is empty, keys it has not already proven are refused without a
// database read; keys that authenticated before (cached) still work, so a
// client with a good key behind the same address keeps working. An address
// stays throttled from the failure that empties its bucket until it has
// earned the whole burst back; its refusals in that time are marked
// (MarkThrottled) so that the audit log summarizes them.
#ifndef CONTROLPLANE_FAILED_AUTH_LIMITER_H_
#define CONTROLPLANE_FAILED_AUTH_LIMITER_H_

#include <cstddef>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace controlplane {

// Thread-safe.
class FailedAuthLimiter {
 public:
  struct Options {
    // Failures an address may have in a burst, and how fast it earns more.
    double burst = 100;
    double per_second = 10;
    // Addresses tracked at once; past it, idle (full) buckets are dropped.
    size_t max_addresses = 10000;
    // Starts the log line of an address that runs its bucket empty.
    absl::string_view log_label = "throttling API key attempts from";
  };

  explicit FailedAuthLimiter(Options options,
                             std::function<absl::Time()> now = [] { return absl::Now(); });
  FailedAuthLimiter(const FailedAuthLimiter&) = delete;
  FailedAuthLimiter& operator=(const FailedAuthLimiter&) = delete;

  // OK if `address` may try an unproven key now; otherwise UNAUTHENTICATED
  // saying how long to wait, marked with MarkThrottled.
  absl::Status Check(absl::string_view address);
  // Records one failed authentication from `address`. True if the address
  // was already throttled before it (the refusal belongs to a flood and is
  // to be marked); false for the failures of the burst.
  bool RecordFailure(absl::string_view address);

  // The client address of a gRPC peer string, without the port:
  // "ipv4:10.0.0.1:5000" -> "ipv4:10.0.0.1", "ipv6:[::1]:5000" -> "ipv6:[::1]";
  // anything else (unix sockets) unchanged.
  static std::string AddressOf(absl::string_view peer);

 private:
  struct Bucket {
    double tokens;
    absl::Time updated;
    // Set when the bucket runs empty, cleared when it is full again.
    bool throttled = false;
  };
  // Refills `bucket` up to now.
  void Refill(Bucket& bucket, absl::Time now) const;

  const Options options_;
  const std::function<absl::Time()> now_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Bucket> buckets_ ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_FAILED_AUTH_LIMITER_H_
