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
  // One entry per chunk index; Digest::IsZero() marks an all-zero chunk.
  std::vector<Digest> chunks;

  uint64_t ChunkCount() const { return chunks.size(); }
  // Plain length of chunk `index` (the last may be short).
  uint32_t ChunkLength(uint64_t index) const;
};

// Number of chunks covering `volume_size`.
inline uint64_t ChunkCountFor(uint64_t volume_size, uint32_t chunk_size) {
  return (volume_size + chunk_size - 1) / chunk_size;
}

// Serializes `manifest` and appends its digest; `digest` (if not null) gets it.
std::string EncodeManifest(const Manifest& manifest, Digest* digest);

// Parses and checks an encoded manifest. DATA_LOSS if it is truncated, its
// digest does not match, or its fields are inconsistent; `digest` (if not
// null) gets the manifest digest.
absl::StatusOr<Manifest> DecodeManifest(absl::string_view data, Digest* digest);

}  // namespace storaged

#endif  // STORAGED_MANIFEST_H_
