#include "controlplane/storage_node_directory.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/node_registry_service.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

StorageNodeDirectory::StorageNodeDirectory(InventoryStore* inventory,
                                           StorageNodeClientFactory factory,
                                           absl::Duration liveness_window,
                                           std::function<int64_t()> now_micros)
    : inventory_(inventory),
      factory_(std::move(factory)),
      liveness_window_(liveness_window),
      now_micros_(now_micros ? std::move(now_micros) : NowMicros) {}

bool StorageNodeDirectory::IsLive(const v1::StorageNode& node) const {
  return node.state() == v1::STORAGE_NODE_STATE_UP &&
         now_micros_() - FromTimestamp(node.last_heartbeat_time()) <=
             absl::ToInt64Microseconds(liveness_window_);
}

StorageNodeHandle StorageNodeDirectory::Handle(const v1::StorageNode& node) {
  absl::MutexLock lock(&mu_);
  std::unique_ptr<StorageNodeClient>& client = clients_[node.address()];
  if (!client) client = factory_(node.address());
  return {node.id(), node.address(), client.get()};
}

absl::StatusOr<StorageNodeHandle> StorageNodeDirectory::ForPortal(
    const std::string& datacenter, const std::string& portal) {
  const std::string wanted = NormalizePortal(portal);
  ASSIGN_OR_RETURN(std::vector<v1::StorageNode> nodes,
                   inventory_->ReadStorageNodes(datacenter));
  const v1::StorageNode* down = nullptr;
  for (const v1::StorageNode& node : nodes) {
    for (const std::string& served : node.served_portals()) {
      if (NormalizePortal(served) != wanted) continue;
      if (IsLive(node)) return Handle(node);
      down = &node;
    }
  }
  if (down != nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "storage node ", down->id(), " serving SAN portal ", wanted, " in ",
        datacenter, " is down (no heartbeat since ",
        absl::FormatTime(
            absl::FromUnixMicros(FromTimestamp(down->last_heartbeat_time()))),
        "); retry once it is back"));
  }
  return absl::FailedPreconditionError(absl::StrCat(
      "no storage node in ", datacenter, " serves SAN portal ", wanted,
      "; start storaged on that SAN host with --portals=", wanted));
}

absl::StatusOr<StorageNodeHandle> StorageNodeDirectory::ById(
    const std::string& node_id) {
  ASSIGN_OR_RETURN(std::vector<v1::StorageNode> nodes,
                   inventory_->ReadStorageNodes(""));
  for (const v1::StorageNode& node : nodes) {
    if (node.id() != node_id) continue;
    if (!IsLive(node)) {
      return absl::UnavailableError(absl::StrCat(
          "storage node ", node_id, " is down; retry once it is back"));
    }
    return Handle(node);
  }
  return absl::NotFoundError(
      absl::StrCat("storage node ", node_id, " is not registered"));
}

absl::Status StorageNodeDirectory::CheckDatacenter(
    const std::string& datacenter) {
  ASSIGN_OR_RETURN(std::vector<v1::StorageNode> nodes,
                   inventory_->ReadStorageNodes(datacenter));
  for (const v1::StorageNode& node : nodes) {
    if (IsLive(node)) return absl::OkStatus();
  }
  return absl::UnavailableError(absl::StrCat("no storage node of datacenter ",
                                             datacenter,
                                             " is up; retry once one is back"));
}

}  // namespace controlplane
