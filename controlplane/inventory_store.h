// Servers, datacenters, the SAN volume pool, storage nodes and IP pools: the
// business rules of InventoryService behind one storage interface, plus the
// internal calls the deploy and capture flows and the NodeRegistry use.
// Caller-facing methods apply the API's rules: NOT_FOUND for anything the
// caller may not see (other accounts, servers outside device access),
// PERMISSION_DENIED for a visible resource without the permission,
// INVALID_ARGUMENT naming the field. Mutating methods honour request_id.
#ifndef CONTROLPLANE_INVENTORY_STORE_H_
#define CONTROLPLANE_INVENTORY_STORE_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controlplane/caller.h"
#include "imagetemplates/v1/inventory.pb.h"

namespace controlplane {

// Thread-safe.
class InventoryStore {
 public:
  virtual ~InventoryStore() = default;

  virtual absl::StatusOr<imagetemplates::v1::CreateServerResponse> CreateServer(
      const Caller& caller, const imagetemplates::v1::CreateServerRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::GetServerResponse> GetServer(
      const Caller& caller, const imagetemplates::v1::GetServerRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListServersResponse> ListServers(
      const Caller& caller, const imagetemplates::v1::ListServersRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::UpdateServerResponse> UpdateServer(
      const Caller& caller, const imagetemplates::v1::UpdateServerRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::DeleteServerResponse> DeleteServer(
      const Caller& caller, const imagetemplates::v1::DeleteServerRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::SetServerCredentialsResponse> SetServerCredentials(
      const Caller& caller, const imagetemplates::v1::SetServerCredentialsRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::GetServerCredentialsResponse> GetServerCredentials(
      const Caller& caller, const imagetemplates::v1::GetServerCredentialsRequest& request) = 0;
  // Checks access, then UNAVAILABLE: no compute driver is wired in yet.
  virtual absl::StatusOr<imagetemplates::v1::GetServerConsoleResponse> GetServerConsole(
      const Caller& caller, const imagetemplates::v1::GetServerConsoleRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::CreateDatacenterResponse> CreateDatacenter(
      const Caller& caller, const imagetemplates::v1::CreateDatacenterRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListDatacentersResponse> ListDatacenters(
      const Caller& caller, const imagetemplates::v1::ListDatacentersRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::DeleteDatacenterResponse> DeleteDatacenter(
      const Caller& caller, const imagetemplates::v1::DeleteDatacenterRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::CreateSanVolumeResponse> CreateSanVolume(
      const Caller& caller, const imagetemplates::v1::CreateSanVolumeRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListSanVolumesResponse> ListSanVolumes(
      const Caller& caller, const imagetemplates::v1::ListSanVolumesRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::DeleteSanVolumeResponse> DeleteSanVolume(
      const Caller& caller, const imagetemplates::v1::DeleteSanVolumeRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListStorageNodesResponse> ListStorageNodes(
      const Caller& caller, const imagetemplates::v1::ListStorageNodesRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::GetStorageNodeResponse> GetStorageNode(
      const Caller& caller, const imagetemplates::v1::GetStorageNodeRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::DeleteStorageNodeResponse> DeleteStorageNode(
      const Caller& caller, const imagetemplates::v1::DeleteStorageNodeRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::CreateIpPoolResponse> CreateIpPool(
      const Caller& caller, const imagetemplates::v1::CreateIpPoolRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListIpPoolsResponse> ListIpPools(
      const Caller& caller, const imagetemplates::v1::ListIpPoolsRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::GetIpPoolResponse> GetIpPool(
      const Caller& caller, const imagetemplates::v1::GetIpPoolRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::DeleteIpPoolResponse> DeleteIpPool(
      const Caller& caller, const imagetemplates::v1::DeleteIpPoolRequest& request) = 0;

  // --- Internal calls, no access checks: the caller has already checked.

  // Registers or updates a storage node (NodeRegistry.RegisterNode): state
  // UP, heartbeat now. NOT_FOUND (datacenter); FAILED_PRECONDITION if the id
  // is registered in another datacenter.
  virtual absl::Status UpsertStorageNode(const imagetemplates::v1::StorageNode& node) = 0;
  // The server with its disks. NOT_FOUND.
  virtual absl::StatusOr<imagetemplates::v1::Server> ReadServer(const std::string& server_id) = 0;
  // The decrypted credentials (for capture pre-flight and the config drive).
  virtual absl::StatusOr<std::vector<imagetemplates::v1::SoftwareCredential>> ReadCredentials(
      const std::string& server_id) = 0;
  // A SAN volume's iSCSI address including its decrypted CHAP secret, for
  // the storaged that must log in to it. NOT_FOUND.
  virtual absl::StatusOr<imagetemplates::v1::SanVolume> ReadSanVolumeWithSecret(
      const std::string& volume_id) = 0;
  // Sets a server's state and power state (create/deploy flows).
  virtual absl::Status SetServerStates(const std::string& server_id,
                                       imagetemplates::v1::ServerState state,
                                       imagetemplates::v1::PowerState power_state) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_INVENTORY_STORE_H_
