// InventoryStore on SQLite (tables of migration 1). Software passwords and
// CHAP secrets are stored only as CredentialCipher ciphertext (request
// fingerprints see only their keyed digests) and never appear in logs or
// error messages.
#ifndef CONTROLPLANE_SQLITE_INVENTORY_STORE_H_
#define CONTROLPLANE_SQLITE_INVENTORY_STORE_H_

#include <functional>
#include <string>

#include "absl/strings/string_view.h"
#include "controlplane/credential_cipher.h"
#include "controlplane/inventory_store.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

// Thread-safe; `db` and `cipher` must outlive it.
class SqliteInventoryStore final : public InventoryStore {
 public:
  SqliteInventoryStore(SqliteDatabase* db, const CredentialCipher* cipher)
      : db_(db), cipher_(cipher) {}
  SqliteInventoryStore(const SqliteInventoryStore&) = delete;
  SqliteInventoryStore& operator=(const SqliteInventoryStore&) = delete;

  absl::StatusOr<imagetemplates::v1::CreateServerResponse> CreateServer(
      const Caller& caller, const imagetemplates::v1::CreateServerRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetServerResponse> GetServer(
      const Caller& caller, const imagetemplates::v1::GetServerRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListServersResponse> ListServers(
      const Caller& caller, const imagetemplates::v1::ListServersRequest& request) override;
  absl::StatusOr<imagetemplates::v1::UpdateServerResponse> UpdateServer(
      const Caller& caller, const imagetemplates::v1::UpdateServerRequest& request) override;
  absl::StatusOr<imagetemplates::v1::DeleteServerResponse> DeleteServer(
      const Caller& caller, const imagetemplates::v1::DeleteServerRequest& request) override;
  absl::StatusOr<imagetemplates::v1::SetServerCredentialsResponse> SetServerCredentials(
      const Caller& caller,
      const imagetemplates::v1::SetServerCredentialsRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetServerCredentialsResponse> GetServerCredentials(
      const Caller& caller,
      const imagetemplates::v1::GetServerCredentialsRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetServerConsoleResponse> GetServerConsole(
      const Caller& caller, const imagetemplates::v1::GetServerConsoleRequest& request) override;
  absl::StatusOr<imagetemplates::v1::CreateDatacenterResponse> CreateDatacenter(
      const Caller& caller, const imagetemplates::v1::CreateDatacenterRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListDatacentersResponse> ListDatacenters(
      const Caller& caller, const imagetemplates::v1::ListDatacentersRequest& request) override;
  absl::StatusOr<imagetemplates::v1::DeleteDatacenterResponse> DeleteDatacenter(
      const Caller& caller, const imagetemplates::v1::DeleteDatacenterRequest& request) override;
  absl::StatusOr<imagetemplates::v1::CreateSanVolumeResponse> CreateSanVolume(
      const Caller& caller, const imagetemplates::v1::CreateSanVolumeRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListSanVolumesResponse> ListSanVolumes(
      const Caller& caller, const imagetemplates::v1::ListSanVolumesRequest& request) override;
  absl::StatusOr<imagetemplates::v1::DeleteSanVolumeResponse> DeleteSanVolume(
      const Caller& caller, const imagetemplates::v1::DeleteSanVolumeRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListStorageNodesResponse> ListStorageNodes(
      const Caller& caller, const imagetemplates::v1::ListStorageNodesRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetStorageNodeResponse> GetStorageNode(
      const Caller& caller, const imagetemplates::v1::GetStorageNodeRequest& request) override;
  absl::StatusOr<imagetemplates::v1::DeleteStorageNodeResponse> DeleteStorageNode(
      const Caller& caller, const imagetemplates::v1::DeleteStorageNodeRequest& request) override;
  absl::StatusOr<imagetemplates::v1::CreateIpPoolResponse> CreateIpPool(
      const Caller& caller, const imagetemplates::v1::CreateIpPoolRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListIpPoolsResponse> ListIpPools(
      const Caller& caller, const imagetemplates::v1::ListIpPoolsRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetIpPoolResponse> GetIpPool(
      const Caller& caller, const imagetemplates::v1::GetIpPoolRequest& request) override;
  absl::StatusOr<imagetemplates::v1::DeleteIpPoolResponse> DeleteIpPool(
      const Caller& caller, const imagetemplates::v1::DeleteIpPoolRequest& request) override;

  absl::Status UpsertStorageNode(const imagetemplates::v1::StorageNode& node) override;
  absl::StatusOr<imagetemplates::v1::Server> ReadServer(const std::string& server_id) override;
  absl::StatusOr<std::vector<imagetemplates::v1::SoftwareCredential>> ReadCredentials(
      const std::string& server_id) override;
  absl::StatusOr<imagetemplates::v1::SanVolume> ReadSanVolumeWithSecret(
      const std::string& volume_id) override;
  absl::Status SetServerStates(const std::string& server_id,
                               imagetemplates::v1::ServerState state,
                               imagetemplates::v1::PowerState power_state) override;
  absl::Status SetServerState(const std::string& server_id,
                              imagetemplates::v1::ServerState state) override;
  absl::Status SetPowerState(const std::string& server_id,
                             imagetemplates::v1::PowerState power_state) override;
  absl::Status RecordHeartbeat(const std::string& node_id, int64_t capacity_bytes,
                               int64_t free_bytes, int64_t now_micros) override;
  absl::StatusOr<std::vector<imagetemplates::v1::StorageNode>> ReadStorageNodes(
      const std::string& datacenter) override;
  absl::StatusOr<std::vector<std::string>> MarkStorageNodesDown(int64_t cutoff_micros) override;
  absl::StatusOr<std::vector<imagetemplates::v1::Server>> ProvisionServers(
      const ProvisionPlan& plan, const OperationBuilder& build_operation) override;
  absl::StatusOr<AddressAssignment> AllocateAddress(const std::string& server_id,
                                                    const std::string& ip_pool_id) override;
  absl::StatusOr<imagetemplates::v1::SanVolume> ReadAttachedVolumeWithSecret(
      const std::string& volume_id, const std::string& server_id) override;
  absl::Status ReleaseServer(const std::string& server_id) override;

 private:
  absl::Status WriteCredentials(
      SqliteConnection& conn, const std::string& server_id,
      const google::protobuf::RepeatedPtrField<imagetemplates::v1::SoftwareCredential>& creds);
  absl::StatusOr<std::vector<imagetemplates::v1::SoftwareCredential>> ReadCredentialsIn(
      SqliteConnection& conn, const std::string& server_id);
  // A template's credential snapshot (migration 10), decrypted.
  absl::StatusOr<google::protobuf::RepeatedPtrField<imagetemplates::v1::SoftwareCredential>>
  ReadTemplateCredentialsIn(SqliteConnection& conn, const std::string& template_id);

  // For the fingerprints of requests holding secrets (SecretRequestFingerprint).
  std::function<std::string(absl::string_view)> KeyedDigest() const {
    return [cipher = cipher_](absl::string_view data) { return cipher->KeyedDigest(data); };
  }

  SqliteDatabase* db_;
  const CredentialCipher* cipher_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_INVENTORY_STORE_H_
