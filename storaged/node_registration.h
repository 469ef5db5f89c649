// Keeps this storaged registered with the control plane: registers at start,
// heartbeats with the node's status, and registers again whenever the
// control plane has forgotten the node (restart, marked down and removed).
#ifndef STORAGED_NODE_REGISTRATION_H_
#define STORAGED_NODE_REGISTRATION_H_

#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"

namespace storaged {

struct NodeRegistrationOptions {
  std::string controlplane;  // HOST:PORT
  std::string node_id;
  std::string datacenter;
  std::string address;  // this node's gRPC address, as the control plane reaches it
  std::vector<std::string> served_portals;
  // Sent as "authorization: Bearer <token>" on every call (--internal-token-file).
  std::string internal_token;
  // Used until the control plane names its own interval.
  absl::Duration heartbeat_interval = absl::Seconds(5);
  absl::Duration max_backoff = absl::Seconds(30);
};

// Runs on its own thread from Start() until destruction. Thread-safe.
class NodeRegistration {
 public:
  using StatusSource =
      std::function<absl::StatusOr<imagetemplates::storagenode::v1::NodeStatus>()>;

  NodeRegistration(NodeRegistrationOptions options, StatusSource status);
  ~NodeRegistration();  // stops the thread
  NodeRegistration(const NodeRegistration&) = delete;
  NodeRegistration& operator=(const NodeRegistration&) = delete;

  void Start();

 private:
  void Run();
  // One register or heartbeat call; returns the delay before the next one.
  absl::Duration Step();

  const NodeRegistrationOptions options_;
  const StatusSource status_;
  std::unique_ptr<imagetemplates::storagenode::v1::NodeRegistry::Stub> stub_;
  absl::Notification stop_;
  std::thread thread_;
  // Only the registration thread touches these.
  bool registered_ = false;
  absl::Duration interval_;
  absl::Duration backoff_ = absl::Seconds(1);
  grpc::StatusCode last_error_ = grpc::StatusCode::OK;
};

}  // namespace storaged

#endif  // STORAGED_NODE_REGISTRATION_H_
