// The manifest of one captured volume: which chunk (by SHA-256) sits at each
// chunk index, plus sizes and accounting, sealed by a SHA-256 of its own bytes.
//
// Format v1 (little-endian):
//   "STORMAN1"  u32 version=1  u32 flags=0
//   u16 id_len, id bytes
//   u64 volume_size  u32 block_size  u32 chunk_size  i64 create_time (unix us)
//   u64 logical_bytes  u64 new_stored_bytes  u64 referenced_stored_bytes
//   u64 new_chunks  u64 chunk_count
//   records covering chunk_count chunks in index order:
//     0x00 u64 n    a run of n all-zero chunks (never stored)
//     0x01 [32]     one data chunk, its SHA-256
//   [32] SHA-256 of every byte above: the manifest digest
#ifndef STORAGED_MANIFEST_H_
#define STORAGED_MANIFEST_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "storaged/digest.h"

namespace storaged {

// Which chunk sits at each index of a volume, held in memory proportional to
// its data chunks: every index outside the runs of data chunks is an
// all-zero chunk, so a sparse 2 TiB volume costs bytes, not gigabytes.
// Digests sit in fixed blocks, so growing never copies the table or holds it
// twice (a vector would, at 4 GiB for a dense 2 TiB volume).
class ChunkTable {
 public:
  // Consecutive data chunks [first, first + count).
  struct Run {
    uint64_t first = 0;
    uint64_t count = 0;
    uint64_t end() const { return first + count; }
  };

  ChunkTable() = default;
  explicit ChunkTable(uint64_t size) : size_(size) {}

  // Chunk indexes covered, all-zero ones included.
  uint64_t size() const { return size_; }
  uint64_t data_count() const { return data_count_; }
  uint64_t zero_count() const { return size_ - data_count_; }

  size_t run_count() const { return runs_.size(); }
  Run run(size_t i) const;
  // The first run that ends after `index` (run_count() if none): O(log runs).
  size_t FindRun(uint64_t index) const;

  // Digest of chunk `index` (< size()); the zero digest for an all-zero
  // chunk. O(log runs).
  const Digest& At(uint64_t index) const;

  // Calls f(index, digest) for every data chunk in index order.
  template <typename F>
  void ForEachData(F&& f) const {
    for (size_t r = 0; r < runs_.size(); ++r) {
      const uint64_t first = runs_[r].first;
      const uint64_t pos = runs_[r].pos;
      const uint64_t end = r + 1 < runs_.size() ? runs_[r + 1].pos : data_count_;
      for (uint64_t p = pos; p < end; ++p) f(first + (p - pos), DigestAt(p));
    }
  }

  // Appends data chunk `index` with a non-zero digest; `index` must be below
  // size() and above every index appended before (not checked here).
  void Append(uint64_t index, const Digest& digest);
  // Heap bytes held: what the table costs.
  size_t MemoryBytes() const;

  friend bool operator==(const ChunkTable& a, const ChunkTable& b);
  friend bool operator!=(const ChunkTable& a, const ChunkTable& b) { return !(a == b); }

 private:
  static constexpr uint64_t kBlockDigests = 1024;  // 32 KiB blocks
  struct RunStart {
    uint64_t first;  // chunk index of the run's first digest
    uint64_t pos;    // that digest's position among all data chunks
  };
  const Digest& DigestAt(uint64_t pos) const {
    return blocks_[pos / kBlockDigests][pos % kBlockDigests];
  }

  uint64_t size_ = 0;
  uint64_t data_count_ = 0;
  std::vector<std::vector<Digest>> blocks_;
  std::vector<RunStart> runs_;
};

struct Manifest {
  std::string image_id;
  uint64_t volume_size = 0;
  uint32_t block_size = 0;
  uint32_t chunk_size = 0;
  absl::Time create_time = absl::UnixEpoch();
  // Non-zero chunks x their length: what a restore must write.
  uint64_t logical_bytes = 0;
  // Compressed bytes of the frames this capture added to the store.
  uint64_t new_stored_bytes = 0;
  // Each distinct chunk's share of its frame's compressed size, summed: what
  // this image would cost stored alone.
  uint64_t referenced_stored_bytes = 0;
  // Distinct chunks this capture stored that the store did not have.
  uint64_t new_chunks = 0;
  // The chunk at each index; chunks.size() == ChunkCountFor(volume_size,
  // chunk_size).
  ChunkTable chunks;

  uint64_t ChunkCount() const { return chunks.size(); }
  // Plain length of chunk `index` (the last may be short).
  uint32_t ChunkLength(uint64_t index) const;
};

// Number of chunks covering `volume_size`. Exact for every volume_size:
// rounding up by adding chunk_size - 1 first wrapped near 2^64, and a huge
// volume came out as a handful of chunks (or none).
inline uint64_t ChunkCountFor(uint64_t volume_size, uint32_t chunk_size) {
  return volume_size / chunk_size + (volume_size % chunk_size != 0 ? 1 : 0);
}

// Serializes `manifest` and appends its digest; `digest` (if not null) gets it.
std::string EncodeManifest(const Manifest& manifest, Digest* digest);

// Parses and checks an encoded manifest. DATA_LOSS if it is truncated, its
// digest does not match, or its fields are inconsistent; `digest` (if not
// null) gets the manifest digest.
absl::StatusOr<Manifest> DecodeManifest(absl::string_view data, Digest* digest);

}  // namespace storaged

#endif  // STORAGED_MANIFEST_H_
