// Volume -> image: reads a volume's mapped ranges and feeds them, chunk by
// chunk, into an ImageWriter of the store.
#ifndef STORAGED_IMAGE_CAPTURER_H_
#define STORAGED_IMAGE_CAPTURER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "storaged/image_store.h"
#include "storaged/volume.h"

namespace storaged {

struct CaptureProgress {
  uint64_t bytes_scanned = 0;  // volume bytes examined, mapped or not
  uint64_t bytes_read = 0;     // bytes read from the target
  uint64_t bytes_total = 0;    // volume size
};

struct CaptureOptions {
  ReadOptions read;  // read.cancelled stops the capture with CANCELLED
  // Called on the capturing thread at most every `progress_interval`, and
  // once at the end.
  std::function<void(const CaptureProgress&)> on_progress;
  absl::Duration progress_interval = absl::Milliseconds(250);
  // Threads hashing and zero-checking chunks beside the I/O loop.
  int hash_threads = 2;
};

// Captures `volume` as image `image_id` of `store`. Unmapped chunks of a
// thin volume are recorded as zero without being read. On any error the
// capture is aborted and no image is visible. Errors: those of
// ImageStore::BeginImage (INVALID_ARGUMENT, ALREADY_EXISTS), of the volume
// (UNAVAILABLE, DATA_LOSS...), RESOURCE_EXHAUSTED for a full store, CANCELLED.
// `zstd_level` 0 keeps the store's default.
absl::StatusOr<ManifestSummary> CaptureVolume(Volume& volume, ImageStore& store,
                                              const std::string& image_id, int zstd_level,
                                              const CaptureOptions& options);

}  // namespace storaged

#endif  // STORAGED_IMAGE_CAPTURER_H_
