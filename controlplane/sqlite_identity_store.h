// IdentityStore on SQLite (tables of migration 1).
#ifndef CONTROLPLANE_SQLITE_IDENTITY_STORE_H_
#define CONTROLPLANE_SQLITE_IDENTITY_STORE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "controlplane/identity_store.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

// Thread-safe; `db` must outlive it.
class SqliteIdentityStore final : public IdentityStore {
 public:
  // Reads an account's template usage (count of templates not DELETED, sum of
  // stored bytes) inside GetQuota's unit of work. Supplied by the template
  // store; without one, usage reads as zero.
  using UsageReader = std::function<absl::Status(
      SqliteConnection& conn, const std::string& account_id, int64_t* image_template_count,
      int64_t* stored_bytes)>;

  explicit SqliteIdentityStore(SqliteDatabase* db, UsageReader usage = nullptr)
      : db_(db), usage_(std::move(usage)) {}
  SqliteIdentityStore(const SqliteIdentityStore&) = delete;
  SqliteIdentityStore& operator=(const SqliteIdentityStore&) = delete;

  // Inside any unit of work (e.g. the template store's create transaction):
  // the account's limits. NOT_FOUND if there is no such account.
  static absl::StatusOr<QuotaLimits> ReadQuotaLimits(SqliteConnection& conn,
                                                     const std::string& account_id);

  absl::StatusOr<imagetemplates::v1::GetCallerResponse> GetCaller(const Caller& caller) override;
  absl::StatusOr<imagetemplates::v1::CreateAccountResponse> CreateAccount(
      const Caller& caller, const imagetemplates::v1::CreateAccountRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetAccountResponse> GetAccount(
      const Caller& caller, const imagetemplates::v1::GetAccountRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListAccountsResponse> ListAccounts(
      const Caller& caller, const imagetemplates::v1::ListAccountsRequest& request) override;
  absl::StatusOr<imagetemplates::v1::UpdateAccountResponse> UpdateAccount(
      const Caller& caller, const imagetemplates::v1::UpdateAccountRequest& request) override;
  absl::StatusOr<imagetemplates::v1::CreateUserResponse> CreateUser(
      const Caller& caller, const imagetemplates::v1::CreateUserRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetUserResponse> GetUser(
      const Caller& caller, const imagetemplates::v1::GetUserRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListUsersResponse> ListUsers(
      const Caller& caller, const imagetemplates::v1::ListUsersRequest& request) override;
  absl::StatusOr<imagetemplates::v1::DeleteUserResponse> DeleteUser(
      const Caller& caller, const imagetemplates::v1::DeleteUserRequest& request) override;
  absl::StatusOr<imagetemplates::v1::SetUserPermissionsResponse> SetUserPermissions(
      const Caller& caller, const imagetemplates::v1::SetUserPermissionsRequest& request) override;
  absl::StatusOr<imagetemplates::v1::SetDeviceAccessResponse> SetDeviceAccess(
      const Caller& caller, const imagetemplates::v1::SetDeviceAccessRequest& request) override;
  absl::StatusOr<imagetemplates::v1::CreateApiKeyResponse> CreateApiKey(
      const Caller& caller, const imagetemplates::v1::CreateApiKeyRequest& request) override;
  absl::StatusOr<imagetemplates::v1::ListApiKeysResponse> ListApiKeys(
      const Caller& caller, const imagetemplates::v1::ListApiKeysRequest& request) override;
  absl::StatusOr<imagetemplates::v1::RevokeApiKeyResponse> RevokeApiKey(
      const Caller& caller, const imagetemplates::v1::RevokeApiKeyRequest& request) override;
  absl::StatusOr<imagetemplates::v1::GetQuotaResponse> GetQuota(
      const Caller& caller, const imagetemplates::v1::GetQuotaRequest& request) override;
  absl::StatusOr<imagetemplates::v1::SetQuotaResponse> SetQuota(
      const Caller& caller, const imagetemplates::v1::SetQuotaRequest& request) override;
  absl::StatusOr<QuotaLimits> GetQuotaLimits(const std::string& account_id) override;

 private:
  absl::StatusOr<imagetemplates::v1::Quota> ReadQuota(SqliteConnection& conn,
                                                      const std::string& account_id);

  SqliteDatabase* db_;
  UsageReader usage_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_IDENTITY_STORE_H_
