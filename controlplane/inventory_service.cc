#include "controlplane/inventory_service.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

namespace {
constexpr char kPrefix[] = "/imagetemplates.v1.InventoryService/";
}  // namespace

grpc::Status InventoryServiceImpl::CreateServer(
    grpc::ServerContext* context, const v1::CreateServerRequest* request,
    v1::CreateServerResponse* response) {
  return runner_.Audited<v1::CreateServerResponse>(
      context, std::string(kPrefix) + "CreateServer", request->request_id(),
      v1::RESOURCE_TYPE_SERVER, "", response,
      [&](const Caller& caller) {
        return store_->CreateServer(caller, *request);
      },
      [](const v1::CreateServerResponse& r, AuditTarget* a) {
        a->target.set_id(r.server().id());
        a->account_id = r.server().account_id();
      });
}

grpc::Status InventoryServiceImpl::GetServer(
    grpc::ServerContext* context, const v1::GetServerRequest* request,
    v1::GetServerResponse* response) {
  return runner_.Read<v1::GetServerResponse>(
      context, response, [&](const Caller& caller) {
        return store_->GetServer(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::ListServers(
    grpc::ServerContext* context, const v1::ListServersRequest* request,
    v1::ListServersResponse* response) {
  return runner_.Read<v1::ListServersResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListServers(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::UpdateServer(
    grpc::ServerContext* context, const v1::UpdateServerRequest* request,
    v1::UpdateServerResponse* response) {
  return runner_.Audited<v1::UpdateServerResponse>(
      context, std::string(kPrefix) + "UpdateServer", request->request_id(),
      v1::RESOURCE_TYPE_SERVER, request->id(), response,
      [&](const Caller& caller) {
        return store_->UpdateServer(caller, *request);
      },
      [](const v1::UpdateServerResponse& r, AuditTarget* a) {
        a->account_id = r.server().account_id();
      });
}

grpc::Status InventoryServiceImpl::DeleteServer(
    grpc::ServerContext* context, const v1::DeleteServerRequest* request,
    v1::DeleteServerResponse* response) {
  return runner_.Audited<v1::DeleteServerResponse>(
      context, std::string(kPrefix) + "DeleteServer", request->request_id(),
      v1::RESOURCE_TYPE_SERVER, request->id(), response,
      [&](const Caller& caller) {
        return store_->DeleteServer(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::SetServerCredentials(
    grpc::ServerContext* context,
    const v1::SetServerCredentialsRequest* request,
    v1::SetServerCredentialsResponse* response) {
  return runner_.Audited<v1::SetServerCredentialsResponse>(
      context, std::string(kPrefix) + "SetServerCredentials",
      request->request_id(), v1::RESOURCE_TYPE_SERVER, request->server_id(),
      response,
      [&](const Caller& caller) {
        return store_->SetServerCredentials(caller, *request);
      },
      [](const v1::SetServerCredentialsResponse& r, AuditTarget* a) {
        a->account_id = r.server().account_id();
      });
}

grpc::Status InventoryServiceImpl::GetServerCredentials(
    grpc::ServerContext* context,
    const v1::GetServerCredentialsRequest* request,
    v1::GetServerCredentialsResponse* response) {
  return runner_.Audited<v1::GetServerCredentialsResponse>(
      context, std::string(kPrefix) + "GetServerCredentials", "",
      v1::RESOURCE_TYPE_SERVER, request->server_id(), response,
      [&](const Caller& caller) {
        return store_->GetServerCredentials(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::GetServerConsole(
    grpc::ServerContext* context, const v1::GetServerConsoleRequest* request,
    v1::GetServerConsoleResponse* response) {
  return runner_.Read<v1::GetServerConsoleResponse>(
      context, response,
      [&](const Caller& caller) -> absl::StatusOr<v1::GetServerConsoleResponse> {
        // The store checks the request and the caller's view of the server,
        // then answers UNAVAILABLE: it keeps no console. The driver may.
        absl::StatusOr<v1::GetServerConsoleResponse> checked =
            store_->GetServerConsole(caller, *request);
        if (compute_ == nullptr || !absl::IsUnavailable(checked.status())) {
          return checked;
        }
        absl::StatusOr<std::vector<std::string>> lines = compute_->ReadConsole(
            request->server_id(),
            request->line_count() == 0 ? 100 : request->line_count());
        if (absl::IsUnimplemented(lines.status())) return checked;
        if (!lines.ok()) return lines.status();
        v1::GetServerConsoleResponse console;
        for (std::string& line : *lines) console.add_lines(std::move(line));
        const absl::Time now = absl::Now();
        console.mutable_read_time()->set_seconds(absl::ToUnixSeconds(now));
        console.mutable_read_time()->set_nanos(static_cast<int32_t>(
            absl::ToInt64Nanoseconds(now - absl::FromUnixSeconds(absl::ToUnixSeconds(now)))));
        return console;
      });
}

grpc::Status InventoryServiceImpl::CreateDatacenter(
    grpc::ServerContext* context, const v1::CreateDatacenterRequest* request,
    v1::CreateDatacenterResponse* response) {
  return runner_.Audited<v1::CreateDatacenterResponse>(
      context, std::string(kPrefix) + "CreateDatacenter", request->request_id(),
      v1::RESOURCE_TYPE_DATACENTER, request->name(), response,
      [&](const Caller& caller) {
        return store_->CreateDatacenter(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::ListDatacenters(
    grpc::ServerContext* context, const v1::ListDatacentersRequest* request,
    v1::ListDatacentersResponse* response) {
  return runner_.Read<v1::ListDatacentersResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListDatacenters(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::DeleteDatacenter(
    grpc::ServerContext* context, const v1::DeleteDatacenterRequest* request,
    v1::DeleteDatacenterResponse* response) {
  return runner_.Audited<v1::DeleteDatacenterResponse>(
      context, std::string(kPrefix) + "DeleteDatacenter", request->request_id(),
      v1::RESOURCE_TYPE_DATACENTER, request->name(), response,
      [&](const Caller& caller) {
        return store_->DeleteDatacenter(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::CreateSanVolume(
    grpc::ServerContext* context, const v1::CreateSanVolumeRequest* request,
    v1::CreateSanVolumeResponse* response) {
  return runner_.Audited<v1::CreateSanVolumeResponse>(
      context, std::string(kPrefix) + "CreateSanVolume", request->request_id(),
      v1::RESOURCE_TYPE_SAN_VOLUME, "", response,
      [&](const Caller& caller) {
        return store_->CreateSanVolume(caller, *request);
      },
      [](const v1::CreateSanVolumeResponse& r, AuditTarget* a) {
        a->target.set_id(r.san_volume().id());
      });
}

grpc::Status InventoryServiceImpl::ListSanVolumes(
    grpc::ServerContext* context, const v1::ListSanVolumesRequest* request,
    v1::ListSanVolumesResponse* response) {
  return runner_.Read<v1::ListSanVolumesResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListSanVolumes(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::DeleteSanVolume(
    grpc::ServerContext* context, const v1::DeleteSanVolumeRequest* request,
    v1::DeleteSanVolumeResponse* response) {
  return runner_.Audited<v1::DeleteSanVolumeResponse>(
      context, std::string(kPrefix) + "DeleteSanVolume", request->request_id(),
      v1::RESOURCE_TYPE_SAN_VOLUME, request->id(), response,
      [&](const Caller& caller) {
        return store_->DeleteSanVolume(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::ListStorageNodes(
    grpc::ServerContext* context, const v1::ListStorageNodesRequest* request,
    v1::ListStorageNodesResponse* response) {
  return runner_.Read<v1::ListStorageNodesResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListStorageNodes(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::GetStorageNode(
    grpc::ServerContext* context, const v1::GetStorageNodeRequest* request,
    v1::GetStorageNodeResponse* response) {
  return runner_.Read<v1::GetStorageNodeResponse>(
      context, response, [&](const Caller& caller) {
        return store_->GetStorageNode(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::DeleteStorageNode(
    grpc::ServerContext* context, const v1::DeleteStorageNodeRequest* request,
    v1::DeleteStorageNodeResponse* response) {
  return runner_.Audited<v1::DeleteStorageNodeResponse>(
      context, std::string(kPrefix) + "DeleteStorageNode",
      request->request_id(), v1::RESOURCE_TYPE_STORAGE_NODE, request->id(),
      response, [&](const Caller& caller) {
        return store_->DeleteStorageNode(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::CreateIpPool(
    grpc::ServerContext* context, const v1::CreateIpPoolRequest* request,
    v1::CreateIpPoolResponse* response) {
  return runner_.Audited<v1::CreateIpPoolResponse>(
      context, std::string(kPrefix) + "CreateIpPool", request->request_id(),
      v1::RESOURCE_TYPE_IP_POOL, "", response,
      [&](const Caller& caller) {
        return store_->CreateIpPool(caller, *request);
      },
      [](const v1::CreateIpPoolResponse& r, AuditTarget* a) {
        a->target.set_id(r.ip_pool().id());
      });
}

grpc::Status InventoryServiceImpl::ListIpPools(
    grpc::ServerContext* context, const v1::ListIpPoolsRequest* request,
    v1::ListIpPoolsResponse* response) {
  return runner_.Read<v1::ListIpPoolsResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListIpPools(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::GetIpPool(
    grpc::ServerContext* context, const v1::GetIpPoolRequest* request,
    v1::GetIpPoolResponse* response) {
  return runner_.Read<v1::GetIpPoolResponse>(
      context, response, [&](const Caller& caller) {
        return store_->GetIpPool(caller, *request);
      });
}

grpc::Status InventoryServiceImpl::DeleteIpPool(
    grpc::ServerContext* context, const v1::DeleteIpPoolRequest* request,
    v1::DeleteIpPoolResponse* response) {
  return runner_.Audited<v1::DeleteIpPoolResponse>(
      context, std::string(kPrefix) + "DeleteIpPool", request->request_id(),
      v1::RESOURCE_TYPE_IP_POOL, request->id(), response,
      [&](const Caller& caller) {
        return store_->DeleteIpPool(caller, *request);
      });
}

}  // namespace controlplane
