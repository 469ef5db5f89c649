// InventoryService over gRPC.
#ifndef CONTROLPLANE_INVENTORY_SERVICE_H_
#define CONTROLPLANE_INVENTORY_SERVICE_H_

#include "controlplane/compute_driver.h"
#include "controlplane/inventory_store.h"
#include "controlplane/rpc_runner.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"

namespace controlplane {

// The gRPC adapter of InventoryService: authentication, auditing and status
// conversion around InventoryStore, which holds the rules. Thread-safe; the
// pointers must outlive it.
class InventoryServiceImpl final
    : public imagetemplates::v1::InventoryService::Service {
 public:
  // `compute` (may be null) serves GetServerConsole.
  InventoryServiceImpl(InventoryStore* store, Authenticator* authenticator,
                       AuditLog* audit, ComputeDriver* compute = nullptr)
      : store_(store), compute_(compute), runner_(authenticator, audit) {}

  grpc::Status CreateServer(
      grpc::ServerContext* context,
      const imagetemplates::v1::CreateServerRequest* request,
      imagetemplates::v1::CreateServerResponse* response) override;
  grpc::Status GetServer(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetServerRequest* request,
      imagetemplates::v1::GetServerResponse* response) override;
  grpc::Status ListServers(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListServersRequest* request,
      imagetemplates::v1::ListServersResponse* response) override;
  grpc::Status UpdateServer(
      grpc::ServerContext* context,
      const imagetemplates::v1::UpdateServerRequest* request,
      imagetemplates::v1::UpdateServerResponse* response) override;
  grpc::Status DeleteServer(
      grpc::ServerContext* context,
      const imagetemplates::v1::DeleteServerRequest* request,
      imagetemplates::v1::DeleteServerResponse* response) override;
  grpc::Status SetServerCredentials(
      grpc::ServerContext* context,
      const imagetemplates::v1::SetServerCredentialsRequest* request,
      imagetemplates::v1::SetServerCredentialsResponse* response) override;
  grpc::Status GetServerCredentials(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetServerCredentialsRequest* request,
      imagetemplates::v1::GetServerCredentialsResponse* response) override;
  grpc::Status GetServerConsole(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetServerConsoleRequest* request,
      imagetemplates::v1::GetServerConsoleResponse* response) override;
  grpc::Status CreateDatacenter(
      grpc::ServerContext* context,
      const imagetemplates::v1::CreateDatacenterRequest* request,
      imagetemplates::v1::CreateDatacenterResponse* response) override;
  grpc::Status ListDatacenters(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListDatacentersRequest* request,
      imagetemplates::v1::ListDatacentersResponse* response) override;
  grpc::Status DeleteDatacenter(
      grpc::ServerContext* context,
      const imagetemplates::v1::DeleteDatacenterRequest* request,
      imagetemplates::v1::DeleteDatacenterResponse* response) override;
  grpc::Status CreateSanVolume(
      grpc::ServerContext* context,
      const imagetemplates::v1::CreateSanVolumeRequest* request,
      imagetemplates::v1::CreateSanVolumeResponse* response) override;
  grpc::Status ListSanVolumes(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListSanVolumesRequest* request,
      imagetemplates::v1::ListSanVolumesResponse* response) override;
  grpc::Status DeleteSanVolume(
      grpc::ServerContext* context,
      const imagetemplates::v1::DeleteSanVolumeRequest* request,
      imagetemplates::v1::DeleteSanVolumeResponse* response) override;
  grpc::Status ListStorageNodes(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListStorageNodesRequest* request,
      imagetemplates::v1::ListStorageNodesResponse* response) override;
  grpc::Status GetStorageNode(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetStorageNodeRequest* request,
      imagetemplates::v1::GetStorageNodeResponse* response) override;
  grpc::Status DeleteStorageNode(
      grpc::ServerContext* context,
      const imagetemplates::v1::DeleteStorageNodeRequest* request,
      imagetemplates::v1::DeleteStorageNodeResponse* response) override;
  grpc::Status CreateIpPool(
      grpc::ServerContext* context,
      const imagetemplates::v1::CreateIpPoolRequest* request,
      imagetemplates::v1::CreateIpPoolResponse* response) override;
  grpc::Status ListIpPools(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListIpPoolsRequest* request,
      imagetemplates::v1::ListIpPoolsResponse* response) override;
  grpc::Status GetIpPool(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetIpPoolRequest* request,
      imagetemplates::v1::GetIpPoolResponse* response) override;
  grpc::Status DeleteIpPool(
      grpc::ServerContext* context,
      const imagetemplates::v1::DeleteIpPoolRequest* request,
      imagetemplates::v1::DeleteIpPoolResponse* response) override;

 private:
  InventoryStore* store_;
  ComputeDriver* compute_;
  RpcRunner runner_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_INVENTORY_SERVICE_H_
