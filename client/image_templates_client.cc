#include "client/image_templates_client.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace client {

namespace v1 = imagetemplates::v1;

namespace {

std::mt19937_64& Rng() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return rng;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ImageTemplatesClient>> ImageTemplatesClient::Create(
    const ClientOptions& options) {
  if (options.endpoint.empty()) {
    return absl::InvalidArgumentError("endpoint is empty; want host:port of the controlplane");
  }
  if (options.tls_cert_chain.empty() != options.tls_private_key.empty()) {
    return absl::InvalidArgumentError(
        "a client certificate needs its private key, and a key its certificate; give both");
  }
  if (!options.tls_cert_chain.empty() && !options.use_tls) {
    return absl::InvalidArgumentError("a client certificate is only sent over TLS; set use_tls");
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  if (options.use_tls) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = options.tls_root_certs;
    ssl.pem_cert_chain = options.tls_cert_chain;
    ssl.pem_private_key = options.tls_private_key;
    credentials = grpc::SslCredentials(ssl);
  } else {
    credentials = grpc::InsecureChannelCredentials();
  }
  return std::make_unique<ImageTemplatesClient>(
      options, grpc::CreateChannel(options.endpoint, credentials));
}

ImageTemplatesClient::ImageTemplatesClient(const ClientOptions& options,
                                           std::shared_ptr<grpc::Channel> channel)
    : options_(options),
      channel_(std::move(channel)),
      templates_(v1::ImageTemplateService::NewStub(channel_)),
      operations_(v1::OperationService::NewStub(channel_)),
      identity_(v1::IdentityService::NewStub(channel_)),
      inventory_(v1::InventoryService::NewStub(channel_)),
      audit_(v1::AuditService::NewStub(channel_)) {}

std::string ImageTemplatesClient::NewRequestId() {
  uint64_t hi = Rng()();
  uint64_t lo = Rng()();
  hi = (hi & ~0xF000ull) | 0x4000ull;                  // version 4
  lo = (lo & ~(3ull << 62)) | (2ull << 62);            // RFC 4122 variant
  return absl::StrFormat("%08x-%04x-%04x-%04x-%012x", hi >> 32, (hi >> 16) & 0xFFFF,
                         hi & 0xFFFF, lo >> 48, lo & 0xFFFFFFFFFFFFull);
}

bool ImageTemplatesClient::IsTerminal(v1::OperationState state) {
  return state == v1::OPERATION_STATE_SUCCEEDED || state == v1::OPERATION_STATE_FAILED ||
         state == v1::OPERATION_STATE_CANCELLED;
}

void ImageTemplatesClient::Prepare(grpc::ClientContext* context,
                                   std::chrono::system_clock::time_point deadline) const {
  context->set_deadline(deadline);
  if (!options_.api_key.empty()) {
    context->AddMetadata("authorization", "Bearer " + options_.api_key);
  }
}

absl::Duration ImageTemplatesClient::Backoff(int attempt) const {
  absl::Duration backoff = options_.initial_backoff;
  for (int i = 1; i < attempt && backoff < options_.max_backoff; ++i) backoff *= 2;
  backoff = std::min(backoff, options_.max_backoff);
  std::uniform_real_distribution<double> jitter(0.8, 1.2);
  return backoff * jitter(Rng());
}

absl::Status ImageTemplatesClient::Invoke(
    google::protobuf::Message* request,
    const std::function<grpc::Status(grpc::ClientContext*)>& attempt,
    const CallOptions& call_options) {
  // Every mutating request has a string request_id; one chosen here stays the
  // same across this call's retries so the server applies it at most once.
  const google::protobuf::FieldDescriptor* request_id =
      request->GetDescriptor()->FindFieldByName("request_id");
  if (request_id != nullptr &&
      request_id->type() == google::protobuf::FieldDescriptor::TYPE_STRING &&
      !request_id->is_repeated() &&
      request->GetReflection()->GetString(*request, request_id).empty()) {
    request->GetReflection()->SetString(request, request_id, NewRequestId());
  }
  const absl::Duration timeout =
      call_options.timeout > absl::ZeroDuration() ? call_options.timeout : options_.timeout;
  const absl::Time deadline = absl::Now() + timeout;
  for (int n = 1;; ++n) {
    grpc::ClientContext context;
    Prepare(&context, absl::ToChronoTime(deadline));
    grpc::Status status = attempt(&context);
    if (status.ok()) return absl::OkStatus();
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE || n >= options_.max_attempts) {
      return common::FromGrpcStatus(status);
    }
    const absl::Duration backoff = Backoff(n);
    if (absl::Now() + backoff >= deadline) return common::FromGrpcStatus(status);
    absl::SleepFor(backoff);
  }
}

absl::StatusOr<v1::Operation> ImageTemplatesClient::CreateImageTemplate(
    v1::CreateImageTemplateRequest request) {
  return Call(&v1::ImageTemplateService::Stub::CreateImageTemplate, std::move(request));
}

absl::StatusOr<v1::Operation> ImageTemplatesClient::DeployImageTemplate(
    v1::DeployImageTemplateRequest request) {
  return Call(&v1::ImageTemplateService::Stub::DeployImageTemplate, std::move(request));
}

absl::StatusOr<v1::ImageTemplate> ImageTemplatesClient::GetImageTemplate(
    const std::string& id) {
  v1::GetImageTemplateRequest request;
  request.set_id(id);
  auto response = Call(&v1::ImageTemplateService::Stub::GetImageTemplate, request);
  if (!response.ok()) return response.status();
  return response->image_template();
}

absl::StatusOr<v1::Operation> ImageTemplatesClient::GetOperation(const std::string& id) {
  v1::GetOperationRequest request;
  request.set_id(id);
  return Call(&v1::OperationService::Stub::GetOperation, request);
}

absl::StatusOr<v1::Operation> ImageTemplatesClient::WaitForOperation(
    const std::string& id, const std::function<void(const v1::Operation&)>& progress) {
  const absl::Time deadline = absl::Now() + options_.wait_timeout;
  absl::Time unavailable_since = absl::InfiniteFuture();
  int failures = 0;
  v1::WatchOperationRequest request;
  request.set_id(id);
  while (true) {
    grpc::ClientContext context;
    Prepare(&context, absl::ToChronoTime(deadline));
    std::unique_ptr<grpc::ClientReader<v1::Operation>> reader =
        operations_->WatchOperation(&context, request);
    v1::Operation operation;
    bool terminal = false;
    while (reader->Read(&operation)) {
      unavailable_since = absl::InfiniteFuture();
      failures = 0;
      if (progress) progress(operation);
      if (IsTerminal(operation.state())) {
        terminal = true;
        // The server closes the stream itself; cancelling only saves waiting
        // for that when a terminal state is all we need.
        context.TryCancel();
        break;
      }
    }
    grpc::Status status = reader->Finish();
    if (terminal) return operation;
    if (status.ok()) {
      // Ended without a terminal state (the server stopped mid-watch): watch
      // again at once.
      continue;
    }
    if (status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED && absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("operation ", id, " did not end within ",
                       absl::FormatDuration(options_.wait_timeout)));
    }
    if (status.error_code() != grpc::StatusCode::UNAVAILABLE) {
      return common::FromGrpcStatus(status);
    }
    const absl::Time now = absl::Now();
    if (unavailable_since == absl::InfiniteFuture()) unavailable_since = now;
    if (now - unavailable_since >= options_.wait_unavailable_limit) {
      return absl::UnavailableError(
          absl::StrCat("lost the control plane for ",
                       absl::FormatDuration(now - unavailable_since), " while watching operation ",
                       id, ": ", status.error_message()));
    }
    absl::SleepFor(Backoff(++failures));
  }
}

}  // namespace client
