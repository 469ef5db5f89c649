// IdentityService over gRPC.
#ifndef CONTROLPLANE_IDENTITY_SERVICE_H_
#define CONTROLPLANE_IDENTITY_SERVICE_H_

#include "controlplane/identity_store.h"
#include "controlplane/rpc_runner.h"
#include "imagetemplates/v1/identity.grpc.pb.h"

namespace controlplane {

// The gRPC adapter of IdentityService: authentication, auditing and status
// conversion around IdentityStore, which holds the rules. Thread-safe; the
// pointers must outlive it.
class IdentityServiceImpl final
    : public imagetemplates::v1::IdentityService::Service {
 public:
  IdentityServiceImpl(IdentityStore* store, Authenticator* authenticator,
                      AuditLog* audit)
      : store_(store), runner_(authenticator, audit) {}

  grpc::Status GetCaller(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetCallerRequest* request,
      imagetemplates::v1::GetCallerResponse* response) override;
  grpc::Status CreateAccount(
      grpc::ServerContext* context,
      const imagetemplates::v1::CreateAccountRequest* request,
      imagetemplates::v1::CreateAccountResponse* response) override;
  grpc::Status GetAccount(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetAccountRequest* request,
      imagetemplates::v1::GetAccountResponse* response) override;
  grpc::Status ListAccounts(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListAccountsRequest* request,
      imagetemplates::v1::ListAccountsResponse* response) override;
  grpc::Status UpdateAccount(
      grpc::ServerContext* context,
      const imagetemplates::v1::UpdateAccountRequest* request,
      imagetemplates::v1::UpdateAccountResponse* response) override;
  grpc::Status CreateUser(
      grpc::ServerContext* context,
      const imagetemplates::v1::CreateUserRequest* request,
      imagetemplates::v1::CreateUserResponse* response) override;
  grpc::Status GetUser(grpc::ServerContext* context,
                       const imagetemplates::v1::GetUserRequest* request,
                       imagetemplates::v1::GetUserResponse* response) override;
  grpc::Status ListUsers(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListUsersRequest* request,
      imagetemplates::v1::ListUsersResponse* response) override;
  grpc::Status DeleteUser(
      grpc::ServerContext* context,
      const imagetemplates::v1::DeleteUserRequest* request,
      imagetemplates::v1::DeleteUserResponse* response) override;
  grpc::Status SetUserPermissions(
      grpc::ServerContext* context,
      const imagetemplates::v1::SetUserPermissionsRequest* request,
      imagetemplates::v1::SetUserPermissionsResponse* response) override;
  grpc::Status SetDeviceAccess(
      grpc::ServerContext* context,
      const imagetemplates::v1::SetDeviceAccessRequest* request,
      imagetemplates::v1::SetDeviceAccessResponse* response) override;
  grpc::Status CreateApiKey(
      grpc::ServerContext* context,
      const imagetemplates::v1::CreateApiKeyRequest* request,
      imagetemplates::v1::CreateApiKeyResponse* response) override;
  grpc::Status ListApiKeys(
      grpc::ServerContext* context,
      const imagetemplates::v1::ListApiKeysRequest* request,
      imagetemplates::v1::ListApiKeysResponse* response) override;
  grpc::Status RevokeApiKey(
      grpc::ServerContext* context,
      const imagetemplates::v1::RevokeApiKeyRequest* request,
      imagetemplates::v1::RevokeApiKeyResponse* response) override;
  grpc::Status GetQuota(
      grpc::ServerContext* context,
      const imagetemplates::v1::GetQuotaRequest* request,
      imagetemplates::v1::GetQuotaResponse* response) override;
  grpc::Status SetQuota(
      grpc::ServerContext* context,
      const imagetemplates::v1::SetQuotaRequest* request,
      imagetemplates::v1::SetQuotaResponse* response) override;

 private:
  IdentityStore* store_;
  RpcRunner runner_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_IDENTITY_SERVICE_H_
