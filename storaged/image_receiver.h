// The receiving side of SendImage on one node: which chunks it lacks, storing
// received frames, committing the manifest, and keeping an incoming image's
// chunks from garbage collection between those calls. The calls are separate
// RPCs, so the protection is a "receive" per image id that pins every chunk
// the sender named; it ends when the manifest commits, or after it has been
// idle for `idle_timeout` (a sender that died), when DeleteImage aborts it,
// and does not survive a restart (the sender's next attempt starts over).
//
// DeleteImage goes through the receiver (Delete) because a cancelled sender
// may still be pushing: Delete ends the id's receive, waits out a commit of
// the id in progress and, when it did either, leaves a tombstone for
// `tombstone_ttl` that refuses the id's FindMissing, Pin and Commit, so a
// request still in flight cannot bring the image back.
// The tombstone is short (15 s by default): a sender's cancel reaches its
// streams within a frame, and a copy retried after an undo must not wait.
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
                         absl::Duration idle_timeout = absl::Minutes(15),
                         absl::Duration tombstone_ttl = absl::Seconds(15));
  ImageReceiver(const ImageReceiver&) = delete;
  ImageReceiver& operator=(const ImageReceiver&) = delete;

  // The digests among `digests` the store lacks, in order. With an image id,
  // all of `digests` stay pinned for that image's receive. INVALID_ARGUMENT
  // for a malformed image id; ABORTED while the id is tombstoned.
  absl::StatusOr<std::vector<Digest>> FindMissing(
      const std::string& image_id, const std::vector<Digest>& digests);
  // Pins `digests` for the receive of `image_id` (those not pinned yet).
  // ABORTED (nothing pinned) while the id is tombstoned; INVALID_ARGUMENT
  // for a malformed image id.
  absl::Status Pin(const std::string& image_id, const std::vector<Digest>& digests);
  // ImageStore::ImportManifest; the receive ends once it succeeds. ABORTED
  // while the id is tombstoned.
  absl::StatusOr<ManifestSummary> Commit(const std::string& image_id,
                                         absl::string_view encoded,
                                         const Digest& expected);
  // ABORTED while `image_id` is tombstoned by Delete, else OK.
  absl::Status CheckNotDeleted(const std::string& image_id);
  // Ends `image_id`'s receive (releasing its pins), waits for a Commit of it
  // already running, tombstones the id if it did either, then
  // ImageStore::DeleteImage. A sender's Commit racing with Delete thus either
  // commits before the store delete (and the image is deleted) or is
  // refused. OK if it deleted an image or ended a receive or commit (a
  // receive in progress is "the image" the caller wants gone); NOT_FOUND if
  // there was none of these; INVALID_ARGUMENT for a malformed id. Deleting a
  // committed image leaves no tombstone, so it can be copied here again at
  // once; nor does a delete that found nothing, so a sender with no receive
  // open (an all-zero image skips FindMissing) can still commit after it.
  absl::Status Delete(const std::string& image_id);

  // Ends `image_id`'s receive, if any, releasing its pins, without a
  // tombstone: after a PutChunks stream failed its checks, a sender that
  // lied (or broke) must not keep chunks pinned for the idle timeout; its
  // next attempt starts a new receive.
  void Abandon(const std::string& image_id);

  // Ends receives idle for longer than `idle_timeout` (their pins go) and
  // expired tombstones. Other calls do it too; garbage collection calls it
  // first, so a cut-off receive nobody resumes does not pin chunks forever.
  void ExpireIdle();

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
  absl::Status CheckNotDeletedLocked(const std::string& image_id, absl::Time now)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  ImageStore* const store_;
  const absl::Duration idle_timeout_;
  const absl::Duration tombstone_ttl_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, Receive> receives_ ABSL_GUARDED_BY(mu_);
  // Commit calls inside ImportManifest, per image id.
  absl::flat_hash_map<std::string, int> committing_ ABSL_GUARDED_BY(mu_);
  // Ids Delete tombstoned, and when each tombstone ends.
  absl::flat_hash_map<std::string, absl::Time> tombstones_ ABSL_GUARDED_BY(mu_);
};

}  // namespace storaged

#endif  // STORAGED_IMAGE_RECEIVER_H_
