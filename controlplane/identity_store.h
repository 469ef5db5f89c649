// Accounts, users, permissions, device access, API keys and quotas: the
// business rules of IdentityService behind one storage interface. Every
// method takes the authenticated Caller and applies the API's rules:
// NOT_FOUND for anything the caller's account may not see, PERMISSION_DENIED
// for a visible resource the caller lacks a permission for, INVALID_ARGUMENT
// naming the field. Mutating methods honour request_id (idempotency.h).
#ifndef CONTROLPLANE_IDENTITY_STORE_H_
#define CONTROLPLANE_IDENTITY_STORE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "controlplane/caller.h"
#include "imagetemplates/v1/identity.pb.h"

namespace controlplane {

// An account's template limits; 0 means unlimited.
struct QuotaLimits {
  int64_t max_image_templates = 0;
  int64_t max_stored_bytes = 0;
  bool block_public_sharing = false;
};

// Thread-safe.
class IdentityStore {
 public:
  virtual ~IdentityStore() = default;

  virtual absl::StatusOr<imagetemplates::v1::GetCallerResponse> GetCaller(
      const Caller& caller) = 0;
  virtual absl::StatusOr<imagetemplates::v1::CreateAccountResponse> CreateAccount(
      const Caller& caller, const imagetemplates::v1::CreateAccountRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::GetAccountResponse> GetAccount(
      const Caller& caller, const imagetemplates::v1::GetAccountRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListAccountsResponse> ListAccounts(
      const Caller& caller, const imagetemplates::v1::ListAccountsRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::UpdateAccountResponse> UpdateAccount(
      const Caller& caller, const imagetemplates::v1::UpdateAccountRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::CreateUserResponse> CreateUser(
      const Caller& caller, const imagetemplates::v1::CreateUserRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::GetUserResponse> GetUser(
      const Caller& caller, const imagetemplates::v1::GetUserRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListUsersResponse> ListUsers(
      const Caller& caller, const imagetemplates::v1::ListUsersRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::DeleteUserResponse> DeleteUser(
      const Caller& caller, const imagetemplates::v1::DeleteUserRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::SetUserPermissionsResponse> SetUserPermissions(
      const Caller& caller, const imagetemplates::v1::SetUserPermissionsRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::SetDeviceAccessResponse> SetDeviceAccess(
      const Caller& caller, const imagetemplates::v1::SetDeviceAccessRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::CreateApiKeyResponse> CreateApiKey(
      const Caller& caller, const imagetemplates::v1::CreateApiKeyRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::ListApiKeysResponse> ListApiKeys(
      const Caller& caller, const imagetemplates::v1::ListApiKeysRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::RevokeApiKeyResponse> RevokeApiKey(
      const Caller& caller, const imagetemplates::v1::RevokeApiKeyRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::GetQuotaResponse> GetQuota(
      const Caller& caller, const imagetemplates::v1::GetQuotaRequest& request) = 0;
  virtual absl::StatusOr<imagetemplates::v1::SetQuotaResponse> SetQuota(
      const Caller& caller, const imagetemplates::v1::SetQuotaRequest& request) = 0;

  // For internal use (quota enforcement, publish checks), without access
  // checks: the account's limits. NOT_FOUND if there is no such account.
  virtual absl::StatusOr<QuotaLimits> GetQuotaLimits(const std::string& account_id) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_IDENTITY_STORE_H_
