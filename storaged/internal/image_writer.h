// ImageWriterImpl, the ImageWriter that ImageStore::BeginImage returns:
// defined in image_writer.cc, declared here for image_store.cc, which starts
// captures, refuses to delete an image being captured and marks captures'
// chunks live for garbage collection.
#ifndef STORAGED_INTERNAL_IMAGE_WRITER_H_
#define STORAGED_INTERNAL_IMAGE_WRITER_H_

#include <zstd.h>

#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/btree_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "storaged/digest.h"
#include "storaged/image_store.h"
#include "storaged/internal/pack.h"
#include "storaged/manifest.h"

namespace storaged {
namespace internal {

// The capture pipeline: callers hash chunks and decide dedup under the store
// lock; new chunks gather into a frame; full frames go through a bounded
// queue to compression workers, which append them to the capture's current
// pack and seal it when full. Memory is bounded by the queue, whatever the
// volume size, beyond 32 bytes per data chunk for the manifest (zero chunks
// cost nothing: a 2 TiB thin volume with little data takes kilobytes).
class ImageWriterImpl final : public ImageWriter {
 public:
  ImageWriterImpl(ImageStore* store, std::string id, uint64_t volume_size,
                  uint32_t block_size, int compression_level);

  ~ImageWriterImpl() override { Abort(); }
  ImageWriterImpl(const ImageWriterImpl&) = delete;
  ImageWriterImpl& operator=(const ImageWriterImpl&) = delete;

  // Starts the compression workers.
  void Start();

  const std::string& image_id() const override { return id_; }
  uint64_t chunk_count() const override { return chunk_count_; }
  uint32_t ChunkLength(uint64_t index) const override {
    uint64_t left = volume_size_ - index * chunk_size_;
    return static_cast<uint32_t>(left < chunk_size_ ? left : chunk_size_);
  }

  absl::Status AddChunk(uint64_t index, absl::string_view plain) override;
  absl::Status AddZeroChunks(uint64_t first_index, uint64_t count) override;
  absl::StatusOr<ManifestSummary> Commit() override;
  void Abort() override;

  // Adds every chunk this capture references to `live`. Called by garbage
  // collection with the store lock held.
  void MarkLive(absl::flat_hash_set<Digest, DigestHash>* live);

 private:
  enum class State { kOpen, kCommitting, kDone };
  struct PendingChunk {
    uint64_t index;
    Digest digest;
    std::string data;
  };
  using Frame = std::vector<PendingChunk>;

  size_t NumThreads() const;

  // The digest chunk `index` was added with (zero for an all-zero chunk), or
  // null if it was not added yet.
  const Digest* AddedLocked(uint64_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Marks [begin, end) all-zero, merging with the ranges it touches; every
  // index in it is at or past frontier_ and holds no data chunk.
  void AddZeroRangeLocked(uint64_t begin, uint64_t end)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Moves what was added in order from frontier_ on into chunks_.
  void AdvanceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckOpenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  absl::Status AppendToFrame(uint64_t index, const Digest& digest,
                             absl::string_view plain);
  // Blocks while the queue is full: the capture runs at the speed of
  // compression and the disk, with bounded memory.
  absl::Status Enqueue(Frame frame);
  void StopWorkers(bool discard);
  void WorkerLoop();
  absl::Status WriteFrame(ZSTD_CCtx* cctx, Frame frame);
  absl::Status SealPackLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pack_mu_);
  absl::StatusOr<ManifestSummary> CommitInternal();

  const int compression_level_;  // initialized first: see the constructor
  ImageStore* const store_;
  const std::string id_;
  const uint64_t volume_size_;
  const uint32_t block_size_;
  const uint32_t chunk_size_;
  const uint64_t chunk_count_;
  const size_t queue_capacity_;

  // Lock order: pack_mu_, then store_->mu_, then mu_; frame_mu_ and
  // queue_mu_ are never held with another lock.
  absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kOpen;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  // Chunks are added slightly out of order (several hashing threads): those
  // below frontier_ (every index there added) are in chunks_, the rest wait
  // in ahead_ (data) and ahead_zero_ ([begin, end) ranges, disjoint and not
  // touching) until the indexes before them arrive. Memory follows the data
  // chunks and the disorder, never the volume size.
  ChunkTable chunks_ ABSL_GUARDED_BY(mu_);
  uint64_t frontier_ ABSL_GUARDED_BY(mu_) = 0;
  absl::btree_map<uint64_t, Digest> ahead_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<uint64_t, uint64_t> ahead_zero_ ABSL_GUARDED_BY(mu_);
  // The manifest being committed: chunks_ moved into it.
  std::shared_ptr<const Manifest> committing_ ABSL_GUARDED_BY(mu_);
  // Chunks this capture stores itself and has not sealed into a pack yet
  // (dedup within the capture; sealed ones are in the store's index).
  absl::flat_hash_set<Digest, DigestHash> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t new_chunks_ ABSL_GUARDED_BY(mu_) = 0;  // distinct chunks stored
  // AddChunk calls between the dedup decision and the frame append.
  int active_adds_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex frame_mu_;
  Frame frame_ ABSL_GUARDED_BY(frame_mu_);
  uint64_t frame_bytes_ ABSL_GUARDED_BY(frame_mu_) = 0;

  absl::Mutex queue_mu_;
  std::deque<Frame> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool queue_closed_ ABSL_GUARDED_BY(queue_mu_) = false;

  absl::Mutex pack_mu_;
  std::unique_ptr<PackWriter> pack_ ABSL_GUARDED_BY(pack_mu_);
  uint64_t new_stored_bytes_ ABSL_GUARDED_BY(pack_mu_) = 0;

  std::vector<std::thread> workers_;
};

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_IMAGE_WRITER_H_
