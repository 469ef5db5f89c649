// Pack files: many compressed frames in one file, each frame holding several
// chunks, with the pack's index at its end so the store can load every chunk
// location by reading only index bytes.
//
// Format v1 (little-endian):
//   header  "STORPAK1" u32 version=1 u32 flags=0
//   frames  back to back; each a zstd frame or raw plain bytes
//   index   u32 frame_count
//           per frame: u64 offset u32 stored_len u32 plain_len u8 codec
//                      [16] first 16 bytes of SHA-256(stored bytes)
//           u32 chunk_count
//           per chunk: [32] SHA-256(plain chunk) u32 frame u32 offset
//                      u32 length   (offset/length inside the frame's plain data)
//   footer  u64 index_offset u64 index_length
//           [24] first 24 bytes of SHA-256(index) "STORPKND"
#ifndef STORAGED_INTERNAL_PACK_H_
#define STORAGED_INTERNAL_PACK_H_

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "storaged/digest.h"
#include "storaged/filesystem.h"

typedef struct ZSTD_CCtx_s ZSTD_CCtx;
typedef struct ZSTD_DCtx_s ZSTD_DCtx;

namespace storaged {
namespace internal {

inline constexpr absl::string_view kPackSuffix = ".pack";
inline constexpr absl::string_view kTempSuffix = ".tmp";
inline constexpr size_t kPackHeaderSize = 16;

enum class Codec : uint8_t { kRaw = 0, kZstd = 1 };

struct FrameInfo {
  uint64_t offset = 0;
  uint32_t stored_len = 0;
  uint32_t plain_len = 0;
  Codec codec = Codec::kRaw;
  std::array<uint8_t, 16> checksum{};
};

// A chunk inside a frame's plain data.
struct FrameChunk {
  Digest digest;
  uint32_t offset = 0;
  uint32_t length = 0;
};

struct PackChunk {
  Digest digest;
  uint32_t frame = 0;
  uint32_t offset = 0;
  uint32_t length = 0;
};

struct PackIndex {
  std::vector<FrameInfo> frames;
  std::vector<PackChunk> chunks;
};

// A frame ready to be appended to a pack.
struct CompressedFrame {
  std::string stored;
  uint32_t plain_len = 0;
  Codec codec = Codec::kRaw;
  std::vector<FrameChunk> chunks;
};

// Compresses `plain` as one zstd frame at `level`; keeps it raw when that
// saves less than `min_saving` (a fraction) or zstd fails.
CompressedFrame CompressFrame(ZSTD_CCtx* cctx, int level, double min_saving,
                              absl::string_view plain,
                              std::vector<FrameChunk> chunks);

// Reads a frame's stored bytes, checks its checksum and returns its plain
// data. DATA_LOSS on a checksum mismatch, a truncated pack or undecodable
// data; NOT_FOUND/INTERNAL from the file layer.
absl::StatusOr<std::string> ReadFrame(const RandomAccessFile& file,
                                      const FrameInfo& frame, ZSTD_DCtx* dctx,
                                      absl::string_view pack_name,
                                      uint32_t frame_number);
// The same into `*plain` (resized), so a caller can reuse its buffer.
absl::Status ReadFrameInto(const RandomAccessFile& file, const FrameInfo& frame,
                           ZSTD_DCtx* dctx, absl::string_view pack_name,
                           uint32_t frame_number, std::string* plain);

// Reads and checks the index of a pack of `file_size` bytes. DATA_LOSS if
// the footer or index is damaged.
absl::StatusOr<PackIndex> ReadPackIndex(const RandomAccessFile& file,
                                        uint64_t file_size);

// Writes one pack under a temporary name; Seal makes it durable and visible.
// Not thread-safe. An unsealed writer removes its temporary file when
// destroyed.
class PackWriter {
 public:
  // Creates `dir`/`name`.pack.tmp.
  static absl::StatusOr<std::unique_ptr<PackWriter>> Create(Filesystem* fs,
                                                            std::string dir,
                                                            std::string name);
  ~PackWriter();
  PackWriter(const PackWriter&) = delete;
  PackWriter& operator=(const PackWriter&) = delete;

  absl::Status AddFrame(const CompressedFrame& frame);
  uint64_t size() const { return size_; }
  bool empty() const { return index_.frames.empty(); }
  const std::string& name() const { return name_; }

  // Writes index and footer, fsyncs, renames to `name`.pack and fsyncs the
  // directory. On success returns the index and sets `file_size`.
  absl::StatusOr<PackIndex> Seal(uint64_t* file_size);
  // Closes and removes the temporary file (best effort).
  void Abandon();

 private:
  PackWriter(Filesystem* fs, std::string dir, std::string name,
             std::unique_ptr<WritableFile> file);
  std::string TempPath() const;

  Filesystem* const fs_;
  const std::string dir_;
  const std::string name_;
  std::unique_ptr<WritableFile> file_;
  PackIndex index_;
  uint64_t size_ = 0;
  bool done_ = false;
};

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_PACK_H_
