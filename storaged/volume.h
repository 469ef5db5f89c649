// The block-device edge of storaged: one open LUN, read in pipelined extents,
// written through a pipelined writer. Interfaces only, so that tests can wrap
// a real volume and inject faults (volume_fault.h).
#ifndef STORAGED_VOLUME_H_
#define STORAGED_VOLUME_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace storaged {

struct VolumeInfo {
  uint64_t size_bytes = 0;
  uint32_t block_size = 512;
  bool thin = false;             // LBPME: unmapped ranges exist and are reported
  bool zeroes_unmapped = false;  // LBPRZ: unmapped blocks read as zeroes
  // Largest single transfer the target accepts (Block Limits VPD); 0 when the
  // target states no limit.
  uint32_t max_transfer_bytes = 0;
};

struct Extent {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool operator==(const Extent& o) const {
    return offset == o.offset && length == o.length;
  }
};

// Defaults measured on loopback tgtd, 2 cores (storaged/iscsi_read_bench.cc,
// three runs): 256 KiB x 4-8 in flight was at or near the top for reads
// (1.0-2.5 GB/s) and writes (1.2-1.75 GB/s); 64 KiB, 4 MiB, one in flight and
// 32 in flight were clearly slower. 8 rather than 4 leaves room for real
// network latency.
inline constexpr uint32_t kDefaultIoBytes = 256 * 1024;
inline constexpr int kDefaultQueueDepth = 8;

struct ReadOptions {
  uint32_t io_bytes = kDefaultIoBytes;  // rounded down to the block size
  int queue_depth = kDefaultQueueDepth;
  // Polled at least every 100 ms; when it becomes true the read stops with
  // CANCELLED. May be null.
  const std::atomic<bool>* cancelled = nullptr;
};

struct WriteOptions {
  uint32_t io_bytes = kDefaultIoBytes;
  int queue_depth = kDefaultQueueDepth;
  // Polled at least every 100 ms while the writer waits for the target (a
  // full queue, Flush, its destructor); once true those stop waiting: the
  // call returns CANCELLED (sticky) and the commands in flight are abandoned.
  // May be null.
  const std::atomic<bool>* cancelled = nullptr;
};

// Called with consecutive pieces of the requested extents, in ascending
// offset order. A non-OK return stops the read with that status.
using ReadSink = std::function<absl::Status(uint64_t offset, absl::string_view data)>;

// A pipelined writer onto one Volume. Used from one thread at a time, and not
// at the same time as other calls on its Volume; must not outlive it.
// The first error sticks: every later call returns it.
class VolumeWriter {
 public:
  // Waits for commands in flight (not past a cancel, see WriteOptions), no
  // flush.
  virtual ~VolumeWriter() = default;

  // Queues a write of `data` (length a multiple of the block size) at
  // `offset` (block aligned) and returns once it is queued; queue_depth
  // commands are in flight at a time, and Write blocks only while a few times
  // that many are outstanding. INVALID_ARGUMENT for
  // misaligned input, OUT_OF_RANGE past the end; I/O errors of earlier
  // commands surface here or at Flush().
  // The writer holds `data` until the target has it.
  virtual absl::Status Write(uint64_t offset, std::shared_ptr<const std::string> data) = 0;
  absl::Status Write(uint64_t offset, std::string data) {
    return Write(offset, std::make_shared<const std::string>(std::move(data)));
  }

  // As Write, for the bytes of `pieces` in order (their sizes add up to a
  // multiple of the block size), sent from where they are: `keep` holds what
  // they point into until the target has them. This default copies them
  // into one buffer.
  virtual absl::Status WriteGather(uint64_t offset, std::vector<absl::string_view> pieces,
                                   std::shared_ptr<const void> keep) {
    (void)keep;
    std::string data;
    for (absl::string_view p : pieces) data.append(p.data(), p.size());
    return Write(offset, std::move(data));
  }

  // Makes [offset, offset+length) read as zeroes: deallocates (WRITE SAME
  // with UNMAP) on thin volumes that read unmapped blocks as zero, writes
  // zeroes otherwise, and also where the target rejects WRITE SAME.
  virtual absl::Status WriteZeroes(uint64_t offset, uint64_t length) = 0;

  // Waits for every queued command, then SYNCHRONIZE CACHE. OK means the
  // data is durable on the target.
  virtual absl::Status Flush() = 0;

  // Queues a SYNCHRONIZE CACHE without waiting for it, so the target starts
  // writing back what it holds while more writes arrive and the final
  // Flush has little left to do. Promises no durability; does nothing while
  // an earlier one is still running. Its error surfaces later, like a
  // write's.
  virtual absl::Status StartFlush() = 0;
};

// One open LUN. Not thread-safe: call from one thread at a time. Errors, for
// every method: UNAVAILABLE when the target stays unreachable or keeps a
// command unanswered (transient losses are retried on a new connection and
// the unfinished commands resumed, a bounded number of times), INVALID_ARGUMENT / OUT_OF_RANGE for bad ranges, DATA_LOSS for
// media errors, INTERNAL for other SCSI failures.
class Volume {
 public:
  virtual ~Volume() = default;

  virtual const VolumeInfo& info() const = 0;

  // The mapped (allocated) ranges within [offset, offset+length), sorted and
  // coalesced. Thin volumes ask the target (GET LBA STATUS); on thick ones
  // the whole range is mapped. Range is clipped to the volume size.
  virtual absl::StatusOr<std::vector<Extent>> MappedExtents(uint64_t offset,
                                                            uint64_t length) = 0;

  // Pipelined read of `extents` (sorted, non-overlapping, block aligned) in
  // pieces of at most options.io_bytes with up to options.queue_depth
  // commands in flight. `sink` runs on the calling thread in ascending
  // offset order; the data it sees is valid only during the call.
  virtual absl::Status ReadExtents(const std::vector<Extent>& extents,
                                   const ReadOptions& options, const ReadSink& sink) = 0;

  virtual std::unique_ptr<VolumeWriter> NewWriter(const WriteOptions& options) = 0;
};

}  // namespace storaged

#endif  // STORAGED_VOLUME_H_
