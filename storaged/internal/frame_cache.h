// Decompressed frames kept in memory for the store's readers.
#ifndef STORAGED_INTERNAL_FRAME_CACHE_H_
#define STORAGED_INTERNAL_FRAME_CACHE_H_

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "storaged/digest.h"

namespace storaged {
namespace internal {

// One decompressed frame, and which of its chunks have matched their digest
// since it was read from disk: a chunk is hashed once per decode, however
// many readers take it.
class CachedFrame {
 public:
  explicit CachedFrame(std::shared_ptr<std::string> plain) : plain_(std::move(plain)) {}

  const std::string& plain() const { return *plain_; }

  // Whether the chunk at `offset` has already matched `digest`.
  bool Verified(uint32_t offset, const Digest& digest) const {
    absl::MutexLock lock(&mu_);
    auto it = verified_.find(offset);
    return it != verified_.end() && it->second == digest;
  }
  void MarkVerified(uint32_t offset, const Digest& digest) {
    absl::MutexLock lock(&mu_);
    verified_[offset] = digest;
  }

 private:
  const std::shared_ptr<std::string> plain_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint32_t, Digest> verified_ ABSL_GUARDED_BY(mu_);
};

// A small LRU of decompressed frames keyed by (pack, frame). Pack numbers
// are never reused within a process and packs never change, so an entry
// stays true. When several threads need a frame at once, the first decodes
// it and the others wait for it: a sequential restore, or several restores
// of one image running side by side, decompress each frame once.
class FrameCache {
 public:
  explicit FrameCache(int capacity) : capacity_(std::max(capacity, 1)) {}

  // Changes how many frames are kept; extra ones go at the next Put.
  void SetCapacity(int capacity) {
    absl::MutexLock lock(&mu_);
    capacity_ = std::max(capacity, 1);
  }

  // The cached frame, or null after claiming it: the caller must then Put or
  // Abandon it. Waits while another thread decodes the frame.
  std::shared_ptr<CachedFrame> GetOrClaim(uint32_t pack, uint32_t frame) {
    absl::MutexLock lock(&mu_);
    while (true) {
      for (auto it = entries_.begin(); it != entries_.end(); ++it) {
        if (it->pack == pack && it->frame == frame) {
          Entry e = std::move(*it);
          entries_.erase(it);
          entries_.push_front(std::move(e));
          return entries_.front().data;
        }
      }
      bool loading = false;
      for (const auto& [p, f] : claimed_) loading |= (p == pack && f == frame);
      if (!loading) break;
      const uint64_t seen = generation_;
      auto moved = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return generation_ != seen;
      };
      mu_.Await(absl::Condition(&moved));
    }
    claimed_.emplace_back(pack, frame);
    return nullptr;
  }

  void Put(uint32_t pack, uint32_t frame, std::shared_ptr<CachedFrame> data) {
    absl::MutexLock lock(&mu_);
    Unclaim(pack, frame);
    entries_.push_front(Entry{pack, frame, std::move(data)});
    while (entries_.size() > static_cast<size_t>(capacity_)) entries_.pop_back();
  }

  void Abandon(uint32_t pack, uint32_t frame) {
    absl::MutexLock lock(&mu_);
    Unclaim(pack, frame);
  }

  // Drops every entry (claims in progress stay).
  void Clear() {
    absl::MutexLock lock(&mu_);
    entries_.clear();
  }

 private:
  struct Entry {
    uint32_t pack;
    uint32_t frame;
    std::shared_ptr<CachedFrame> data;
  };

  void Unclaim(uint32_t pack, uint32_t frame) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (auto it = claimed_.begin(); it != claimed_.end(); ++it) {
      if (it->first == pack && it->second == frame) {
        claimed_.erase(it);
        break;
      }
    }
    ++generation_;
  }

  absl::Mutex mu_;
  int capacity_ ABSL_GUARDED_BY(mu_);
  std::deque<Entry> entries_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<uint32_t, uint32_t>> claimed_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;  // bumped when a claim ends
};

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_FRAME_CACHE_H_
