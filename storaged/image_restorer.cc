#include "storaged/image_restorer.h"

#include <algorithm>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "storaged/internal/progress_throttle.h"

namespace storaged {
namespace {

// A stretch of consecutive chunks inside one batch: all zero, or data left
// where the store decoded (and checked) it. The write sends it from there:
// no copy into a staging buffer.
struct Run {
  uint64_t first_chunk = 0;
  uint64_t offset = 0;
  uint64_t length = 0;
  bool zero = false;
  // Unless zero: `length` bytes in order; chunks that sit back to back in a
  // frame are one piece.
  std::vector<absl::string_view> pieces;
  // The frames `pieces` point into, held until the target has them.
  std::shared_ptr<std::vector<std::shared_ptr<const void>>> keep;
};

// Frames one batch may hold on to. A sequentially captured image needs one or
// two per batch; a fragmented one (chunks deduplicated against many earlier
// captures) could pin a whole frame per chunk, ~1 GiB per batch of 256, so
// chunks beyond this many frames are copied out (16 KiB each) instead.
constexpr size_t kMaxFramesPerBatch = 2;

// Decodes chunks (decompress + digest check) on background threads ahead of
// the writer and hands them over in order. Work is split into batches of
// consecutive chunks (about one compressed frame), so each frame is decoded
// by one thread and threads hand over once per batch, not per chunk. A
// stretch of zero chunks between data is one batch, whatever its length, so
// a sparse 2 TiB image costs a batch per data stretch, not 500,000.
class ChunkPrefetcher {
 public:
  ChunkPrefetcher(ImageReader& image, int threads, uint64_t batch_chunks, uint64_t window)
      : image_(image),
        zeroes_(std::make_shared<const std::string>(image.manifest().chunk_size, '\0')),
        count_(image.manifest().ChunkCount()),
        batch_(std::max<uint64_t>(1, batch_chunks)),
        ring_(std::max<uint64_t>(window, threads + 1)) {
    if (count_ == 0) total_ = 0;
    for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { Work(); });
  }
  ~ChunkPrefetcher() {
    {
      absl::MutexLock lock(&mu_);
      stop_ = true;
    }
    for (std::thread& t : workers_) t.join();
  }

  // The runs of batch `batch`, asked for in order 0, 1, 2, ...; `status`
  // says why they stop short of the batch's end. False past the last batch.
  bool Next(uint64_t batch, std::vector<Run>* runs, absl::Status* status) {
    absl::MutexLock lock(&mu_);
    Slot& slot = ring_[batch % ring_.size()];
    auto ready = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
      return slot.ready || batch >= total_;
    };
    mu_.Await(absl::Condition(&ready));
    if (!slot.ready) return false;
    *runs = std::move(slot.runs);
    *status = std::move(slot.status);
    slot.ready = false;
    slot.runs.clear();
    slot.status = absl::OkStatus();
    consumed_ = batch + 1;
    return true;
  }

 private:
  struct Slot {
    bool ready = false;
    std::vector<Run> runs;
    absl::Status status;
  };

  // Bytes of chunks [first, end).
  uint64_t Bytes(uint64_t first, uint64_t end) const {
    const Manifest& m = image_.manifest();
    return std::min(end * m.chunk_size, m.volume_size) - first * m.chunk_size;
  }

  void Work() {
    const Manifest& m = image_.manifest();
    const ChunkTable& table = m.chunks;
    while (true) {
      uint64_t batch, begin, end;
      {
        absl::MutexLock lock(&mu_);
        auto can_fetch = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return stop_ || cursor_ >= count_ || next_ < consumed_ + ring_.size();
        };
        mu_.Await(absl::Condition(&can_fetch));
        if (stop_ || cursor_ >= count_) return;
        batch = next_++;
        begin = cursor_;
        size_t r = table.FindRun(begin);
        uint64_t data = r < table.run_count() ? std::max(begin, table.run(r).first) : count_;
        // A zero stretch whole, else about a frame's worth of chunks.
        end = data > begin ? data : std::min(count_, begin + batch_);
        cursor_ = end;
        if (cursor_ >= count_) total_ = next_;
      }
      std::vector<Run> runs;
      absl::Status status;
      std::vector<const void*> pinned;  // distinct frames this batch holds
      size_t r = table.FindRun(begin);
      for (uint64_t i = begin; i < end && status.ok();) {
        Run run;
        run.first_chunk = i;
        run.offset = i * m.chunk_size;
        uint64_t data = r < table.run_count() ? std::max(i, table.run(r).first) : end;
        if (data > i) {
          run.zero = true;
          uint64_t j = std::min(data, end);
          run.length = Bytes(i, j);
          runs.push_back(std::move(run));
          i = j;
          continue;
        }
        const uint64_t run_end = table.run(r).end();
        const uint64_t j = std::min(run_end, end);
        if (j == run_end) ++r;
        run.keep = std::make_shared<std::vector<std::shared_ptr<const void>>>();
        uint64_t pos = 0;
        for (uint64_t k = i; k < j; ++k) {
          absl::string_view chunk;
          std::shared_ptr<const void> frame;
          status = image_.ReadChunkView(k, &chunk, &frame);
          if (!status.ok()) break;
          if (chunk.empty()) {
            chunk = absl::string_view(zeroes_->data(), m.ChunkLength(k));
            frame = zeroes_;
          } else if (frame != nullptr &&
                     std::find(pinned.begin(), pinned.end(), frame.get()) == pinned.end()) {
            if (pinned.size() < kMaxFramesPerBatch) {
              pinned.push_back(frame.get());
            } else {
              auto copy = std::make_shared<const std::string>(chunk);
              chunk = *copy;
              frame = std::move(copy);
            }
          }
          if (!run.pieces.empty() &&
              run.pieces.back().data() + run.pieces.back().size() == chunk.data()) {
            run.pieces.back() = absl::string_view(run.pieces.back().data(),
                                                  run.pieces.back().size() + chunk.size());
          } else {
            run.pieces.push_back(chunk);
          }
          if (frame != nullptr && (run.keep->empty() || run.keep->back() != frame)) {
            run.keep->push_back(std::move(frame));
          }
          pos += chunk.size();
        }
        run.length = pos;
        if (run.length > 0) runs.push_back(std::move(run));
        i = j;
      }
      absl::MutexLock lock(&mu_);
      Slot& slot = ring_[batch % ring_.size()];
      slot.runs = std::move(runs);
      slot.status = std::move(status);
      slot.ready = true;
    }
  }

  ImageReader& image_;
  // What an all-zero chunk inside a data run is sent from: a chunk's worth.
  const std::shared_ptr<const std::string> zeroes_;
  const uint64_t count_;
  const uint64_t batch_;
  absl::Mutex mu_;
  std::vector<Slot> ring_ ABSL_GUARDED_BY(mu_);
  uint64_t next_ ABSL_GUARDED_BY(mu_) = 0;      // next batch to decode
  uint64_t cursor_ ABSL_GUARDED_BY(mu_) = 0;    // its first chunk
  // Batches in all, once the last is claimed.
  uint64_t total_ ABSL_GUARDED_BY(mu_) = UINT64_MAX;
  uint64_t consumed_ ABSL_GUARDED_BY(mu_) = 0;  // batches handed over
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
  // Chunks are written whole: a block larger than a chunk (32/64 KiB blocks
  // against 16 KiB chunks) would fail halfway, after writing part of the disk.
  if (info.block_size == 0 || manifest.chunk_size % info.block_size != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "target block size ", info.block_size, " does not divide image ",
        manifest.image_id, "'s chunk size ", manifest.chunk_size,
        "; restore onto a volume with smaller blocks"));
  }

  RestoreProgress progress;
  progress.bytes_total = info.size_bytes;
  internal::ProgressThrottle<RestoreProgress> throttle(
      options.on_progress, options.progress_interval, absl::Now());
  auto report = [&](bool force) { throttle.Report(progress, force); };

  // When each phase ended, for the log line at the end.
  const absl::Time start = absl::Now();
  absl::Time first_batch, first_write, last_queued;
  // The cancel also reaches the writer's waits for the target: a hung
  // target must not hold a cancelled restore for the command timeouts.
  WriteOptions write = options.write;
  if (write.cancelled == nullptr) write.cancelled = options.cancelled;
  std::unique_ptr<VolumeWriter> writer = volume.NewWriter(write);
  uint64_t sent_since_flush = 0;
  auto sent = [&](uint64_t bytes) -> absl::Status {
    sent_since_flush += bytes;
    if (options.background_flush_bytes == 0 ||
        sent_since_flush < options.background_flush_bytes) {
      return absl::OkStatus();
    }
    sent_since_flush = 0;
    return writer->StartFlush();
  };
  // Decoded runs are written as they are, with no copy; consecutive zero
  // chunks become one WriteZeroes.
  //
  // On a thin target whose unmapped blocks read as zero (LBPRZ), only the
  // mapped parts of a zero range need zeroing: a fresh volume needs none.
  std::vector<Extent> mapped;
  const bool skip_unmapped = info.thin && info.zeroes_unmapped;
  if (skip_unmapped) {
    ASSIGN_OR_RETURN(mapped, volume.MappedExtents(0, info.size_bytes));
  }
  size_t next_mapped = 0;
  auto zero_range = [&](uint64_t offset, uint64_t length) -> absl::Status {
    if (!skip_unmapped) {
      RETURN_IF_ERROR(writer->WriteZeroes(offset, length));
      return sent(length);
    }
    const uint64_t end = offset + length;
    // Zero ranges come in ascending order, so one pass over `mapped` does.
    while (next_mapped < mapped.size() &&
           mapped[next_mapped].offset + mapped[next_mapped].length <= offset) {
      ++next_mapped;
    }
    for (size_t i = next_mapped; i < mapped.size() && mapped[i].offset < end; ++i) {
      uint64_t begin = std::max(offset, mapped[i].offset);
      uint64_t stop = std::min(end, mapped[i].offset + mapped[i].length);
      if (begin < stop) {
        RETURN_IF_ERROR(writer->WriteZeroes(begin, stop - begin));
        RETURN_IF_ERROR(sent(stop - begin));
      }
    }
    return absl::OkStatus();
  };
  uint64_t zero_offset = 0;
  uint64_t zero_length = 0;
  auto flush_zero = [&]() -> absl::Status {
    if (zero_length == 0) return absl::OkStatus();
    progress.bytes_skipped += zero_length;
    absl::Status s = zero_range(zero_offset, zero_length);
    zero_length = 0;
    return s;
  };

  // About one 4 MiB frame per batch; two batches per thread in flight.
  const int threads = std::max(1, options.prefetch_threads);
  ChunkPrefetcher prefetcher(image, threads, (4u << 20) / manifest.chunk_size, 2 * threads);
  std::vector<Run> runs;
  absl::Status decoded;
  for (uint64_t b = 0; prefetcher.Next(b, &runs, &decoded); ++b) {
    if (b == 0) first_batch = absl::Now();
    if (options.cancelled != nullptr && options.cancelled->load()) {
      return absl::CancelledError("restore cancelled");
    }
    for (Run& run : runs) {
      if (run.zero) {
        if (zero_length == 0) zero_offset = run.offset;
        zero_length += run.length;
        continue;
      }
      RETURN_IF_ERROR(flush_zero());
      if (progress.bytes_written == 0) first_write = absl::Now();
      progress.bytes_written += run.length;
      RETURN_IF_ERROR(writer->WriteGather(run.offset, std::move(run.pieces), std::move(run.keep)));
      RETURN_IF_ERROR(sent(run.length));
    }
    // Nothing from a bad chunk on is written (the chunks before it were
    // queued; those not yet sent are withdrawn when the writer goes).
    RETURN_IF_ERROR(decoded);
    report(false);
  }
  // The tail past the image must read as zero too.
  if (info.size_bytes > manifest.volume_size) {
    if (zero_length == 0) zero_offset = manifest.volume_size;
    zero_length += info.size_bytes - manifest.volume_size;
  }
  RETURN_IF_ERROR(flush_zero());
  last_queued = absl::Now();
  RETURN_IF_ERROR(writer->Flush());
  const absl::Time end = absl::Now();
  auto ms = [&](absl::Time t) {
    return t == absl::Time() ? -1.0 : absl::ToDoubleMilliseconds(t - start);
  };
  common::LogOp(manifest.image_id,
                "restore timeline (ms from start): first batch decoded %.1f, first write "
                "%.1f, last queued %.1f, done %.1f (final drain + SYNCHRONIZE CACHE %.1f); "
                "%.0f MB/s first write to last queued",
                ms(first_batch), ms(first_write), ms(last_queued), ms(end),
                absl::ToDoubleMilliseconds(end - last_queued),
                first_write == absl::Time()
                    ? 0.0
                    : progress.bytes_written / 1e6 /
                          std::max(1e-6, absl::ToDoubleSeconds(last_queued - first_write)));
  report(true);
  return progress;
}

}  // namespace storaged
