// An in-memory storage node for workflow tests: images are names with a
// digest, nothing touches a volume; SendImage copies an image to the peer fake
// registered under the address (the digest travels, like the real copy). Switches fail capture, restore or the
// config drive with a given status (the next N calls or all of them), hold
// calls until released (or until the call's cancel flag is raised, like the
// real client), and count calls.
#ifndef CONTROLPLANE_TESTING_STORAGE_NODE_CLIENT_FAKE_H_
#define CONTROLPLANE_TESTING_STORAGE_NODE_CLIENT_FAKE_H_

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "controlplane/storage_node_client.h"

namespace controlplane {

// Thread-safe. One per node; Borrow() hands StorageNodeDirectory clients
// that use it, so the test keeps ownership and its switches.
class FakeStorageNodeClient final : public StorageNodeClient {
 public:
  enum Call { kCapture, kRestore, kConfigDrive, kDelete, kGetImage, kSend };

  explicit FakeStorageNodeClient(std::string node_id, uint64_t volume_size = 1 << 20)
      : node_id_(std::move(node_id)), volume_size_(volume_size) {}
  FakeStorageNodeClient(const FakeStorageNodeClient&) = delete;
  FakeStorageNodeClient& operator=(const FakeStorageNodeClient&) = delete;

  // The next `times` calls of `call` (-1: every call) return `status`.
  void Fail(Call call, absl::Status status, int times = -1) {
    absl::MutexLock lock(&mu_);
    failures_[call] = {std::move(status), times};
  }
  // Calls of `call` wait (after counting) until Release or their cancel flag.
  void Block(Call call) {
    absl::MutexLock lock(&mu_);
    blocked_[call] = true;
  }
  void Release(Call call) {
    absl::MutexLock lock(&mu_);
    blocked_[call] = false;
  }
  // Calls of `call` made so far, and calls now waiting in Block.
  int calls(Call call) const {
    absl::MutexLock lock(&mu_);
    auto it = calls_.find(call);
    return it == calls_.end() ? 0 : it->second;
  }
  int waiting() const {
    absl::MutexLock lock(&mu_);
    return waiting_;
  }
  // Image id -> manifest digest of the images this node holds.
  std::map<std::string, std::string> images() const {
    absl::MutexLock lock(&mu_);
    return images_;
  }
  void AddImage(const std::string& image_id, const std::string& digest) {
    absl::MutexLock lock(&mu_);
    images_[image_id] = digest;
  }
  // Config drives written: target url -> network-config.
  std::map<std::string, std::string> config_drives() const {
    absl::MutexLock lock(&mu_);
    return config_drives_;
  }

  // The node SendImage reaches at `address`.
  void SetPeer(const std::string& address, FakeStorageNodeClient* peer) {
    absl::MutexLock lock(&mu_);
    peers_[address] = peer;
  }

  // A client for StorageNodeDirectory that forwards to this node.
  std::unique_ptr<StorageNodeClient> Borrow();

  absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> Capture(
      const std::string& image_id, const std::string& source_url,
      const CallOptions& options) override {
    RETURN_IF_ERROR(Enter(kCapture, options));
    if (options.on_progress) options.on_progress({volume_size_ / 2, volume_size_});
    imagetemplates::storagenode::v1::ImageManifestSummary summary;
    summary.set_image_id(image_id);
    summary.set_volume_size_bytes(volume_size_);
    summary.set_stored_bytes(volume_size_ / 4);
    summary.set_manifest_digest(absl::StrCat("sha256:", image_id, "@", node_id_));
    absl::MutexLock lock(&mu_);
    images_[image_id] = summary.manifest_digest();
    return summary;
  }

  absl::StatusOr<imagetemplates::storagenode::v1::RestoreSummary> Restore(
      const std::string& image_id, const std::string& target_url,
      const std::string& expected_manifest_digest, const CallOptions& options) override {
    RETURN_IF_ERROR(Enter(kRestore, options));
    absl::MutexLock lock(&mu_);
    auto it = images_.find(image_id);
    if (it == images_.end()) {
      return absl::NotFoundError(absl::StrCat("image ", image_id, " not found"));
    }
    if (it->second != expected_manifest_digest) {
      return absl::FailedPreconditionError("manifest digest differs");
    }
    imagetemplates::storagenode::v1::RestoreSummary summary;
    summary.set_image_id(image_id);
    summary.set_manifest_digest(it->second);
    restored_.push_back(target_url);
    return summary;
  }

  absl::Status WriteConfigDrive(
      const imagetemplates::storagenode::v1::WriteConfigDriveRequest& request,
      const CallOptions& options) override {
    RETURN_IF_ERROR(Enter(kConfigDrive, options));
    absl::MutexLock lock(&mu_);
    config_drives_[request.target_url()] = request.network_config();
    return absl::OkStatus();
  }

  absl::Status DeleteImage(const std::string& image_id, const CallOptions& options) override {
    RETURN_IF_ERROR(Enter(kDelete, options));
    absl::MutexLock lock(&mu_);
    images_.erase(image_id);
    return absl::OkStatus();
  }

  absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> GetImage(
      const std::string& image_id, const CallOptions& options) override {
    RETURN_IF_ERROR(Enter(kGetImage, options));
    absl::MutexLock lock(&mu_);
    auto it = images_.find(image_id);
    if (it == images_.end()) {
      return absl::NotFoundError(absl::StrCat("image ", image_id, " not found"));
    }
    imagetemplates::storagenode::v1::ImageManifestSummary summary;
    summary.set_image_id(image_id);
    summary.set_manifest_digest(it->second);
    return summary;
  }

  absl::StatusOr<imagetemplates::storagenode::v1::SendImageSummary> SendImage(
      const std::string& image_id, const std::string& peer_address,
      const CallOptions& options) override {
    RETURN_IF_ERROR(Enter(kSend, options));
    std::string digest;
    FakeStorageNodeClient* peer = nullptr;
    {
      absl::MutexLock lock(&mu_);
      auto it = images_.find(image_id);
      if (it == images_.end()) {
        return absl::NotFoundError(absl::StrCat("image ", image_id, " not found"));
      }
      digest = it->second;
      auto p = peers_.find(peer_address);
      if (p == peers_.end()) {
        return absl::UnavailableError(absl::StrCat("peer ", peer_address, " unreachable"));
      }
      peer = p->second;
    }
    if (options.on_progress) options.on_progress({1, 2});
    imagetemplates::storagenode::v1::SendImageSummary summary;
    summary.set_image_id(image_id);
    summary.set_manifest_digest(digest);
    {
      absl::MutexLock lock(&peer->mu_);
      auto there = peer->images_.find(image_id);
      if (there != peer->images_.end()) {
        if (there->second != digest) {
          return absl::AlreadyExistsError(absl::StrCat("peer holds ", image_id, " differently"));
        }
        summary.set_already_present(true);
        return summary;
      }
      peer->images_[image_id] = digest;
    }
    summary.set_chunks_sent(4);
    summary.set_bytes_sent(volume_size_ / 4);
    return summary;
  }

 private:
  // Counts the call, waits while blocked, then returns the switched failure
  // if any. CANCELLED once the call's cancel flag is raised.
  absl::Status Enter(Call call, const CallOptions& options) {
    absl::MutexLock lock(&mu_);
    ++calls_[call];
    ++waiting_;
    while (blocked_[call]) {
      if (options.cancelled != nullptr && options.cancelled->load()) {
        --waiting_;
        return absl::CancelledError("call cancelled");
      }
      mu_.AwaitWithTimeout(absl::Condition(+[](bool* b) { return !*b; }, &blocked_[call]),
                           absl::Milliseconds(10));
    }
    --waiting_;
    if (options.cancelled != nullptr && options.cancelled->load()) {
      return absl::CancelledError("call cancelled");
    }
    auto it = failures_.find(call);
    if (it == failures_.end() || it->second.second == 0) return absl::OkStatus();
    if (it->second.second > 0) --it->second.second;
    return it->second.first;
  }

  const std::string node_id_;
  const uint64_t volume_size_;
  mutable absl::Mutex mu_;
  std::map<Call, std::pair<absl::Status, int>> failures_ ABSL_GUARDED_BY(mu_);
  std::map<Call, bool> blocked_ ABSL_GUARDED_BY(mu_);
  std::map<Call, int> calls_ ABSL_GUARDED_BY(mu_);
  int waiting_ ABSL_GUARDED_BY(mu_) = 0;
  std::map<std::string, std::string> images_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, FakeStorageNodeClient*> peers_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::string> config_drives_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> restored_ ABSL_GUARDED_BY(mu_);
};

namespace internal {

// What Borrow hands out: every call goes to the fake node.
class BorrowedStorageNodeClient final : public StorageNodeClient {
 public:
  explicit BorrowedStorageNodeClient(FakeStorageNodeClient* node) : node_(node) {}
  absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> Capture(
      const std::string& image_id, const std::string& source_url,
      const CallOptions& options) override {
    return node_->Capture(image_id, source_url, options);
  }
  absl::StatusOr<imagetemplates::storagenode::v1::RestoreSummary> Restore(
      const std::string& image_id, const std::string& target_url,
      const std::string& expected_manifest_digest, const CallOptions& options) override {
    return node_->Restore(image_id, target_url, expected_manifest_digest, options);
  }
  absl::Status WriteConfigDrive(
      const imagetemplates::storagenode::v1::WriteConfigDriveRequest& request,
      const CallOptions& options) override {
    return node_->WriteConfigDrive(request, options);
  }
  absl::Status DeleteImage(const std::string& image_id, const CallOptions& options) override {
    return node_->DeleteImage(image_id, options);
  }
  absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> GetImage(
      const std::string& image_id, const CallOptions& options) override {
    return node_->GetImage(image_id, options);
  }
  absl::StatusOr<imagetemplates::storagenode::v1::SendImageSummary> SendImage(
      const std::string& image_id, const std::string& peer_address,
      const CallOptions& options) override {
    return node_->SendImage(image_id, peer_address, options);
  }

 private:
  FakeStorageNodeClient* const node_;
};

}  // namespace internal

inline std::unique_ptr<StorageNodeClient> FakeStorageNodeClient::Borrow() {
  return std::make_unique<internal::BorrowedStorageNodeClient>(this);
}

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_STORAGE_NODE_CLIENT_FAKE_H_
