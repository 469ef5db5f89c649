// NodeRegistry: where storaged daemons register and send heartbeats
// (imagetemplates.storagenode.v1.NodeRegistry), and the sweeper that marks
// nodes DOWN when their heartbeats stop. The business rules live in
// NodeRegistry; NodeRegistryServiceImpl only converts statuses.
#ifndef CONTROLPLANE_NODE_REGISTRY_SERVICE_H_
#define CONTROLPLANE_NODE_REGISTRY_SERVICE_H_

#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "common/internal_token.h"
#include "controlplane/inventory_store.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"

namespace controlplane {

struct NodeRegistryOptions {
  // What RegisterNode and Heartbeat tell nodes.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  // A node is DOWN once this many intervals pass without a heartbeat.
  int missed_heartbeats = 3;
  // Microseconds since the epoch; defaults to the system clock.
  std::function<int64_t()> now_micros;
};

// Thread-safe. Does not own `inventory`, which must outlive it.
class NodeRegistry {
 public:
  NodeRegistry(InventoryStore* inventory, NodeRegistryOptions options);
  ~NodeRegistry();
  NodeRegistry(const NodeRegistry&) = delete;
  NodeRegistry& operator=(const NodeRegistry&) = delete;

  // Registers or re-registers a node: UP, heartbeat now. A known id may move
  // to a new address (a restarted node on another port); the move is logged.
  // Callers are trusted: the service checks the internal token first.
  // INVALID_ARGUMENT
  // (node_id, address, served_portals); NOT_FOUND (datacenter);
  // FAILED_PRECONDITION if the id lives in another datacenter or a portal is
  // served by another live node.
  absl::StatusOr<imagetemplates::storagenode::v1::RegisterNodeResponse>
  RegisterNode(
      const imagetemplates::storagenode::v1::RegisterNodeRequest& request);
  // NOT_FOUND if the node is not registered (it registers again);
  // INVALID_ARGUMENT (node_id).
  absl::StatusOr<imagetemplates::storagenode::v1::HeartbeatResponse> Heartbeat(
      const imagetemplates::storagenode::v1::HeartbeatRequest& request);

  // Marks nodes whose heartbeats stopped DOWN now; returns their ids.
  absl::StatusOr<std::vector<std::string>> SweepOnce();
  // Sweeps every heartbeat interval in the background until destroyed.
  void StartSweeper();

  // How long after its last heartbeat a node still counts as live.
  absl::Duration liveness_window() const {
    return options_.heartbeat_interval * options_.missed_heartbeats;
  }

 private:
  InventoryStore* const inventory_;
  NodeRegistryOptions options_;
  absl::Notification stop_;
  std::thread sweeper_;
};

// The gRPC adapter: every call must carry the internal token (anyone else
// could move a node's address to their own and receive its CHAP secrets).
// Thread-safe; owns neither argument.
class NodeRegistryServiceImpl final
    : public imagetemplates::storagenode::v1::NodeRegistry::Service {
 public:
  NodeRegistryServiceImpl(NodeRegistry* registry,
                          const common::InternalTokenVerifier* verifier)
      : registry_(registry), verifier_(verifier) {}

  grpc::Status RegisterNode(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::RegisterNodeRequest* request,
      imagetemplates::storagenode::v1::RegisterNodeResponse* response) override;
  grpc::Status Heartbeat(
      grpc::ServerContext* context,
      const imagetemplates::storagenode::v1::HeartbeatRequest* request,
      imagetemplates::storagenode::v1::HeartbeatResponse* response) override;

 private:
  NodeRegistry* const registry_;
  const common::InternalTokenVerifier* const verifier_;
};

// "host" -> "host:3260"; anything else unchanged.
std::string NormalizePortal(const std::string& portal);

}  // namespace controlplane

#endif  // CONTROLPLANE_NODE_REGISTRY_SERVICE_H_
