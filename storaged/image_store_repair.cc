// Damaged chunk copies: a chunk whose stored copy fails its digest (or whose
// pack is gone) is read from another copy if the store has one; otherwise it
// is marked damaged, so the next capture or copy holding the same bytes
// stores them again instead of deduplicating against the bad copy, and that
// new copy repairs every image naming the chunk (Proxmox Backup Server does
// the same after a failed verify).
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "storaged/image_store.h"

namespace storaged {

bool ImageStore::HoldsUsableLocked(const Digest& digest) const {
  return index_.contains(digest) && !damaged_.contains(digest);
}

bool ImageStore::UseAnotherCopy(const Digest& digest, uint32_t pack_number,
                                const absl::Status& why) {
  absl::MutexLock lock(&mu_);
  auto it = index_.find(digest);
  if (it == index_.end()) return false;
  // Another reader switched already (or a repair or repack moved the chunk).
  if (it->second.pack != pack_number) return true;
  auto other = other_copies_.find(digest);
  if (other != other_copies_.end()) {
    it->second = other->second.back();
    other->second.pop_back();
    if (other->second.empty()) other_copies_.erase(other);
    common::LogWarning(
        "image store %s: chunk sha256 %s: copy in pack %u is damaged (%s); "
        "reading the copy in pack %u",
        dir_, digest.ToHex(), pack_number, why.message(), it->second.pack);
    return true;
  }
  if (damaged_.insert(digest).second) {
    common::LogWarning(
        "image store %s: chunk sha256 %s: its only copy (pack %u) is damaged "
        "(%s); the next capture or copy holding it stores it again",
        dir_, digest.ToHex(), pack_number, why.message());
  }
  return false;
}

void ImageStore::DropRedundantCopies() {
  std::vector<Digest> several;
  {
    absl::ReaderMutexLock lock(&mu_);
    several.reserve(other_copies_.size());
    for (const auto& [digest, copies] : other_copies_) several.push_back(digest);
  }
  for (const Digest& digest : several) {
    // An I/O error: the copies stay, and so do their packs. Damaged
    // everywhere: the read tried (and dropped) every copy and marked it.
    if (!ReadChunkByDigest(digest, nullptr).ok()) continue;
    absl::MutexLock lock(&mu_);
    other_copies_.erase(digest);
  }
}

}  // namespace storaged
