// The parts of ImageStore's implementation that its source files share:
// image_store.cc (loading and reading images), image_writer.cc (captures),
// image_store_gc.cc (garbage collection) and image_store_copy.cc (sending and
// receiving images between nodes).
#ifndef STORAGED_INTERNAL_IMAGE_STORE_PARTS_H_
#define STORAGED_INTERNAL_IMAGE_STORE_PARTS_H_

#include <zstd.h>

#include <atomic>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "storaged/filesystem.h"
#include "storaged/image_store.h"
#include "storaged/internal/frame_cache.h"
#include "storaged/internal/pack.h"

namespace storaged {
namespace internal {

// This thread's zstd decompression context.
ZSTD_DCtx* ThreadDecompressor();

struct CCtxDeleter {
  void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
};
using CCtxPtr = std::unique_ptr<ZSTD_CCtx, CCtxDeleter>;

// Image ids: 1-128 characters of A-Z, a-z, 0-9, '_' or '-'.
bool ValidImageId(absl::string_view id);

struct PackState;

// Bounds the pack files open for reading: an LRU of packs whose handle is
// open. A reader in the middle of a read keeps its handle alive (shared_ptr)
// even if the pack is closed meanwhile, so closing never breaks a read.
struct OpenPacks {
  explicit OpenPacks(int limit) : limit(static_cast<size_t>(std::max(limit, 1))) {}
  // Marks `pack` most recently used and closes the least recently used
  // beyond the limit.
  void Touch(const std::shared_ptr<PackState>& pack);
  size_t open_count() {
    absl::MutexLock lock(&mu);
    return lru.size();
  }

  const size_t limit;
  absl::Mutex mu;
  std::deque<std::weak_ptr<PackState>> lru ABSL_GUARDED_BY(mu);  // newest first
};

// A sealed pack: its frame table (chunk locations live in the store index)
// and a lazily opened read handle.
struct PackState : std::enable_shared_from_this<PackState> {
  uint32_t number = 0;
  std::string name;
  std::string path;
  uint64_t file_size = 0;
  uint64_t plain_bytes = 0;
  std::vector<FrameInfo> frames;
  // Set once garbage collection has replaced or deleted the pack; a reader
  // that raced with it looks the chunk up again.
  std::atomic<bool> retired{false};
  OpenPacks* open_packs = nullptr;  // the store's; null: no bound

  absl::StatusOr<std::shared_ptr<RandomAccessFile>> File(Filesystem* fs) {
    std::shared_ptr<RandomAccessFile> out;
    {
      absl::MutexLock lock(&mu);
      if (file == nullptr) {
        ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> f,
                         fs->OpenForRead(path));
        file = std::move(f);
      }
      out = file;
    }
    if (open_packs != nullptr) open_packs->Touch(shared_from_this());
    return out;
  }
  void Close() {
    absl::MutexLock lock(&mu);
    file.reset();
  }

  absl::Mutex mu;
  std::shared_ptr<RandomAccessFile> file ABSL_GUARDED_BY(mu);
};

class ImageReaderImpl final : public ImageReader {
 public:
  ImageReaderImpl(ImageStore* store, std::shared_ptr<const Manifest> manifest,
                  Digest digest)
      : store_(store),
        manifest_(std::move(manifest)),
        digest_(digest) {
    absl::MutexLock lock(&store_->mu_);
    store_->readers_[this] = manifest_;
    store_->ResizeSharedFramesLocked();
  }
  ~ImageReaderImpl() override {
    absl::MutexLock lock(&store_->mu_);
    store_->readers_.erase(this);
    store_->ResizeSharedFramesLocked();
    // Frames are shared only by readers running at the same time: the next
    // restore reads (and checks) everything from disk again.
    if (store_->readers_.empty()) store_->shared_frames_->Clear();
  }
  ImageReaderImpl(const ImageReaderImpl&) = delete;
  ImageReaderImpl& operator=(const ImageReaderImpl&) = delete;

  const Manifest& manifest() const override { return *manifest_; }
  const Digest& manifest_digest() const override { return digest_; }

  absl::StatusOr<std::string> ReadChunk(uint64_t index) override {
    if (index >= manifest_->ChunkCount()) {
      return absl::OutOfRangeError(
          absl::StrCat("chunk index ", index, " is past image ",
                       manifest_->image_id, "'s ", manifest_->ChunkCount(),
                       " chunks"));
    }
    const Digest& d = manifest_->chunks.At(index);
    if (d.IsZero()) return std::string();
    absl::StatusOr<std::string> data =
        store_->ReadChunkByDigest(d, store_->shared_frames_.get(),
                                  manifest_->ChunkLength(index));
    if (!data.ok()) return ChunkError(index, data.status());
    return data;
  }

  absl::Status ReadChunkTo(uint64_t index, char* out) override {
    if (index >= manifest_->ChunkCount()) return ReadChunk(index).status();
    const Digest& d = manifest_->chunks.At(index);
    if (d.IsZero()) {
      std::memset(out, 0, manifest_->ChunkLength(index));
      return absl::OkStatus();
    }
    absl::StatusOr<std::string> data =
        store_->ReadChunkByDigest(d, store_->shared_frames_.get(),
                                  manifest_->ChunkLength(index), out);
    // This read's own error: reading again might succeed and leave `out`
    // unfilled behind an OK.
    if (!data.ok()) return ChunkError(index, data.status());
    return absl::OkStatus();
  }

  absl::Status ReadChunkView(uint64_t index, absl::string_view* data,
                             std::shared_ptr<const void>* keep) override {
    if (index >= manifest_->ChunkCount()) return ReadChunk(index).status();
    const Digest& d = manifest_->chunks.At(index);
    if (d.IsZero()) {
      *data = absl::string_view();
      keep->reset();
      return absl::OkStatus();
    }
    std::shared_ptr<const CachedFrame> frame;
    absl::StatusOr<absl::string_view> chunk = store_->ChunkInFrame(
        d, store_->shared_frames_.get(), manifest_->ChunkLength(index), &frame);
    if (!chunk.ok()) return ChunkError(index, chunk.status());
    *data = *chunk;
    *keep = std::move(frame);
    return absl::OkStatus();
  }

 private:
  // `status` of reading chunk `index`, naming the chunk and image; a missing
  // or damaged chunk is DATA_LOSS.
  absl::Status ChunkError(uint64_t index, const absl::Status& status) const {
    std::string what = absl::StrCat(
        "chunk ", index, " (sha256 ", manifest_->chunks.At(index).ToHex(),
        ") of image ", manifest_->image_id, ": ", status.message());
    if (absl::IsNotFound(status) || absl::IsDataLoss(status)) {
      return absl::DataLossError(what);
    }
    return absl::Status(status.code(), what);
  }

  ImageStore* const store_;
  const std::shared_ptr<const Manifest> manifest_;
  const Digest digest_;
};

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_IMAGE_STORE_PARTS_H_
