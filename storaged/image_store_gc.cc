// Garbage collection: mark the chunks live manifests, captures and readers
// name, sweep the rest from the index, delete packs left without live chunks
// and rewrite mostly dead ones.
#include <algorithm>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "storaged/image_store.h"
#include "storaged/internal/image_store_parts.h"
#include "storaged/internal/pack.h"

namespace storaged {

using internal::PackIndex;
using internal::PackState;

absl::StatusOr<GcResult> ImageStore::CollectGarbage(bool dry_run) {
  // A second collection would only repeat the first's work behind it (and a
  // caller's deadline could not stop it): refuse it instead.
  if (!gc_mu_.TryLock()) {
    return absl::AbortedError("a garbage collection is already running on this store");
  }
  absl::Cleanup unlock_gc = [this]() ABSL_UNLOCK_FUNCTION(gc_mu_) { gc_mu_.Unlock(); };
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&mu_);
    gc_marking_ = true;
    committed_while_marking_.clear();
    for (const auto& [id, info] : images_) ids.push_back(id);
  }
  absl::Cleanup stop_marking = [this] {
    absl::MutexLock lock(&mu_);
    gc_marking_ = false;
    committed_while_marking_.clear();
  };

  // Mark, outside the lock: manifests can be large.
  absl::flat_hash_set<Digest, DigestHash> live;
  for (const std::string& id : ids) {
    absl::StatusOr<Manifest> m = ReadManifest(id, nullptr);
    if (absl::IsNotFound(m.status())) continue;  // Deleted meanwhile.
    if (!m.ok()) {
      return absl::Status(
          m.status().code(),
          absl::StrCat("garbage collection stopped, nothing removed: ",
                       m.status().message(),
                       "; delete or restore that image first"));
    }
    m->chunks.ForEachData([&](uint64_t, const Digest& d) { live.insert(d); });
  }
  DropRedundantCopies();

  GcResult result;
  result.dry_run = dry_run;
  std::vector<std::shared_ptr<PackState>> to_delete;
  absl::flat_hash_map<uint32_t, std::vector<std::pair<Digest, Location>>>
      to_repack;
  {
    // Finish marking and sweep the index in one critical section, so no
    // capture can pick up a chunk between being judged dead and removed.
    absl::MutexLock lock(&mu_);
    auto mark = [&](uint64_t, const Digest& d) { live.insert(d); };
    for (const auto& manifest : committed_while_marking_) {
      manifest->chunks.ForEachData(mark);
    }
    MarkCapturesLiveLocked(&live);
    for (const auto& [reader, manifest] : readers_) manifest->chunks.ForEachData(mark);
    absl::flat_hash_map<uint32_t, uint64_t> live_plain;
    std::vector<Digest> dead;
    for (const auto& [d, loc] : index_) {
      if (live.contains(d)) {
        live_plain[loc.pack] += loc.length;
      } else {
        dead.push_back(d);
      }
    }
    result.chunks_removed = dead.size();
    // Packs holding a copy that may be the only good one stay as they are
    // (a reader may switch to that copy at any time, repack or not). Other
    // copies are only found at load, so no pack retired below holds one.
    absl::flat_hash_set<uint32_t> keep;
    for (const auto& [d, copies] : other_copies_) {
      for (const Location& copy : copies) keep.insert(copy.pack);
    }
    for (const auto& [number, pack] : packs_) {
      if (keep.contains(number)) continue;
      auto it = live_plain.find(number);
      uint64_t lp = it == live_plain.end() ? 0 : it->second;
      if (lp == 0) {
        to_delete.push_back(pack);
        result.bytes_freed += pack->file_size;
        ++result.packs_deleted;
      } else if (static_cast<double>(lp) <
                 options_.repack_below_live_fraction *
                     static_cast<double>(pack->plain_bytes)) {
        to_repack[number];
      }
    }
    if (!to_repack.empty()) {
      for (const auto& [d, loc] : index_) {
        auto it = to_repack.find(loc.pack);
        if (it != to_repack.end() && live.contains(d)) {
          it->second.emplace_back(d, loc);
        }
      }
    }
    if (dry_run) {
      for (const auto& [number, chunks] : to_repack) {
        uint64_t kept = 0;
        for (const auto& entry : chunks) kept += StoredShareLocked(entry.second);
        uint64_t size = packs_.at(number)->file_size;
        result.bytes_freed += size > kept ? size - kept : 0;
        ++result.packs_rewritten;
      }
      return result;
    }
    for (const Digest& d : dead) {
      index_.erase(d);
      other_copies_.erase(d);
      damaged_.erase(d);
    }
    for (const std::shared_ptr<PackState>& pack : to_delete) {
      pack->retired = true;
      packs_.erase(pack->number);
      pack_names_.erase(pack->name);
    }
  }

  for (const std::shared_ptr<PackState>& pack : to_delete) {
    absl::Status s = fs_->Remove(pack->path);
    if (!s.ok() && !absl::IsNotFound(s)) {
      common::LogWarning("image store %s: cannot delete pack %s: %s", dir_,
                         pack->name, s.ToString());
    }
  }
  if (!to_delete.empty()) RETURN_IF_ERROR(fs_->SyncDir(packs_dir_));

  for (auto& [number, chunks] : to_repack) {
    uint64_t old_size = 0;
    {
      absl::MutexLock lock(&mu_);
      old_size = packs_.at(number)->file_size;
    }
    uint64_t written = 0;
    absl::Status s = Repack(number, std::move(chunks), &written);
    if (!s.ok()) {
      // The old pack stays as it was; a full disk must not stop the rest.
      common::LogWarning("image store %s: repack failed: %s", dir_,
                         s.ToString());
      if (absl::IsResourceExhausted(s)) return s;
      continue;
    }
    ++result.packs_rewritten;
    result.bytes_freed += old_size > written ? old_size - written : 0;
  }
  return result;
}

absl::Status ImageStore::Repack(uint32_t number,
                                std::vector<std::pair<Digest, Location>> live,
                                uint64_t* bytes_written) {
  std::shared_ptr<PackState> old;
  {
    absl::MutexLock lock(&mu_);
    old = packs_.at(number);
  }
  std::sort(live.begin(), live.end(), [](const auto& a, const auto& b) {
    return std::make_pair(a.second.frame, a.second.offset) <
           std::make_pair(b.second.frame, b.second.offset);
  });
  ASSIGN_OR_RETURN(std::shared_ptr<RandomAccessFile> file, old->File(fs_));
  ASSIGN_OR_RETURN(std::unique_ptr<internal::PackWriter> writer,
                   internal::PackWriter::Create(fs_, packs_dir_, NewPackName()));
  internal::CCtxPtr cctx(ZSTD_createCCtx());
  std::string plain;
  std::vector<internal::FrameChunk> chunks;
  auto flush = [&]() -> absl::Status {
    if (chunks.empty()) return absl::OkStatus();
    internal::CompressedFrame frame = internal::CompressFrame(
        cctx.get(), options_.compression_level, options_.min_compression_saving,
        plain, std::move(chunks));
    plain.clear();
    chunks.clear();
    return writer->AddFrame(frame);
  };
  uint32_t current = UINT32_MAX;
  std::string frame;
  for (const auto& [digest, loc] : live) {
    if (loc.frame != current) {
      ASSIGN_OR_RETURN(frame, internal::ReadFrame(
                                  *file, old->frames[loc.frame],
                                  internal::ThreadDecompressor(), old->name,
                                  loc.frame));
      current = loc.frame;
    }
    absl::string_view chunk = absl::string_view(frame).substr(loc.offset,
                                                              loc.length);
    if (Sha256(chunk) != digest) {
      return absl::DataLossError(absl::StrCat(
          "chunk sha256 ", digest.ToHex(), " in pack ", old->name,
          " is corrupt; pack kept as it is"));
    }
    chunks.push_back(internal::FrameChunk{
        digest, static_cast<uint32_t>(plain.size()), loc.length});
    plain.append(chunk.data(), chunk.size());
    if (plain.size() >= options_.frame_size) RETURN_IF_ERROR(flush());
  }
  RETURN_IF_ERROR(flush());
  uint64_t size = 0;
  ASSIGN_OR_RETURN(PackIndex index, writer->Seal(&size));
  {
    absl::MutexLock lock(&mu_);
    std::vector<internal::PackChunk> moved = index.chunks;
    uint32_t fresh = RegisterPackLocked(writer->name(), std::move(index), size);
    for (const internal::PackChunk& c : moved) {
      auto it = index_.find(c.digest);
      if (it != index_.end() && it->second.pack == number) {
        it->second = Location{fresh, c.frame, c.offset, c.length};
      }
    }
    old->retired = true;
    packs_.erase(number);
    pack_names_.erase(old->name);
  }
  // A crash before this removal leaves both copies, which is harmless: the
  // next collection finds the old pack without live chunks.
  absl::Status s = fs_->Remove(old->path);
  if (!s.ok() && !absl::IsNotFound(s)) return s;
  RETURN_IF_ERROR(fs_->SyncDir(packs_dir_));
  *bytes_written = size;
  return absl::OkStatus();
}

}  // namespace storaged
