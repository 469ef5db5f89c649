#include "storaged/node_registration.h"

#include <algorithm>
#include <chrono>

#include "common/internal_token.h"
#include "common/log.h"
#include "google/protobuf/util/time_util.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"

namespace storaged {

namespace pb = imagetemplates::storagenode::v1;

namespace {

absl::Duration FromProto(const google::protobuf::Duration& d, absl::Duration fallback) {
  absl::Duration out = absl::Nanoseconds(google::protobuf::util::TimeUtil::DurationToNanoseconds(d));
  return out > absl::ZeroDuration() ? out : fallback;
}

}  // namespace

NodeRegistration::NodeRegistration(NodeRegistrationOptions options, StatusSource status)
    : options_(std::move(options)),
      status_(std::move(status)),
      stub_(pb::NodeRegistry::NewStub(
          common::CreateInternalChannel(options_.controlplane, options_.internal_token))),
      interval_(options_.heartbeat_interval) {}

NodeRegistration::~NodeRegistration() {
  stop_.Notify();
  if (thread_.joinable()) thread_.join();
}

void NodeRegistration::Start() {
  thread_ = std::thread([this] { Run(); });
}

void NodeRegistration::Run() {
  absl::Duration delay = absl::ZeroDuration();
  while (!stop_.WaitForNotificationWithTimeout(delay)) delay = Step();
}

absl::Duration NodeRegistration::Step() {
  absl::StatusOr<pb::NodeStatus> status = status_();
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  grpc::Status result;
  if (!registered_) {
    pb::RegisterNodeRequest request;
    request.set_node_id(options_.node_id);
    request.set_datacenter(options_.datacenter);
    request.set_address(options_.address);
    for (const std::string& portal : options_.served_portals) request.add_served_portals(portal);
    if (status.ok()) {
      request.set_capacity_bytes(status->capacity_bytes());
      request.set_version(status->version());
    }
    pb::RegisterNodeResponse response;
    result = stub_->RegisterNode(&context, request, &response);
    if (result.ok()) {
      registered_ = true;
      interval_ = FromProto(response.heartbeat_interval(), options_.heartbeat_interval);
      common::LogInfo("registered with control plane %s as %s in %s", options_.controlplane,
                      options_.node_id, options_.datacenter);
    }
  } else {
    pb::HeartbeatRequest request;
    request.set_node_id(options_.node_id);
    if (status.ok()) *request.mutable_status() = *status;
    pb::HeartbeatResponse response;
    result = stub_->Heartbeat(&context, request, &response);
    if (result.ok()) {
      interval_ = FromProto(response.heartbeat_interval(), interval_);
    } else if (result.error_code() == grpc::StatusCode::NOT_FOUND) {
      common::LogWarning("control plane forgot this node; registering again");
      registered_ = false;
      return absl::ZeroDuration();
    }
  }
  if (result.ok()) {
    backoff_ = absl::Seconds(1);
    last_error_ = grpc::StatusCode::OK;
    return interval_;
  }
  // Log each kind of failure once, not on every retry.
  if (result.error_code() != last_error_) {
    common::LogWarning("control plane %s: %s (retrying)", options_.controlplane,
                       result.error_message());
    last_error_ = result.error_code();
  }
  absl::Duration delay = backoff_;
  backoff_ = std::min(backoff_ * 2, options_.max_backoff);
  return delay;
}

}  // namespace storaged
