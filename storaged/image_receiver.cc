#include "storaged/image_receiver.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace storaged {

ImageReceiver::ImageReceiver(ImageStore* store, absl::Duration idle_timeout,
                             absl::Duration tombstone_ttl)
    : store_(store), idle_timeout_(idle_timeout), tombstone_ttl_(tombstone_ttl) {}

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
  for (auto it = tombstones_.begin(); it != tombstones_.end();) {
    if (now >= it->second) {
      tombstones_.erase(it++);
    } else {
      ++it;
    }
  }
}

void ImageReceiver::ExpireIdle() {
  absl::MutexLock lock(&mu_);
  ExpireLocked(absl::Now());
}

absl::Status ImageReceiver::CheckNotDeletedLocked(const std::string& image_id,
                                                  absl::Time now) {
  auto it = tombstones_.find(image_id);
  if (it == tombstones_.end() || now >= it->second) return absl::OkStatus();
  return absl::AbortedError(absl::StrCat(
      "receive of image ", image_id,
      " was cancelled by DeleteImage; the id can be received again in ",
      absl::FormatDuration(absl::Ceil(it->second - now, absl::Seconds(1)))));
}

absl::Status ImageReceiver::CheckNotDeleted(const std::string& image_id) {
  absl::MutexLock lock(&mu_);
  return CheckNotDeletedLocked(image_id, absl::Now());
}

absl::StatusOr<std::vector<Digest>> ImageReceiver::FindMissing(
    const std::string& image_id, const std::vector<Digest>& digests) {
  if (!image_id.empty()) {
    // Pinned first: a chunk reported present stays present until the commit.
    RETURN_IF_ERROR(Pin(image_id, digests));
  }
  return store_->MissingChunks(digests);
}

absl::Status ImageReceiver::Pin(const std::string& image_id,
                                const std::vector<Digest>& digests) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  absl::MutexLock lock(&mu_);
  const absl::Time now = absl::Now();
  ExpireLocked(now);
  RETURN_IF_ERROR(CheckNotDeletedLocked(image_id, now));
  Receive& receive = receives_[image_id];
  receive.last_used = now;
  std::vector<Digest> fresh;
  for (const Digest& d : digests) {
    if (!d.IsZero() && receive.pinned.insert(d).second) fresh.push_back(d);
  }
  if (!fresh.empty()) receive.pins.push_back(store_->PinChunks(std::move(fresh)));
  return absl::OkStatus();
}

absl::StatusOr<ManifestSummary> ImageReceiver::Commit(const std::string& image_id,
                                                      absl::string_view encoded,
                                                      const Digest& expected) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    RETURN_IF_ERROR(CheckNotDeletedLocked(image_id, now));
    auto it = receives_.find(image_id);
    if (it != receives_.end()) it->second.last_used = now;
    // Registered under the same lock as the check: Delete either refuses
    // this commit or waits for it to end.
    ++committing_[image_id];
  }
  absl::StatusOr<ManifestSummary> summary =
      store_->ImportManifest(image_id, encoded, expected);
  absl::MutexLock lock(&mu_);
  auto it = committing_.find(image_id);
  if (--it->second == 0) committing_.erase(it);
  if (summary.ok()) receives_.erase(image_id);
  return summary;
}

void ImageReceiver::Abandon(const std::string& image_id) {
  Receive ended;  // Its pins are released outside the lock.
  {
    absl::MutexLock lock(&mu_);
    auto it = receives_.find(image_id);
    if (it == receives_.end()) return;
    ended = std::move(it->second);
    receives_.erase(it);
  }
  common::LogOp(image_id, "receive ended after a stream failed its checks: %u chunks unpinned",
                ended.pinned.size());
}

absl::Status ImageReceiver::Delete(const std::string& image_id) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  bool aborted = false;
  Receive ended;  // Its pins are released outside the lock.
  {
    absl::MutexLock lock(&mu_);
    const absl::Time now = absl::Now();
    ExpireLocked(now);
    auto it = receives_.find(image_id);
    if (it != receives_.end()) {
      ended = std::move(it->second);
      receives_.erase(it);
      aborted = true;
    }
    if (committing_.contains(image_id)) aborted = true;
    // Only a delete that cut a sender off leaves a tombstone: deleting a
    // committed image (removing a datacenter) must not block copying it
    // there again. A sender with no receive open (an all-zero image skips
    // FindMissing) whose manifest arrives after the delete still commits.
    if (aborted) tombstones_[image_id] = now + tombstone_ttl_;
    auto committed = [this, &image_id]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return !committing_.contains(image_id);
    };
    mu_.Await(absl::Condition(&committed));
  }
  ended.pins.clear();
  if (aborted) {
    common::LogOp(image_id, "receive cancelled by DeleteImage: its chunks are no longer pinned");
  }
  absl::Status deleted = store_->DeleteImage(image_id);
  if (aborted && absl::IsNotFound(deleted)) return absl::OkStatus();
  return deleted;
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
