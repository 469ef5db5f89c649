#include "controlplane/failed_auth_limiter.h"

#include <algorithm>
#include <cmath>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "controlplane/authenticator.h"

namespace controlplane {

FailedAuthLimiter::FailedAuthLimiter(Options options, std::function<absl::Time()> now)
    : options_(options), now_(std::move(now)) {}

std::string FailedAuthLimiter::AddressOf(absl::string_view peer) {
  if (absl::StartsWith(peer, "ipv4:") || absl::StartsWith(peer, "ipv6:")) {
    size_t colon = peer.rfind(':');
    // "ipv4:" alone has its colon at 4: nothing to strip.
    if (colon != absl::string_view::npos && colon > 4) return std::string(peer.substr(0, colon));
  }
  return std::string(peer);
}

void FailedAuthLimiter::Refill(Bucket& bucket, absl::Time now) const {
  if (now > bucket.updated) {
    bucket.tokens = std::min(options_.burst,
                             bucket.tokens + absl::ToDoubleSeconds(now - bucket.updated) *
                                                 options_.per_second);
    bucket.updated = now;
  }
  if (bucket.tokens >= options_.burst) bucket.throttled = false;
}

absl::Status FailedAuthLimiter::Check(absl::string_view address) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(address);
  if (it == buckets_.end()) return absl::OkStatus();
  Refill(it->second, now);
  if (it->second.tokens >= 1) return absl::OkStatus();
  const double wait = options_.per_second > 0 ? (1 - it->second.tokens) / options_.per_second : 1;
  return MarkThrottled(absl::UnauthenticatedError(absl::StrCat(
                           "too many failed authentications from ", address, "; retry in ",
                           static_cast<int64_t>(std::ceil(wait)), " s with a valid API key")),
                       address);
}

bool FailedAuthLimiter::RecordFailure(absl::string_view address) {
  const absl::Time now = now_();
  absl::MutexLock lock(&mu_);
  auto it = buckets_.find(address);
  if (it == buckets_.end()) {
    if (buckets_.size() >= options_.max_addresses) {
      // Forget addresses that have earned their whole burst back.
      absl::erase_if(buckets_, [&](auto& entry) {
        Refill(entry.second, now);
        return entry.second.tokens >= options_.burst;
      });
      if (buckets_.size() >= options_.max_addresses) buckets_.clear();
    }
    it = buckets_.emplace(std::string(address), Bucket{options_.burst, now}).first;
  }
  Bucket& bucket = it->second;
  Refill(bucket, now);
  const bool was_throttled = bucket.throttled;
  bucket.tokens = std::max(0.0, bucket.tokens - 1);
  if (!bucket.throttled && bucket.tokens < 1) {
    bucket.throttled = true;
    common::LogError(
        "%s %s: %.0f failed authentications in a burst; until it has been quiet for %.0f s",
        options_.log_label, address, options_.burst,
        options_.per_second > 0 ? options_.burst / options_.per_second : 0);
  }
  return was_throttled;
}

}  // namespace controlplane
