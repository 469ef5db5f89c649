// Finds the live storage node that does a volume's work, and hands out one
// cached client per node.
#ifndef CONTROLPLANE_STORAGE_NODE_DIRECTORY_H_
#define CONTROLPLANE_STORAGE_NODE_DIRECTORY_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/inventory_store.h"
#include "controlplane/storage_node_client.h"

namespace controlplane {

// A live node and a client to it; the client lives as long as the directory.
struct StorageNodeHandle {
  std::string node_id;
  std::string address;
  StorageNodeClient* client = nullptr;
};

// Thread-safe. Does not own `inventory`. A node is live while it is UP and
// its last heartbeat is younger than `liveness_window` (computed on read, so
// a dead node is avoided before the sweeper marks it DOWN).
class StorageNodeDirectory {
 public:
  StorageNodeDirectory(InventoryStore* inventory,
                       StorageNodeClientFactory factory,
                       absl::Duration liveness_window,
                       std::function<int64_t()> now_micros = nullptr);
  StorageNodeDirectory(const StorageNodeDirectory&) = delete;
  StorageNodeDirectory& operator=(const StorageNodeDirectory&) = delete;

  // The live node of `datacenter` serving `portal` ("host[:port]").
  // FAILED_PRECONDITION if no node there serves it at all; UNAVAILABLE if
  // its node is down (retry later).
  absl::StatusOr<StorageNodeHandle> ForPortal(const std::string& datacenter,
                                              const std::string& portal);
  // The node by id. NOT_FOUND if not registered; UNAVAILABLE if down.
  absl::StatusOr<StorageNodeHandle> ById(const std::string& node_id);
  // OK if `datacenter` has a live node; UNAVAILABLE otherwise.
  absl::Status CheckDatacenter(const std::string& datacenter);

  bool IsLive(const imagetemplates::v1::StorageNode& node) const;

 private:
  StorageNodeHandle Handle(const imagetemplates::v1::StorageNode& node);

  InventoryStore* const inventory_;
  const StorageNodeClientFactory factory_;
  const absl::Duration liveness_window_;
  const std::function<int64_t()> now_micros_;
  absl::Mutex mu_;
  // By address; clients are never dropped (a handful of nodes per region).
  absl::flat_hash_map<std::string, std::unique_ptr<StorageNodeClient>> clients_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_STORAGE_NODE_DIRECTORY_H_
