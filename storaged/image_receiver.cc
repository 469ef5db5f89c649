#include "storaged/image_receiver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace storaged {

namespace {

bool ValidImageId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

ImageReceiver::ImageReceiver(ImageStore* store, absl::Duration idle_timeout)
    : store_(store), idle_timeout_(idle_timeout) {}

void ImageReceiver::ExpireLocked(absl::Time now) {
  for (auto it = receives_.begin(); it != receives_.end();) {
    if (now - it->second.last_used > idle_timeout_) {
      common::LogOp(it->first, "receive idle for %s: its chunks are no longer pinned",
                    absl::FormatDuration(now - it->second.last_used));
      receives_.erase(it++);
    } else {
      ++it;
    }
  }
}

absl::StatusOr<std::vector<Digest>> ImageReceiver::FindMissing(
    const std::string& image_id, const std::vector<Digest>& digests) {
  if (!image_id.empty()) {
    if (!ValidImageId(image_id)) {
      return absl::InvalidArgumentError(
          "image_id: must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-'");
    }
    // Pinned first: a chunk reported present stays present until the commit.
    Pin(image_id, digests);
  }
  return store_->MissingChunks(digests);
}

void ImageReceiver::Pin(const std::string& image_id,
                        const std::vector<Digest>& digests) {
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  ExpireLocked(now);
  Receive& receive = receives_[image_id];
  receive.last_used = now;
  std::vector<Digest> fresh;
  for (const Digest& d : digests) {
    if (!d.IsZero() && receive.pinned.insert(d).second) fresh.push_back(d);
  }
  if (!fresh.empty()) receive.pins.push_back(store_->PinChunks(std::move(fresh)));
}

absl::StatusOr<ManifestSummary> ImageReceiver::Commit(const std::string& image_id,
                                                      absl::string_view encoded,
                                                      const Digest& expected) {
  {
    absl::MutexLock lock(&mu_);
    auto it = receives_.find(image_id);
    if (it != receives_.end()) it->second.last_used = absl::Now();
  }
  absl::StatusOr<ManifestSummary> summary =
      store_->ImportManifest(image_id, encoded, expected);
  if (summary.ok()) {
    absl::MutexLock lock(&mu_);
    receives_.erase(image_id);
  }
  return summary;
}

size_t ImageReceiver::receive_count() const {
  absl::MutexLock lock(&mu_);
  return receives_.size();
}

size_t ImageReceiver::pinned_count(const std::string& image_id) const {
  absl::MutexLock lock(&mu_);
  auto it = receives_.find(image_id);
  return it == receives_.end() ? 0 : it->second.pinned.size();
}

}  // namespace storaged
