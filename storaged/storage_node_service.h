// The gRPC adapter of storaged: the internal StorageNode API over one
// ImageStore. Handlers translate requests, run the capture/restore engines
// and stream progress; they hold no storage logic of their own.
#ifndef STORAGED_STORAGE_NODE_SERVICE_H_
#define STORAGED_STORAGE_NODE_SERVICE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/internal_token.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "storaged/image_receiver.h"
#include "storaged/image_store.h"
#include "storaged/volume.h"

namespace storaged {

// Opens a volume by iSCSI URL; tests substitute fault-injecting volumes.
using VolumeOpener =
    std::function<absl::StatusOr<std::unique_ptr<Volume>>(const std::string& url)>;

// Thread-safe: gRPC runs handlers concurrently.
class StorageNodeService final
    : public imagetemplates::storagenode::v1::StorageNode::Service {
 public:
  // `store` must outlive the service. It may be null while the store cannot
  // be opened: every RPC then answers UNAVAILABLE until AttachStore.
  StorageNodeService(std::string node_id, ImageStore* store, VolumeOpener open_volume);

  void AttachStore(ImageStore* store);
  // From now on every RPC must carry "authorization: Bearer <token>"
  // (UNAUTHENTICATED otherwise), and SendImage sends it to its peer. Call
  // before serving. Without it every caller is accepted (standalone use).
  void RequireInternalToken(const std::string& token);
  // Largest manifest PutManifest accepts (1 GiB: images of up to ~32 Mi data
  // chunks, 512 GiB at 16 KiB); the whole manifest is held in memory. It is
  // also what all PutManifest calls at once may hold together: a call that
  // would pass it gets UNAVAILABLE (the sender's copy step retries), so
  // concurrent copies cost no more memory than one of the largest.
  void set_max_manifest_bytes(uint64_t bytes) { max_manifest_bytes_ = bytes; }
  uint64_t manifest_bytes_held() {
    absl::MutexLock lock(&manifest_mu_);
    return manifest_bytes_held_;
  }

  grpc::Status CaptureVolume(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::CaptureVolumeRequest* request,
      grpc::ServerWriter<imagetemplates::storagenode::v1::CaptureVolumeProgress>* writer)
      override;
  grpc::Status RestoreVolume(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::RestoreVolumeRequest* request,
      grpc::ServerWriter<imagetemplates::storagenode::v1::RestoreVolumeProgress>* writer)
      override;
  grpc::Status WriteConfigDrive(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::WriteConfigDriveRequest* request,
      imagetemplates::storagenode::v1::WriteConfigDriveResponse* response) override;
  grpc::Status VerifyImage(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::VerifyImageRequest* request,
      grpc::ServerWriter<imagetemplates::storagenode::v1::VerifyImageProgress>* writer)
      override;
  grpc::Status DeleteImage(grpc::ServerContext* context,
                           const imagetemplates::storagenode::v1::DeleteImageRequest* request,
                           imagetemplates::storagenode::v1::DeleteImageResponse* response)
      override;
  grpc::Status GetImage(grpc::ServerContext* context,
                        const imagetemplates::storagenode::v1::GetImageRequest* request,
                        imagetemplates::storagenode::v1::GetImageResponse* response) override;
  grpc::Status CollectGarbage(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::CollectGarbageRequest* request,
      imagetemplates::storagenode::v1::CollectGarbageResponse* response) override;
  grpc::Status SendImage(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::SendImageRequest* request,
      grpc::ServerWriter<imagetemplates::storagenode::v1::SendImageProgress>* writer) override;
  grpc::Status FindMissingChunks(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::FindMissingChunksRequest* request,
      imagetemplates::storagenode::v1::FindMissingChunksResponse* response) override;
  grpc::Status PutChunks(
      grpc::ServerContext* context,
      grpc::ServerReader<imagetemplates::storagenode::v1::PutChunksRequest>* reader,
      imagetemplates::storagenode::v1::PutChunksResponse* response) override;
  grpc::Status PutManifest(
      grpc::ServerContext* context,
      grpc::ServerReader<imagetemplates::storagenode::v1::PutManifestRequest>* reader,
      imagetemplates::storagenode::v1::PutManifestResponse* response) override;
  grpc::Status GetNodeStatus(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::GetNodeStatusRequest* request,
      imagetemplates::storagenode::v1::GetNodeStatusResponse* response) override;

  // The status snapshot GetNodeStatus returns (also sent with heartbeats).
  absl::StatusOr<imagetemplates::storagenode::v1::NodeStatus> Status() const;

  // Store maintenance (storaged/store_maintenance.h); both show as node jobs.
  // A collection as CollectGarbage does it. UNAVAILABLE without a store.
  absl::StatusOr<GcResult> CollectGarbageNow(bool dry_run);
  // Verifies every image, logging each one with damage; stops early once
  // `stop` is set. The first error that is not about the data, if any.
  absl::Status ScrubImages(const std::atomic<bool>& stop);
  // Called after every image this service deletes. Set before serving.
  void OnImageDeleted(std::function<void()> callback) { on_image_deleted_ = std::move(callback); }

 private:
  class JobScope;
  class ManifestReservation;
  struct Job {
    imagetemplates::storagenode::v1::NodeJobKind kind;
    std::string image_id;
    absl::Time start;
    uint64_t bytes_done = 0;
    uint64_t bytes_total = 0;
  };

  absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> Summarize(
      ImageStore& store, const std::string& image_id) const;
  absl::StatusOr<ImageStore*> Store() const;
  // The receiver over the attached store; UNAVAILABLE as Store().
  absl::StatusOr<ImageReceiver*> Receiver();

  const std::string node_id_;
  std::atomic<ImageStore*> store_;
  const VolumeOpener open_volume_;
  const absl::Time start_time_;
  // Set before serving, read-only afterwards.
  std::function<void()> on_image_deleted_;
  std::string internal_token_;
  common::InternalTokenVerifier verifier_;

  absl::Mutex receiver_mu_;
  std::unique_ptr<ImageReceiver> receiver_ ABSL_GUARDED_BY(receiver_mu_);

  mutable absl::Mutex mu_;
  uint64_t next_job_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, Job> jobs_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> max_manifest_bytes_{uint64_t{1} << 30};
  // Manifest bytes the PutManifest calls in progress hold between them.
  absl::Mutex manifest_mu_;
  uint64_t manifest_bytes_held_ ABSL_GUARDED_BY(manifest_mu_) = 0;
};

}  // namespace storaged

#endif  // STORAGED_STORAGE_NODE_SERVICE_H_
