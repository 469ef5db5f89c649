#include "controlplane/storage_node_client.h"

#include <chrono>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_cancel_propagator.h"
#include "common/grpc_status.h"
#include "common/internal_token.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace controlplane {

namespace pb = imagetemplates::storagenode::v1;

namespace {

// Runs `attempt` until it succeeds, fails with something other than
// UNAVAILABLE, the attempts run out, or the caller cancels.
template <typename T>
absl::StatusOr<T> WithRetries(const CallOptions& options,
                              const std::function<absl::StatusOr<T>()>& attempt) {
  absl::Duration backoff = options.initial_backoff;
  absl::StatusOr<T> result = absl::UnknownError("not attempted");
  for (int i = 0; i < std::max(1, options.max_attempts); ++i) {
    if (options.cancelled != nullptr && options.cancelled->load()) {
      return absl::CancelledError("cancelled");
    }
    result = attempt();
    if (result.ok() || result.status().code() != absl::StatusCode::kUnavailable) return result;
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(10));
  }
  return result;
}

class GrpcStorageNodeClient final : public StorageNodeClient {
 public:
  GrpcStorageNodeClient(const std::string& address, const std::string& internal_token)
      : address_(address) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(64 << 20);
    stub_ = pb::StorageNode::NewStub(
        common::CreateInternalChannel(address, internal_token, args));
  }

  absl::StatusOr<pb::ImageManifestSummary> Capture(const std::string& image_id,
                                                   const std::string& source_url,
                                                   const CallOptions& options) override {
    return WithRetries<pb::ImageManifestSummary>(
        options, [&]() -> absl::StatusOr<pb::ImageManifestSummary> {
          grpc::ClientContext context;
          common::GrpcCancelPropagator cancel(&context, options.cancelled);
          pb::CaptureVolumeRequest request;
          request.set_image_id(image_id);
          request.set_source_url(source_url);
          auto reader = stub_->CaptureVolume(&context, request);
          pb::CaptureVolumeProgress progress;
          pb::ImageManifestSummary summary;
          bool done = false;
          while (reader->Read(&progress)) {
            if (options.on_progress) {
              options.on_progress({progress.bytes_scanned(), progress.bytes_total()});
            }
            if (progress.has_summary()) {
              summary = progress.summary();
              done = true;
            }
          }
          absl::Status status = Annotate(common::FromGrpcStatus(reader->Finish()));
          if (!status.ok()) return status;
          if (!done) return absl::InternalError("capture ended without a summary");
          return summary;
        });
  }

  absl::StatusOr<pb::RestoreSummary> Restore(const std::string& image_id,
                                             const std::string& target_url,
                                             const std::string& expected_manifest_digest,
                                             const CallOptions& options) override {
    return WithRetries<pb::RestoreSummary>(options, [&]() -> absl::StatusOr<pb::RestoreSummary> {
      grpc::ClientContext context;
      common::GrpcCancelPropagator cancel(&context, options.cancelled);
      pb::RestoreVolumeRequest request;
      request.set_image_id(image_id);
      request.set_target_url(target_url);
      request.set_expected_manifest_digest(expected_manifest_digest);
      auto reader = stub_->RestoreVolume(&context, request);
      pb::RestoreVolumeProgress progress;
      pb::RestoreSummary summary;
      bool done = false;
      while (reader->Read(&progress)) {
        if (options.on_progress) {
          options.on_progress({progress.bytes_written(), progress.bytes_total()});
        }
        if (progress.has_summary()) {
          summary = progress.summary();
          done = true;
        }
      }
      absl::Status status = Annotate(common::FromGrpcStatus(reader->Finish()));
      if (!status.ok()) return status;
      if (!done) return absl::InternalError("restore ended without a summary");
      return summary;
    });
  }

  absl::Status WriteConfigDrive(const pb::WriteConfigDriveRequest& request,
                                const CallOptions& options) override {
    return WithRetries<bool>(options, [&]() -> absl::StatusOr<bool> {
             grpc::ClientContext context;
             context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
             common::GrpcCancelPropagator cancel(&context, options.cancelled);
             pb::WriteConfigDriveResponse response;
             absl::Status status =
                 Annotate(common::FromGrpcStatus(stub_->WriteConfigDrive(&context, request, &response)));
             if (!status.ok()) return status;
             return true;
           })
        .status();
  }

  absl::Status DeleteImage(const std::string& image_id, const CallOptions& options) override {
    return WithRetries<bool>(options, [&]() -> absl::StatusOr<bool> {
             grpc::ClientContext context;
             context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
             pb::DeleteImageRequest request;
             request.set_image_id(image_id);
             pb::DeleteImageResponse response;
             absl::Status status =
                 Annotate(common::FromGrpcStatus(stub_->DeleteImage(&context, request, &response)));
             if (!status.ok() && status.code() != absl::StatusCode::kNotFound) return status;
             return true;
           })
        .status();
  }

  absl::StatusOr<pb::ImageManifestSummary> GetImage(const std::string& image_id,
                                                    const CallOptions& options) override {
    return WithRetries<pb::ImageManifestSummary>(
        options, [&]() -> absl::StatusOr<pb::ImageManifestSummary> {
          grpc::ClientContext context;
          context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          pb::GetImageRequest request;
          request.set_image_id(image_id);
          pb::GetImageResponse response;
          absl::Status status =
              Annotate(common::FromGrpcStatus(stub_->GetImage(&context, request, &response)));
          if (!status.ok()) return status;
          return response.summary();
        });
  }

  absl::StatusOr<pb::SendImageSummary> SendImage(const std::string& image_id,
                                                 const std::string& peer_address,
                                                 const CallOptions& options) override {
    return WithRetries<pb::SendImageSummary>(
        options, [&]() -> absl::StatusOr<pb::SendImageSummary> {
          grpc::ClientContext context;
          common::GrpcCancelPropagator cancel(&context, options.cancelled);
          pb::SendImageRequest request;
          request.set_image_id(image_id);
          request.set_peer_address(peer_address);
          auto reader = stub_->SendImage(&context, request);
          pb::SendImageProgress progress;
          pb::SendImageSummary summary;
          bool done = false;
          while (reader->Read(&progress)) {
            if (options.on_progress) {
              options.on_progress({progress.chunks_sent() + progress.chunks_skipped(),
                                   progress.chunks_total()});
            }
            if (progress.has_summary()) {
              summary = progress.summary();
              done = true;
            }
          }
          absl::Status status = Annotate(common::FromGrpcStatus(reader->Finish()));
          if (!status.ok()) return status;
          if (!done) return absl::InternalError("send ended without a summary");
          return summary;
        });
  }

 private:
  // Names the node in every error, so an operation's error says where.
  absl::Status Annotate(const absl::Status& status) const {
    if (status.ok()) return status;
    return absl::Status(status.code(),
                        absl::StrCat("storage node ", address_, ": ", status.message()));
  }

  const std::string address_;
  std::unique_ptr<pb::StorageNode::Stub> stub_;
};

}  // namespace

std::unique_ptr<StorageNodeClient> NewGrpcStorageNodeClient(const std::string& address,
                                                            const std::string& internal_token) {
  return std::make_unique<GrpcStorageNodeClient>(address, internal_token);
}

}  // namespace controlplane
