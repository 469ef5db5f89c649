// ImageTemplatesClient: the C++ client library of the image templates API
// (api/imagetemplates/v1). It holds one channel and the caller's API key, puts
// a deadline on every call, retries UNAVAILABLE with backoff, gives every
// mutating call a fresh request_id, and follows operations to their end.
//
//   client::ClientOptions options;
//   options.endpoint = "127.0.0.1:7443";
//   options.api_key = key;
//   auto client = client::ImageTemplatesClient::Create(options);
//   v1::CreateImageTemplateRequest request;
//   request.set_server_id(server_id);
//   request.set_name("golden");
//   absl::StatusOr<v1::Operation> op = (*client)->CreateImageTemplate(request);
//   op = (*client)->WaitForOperation(op->id(), [](const v1::Operation& o) {
//     printf("%.0f%%\n", o.progress().percent());
//   });
//
// Any RPC of the API goes through Call():
//   auto pools = client->Call(&v1::InventoryService::Stub::ListIpPools, request);
#ifndef CLIENT_IMAGE_TEMPLATES_CLIENT_H_
#define CLIENT_IMAGE_TEMPLATES_CLIENT_H_

#include <chrono>
#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/message.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "imagetemplates/v1/audit.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"

namespace client {

struct ClientOptions {
  // "host:port" of the controlplane.
  std::string endpoint = "127.0.0.1:7443";
  // Sent as "authorization: Bearer <api_key>" on every call.
  std::string api_key;
  // TLS: when use_tls is set, the channel uses TLS with these PEM root
  // certificates (empty: the system's roots).
  bool use_tls = false;
  std::string tls_root_certs;
  // With use_tls: a client certificate chain and its private key (PEM), both
  // or neither, for a controlplane that requires client certificates
  // (--tls-client-ca-file).
  std::string tls_cert_chain;
  std::string tls_private_key;
  // Deadline of one call, retries included, unless the call names its own.
  absl::Duration timeout = absl::Seconds(30);
  // Attempts per unary call when the answer is UNAVAILABLE (1 = no retry).
  int max_attempts = 5;
  // Backoff between attempts: initial, doubled each time up to max, with
  // +-20% jitter so that many clients do not retry in step.
  absl::Duration initial_backoff = absl::Milliseconds(200);
  absl::Duration max_backoff = absl::Seconds(5);
  // WaitForOperation gives up when the control plane stays unreachable this
  // long (UNAVAILABLE), or the operation has not ended after wait_timeout.
  absl::Duration wait_unavailable_limit = absl::Minutes(2);
  absl::Duration wait_timeout = absl::Hours(6);
};

// Per-call settings.
struct CallOptions {
  // Overrides ClientOptions::timeout when non-zero.
  absl::Duration timeout = absl::ZeroDuration();
};

// A client of one controlplane. Thread-safe: calls may run concurrently from
// many threads. Not copyable.
class ImageTemplatesClient {
 public:
  // INVALID_ARGUMENT if the endpoint is empty, or for a client certificate
  // without its key (or the other way round) or without use_tls. Does not
  // connect yet: the first
  // call does (and a controlplane that is down shows as UNAVAILABLE there).
  static absl::StatusOr<std::unique_ptr<ImageTemplatesClient>> Create(
      const ClientOptions& options);

  // For tests and in-process use: a client over an existing channel.
  ImageTemplatesClient(const ClientOptions& options,
                       std::shared_ptr<grpc::Channel> channel);
  ImageTemplatesClient(const ImageTemplatesClient&) = delete;
  ImageTemplatesClient& operator=(const ImageTemplatesClient&) = delete;

  // Calls any unary RPC of the API, for example
  // Call(&v1::ImageTemplateService::Stub::GetImageTemplate, request).
  //
  // If the request has a `request_id` field (every mutating RPC has one) and
  // it is empty, a fresh random UUID is put there, and the same one is sent on
  // every retry, so the server applies the call at most once. Every call is
  // retried on UNAVAILABLE (reads are idempotent; mutating calls are made so by
  // their request_id) until max_attempts or the deadline.
  //
  // Errors are the server's code and message as absl::Status; a deadline that
  // passes is DEADLINE_EXCEEDED; an unreachable controlplane UNAVAILABLE.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (Stub::*rpc)(grpc::ClientContext*,
                                                          const Request&,
                                                          Response*),
                                Request request,
                                const CallOptions& call_options = {}) {
    Stub* stub = StubFor(static_cast<Stub*>(nullptr));
    Response response;
    absl::Status status = Invoke(
        &request,
        [&](grpc::ClientContext* context) {
          response.Clear();
          return (stub->*rpc)(context, request, &response);
        },
        call_options);
    if (!status.ok()) return status;
    return response;
  }

  // Shorthands for the main flows; each is Call() on the named RPC.
  absl::StatusOr<imagetemplates::v1::Operation> CreateImageTemplate(
      imagetemplates::v1::CreateImageTemplateRequest request);
  absl::StatusOr<imagetemplates::v1::Operation> DeployImageTemplate(
      imagetemplates::v1::DeployImageTemplateRequest request);
  absl::StatusOr<imagetemplates::v1::ImageTemplate> GetImageTemplate(
      const std::string& id);
  absl::StatusOr<imagetemplates::v1::Operation> GetOperation(
      const std::string& id);

  // Follows operation `id` with WatchOperation until it is terminal, calling
  // `progress` (if set) with every update, and returns the terminal
  // Operation. A FAILED or CANCELLED operation is an OK result here: look at
  // its state and error. When the stream breaks with UNAVAILABLE (a restarted
  // control plane), it watches again after a backoff, for up to
  // wait_unavailable_limit of unreachability.
  // NOT_FOUND, INVALID_ARGUMENT or UNAUTHENTICATED from the server;
  // UNAVAILABLE past the limit; DEADLINE_EXCEEDED after wait_timeout.
  absl::StatusOr<imagetemplates::v1::Operation> WaitForOperation(
      const std::string& id,
      const std::function<void(const imagetemplates::v1::Operation&)>&
          progress = nullptr);

  // A random RFC 4122 version 4 UUID, as used for request_id.
  static std::string NewRequestId();

  // True for SUCCEEDED, FAILED and CANCELLED.
  static bool IsTerminal(imagetemplates::v1::OperationState state);

  const ClientOptions& options() const { return options_; }

 private:
  // Runs `attempt` with retries; see Call(). Fills the request_id of
  // `request` first when it has an empty one.
  absl::Status Invoke(
      google::protobuf::Message* request,
      const std::function<grpc::Status(grpc::ClientContext*)>& attempt,
      const CallOptions& call_options);
  void Prepare(grpc::ClientContext* context,
               std::chrono::system_clock::time_point deadline) const;
  absl::Duration Backoff(int attempt) const;

  imagetemplates::v1::ImageTemplateService::Stub* StubFor(
      imagetemplates::v1::ImageTemplateService::Stub*) {
    return templates_.get();
  }
  imagetemplates::v1::OperationService::Stub* StubFor(
      imagetemplates::v1::OperationService::Stub*) {
    return operations_.get();
  }
  imagetemplates::v1::IdentityService::Stub* StubFor(
      imagetemplates::v1::IdentityService::Stub*) {
    return identity_.get();
  }
  imagetemplates::v1::InventoryService::Stub* StubFor(
      imagetemplates::v1::InventoryService::Stub*) {
    return inventory_.get();
  }
  imagetemplates::v1::AuditService::Stub* StubFor(
      imagetemplates::v1::AuditService::Stub*) {
    return audit_.get();
  }

  const ClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<imagetemplates::v1::ImageTemplateService::Stub> templates_;
  std::unique_ptr<imagetemplates::v1::OperationService::Stub> operations_;
  std::unique_ptr<imagetemplates::v1::IdentityService::Stub> identity_;
  std::unique_ptr<imagetemplates::v1::InventoryService::Stub> inventory_;
  std::unique_ptr<imagetemplates::v1::AuditService::Stub> audit_;
};

}  // namespace client

#endif  // CLIENT_IMAGE_TEMPLATES_CLIENT_H_
