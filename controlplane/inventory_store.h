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

#include <functional>
#include <optional>
#include <utility>

#include "absl/status/statusor.h"
#include "controlplane/caller.h"
#include "controlplane/operation_store.h"
#include "imagetemplates/v1/image_templates.pb.h"
#include "imagetemplates/v1/inventory.pb.h"
#include "imagetemplates/v1/operations.pb.h"

namespace controlplane {

// One disk of every server a deploy builds.
struct ProvisionDisk {
  int32_t device_index = 0;
  bool boot = false;
  // The smallest volume that fits.
  int64_t min_size_bytes = 0;
  // When set, only volumes served by these SAN hosts are taken: the nodes
  // holding the image (storaged does not copy images between nodes yet).
  std::vector<std::string> preferred_san_hosts;
};

// What ProvisionServers builds: `server_ids.size()` servers in one
// datacenter, each with `disks` plus a config drive.
struct ProvisionPlan {
  std::string account_id;
  std::string datacenter;
  // Checked again inside the provisioning transaction (a delete, disable,
  // unshare or location removal may have committed since the caller's
  // checks): ACTIVE, not disabled, AVAILABLE in `datacenter`, and visible to
  // `account_id` (owned, shared with it or public) unless `any_template`
  // (operators). NOT_FOUND if no longer visible, else FAILED_PRECONDITION.
  std::string source_image_template_id;
  bool any_template = false;
  // Chosen by the caller (so the operation can name them); one per server.
  std::vector<std::string> server_ids;
  std::vector<std::string> hostnames;
  std::string domain;
  // The template's configuration; each server gets fresh MAC addresses.
  imagetemplates::v1::ServerConfiguration configuration;
  std::vector<ProvisionDisk> disks;
  // The config drive's device index and smallest size.
  int32_t config_drive_index = 15;
  int64_t config_drive_min_bytes = 1 << 20;
  // The template whose credential snapshot (taken when its create was
  // accepted) is copied onto every new server; empty: none.
  std::string credentials_from_template_id;
  // A user without access to all servers gets access to the new ones.
  std::string grant_user_id;
  // Per server (empty: none takes one): the IP pool whose address its first
  // interface gets ("" = the first pool of the datacenter with a free one),
  // or nullopt for none (DHCP, a static address). Taken in the provisioning
  // transaction, so an accepted deploy holds its addresses; the network
  // step's AllocateAddress finds them.
  std::vector<std::optional<std::string>> address_pools;
  // Per server (empty, or one per server): its static address, if any
  // (address empty: none). One inside a range of a datacenter's IP pool is
  // reserved there like a pool address (ALREADY_EXISTS if taken); empty
  // gateway and DNS servers come from the pool whose subnet holds it. The
  // result is written into the server's first interface.
  std::vector<imagetemplates::v1::StaticNetworkAddress> static_addresses;
};

// An address allocated to a server from an IP pool.
struct AddressAssignment {
  std::string ip_pool_id;
  // "10.0.0.5/24".
  std::string address;
  std::string gateway;
  std::vector<std::string> dns_servers;
};

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
  // NOT_FOUND; FAILED_PRECONDITION when `state` is ACTIVE and the server is
  // neither PROVISIONING nor already ACTIVE (a released deploy server, FAILED,
  // must never come back: its volumes may be another server's by now).
  virtual absl::Status SetServerState(const std::string& server_id,
                                      imagetemplates::v1::ServerState state) = 0;
  virtual absl::Status SetPowerState(const std::string& server_id,
                                     imagetemplates::v1::PowerState power_state) = 0;

  // --- Storage nodes (NodeRegistry, StorageNodeDirectory).

  // A heartbeat at `now_micros`: state UP, capacity and free space updated.
  // NOT_FOUND if the node is not registered.
  virtual absl::Status RecordHeartbeat(const std::string& node_id, int64_t capacity_bytes,
                                       int64_t free_bytes, int64_t now_micros) = 0;
  // Every registered node of `datacenter` (empty: all), by id.
  virtual absl::StatusOr<std::vector<imagetemplates::v1::StorageNode>> ReadStorageNodes(
      const std::string& datacenter) = 0;
  // Marks UP nodes whose last heartbeat is older than `cutoff_micros` DOWN;
  // returns their ids.
  virtual absl::StatusOr<std::vector<std::string>> MarkStorageNodesDown(int64_t cutoff_micros) = 0;

  // --- Deploys.

  // In one transaction: takes one FREE volume per plan disk (the smallest
  // that fits, on the preferred hosts) plus a config drive per server,
  // creates the servers (PROVISIONING, STOPPED, fresh MACs), reserves their
  // static and pool addresses (written into the first interface), copies
  // credentials, grants device access, then inserts the operation that
  // `build_operation` makes from the new servers. ALREADY_EXISTS if a
  // hostname.domain is used in the account; RESOURCE_EXHAUSTED if volumes or
  // addresses are short (the message says which); NOT_FOUND (datacenter, an
  // IP pool); an error of `build_operation` is returned. Nothing is kept on
  // failure.
  using OperationBuilder = std::function<absl::StatusOr<
      std::pair<imagetemplates::v1::Operation, OperationInternals>>(
      const std::vector<imagetemplates::v1::Server>& servers)>;
  virtual absl::StatusOr<std::vector<imagetemplates::v1::Server>> ProvisionServers(
      const ProvisionPlan& plan, const OperationBuilder& build_operation) = 0;
  // Gives the server's first network interface an address: the one already
  // allocated to it if any (reserved by ProvisionServers, or by an earlier
  // try: never a second), else the lowest free one of `ip_pool_id` (empty:
  // the first pool of the server's datacenter with a free address). Also
  // writes it into the server's configuration. RESOURCE_EXHAUSTED if no address is free; NOT_FOUND
  // (server, pool); FAILED_PRECONDITION if the pool is in another
  // datacenter or the server is not PROVISIONING (a released server gets no
  // address back).
  virtual absl::StatusOr<AddressAssignment> AllocateAddress(const std::string& server_id,
                                                            const std::string& ip_pool_id) = 0;
  // As ReadSanVolumeWithSecret, for a deploy step about to write the volume
  // of `server_id`: FAILED_PRECONDITION unless the volume is ATTACHED to that
  // server (a released server's volumes are FREE, maybe another's already).
  // NOT_FOUND.
  virtual absl::StatusOr<imagetemplates::v1::SanVolume> ReadAttachedVolumeWithSecret(
      const std::string& volume_id, const std::string& server_id) = 0;
  // A failed deploy's server: state FAILED, STOPPED, its volumes FREE again
  // (disks removed) and its addresses released. Idempotent.
  virtual absl::Status ReleaseServer(const std::string& server_id) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_INVENTORY_STORE_H_
