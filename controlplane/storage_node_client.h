// The control plane's side of the internal storage-node API: capture,
// restore and config-drive calls to one storaged, with progress callbacks,
// cancellation, and retries with backoff on UNAVAILABLE.
#ifndef CONTROLPLANE_STORAGE_NODE_CLIENT_H_
#define CONTROLPLANE_STORAGE_NODE_CLIENT_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"

namespace controlplane {

struct TransferProgress {
  uint64_t bytes_done = 0;
  uint64_t bytes_total = 0;
};

struct CallOptions {
  // Polled at least every 100 ms; cancels the call in flight (CANCELLED).
  const std::atomic<bool>* cancelled = nullptr;
  std::function<void(const TransferProgress&)> on_progress;
  // Total attempts for UNAVAILABLE (node restarting, network blip).
  int max_attempts = 5;
  absl::Duration initial_backoff = absl::Milliseconds(500);
};

// Thread-safe; one per storage node address.
class StorageNodeClient {
 public:
  virtual ~StorageNodeClient() = default;

  // CaptureVolume to the end. Errors are the node's (see storage_node.proto).
  virtual absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> Capture(
      const std::string& image_id, const std::string& source_url,
      const CallOptions& options) = 0;
  virtual absl::StatusOr<imagetemplates::storagenode::v1::RestoreSummary> Restore(
      const std::string& image_id, const std::string& target_url,
      const std::string& expected_manifest_digest, const CallOptions& options) = 0;
  virtual absl::Status WriteConfigDrive(
      const imagetemplates::storagenode::v1::WriteConfigDriveRequest& request,
      const CallOptions& options) = 0;
  // NOT_FOUND is success: the image is already gone.
  virtual absl::Status DeleteImage(const std::string& image_id, const CallOptions& options) = 0;
  // The committed image's summary; NOT_FOUND if this node lacks it.
  virtual absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> GetImage(
      const std::string& image_id, const CallOptions& options) = 0;
  // SendImage to the end: copies the image to the node at `peer_address`.
  virtual absl::StatusOr<imagetemplates::storagenode::v1::SendImageSummary> SendImage(
      const std::string& image_id, const std::string& peer_address,
      const CallOptions& options) = 0;
};

// Makes a client for the storage node at `address` ("host:port").
using StorageNodeClientFactory =
    std::function<std::unique_ptr<StorageNodeClient>(const std::string& address)>;

// Over gRPC to `address`; every call carries `internal_token` (the storaged's
// --internal-token-file) unless it is empty.
std::unique_ptr<StorageNodeClient> NewGrpcStorageNodeClient(
    const std::string& address, const std::string& internal_token = "");

}  // namespace controlplane

#endif  // CONTROLPLANE_STORAGE_NODE_CLIENT_H_
