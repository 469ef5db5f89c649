// The sending side of SendImage: copies one committed image of this node's
// store to a peer storaged over the StorageNode API, sending only the chunks
// the peer lacks. Push: the source calls the destination, which needs no
// knowledge of the source.
//
//   GetImage          peer already holds it with the same digest: done, nothing sent
//   FindMissingChunks batches of 4096 digests; the peer pins them for this image
//   PutChunks         one stream of frames: stored frames made only of missing
//                     chunks are forwarded as stored; other missing chunks are
//                     checked and recompressed into new frames
//   PutManifest       the manifest file byte for byte, committed durably
#ifndef STORAGED_IMAGE_COPIER_H_
#define STORAGED_IMAGE_COPIER_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "storaged/image_store.h"

namespace storaged {

struct SendProgress {
  uint64_t chunks_total = 0;    // Distinct stored chunks of the image.
  uint64_t chunks_sent = 0;
  uint64_t chunks_skipped = 0;  // The peer had them.
  uint64_t bytes_sent = 0;      // Chunk and frame payload, as encoded.
  uint64_t frames_forwarded = 0;
  uint64_t frames_built = 0;
  bool already_present = false;
  // Set at the end: the digest the peer committed, "sha256:<hex>".
  std::string manifest_digest;
};

struct SendOptions {
  // Polled between frames and by a watcher that cancels the RPC in flight.
  const std::atomic<bool>* cancelled = nullptr;
  // Called on the sending thread at most every `progress_interval`, and once
  // at the end.
  std::function<void(const SendProgress&)> on_progress;
  absl::Duration progress_interval = absl::Milliseconds(250);
  // Deadline of each unary call to the peer; PutManifest's grows by a
  // second per MB of manifest.
  absl::Duration call_timeout = absl::Seconds(60);
  // PutManifest sends the manifest in messages of this many bytes. One
  // message up to 48 MiB, as PutManifest was unary before: a node not yet
  // upgraded still takes every manifest that fitted then.
  size_t manifest_piece_bytes = 48 << 20;
};

// Copies image `image_id` of `store` to `peer`. Errors: NOT_FOUND (no such
// image here); DATA_LOSS (a local chunk is corrupt, or the peer rejected
// one); ALREADY_EXISTS (the peer holds the id with another digest);
// CANCELLED; and the peer's own (UNAVAILABLE, RESOURCE_EXHAUSTED, ...),
// with messages that say which side failed. On any error the peer has no
// image under this id.
absl::StatusOr<SendProgress> SendImage(
    ImageStore& store, const std::string& image_id,
    imagetemplates::storagenode::v1::StorageNode::StubInterface& peer,
    const SendOptions& options);

// A stub for the storaged at `address` ("host:port") with message limits
// that fit a frame; every call carries `internal_token` unless it is empty.
std::unique_ptr<imagetemplates::storagenode::v1::StorageNode::StubInterface>
NewPeerStub(const std::string& address, const std::string& internal_token = "");

}  // namespace storaged

#endif  // STORAGED_IMAGE_COPIER_H_
