// The receiving side of SendImage on one node: which chunks it lacks, storing
// received frames, committing the manifest, and keeping an incoming image's
// chunks from garbage collection between those calls. The calls are separate
// RPCs, so the protection is a "receive" per image id that pins every chunk
// the sender named; it ends when the manifest commits, or after it has been
// idle for `idle_timeout` (a sender that died), and does not survive a
// restart (the sender's next attempt starts over).
#ifndef STORAGED_IMAGE_RECEIVER_H_
#define STORAGED_IMAGE_RECEIVER_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storaged/digest.h"
#include "storaged/image_store.h"

namespace storaged {

// Thread-safe. The store must outlive the receiver.
class ImageReceiver {
 public:
  explicit ImageReceiver(ImageStore* store,
                         absl::Duration idle_timeout = absl::Minutes(15));
  ImageReceiver(const ImageReceiver&) = delete;
  ImageReceiver& operator=(const ImageReceiver&) = delete;

  // The digests among `digests` the store lacks, in order. With an image id,
  // all of `digests` stay pinned for that image's receive. INVALID_ARGUMENT
  // for a malformed image id.
  absl::StatusOr<std::vector<Digest>> FindMissing(
      const std::string& image_id, const std::vector<Digest>& digests);
  // Pins `digests` for the receive of `image_id` (those not pinned yet).
  void Pin(const std::string& image_id, const std::vector<Digest>& digests);
  // ImageStore::ImportManifest; the receive ends once it succeeds.
  absl::StatusOr<ManifestSummary> Commit(const std::string& image_id,
                                         absl::string_view encoded,
                                         const Digest& expected);

  // Receives open now (for tests and status).
  size_t receive_count() const;
  // Digests pinned for `image_id`'s receive.
  size_t pinned_count(const std::string& image_id) const;

 private:
  struct Receive {
    std::vector<std::unique_ptr<ChunkPin>> pins;
    absl::flat_hash_set<Digest, DigestHash> pinned;
    absl::Time last_used;
  };
  void ExpireLocked(absl::Time now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ImageStore* const store_;
  const absl::Duration idle_timeout_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Receive> receives_ ABSL_GUARDED_BY(mu_);
};

}  // namespace storaged

#endif  // STORAGED_IMAGE_RECEIVER_H_
