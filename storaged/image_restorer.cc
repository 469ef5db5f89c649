#include "storaged/image_restorer.h"

#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"

namespace storaged {
namespace {

// Decodes chunks (decompress + digest check) on background threads ahead of
// the writer and hands them over in index order. Work is split into batches
// of consecutive chunks (about one compressed frame), so each frame is
// decoded by one thread and threads hand over once per batch, not per chunk.
class ChunkPrefetcher {
 public:
  ChunkPrefetcher(ImageReader& image, int threads, uint64_t batch_chunks, uint64_t window)
      : image_(image),
        count_(image.manifest().ChunkCount()),
        batch_(std::max<uint64_t>(1, batch_chunks)),
        ring_(std::max<uint64_t>(window, threads + 1)) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ChunkPrefetcher() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : workers_) t.join();
  }

  // Chunk `index`; indexes must be asked for in order 0, 1, 2, ...
  absl::StatusOr<std::string> Next(uint64_t index) {
    const uint64_t batch = index / batch_;
    absl::MutexLock lock(&mu_);
    Slot& slot = ring_[batch % ring_.size()];
    mu_.Await(absl::Condition(&slot.ready));
    const uint64_t i = index - batch * batch_;
    if (i >= slot.chunks.size()) return slot.status;  // the batch failed before i
    std::string out = std::move(slot.chunks[i]);
    if (i + 1 == batch_ || index + 1 == count_) {
      slot.ready = false;
      slot.chunks.clear();
      slot.status = absl::OkStatus();
      consumed_ = batch + 1;
    }
    return out;
  }

 private:
  struct Slot {
    bool ready = false;
    std::vector<std::string> chunks;
    absl::Status status;  // why chunks stops short of the batch
  };

  void Work() {
    const uint64_t batches = (count_ + batch_ - 1) / batch_;
    while (true) {
      uint64_t batch;
      {
        absl::MutexLock lock(&mu_);
        auto can_fetch = [this, batches]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || next_ >= batches || next_ < consumed_ + ring_.size();
        };
        mu_.Await(absl::Condition(&can_fetch));
        if (stop_ || next_ >= batches) return;
        batch = next_++;
      }
      std::vector<std::string> chunks;
      absl::Status status;
      const uint64_t end = std::min(count_, (batch + 1) * batch_);
      for (uint64_t i = batch * batch_; i < end; ++i) {
        if (image_.manifest().chunks[i].IsZero()) {
          chunks.emplace_back();
          continue;
        }
        absl::StatusOr<std::string> data = image_.ReadChunk(i);
        if (!data.ok()) {
          status = data.status();
          break;
        }
        chunks.push_back(*std::move(data));
      }
      absl::MutexLock lock(&mu_);
      Slot& slot = ring_[batch % ring_.size()];
      slot.chunks = std::move(chunks);
      slot.status = std::move(status);
      slot.ready = true;
    }
  }

  ImageReader& image_;
  const uint64_t count_;
  const uint64_t batch_;
  absl::Mutex mu_;
  std::vector<Slot> ring_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;      // next batch to decode
  uint64_t consumed_ ABSL_GUARDED_BY(mu_) = 0;  // batches fully handed over
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> workers_;
};

}  // namespace

absl::StatusOr<RestoreProgress> RestoreImage(ImageReader& image, Volume& volume,
                                             const RestoreOptions& options) {
  const Manifest& manifest = image.manifest();
  const VolumeInfo& info = volume.info();
  if (info.size_bytes < manifest.volume_size) {
    return absl::FailedPreconditionError(absl::StrCat(
        "target volume has ", info.size_bytes, " bytes but image ", manifest.image_id,
        " needs ", manifest.volume_size, "; allocate a volume at least that large"));
  }
  if (manifest.volume_size % info.block_size != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "target block size ", info.block_size, " does not divide the image size ",
        manifest.volume_size));
  }

  RestoreProgress progress;
  progress.bytes_total = info.size_bytes;
  absl::Time last_report = absl::Now();
  auto report = [&](bool force) {
    if (!options.on_progress) return;
    absl::Time now = absl::Now();
    if (force || now - last_report >= options.progress_interval) {
      last_report = now;
      options.on_progress(progress);
    }
  };

  std::unique_ptr<VolumeWriter> writer = volume.NewWriter(options.write);
  // Consecutive data chunks are merged into one write of up to io_bytes;
  // consecutive zero chunks into one WriteZeroes.
  std::string pending;
  uint64_t pending_offset = 0;
  uint64_t zero_offset = 0;
  uint64_t zero_length = 0;
  auto flush_data = [&]() -> absl::Status {
    if (pending.empty()) return absl::OkStatus();
    progress.bytes_written += pending.size();
    absl::Status s = writer->Write(pending_offset, std::move(pending));
    pending = std::string();
    return s;
  };
  auto flush_zero = [&]() -> absl::Status {
    if (zero_length == 0) return absl::OkStatus();
    progress.bytes_skipped += zero_length;
    absl::Status s = writer->WriteZeroes(zero_offset, zero_length);
    zero_length = 0;
    return s;
  };

  // About one 4 MiB frame per batch; two batches per thread in flight.
  const int threads = std::max(1, options.prefetch_threads);
  ChunkPrefetcher prefetcher(image, threads, (4u << 20) / manifest.chunk_size, 2 * threads);
  for (uint64_t i = 0; i < manifest.ChunkCount(); ++i) {
    if (options.cancelled != nullptr && options.cancelled->load()) {
      return absl::CancelledError("restore cancelled");
    }
    const uint64_t offset = i * manifest.chunk_size;
    ASSIGN_OR_RETURN(std::string data, prefetcher.Next(i));
    if (data.empty()) {
      RETURN_IF_ERROR(flush_data());
      if (zero_length == 0) zero_offset = offset;
      zero_length += manifest.ChunkLength(i);
    } else {
      RETURN_IF_ERROR(flush_zero());
      if (pending.empty()) {
        pending_offset = offset;
        pending.reserve(options.write.io_bytes);
      }
      pending += data;
      if (pending.size() >= options.write.io_bytes) RETURN_IF_ERROR(flush_data());
    }
    report(false);
  }
  RETURN_IF_ERROR(flush_data());
  // The tail past the image must read as zero too.
  if (info.size_bytes > manifest.volume_size) {
    if (zero_length == 0) zero_offset = manifest.volume_size;
    zero_length += info.size_bytes - manifest.volume_size;
  }
  RETURN_IF_ERROR(flush_zero());
  RETURN_IF_ERROR(writer->Flush());
  report(true);
  return progress;
}

}  // namespace storaged
