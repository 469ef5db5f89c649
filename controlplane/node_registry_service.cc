#include "controlplane/node_registry_service.h"

#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/validation.h"
#include "google/protobuf/util/time_util.h"

namespace controlplane {

namespace pb = imagetemplates::storagenode::v1;
namespace v1 = imagetemplates::v1;

namespace {

constexpr int kMaxPortals = 64;

// "host:port" with a non-empty host and a port 1..65535.
bool IsHostPort(absl::string_view text) {
  size_t colon = text.rfind(':');
  if (colon == absl::string_view::npos || colon == 0 || text.size() > 255)
    return false;
  int port = 0;
  if (!absl::SimpleAtoi(text.substr(colon + 1), &port) || port < 1 ||
      port > 65535)
    return false;
  for (char c : text.substr(0, colon)) {
    if (c <= ' ' || c == '/' || c == '@') return false;
  }
  return true;
}

google::protobuf::Duration ToDuration(absl::Duration d) {
  return google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(d));
}

}  // namespace

std::string NormalizePortal(const std::string& portal) {
  // A bracketed IPv6 literal without a port ends in ']'.
  size_t colon = portal.rfind(':');
  if (colon == std::string::npos || portal.back() == ']')
    return portal + ":3260";
  return portal;
}

NodeRegistry::NodeRegistry(InventoryStore* inventory,
                           NodeRegistryOptions options)
    : inventory_(inventory), options_(std::move(options)) {
  if (!options_.now_micros) options_.now_micros = NowMicros;
  if (options_.missed_heartbeats < 1) options_.missed_heartbeats = 1;
}

NodeRegistry::~NodeRegistry() {
  stop_.Notify();
  if (sweeper_.joinable()) sweeper_.join();
}

absl::StatusOr<pb::RegisterNodeResponse> NodeRegistry::RegisterNode(
    const pb::RegisterNodeRequest& request) {
  RETURN_IF_ERROR(ValidateToken("node_id", request.node_id(), 64, "._-"));
  if (!IsHostPort(request.address())) {
    return absl::InvalidArgumentError(
        "address: the node's gRPC address as host:port");
  }
  if (request.served_portals().empty() ||
      request.served_portals_size() > kMaxPortals) {
    return absl::InvalidArgumentError(absl::StrCat(
        "served_portals: 1..", kMaxPortals, " iSCSI portals as host:port"));
  }
  v1::StorageNode node;
  node.set_id(request.node_id());
  node.set_datacenter(request.datacenter());
  node.set_address(request.address());
  for (const std::string& portal : request.served_portals()) {
    std::string normalized = NormalizePortal(portal);
    if (!IsHostPort(normalized)) {
      return absl::InvalidArgumentError(
          absl::StrCat("served_portals: \"", portal, "\" is not host:port"));
    }
    for (const std::string& seen : node.served_portals()) {
      if (seen == normalized) {
        return absl::InvalidArgumentError(
            absl::StrCat("served_portals: ", portal, " is repeated"));
      }
    }
    node.add_served_portals(normalized);
  }
  node.set_capacity_bytes(static_cast<int64_t>(request.capacity_bytes()));
  *node.mutable_last_heartbeat_time() = ToTimestamp(options_.now_micros());
  // Only for the log: a known id moving elsewhere is legitimate (a restarted
  // node) but is what a stolen token would look like, so say so.
  std::string old_address;
  absl::StatusOr<std::vector<v1::StorageNode>> known =
      inventory_->ReadStorageNodes(request.datacenter());
  if (known.ok()) {
    for (const v1::StorageNode& n : *known) {
      if (n.id() == node.id()) old_address = n.address();
    }
  }
  absl::Status status = inventory_->UpsertStorageNode(node);
  if (absl::IsNotFound(status)) {
    return absl::NotFoundError(
        absl::StrCat("datacenter: ", request.datacenter(),
                     " does not exist; an operator must create it before its "
                     "nodes register"));
  }
  RETURN_IF_ERROR(status);
  if (!old_address.empty() && old_address != node.address()) {
    common::LogWarning("storage node %s in %s moved: %s -> %s", node.id(),
                       node.datacenter(), old_address, node.address());
  }
  common::LogInfo("storage node %s registered in %s at %s", node.id(),
                  node.datacenter(), node.address());
  pb::RegisterNodeResponse response;
  *response.mutable_heartbeat_interval() =
      ToDuration(options_.heartbeat_interval);
  return response;
}

absl::StatusOr<pb::HeartbeatResponse> NodeRegistry::Heartbeat(
    const pb::HeartbeatRequest& request) {
  RETURN_IF_ERROR(ValidateToken("node_id", request.node_id(), 64, "._-"));
  RETURN_IF_ERROR(inventory_->RecordHeartbeat(
      request.node_id(),
      static_cast<int64_t>(request.status().capacity_bytes()),
      static_cast<int64_t>(request.status().free_bytes()),
      options_.now_micros()));
  pb::HeartbeatResponse response;
  *response.mutable_heartbeat_interval() =
      ToDuration(options_.heartbeat_interval);
  return response;
}

absl::StatusOr<std::vector<std::string>> NodeRegistry::SweepOnce() {
  const int64_t cutoff =
      options_.now_micros() - absl::ToInt64Microseconds(liveness_window());
  ASSIGN_OR_RETURN(std::vector<std::string> down,
                   inventory_->MarkStorageNodesDown(cutoff));
  for (const std::string& id : down) {
    common::LogWarning("storage node %s missed %d heartbeats; marked DOWN", id,
                       options_.missed_heartbeats);
  }
  return down;
}

void NodeRegistry::StartSweeper() {
  sweeper_ = std::thread([this] {
    while (!stop_.WaitForNotificationWithTimeout(options_.heartbeat_interval)) {
      absl::StatusOr<std::vector<std::string>> swept = SweepOnce();
      if (!swept.ok())
        common::LogWarning("node sweep: %s", swept.status().ToString());
    }
  });
}

grpc::Status NodeRegistryServiceImpl::RegisterNode(
    grpc::ServerContext* context, const pb::RegisterNodeRequest* request,
    pb::RegisterNodeResponse* response) {
  grpc::Status auth = verifier_->Check(*context, "RegisterNode");
  if (!auth.ok()) return auth;
  absl::StatusOr<pb::RegisterNodeResponse> result =
      registry_->RegisterNode(*request);
  if (!result.ok()) return common::ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

grpc::Status NodeRegistryServiceImpl::Heartbeat(
    grpc::ServerContext* context, const pb::HeartbeatRequest* request,
    pb::HeartbeatResponse* response) {
  grpc::Status auth = verifier_->Check(*context, "Heartbeat");
  if (!auth.ok()) return auth;
  absl::StatusOr<pb::HeartbeatResponse> result = registry_->Heartbeat(*request);
  if (!result.ok()) return common::ToGrpcStatus(result.status());
  *response = *std::move(result);
  return grpc::Status::OK;
}

}  // namespace controlplane
