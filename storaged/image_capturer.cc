#include "storaged/image_capturer.h"

#include <algorithm>
#include <deque>
#include <thread>
#include <utility>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "storaged/digest.h"
#include "storaged/internal/progress_throttle.h"

namespace storaged {
namespace {

// Chunk-aligned extents covering every chunk that holds mapped data; the
// chunks in between are unmapped and read as zero.
std::vector<Extent> ChunkAlignedExtents(const std::vector<Extent>& mapped,
                                        uint64_t chunk_size, uint64_t volume_size) {
  std::vector<Extent> out;
  for (const Extent& e : mapped) {
    if (e.length == 0) continue;
    uint64_t begin = e.offset / chunk_size * chunk_size;
    uint64_t end = std::min(volume_size,
                            (e.offset + e.length + chunk_size - 1) / chunk_size * chunk_size);
    if (!out.empty() && begin <= out.back().offset + out.back().length) {
      out.back().length = std::max(out.back().offset + out.back().length, end) -
                          out.back().offset;
    } else {
      out.push_back({begin, end - begin});
    }
  }
  return out;
}

// Hands finished chunks to worker threads, so hashing and zero checks run
// beside the I/O loop instead of stalling it. Bounded: Add blocks while
// `capacity` chunks wait, and returns CANCELLED once `*cancelled` (may be
// null) is set. The first AddChunk error sticks.
class ChunkFeeder {
 public:
  ChunkFeeder(ImageWriter& writer, int threads, size_t capacity,
              const std::atomic<bool>* cancelled)
      : writer_(writer), capacity_(capacity), cancelled_(cancelled) {
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ChunkFeeder() { Finish().IgnoreError(); }

  absl::Status Add(uint64_t index, std::string data) {
    absl::MutexLock lock(&mu_);
    auto room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return queue_.size() < capacity_ || !status_.ok();
    };
    // Hashing slower than the target keeps this waiting, where the volume's
    // own cancel check never runs.
    while (!mu_.AwaitWithTimeout(absl::Condition(&room), absl::Milliseconds(100))) {
      RETURN_IF_ERROR(CheckCancelled());
    }
    RETURN_IF_ERROR(CheckCancelled());
    if (!status_.ok()) return status_;
    queue_.emplace_back(index, std::move(data));
    return absl::OkStatus();
  }

  // Waits until every queued chunk is added; returns the first error.
  absl::Status Finish() {
    {
      absl::MutexLock lock(&mu_);
      closed_ = true;
    }
    for (std::thread& t : workers_) {
      if (t.joinable()) t.join();
    }
    absl::MutexLock lock(&mu_);
    return status_;
  }

 private:
  absl::Status CheckCancelled() const {
    if (cancelled_ != nullptr && cancelled_->load()) {
      return absl::CancelledError("capture cancelled");
    }
    return absl::OkStatus();
  }

  void Work() {
    while (true) {
      std::pair<uint64_t, std::string> item;
      {
        absl::MutexLock lock(&mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return !queue_.empty() || closed_;
        };
        mu_.Await(absl::Condition(&ready));
        if (queue_.empty() || !status_.ok()) return;
        if (absl::Status cancelled = CheckCancelled(); !cancelled.ok()) {
          status_ = cancelled;  // the rest is dropped: the capture ends
          queue_.clear();
          return;
        }
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      absl::Status s = writer_.AddChunk(item.first, item.second);
      if (!s.ok()) {
        absl::MutexLock lock(&mu_);
        if (status_.ok()) status_ = s;
      }
    }
  }

  ImageWriter& writer_;
  const size_t capacity_;
  const std::atomic<bool>* const cancelled_;
  absl::Mutex mu_;
  std::deque<std::pair<uint64_t, std::string>> queue_ ABSL_GUARDED_BY(mu_);
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status status_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> workers_;
};

}  // namespace

absl::StatusOr<ManifestSummary> CaptureVolume(Volume& volume, ImageStore& store,
                                              const std::string& image_id, int zstd_level,
                                              const CaptureOptions& options) {
  const VolumeInfo& info = volume.info();
  ASSIGN_OR_RETURN(std::unique_ptr<ImageWriter> writer,
                   store.BeginImage(image_id, info.size_bytes, info.block_size, zstd_level));
  const uint64_t chunk_size = store.options().chunk_size;

  ASSIGN_OR_RETURN(std::vector<Extent> mapped, volume.MappedExtents(0, info.size_bytes));
  std::vector<Extent> extents = ChunkAlignedExtents(mapped, chunk_size, info.size_bytes);

  CaptureProgress progress;
  progress.bytes_total = info.size_bytes;
  internal::ProgressThrottle<CaptureProgress> throttle(
      options.on_progress, options.progress_interval, absl::Now());
  auto report = [&](bool force) { throttle.Report(progress, force); };

  // Chunks [next_chunk, chunk of `offset`) are zero: never mapped, or read
  // and found all-zero. Marking them as one run keeps a thick volume's
  // zeroes from costing a writer call per chunk.
  uint64_t next_chunk = 0;
  auto mark_zero_until = [&](uint64_t offset) -> absl::Status {
    uint64_t end_chunk = offset / chunk_size;
    if (end_chunk > next_chunk) {
      RETURN_IF_ERROR(writer->AddZeroChunks(next_chunk, end_chunk - next_chunk));
      next_chunk = end_chunk;
    }
    return absl::OkStatus();
  };
  auto check_cancelled = [&]() -> absl::Status {
    if (options.read.cancelled != nullptr && options.read.cancelled->load()) {
      return absl::CancelledError(absl::StrCat("capture of image ", image_id, " cancelled"));
    }
    return absl::OkStatus();
  };
  ChunkFeeder feeder(*writer, std::max(1, options.hash_threads), 64, options.read.cancelled);
  auto add_chunk = [&](uint64_t index, absl::string_view data, std::string* owned)
      -> absl::Status {
    progress.bytes_scanned = std::min<uint64_t>(info.size_bytes, (index + 1) * chunk_size);
    report(false);
    if (IsAllZero(data)) return absl::OkStatus();
    RETURN_IF_ERROR(mark_zero_until(index * chunk_size));
    next_chunk = index + 1;
    return feeder.Add(index, owned != nullptr ? std::move(*owned) : std::string(data));
  };

  std::string chunk;  // a chunk split across two reads
  uint64_t chunk_index = 0;
  ReadSink sink = [&](uint64_t offset, absl::string_view data) -> absl::Status {
    // Per piece: a volume checks only while it waits for the target.
    RETURN_IF_ERROR(check_cancelled());
    progress.bytes_read += data.size();
    while (!data.empty()) {
      if (chunk.empty()) chunk_index = offset / chunk_size;  // extents are chunk aligned
      const uint32_t want = writer->ChunkLength(chunk_index);
      if (chunk.empty() && data.size() >= want) {
        // The common case: a whole chunk inside this read, no copy unless data.
        RETURN_IF_ERROR(add_chunk(chunk_index, data.substr(0, want), nullptr));
        data.remove_prefix(want);
        offset += want;
        continue;
      }
      size_t take = std::min<size_t>(want - chunk.size(), data.size());
      chunk.append(data.data(), take);
      data.remove_prefix(take);
      offset += take;
      if (chunk.size() == want) {
        RETURN_IF_ERROR(add_chunk(chunk_index, chunk, &chunk));
        chunk.clear();
      }
    }
    return absl::OkStatus();
  };
  absl::Status status = volume.ReadExtents(extents, options.read, sink);
  absl::Status fed = feeder.Finish();
  if (status.ok()) status = fed;
  if (status.ok() && !chunk.empty()) {
    status = absl::InternalError(absl::StrCat("read ended inside chunk ", chunk_index));
  }
  if (status.ok()) status = mark_zero_until(info.size_bytes + chunk_size - 1);
  // A cancel that came after the last read must not commit the image.
  if (status.ok()) status = check_cancelled();
  if (!status.ok()) {
    writer->Abort();
    return status;
  }
  progress.bytes_scanned = info.size_bytes;
  report(true);
  return writer->Commit();
}

}  // namespace storaged
