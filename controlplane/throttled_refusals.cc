#include "controlplane/throttled_refusals.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace controlplane {

std::vector<ThrottledRefusals::Summary> ThrottledRefusals::Add(
    absl::string_view address, absl::string_view method,
    const imagetemplates::v1::ResourceReference& target, const absl::Status& outcome,
    absl::Time now) {
  absl::MutexLock lock(&mu_);
  Key key{std::string(address), std::string(method)};
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    Summary summary;
    summary.address = key.first;
    summary.method = key.second;
    summary.target = target;
    summary.first = now;
    it = windows_.emplace(std::move(key), std::move(summary)).first;
  } else {
    imagetemplates::v1::ResourceReference& kept = it->second.target;
    if (kept.id() != target.id()) kept.clear_id();
    if (kept.type() != target.type()) kept.clear_type();
  }
  Summary& summary = it->second;
  ++summary.count;
  summary.last = std::max(summary.last, now);
  summary.last_outcome = outcome;
  if (windows_.size() > options_.max_windows) return TakeLocked(/*all=*/true, now);
  std::vector<Summary> due;
  if (now - summary.first >= options_.interval) {
    due.push_back(std::move(summary));
    windows_.erase(it);
  }
  return due;
}

std::vector<ThrottledRefusals::Summary> ThrottledRefusals::TakeDue(absl::Time now) {
  absl::MutexLock lock(&mu_);
  return TakeLocked(/*all=*/false, now);
}

std::vector<ThrottledRefusals::Summary> ThrottledRefusals::TakeAll() {
  absl::MutexLock lock(&mu_);
  return TakeLocked(/*all=*/true, absl::InfinitePast());
}

std::vector<ThrottledRefusals::Summary> ThrottledRefusals::TakeLocked(bool all, absl::Time now) {
  std::vector<Summary> taken;
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (all || now - it->second.first >= options_.interval) {
      taken.push_back(std::move(it->second));
      windows_.erase(it++);
    } else {
      ++it;
    }
  }
  std::sort(taken.begin(), taken.end(),
            [](const Summary& a, const Summary& b) { return a.first < b.first; });
  return taken;
}

std::string ThrottledRefusals::Message(const Summary& summary) {
  constexpr char kFormat[] = "%Y-%m-%d%ET%H:%M:%E6SZ";
  return absl::StrFormat(
      "summary of %d refused calls from %s between %s and %s, counted instead of audited one "
      "by one while the address was throttled for failed authentications; last: %s",
      summary.count, summary.address, absl::FormatTime(kFormat, summary.first, absl::UTCTimeZone()),
      absl::FormatTime(kFormat, summary.last, absl::UTCTimeZone()),
      summary.last_outcome.message());
}

}  // namespace controlplane
