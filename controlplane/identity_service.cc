#include "controlplane/identity_service.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

namespace {
constexpr char kPrefix[] = "/imagetemplates.v1.IdentityService/";
}  // namespace

grpc::Status IdentityServiceImpl::GetCaller(grpc::ServerContext* context,
                                            const v1::GetCallerRequest* request,
                                            v1::GetCallerResponse* response) {
  return runner_.Read<v1::GetCallerResponse>(
      context, response,
      [&](const Caller& caller) { return store_->GetCaller(caller); });
}

grpc::Status IdentityServiceImpl::CreateAccount(
    grpc::ServerContext* context, const v1::CreateAccountRequest* request,
    v1::CreateAccountResponse* response) {
  return runner_.Audited<v1::CreateAccountResponse>(
      context, std::string(kPrefix) + "CreateAccount", request->request_id(),
      v1::RESOURCE_TYPE_ACCOUNT, "", response,
      [&](const Caller& caller) {
        return store_->CreateAccount(caller, *request);
      },
      [](const v1::CreateAccountResponse& r, AuditTarget* a) {
        a->target.set_id(r.account().id());
        a->account_id = r.account().id();
      });
}

grpc::Status IdentityServiceImpl::GetAccount(
    grpc::ServerContext* context, const v1::GetAccountRequest* request,
    v1::GetAccountResponse* response) {
  return runner_.Read<v1::GetAccountResponse>(
      context, response, [&](const Caller& caller) {
        return store_->GetAccount(caller, *request);
      });
}

grpc::Status IdentityServiceImpl::ListAccounts(
    grpc::ServerContext* context, const v1::ListAccountsRequest* request,
    v1::ListAccountsResponse* response) {
  return runner_.Read<v1::ListAccountsResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListAccounts(caller, *request);
      });
}

grpc::Status IdentityServiceImpl::UpdateAccount(
    grpc::ServerContext* context, const v1::UpdateAccountRequest* request,
    v1::UpdateAccountResponse* response) {
  return runner_.Audited<v1::UpdateAccountResponse>(
      context, std::string(kPrefix) + "UpdateAccount", request->request_id(),
      v1::RESOURCE_TYPE_ACCOUNT, request->id(), response,
      [&](const Caller& caller) {
        return store_->UpdateAccount(caller, *request);
      },
      [](const v1::UpdateAccountResponse& r, AuditTarget* a) {
        a->account_id = r.account().id();
      });
}

grpc::Status IdentityServiceImpl::CreateUser(
    grpc::ServerContext* context, const v1::CreateUserRequest* request,
    v1::CreateUserResponse* response) {
  return runner_.Audited<v1::CreateUserResponse>(
      context, std::string(kPrefix) + "CreateUser", request->request_id(),
      v1::RESOURCE_TYPE_USER, "", response,
      [&](const Caller& caller) {
        return store_->CreateUser(caller, *request);
      },
      [](const v1::CreateUserResponse& r, AuditTarget* a) {
        a->target.set_id(r.user().id());
        a->account_id = r.user().account_id();
      });
}

grpc::Status IdentityServiceImpl::GetUser(grpc::ServerContext* context,
                                          const v1::GetUserRequest* request,
                                          v1::GetUserResponse* response) {
  return runner_.Read<v1::GetUserResponse>(
      context, response,
      [&](const Caller& caller) { return store_->GetUser(caller, *request); });
}

grpc::Status IdentityServiceImpl::ListUsers(grpc::ServerContext* context,
                                            const v1::ListUsersRequest* request,
                                            v1::ListUsersResponse* response) {
  return runner_.Read<v1::ListUsersResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListUsers(caller, *request);
      });
}

grpc::Status IdentityServiceImpl::DeleteUser(
    grpc::ServerContext* context, const v1::DeleteUserRequest* request,
    v1::DeleteUserResponse* response) {
  return runner_.Audited<v1::DeleteUserResponse>(
      context, std::string(kPrefix) + "DeleteUser", request->request_id(),
      v1::RESOURCE_TYPE_USER, request->id(), response,
      [&](const Caller& caller) {
        return store_->DeleteUser(caller, *request);
      });
}

grpc::Status IdentityServiceImpl::SetUserPermissions(
    grpc::ServerContext* context, const v1::SetUserPermissionsRequest* request,
    v1::SetUserPermissionsResponse* response) {
  return runner_.Audited<v1::SetUserPermissionsResponse>(
      context, std::string(kPrefix) + "SetUserPermissions",
      request->request_id(), v1::RESOURCE_TYPE_USER, request->user_id(),
      response,
      [&](const Caller& caller) {
        return store_->SetUserPermissions(caller, *request);
      },
      [](const v1::SetUserPermissionsResponse& r, AuditTarget* a) {
        a->account_id = r.user().account_id();
      });
}

grpc::Status IdentityServiceImpl::SetDeviceAccess(
    grpc::ServerContext* context, const v1::SetDeviceAccessRequest* request,
    v1::SetDeviceAccessResponse* response) {
  return runner_.Audited<v1::SetDeviceAccessResponse>(
      context, std::string(kPrefix) + "SetDeviceAccess", request->request_id(),
      v1::RESOURCE_TYPE_USER, request->user_id(), response,
      [&](const Caller& caller) {
        return store_->SetDeviceAccess(caller, *request);
      },
      [](const v1::SetDeviceAccessResponse& r, AuditTarget* a) {
        a->account_id = r.user().account_id();
      });
}

grpc::Status IdentityServiceImpl::CreateApiKey(
    grpc::ServerContext* context, const v1::CreateApiKeyRequest* request,
    v1::CreateApiKeyResponse* response) {
  return runner_.Audited<v1::CreateApiKeyResponse>(
      context, std::string(kPrefix) + "CreateApiKey", request->request_id(),
      v1::RESOURCE_TYPE_API_KEY, "", response,
      [&](const Caller& caller) {
        return store_->CreateApiKey(caller, *request);
      },
      [](const v1::CreateApiKeyResponse& r, AuditTarget* a) {
        a->target.set_id(r.api_key().id());
      });
}

grpc::Status IdentityServiceImpl::ListApiKeys(
    grpc::ServerContext* context, const v1::ListApiKeysRequest* request,
    v1::ListApiKeysResponse* response) {
  return runner_.Read<v1::ListApiKeysResponse>(
      context, response, [&](const Caller& caller) {
        return store_->ListApiKeys(caller, *request);
      });
}

grpc::Status IdentityServiceImpl::RevokeApiKey(
    grpc::ServerContext* context, const v1::RevokeApiKeyRequest* request,
    v1::RevokeApiKeyResponse* response) {
  return runner_.Audited<v1::RevokeApiKeyResponse>(
      context, std::string(kPrefix) + "RevokeApiKey", request->request_id(),
      v1::RESOURCE_TYPE_API_KEY, request->id(), response,
      [&](const Caller& caller) {
        return store_->RevokeApiKey(caller, *request);
      });
}

grpc::Status IdentityServiceImpl::GetQuota(grpc::ServerContext* context,
                                           const v1::GetQuotaRequest* request,
                                           v1::GetQuotaResponse* response) {
  return runner_.Read<v1::GetQuotaResponse>(
      context, response,
      [&](const Caller& caller) { return store_->GetQuota(caller, *request); });
}

grpc::Status IdentityServiceImpl::SetQuota(grpc::ServerContext* context,
                                           const v1::SetQuotaRequest* request,
                                           v1::SetQuotaResponse* response) {
  return runner_.Audited<v1::SetQuotaResponse>(
      context, std::string(kPrefix) + "SetQuota", request->request_id(),
      v1::RESOURCE_TYPE_QUOTA, request->account_id(), response,
      [&](const Caller& caller) { return store_->SetQuota(caller, *request); },
      [](const v1::SetQuotaResponse& r, AuditTarget* a) {
        a->account_id = r.quota().account_id();
      });
}

}  // namespace controlplane
