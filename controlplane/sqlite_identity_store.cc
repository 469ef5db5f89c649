#include "controlplane/sqlite_identity_store.h"

#include <algorithm>
#include <functional>
#include <optional>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/api_key_authenticator.h"
#include "controlplane/idempotency.h"
#include "controlplane/ids.h"
#include "controlplane/page_token.h"
#include "controlplane/sqlite_keyset_page.h"
#include "controlplane/validation.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

namespace {

constexpr int kMaxAccountName = 100;
constexpr int kMaxUsername = 64;
constexpr int kMaxDescription = 200;
constexpr int kMaxDeviceServers = 1000;
constexpr int kMaxUnrevokedKeys = 10;

absl::Status NoSuchUser() { return absl::NotFoundError("user not found"); }
absl::Status NoSuchAccount() { return absl::NotFoundError("account not found"); }

bool SeesAccount(const Caller& caller, absl::string_view account_id) {
  return caller.is_operator || caller.account_id == account_id;
}

absl::StatusOr<std::optional<v1::Account>> ReadAccount(SqliteConnection& conn,
                                                        absl::string_view id) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT id, name, is_operator, block_public_sharing, create_time FROM accounts "
      "WHERE id = ?1"));
  stmt.Bind(1, id);
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::nullopt;
  v1::Account account;
  account.set_id(stmt.ColumnText(0));
  account.set_name(stmt.ColumnText(1));
  account.set_is_operator(stmt.ColumnInt(2) != 0);
  account.set_block_public_sharing(stmt.ColumnInt(3) != 0);
  *account.mutable_create_time() = ToTimestamp(stmt.ColumnInt(4));
  return account;
}

absl::StatusOr<std::optional<v1::User>> ReadUser(SqliteConnection& conn, absl::string_view id) {
  v1::User user;
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id, account_id, username, all_servers, create_time FROM users WHERE id = ?1"));
    stmt.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return std::nullopt;
    user.set_id(stmt.ColumnText(0));
    user.set_account_id(stmt.ColumnText(1));
    user.set_username(stmt.ColumnText(2));
    user.mutable_device_access()->set_all_servers(stmt.ColumnInt(3) != 0);
    *user.mutable_create_time() = ToTimestamp(stmt.ColumnInt(4));
  }
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT permission FROM user_permissions WHERE user_id = ?1 ORDER BY permission"));
    stmt.Bind(1, id);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      user.add_permissions(static_cast<v1::Permission>(stmt.ColumnInt(0)));
    }
  }
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT server_id FROM user_servers WHERE user_id = ?1 ORDER BY server_id"));
    stmt.Bind(1, id);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      user.mutable_device_access()->add_server_ids(stmt.ColumnText(0));
    }
  }
  return user;
}

absl::StatusOr<v1::User> MustReadUser(SqliteConnection& conn, absl::string_view id) {
  ASSIGN_OR_RETURN(auto user, ReadUser(conn, id));
  if (!user) return NoSuchUser();
  return *std::move(user);
}

// A user the caller may manage: NOT_FOUND outside the caller's account (for
// non-operators), PERMISSION_DENIED without USER_MANAGE unless `allow_self`
// and the user is the caller.
absl::StatusOr<v1::User> ManagedUser(SqliteConnection& conn, const Caller& caller,
                                     absl::string_view user_id, bool allow_self) {
  ASSIGN_OR_RETURN(auto user, ReadUser(conn, user_id));
  if (!user || !SeesAccount(caller, user->account_id())) return NoSuchUser();
  if (allow_self && user->id() == caller.user_id) return *std::move(user);
  if (!caller.Has(v1::PERMISSION_USER_MANAGE)) {
    return absl::PermissionDeniedError("managing users needs PERMISSION_USER_MANAGE");
  }
  return *std::move(user);
}

// A user the caller may change (its keys, permissions, device access, or
// delete it): ManagedUser, and unless it is the caller itself, one holding
// no permission and no server the caller lacks. Otherwise a user manager
// could mint a key for, strip or delete a more powerful colleague.
absl::StatusOr<v1::User> ChangeableUser(SqliteConnection& conn, const Caller& caller,
                                        absl::string_view user_id, bool allow_self) {
  ASSIGN_OR_RETURN(v1::User user, ManagedUser(conn, caller, user_id, allow_self));
  if (user.id() == caller.user_id) return user;
  for (int p : user.permissions()) {
    if (!caller.Has(static_cast<v1::Permission>(p))) {
      return absl::PermissionDeniedError(absl::StrCat(
          "the user holds ", v1::Permission_Name(static_cast<v1::Permission>(p)),
          ", which the caller does not; only a user holding all of its permissions and "
          "servers may change it"));
    }
  }
  const v1::DeviceAccess& access = user.device_access();
  bool covered = caller.is_operator || caller.all_servers || !access.all_servers();
  for (const std::string& id : access.server_ids()) covered = covered && caller.CanAccessServer(id);
  if (!covered) {
    return absl::PermissionDeniedError(
        "the user can reach servers the caller cannot; only a user holding all of its "
        "permissions and servers may change it");
  }
  return user;
}

// For a repeated call, whose stored response is returned without running
// ManagedUser again: the permission the first run needed to act on
// `target_user_id` (empty: any user, the caller too), which the caller may
// have lost since.
absl::Status RecheckUserManage(const Caller& caller) {
  if (caller.Has(v1::PERMISSION_USER_MANAGE)) return absl::OkStatus();
  return absl::PermissionDeniedError("managing users needs PERMISSION_USER_MANAGE");
}

// Device access the caller may hand out: at most its own.
absl::Status CheckGrantableAccess(const Caller& caller, const v1::DeviceAccess& access) {
  if (caller.is_operator || caller.all_servers) return absl::OkStatus();
  if (access.all_servers()) {
    return absl::PermissionDeniedError(
        "device_access: cannot grant all servers; the caller does not have them");
  }
  for (const std::string& id : access.server_ids()) {
    if (!caller.CanAccessServer(id)) {
      return absl::PermissionDeniedError(absl::StrCat(
          "device_access: cannot grant server ", id, ", which the caller cannot access"));
    }
  }
  return absl::OkStatus();
}

// Validates, deduplicates and sorts a permission set for a user of an
// account; refuses grants beyond the caller's own (`already` are kept).
absl::StatusOr<std::vector<int>> CheckPermissions(
    const Caller& caller, const google::protobuf::RepeatedField<int>& requested,
    bool operator_account, const std::set<int>& already) {
  std::set<int> wanted;
  for (int p : requested) {
    RETURN_IF_ERROR(ValidateEnum("permissions", p, v1::Permission_IsValid, false));
    if (p == v1::PERMISSION_PLATFORM_OPERATOR && !operator_account) {
      return absl::InvalidArgumentError(
          "permissions: PERMISSION_PLATFORM_OPERATOR only for users of the operator account");
    }
    wanted.insert(p);
  }
  for (int p : wanted) {
    if (!already.count(p) && !caller.Has(static_cast<v1::Permission>(p))) {
      return absl::PermissionDeniedError(absl::StrCat(
          "cannot grant ", v1::Permission_Name(static_cast<v1::Permission>(p)),
          ", which the caller does not hold"));
    }
  }
  return std::vector<int>(wanted.begin(), wanted.end());
}

absl::Status CheckDeviceAccessShape(const v1::DeviceAccess& access) {
  if (access.all_servers()) return absl::OkStatus();
  if (access.server_ids_size() > kMaxDeviceServers) {
    return absl::InvalidArgumentError(
        absl::StrCat("device_access: at most ", kMaxDeviceServers, " server_ids"));
  }
  for (const std::string& id : access.server_ids()) {
    RETURN_IF_ERROR(ValidateUuid("device_access.server_ids", id));
  }
  return absl::OkStatus();
}

// Replaces the user's permissions and device access rows.
absl::Status WritePermissions(SqliteConnection& conn, absl::string_view user_id,
                              const std::vector<int>& permissions) {
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM user_permissions WHERE user_id = ?1"));
    RETURN_IF_ERROR(stmt.Bind(1, user_id).Run());
  }
  for (int p : permissions) {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "INSERT INTO user_permissions (user_id, permission) VALUES (?1, ?2)"));
    RETURN_IF_ERROR(stmt.Bind(1, user_id).Bind(2, p).Run());
  }
  return absl::OkStatus();
}

absl::Status WriteDeviceAccess(SqliteConnection& conn, absl::string_view user_id,
                               absl::string_view account_id, const v1::DeviceAccess& access) {
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("UPDATE users SET all_servers = ?2 WHERE id = ?1"));
    RETURN_IF_ERROR(stmt.Bind(1, user_id).Bind(2, access.all_servers()).Run());
  }
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM user_servers WHERE user_id = ?1"));
    RETURN_IF_ERROR(stmt.Bind(1, user_id).Run());
  }
  if (access.all_servers()) return absl::OkStatus();
  for (const std::string& server_id : access.server_ids()) {
    ASSIGN_OR_RETURN(auto check, conn.Prepare(
        "SELECT 1 FROM servers WHERE id = ?1 AND account_id = ?2"));
    check.Bind(1, server_id).Bind(2, account_id);
    ASSIGN_OR_RETURN(bool found, check.Step());
    if (!found) {
      return absl::NotFoundError(
          absl::StrCat("device_access.server_ids: server ", server_id, " not found"));
    }
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "INSERT OR IGNORE INTO user_servers (user_id, server_id) VALUES (?1, ?2)"));
    RETURN_IF_ERROR(stmt.Bind(1, user_id).Bind(2, server_id).Run());
  }
  return absl::OkStatus();
}

// How many users of the account other than `except_user` hold `permission`.
absl::StatusOr<int64_t> OtherHolders(SqliteConnection& conn, absl::string_view account_id,
                                     absl::string_view except_user, v1::Permission permission) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT COUNT(*) FROM users u JOIN user_permissions p ON p.user_id = u.id "
      "WHERE u.account_id = ?1 AND u.id != ?2 AND p.permission = ?3"));
  stmt.Bind(1, account_id).Bind(2, except_user).Bind(3, int{permission});
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  return row ? stmt.ColumnInt(0) : 0;
}

bool HasPermission(const v1::User& user, v1::Permission p) {
  return std::find(user.permissions().begin(), user.permissions().end(), p) !=
         user.permissions().end();
}

v1::ApiKey ReadApiKeyRow(const SqliteStatement& stmt) {
  // Columns: id, user_id, description, prefix, create_time, revoke_time.
  v1::ApiKey key;
  key.set_id(stmt.ColumnText(0));
  key.set_user_id(stmt.ColumnText(1));
  key.set_description(stmt.ColumnText(2));
  key.set_prefix(stmt.ColumnText(3));
  *key.mutable_create_time() = ToTimestamp(stmt.ColumnInt(4));
  if (!stmt.ColumnIsNull(5)) {
    key.set_revoked(true);
    *key.mutable_revoke_time() = ToTimestamp(stmt.ColumnInt(5));
  }
  return key;
}

// A mutation keyed by the request's request_id (INVALID_ARGUMENT if
// malformed, checked first): IdempotentTransaction of `work` in the caller's
// account, fingerprinted as `method`, with `scrub` and `replay_check` as
// there.
template <typename Response, typename Request>
absl::StatusOr<Response> IdempotentMutation(
    SqliteDatabase* db, const Caller& caller, absl::string_view method, const Request& request,
    const std::function<absl::StatusOr<Response>(SqliteConnection&)>& work,
    const std::function<void(Response*)>& scrub = nullptr,
    const std::function<absl::Status(SqliteConnection&, const Response&)>& replay_check =
        nullptr) {
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<Response>(db, caller.account_id, request.request_id(),
                                         RequestFingerprint(method, request), work, scrub,
                                         replay_check);
}

}  // namespace

absl::StatusOr<QuotaLimits> SqliteIdentityStore::ReadQuotaLimits(SqliteConnection& conn,
                                                                  const std::string& account_id) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT max_image_templates, max_stored_bytes, block_public_sharing FROM accounts "
      "WHERE id = ?1"));
  stmt.Bind(1, account_id);
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return NoSuchAccount();
  QuotaLimits limits;
  limits.max_image_templates = stmt.ColumnInt(0);
  limits.max_stored_bytes = stmt.ColumnInt(1);
  limits.block_public_sharing = stmt.ColumnInt(2) != 0;
  return limits;
}

absl::StatusOr<QuotaLimits> SqliteIdentityStore::GetQuotaLimits(const std::string& account_id) {
  absl::StatusOr<QuotaLimits> limits;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) {
    limits = ReadQuotaLimits(conn, account_id);
    return limits.status();
  }));
  return limits;
}

absl::StatusOr<v1::Quota> SqliteIdentityStore::ReadQuota(SqliteConnection& conn,
                                                         const std::string& account_id) {
  ASSIGN_OR_RETURN(QuotaLimits limits, ReadQuotaLimits(conn, account_id));
  v1::Quota quota;
  quota.set_account_id(account_id);
  quota.set_max_image_templates(limits.max_image_templates);
  quota.set_max_stored_bytes(limits.max_stored_bytes);
  if (usage_) {
    int64_t count = 0;
    int64_t bytes = 0;
    RETURN_IF_ERROR(usage_(conn, account_id, &count, &bytes));
    quota.set_image_template_count(count);
    quota.set_stored_bytes(bytes);
  }
  return quota;
}

absl::StatusOr<v1::GetCallerResponse> SqliteIdentityStore::GetCaller(const Caller& caller) {
  v1::GetCallerResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(*response.mutable_user(), MustReadUser(conn, caller.user_id));
    ASSIGN_OR_RETURN(auto account, ReadAccount(conn, caller.account_id));
    if (!account) return NoSuchAccount();
    *response.mutable_account() = *std::move(account);
    return absl::OkStatus();
  }));
  response.set_api_key_id(caller.api_key_id);
  return response;
}

absl::StatusOr<v1::CreateAccountResponse> SqliteIdentityStore::CreateAccount(
    const Caller& caller, const v1::CreateAccountRequest& request) {
  if (!caller.is_operator) {
    return absl::PermissionDeniedError("creating accounts needs PERMISSION_PLATFORM_OPERATOR");
  }
  ASSIGN_OR_RETURN(std::string name, ValidateName("name", request.name(), kMaxAccountName));
  return IdempotentMutation<v1::CreateAccountResponse>(
      db_, caller, "CreateAccount", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::CreateAccountResponse> {
        v1::CreateAccountResponse response;
        v1::Account* account = response.mutable_account();
        account->set_id(NewUuid());
        account->set_name(name);
        account->set_is_operator(request.is_operator());
        account->set_block_public_sharing(request.block_public_sharing());
        int64_t now = NowMicros();
        *account->mutable_create_time() = ToTimestamp(now);
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "INSERT INTO accounts (id, name, is_operator, block_public_sharing, create_time) "
            "VALUES (?1, ?2, ?3, ?4, ?5)"));
        stmt.Bind(1, account->id()).Bind(2, name).Bind(3, request.is_operator());
        stmt.Bind(4, request.block_public_sharing()).Bind(5, now);
        absl::Status status = stmt.Run();
        if (absl::IsAlreadyExists(status)) {
          return absl::AlreadyExistsError("name: an account with this name exists");
        }
        RETURN_IF_ERROR(status);
        return response;
      });
}

absl::StatusOr<v1::GetAccountResponse> SqliteIdentityStore::GetAccount(
    const Caller& caller, const v1::GetAccountRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  if (!SeesAccount(caller, request.id())) return NoSuchAccount();
  v1::GetAccountResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto account, ReadAccount(conn, request.id()));
    if (!account) return NoSuchAccount();
    *response.mutable_account() = *std::move(account);
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::ListAccountsResponse> SqliteIdentityStore::ListAccounts(
    const Caller& caller, const v1::ListAccountsRequest& request) {
  if (!caller.is_operator) {
    return absl::PermissionDeniedError("listing accounts needs PERMISSION_PLATFORM_OPERATOR");
  }
  RETURN_IF_ERROR(ValidateText("name_contains", request.name_contains(), kMaxAccountName));
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters = FilterKey({"accounts", request.name_contains()});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  RETURN_IF_ERROR(CheckCursor(after, 2));
  v1::ListAccountsResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id FROM accounts WHERE (?1 = '' OR instr(lower(name), lower(?1)) > 0) "
        "AND (?2 = 0 OR (name, id) > (?3, ?4)) ORDER BY name, id LIMIT ?5"));
    stmt.Bind(1, request.name_contains()).Bind(2, !after.empty());
    stmt.Bind(3, Part(after, 0)).Bind(4, Part(after, 1));
    stmt.Bind(5, page_size + 1);
    ASSIGN_OR_RETURN(auto page, PageIds(stmt, page_size));
    const auto& [ids, more] = page;
    for (const std::string& id : ids) {
      ASSIGN_OR_RETURN(auto account, ReadAccount(conn, id));
      if (account) *response.add_accounts() = *std::move(account);
    }
    if (more && response.accounts_size() > 0) {
      const v1::Account& last = response.accounts(response.accounts_size() - 1);
      response.set_next_page_token(EncodePageToken({last.name(), last.id()}, filters));
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::UpdateAccountResponse> SqliteIdentityStore::UpdateAccount(
    const Caller& caller, const v1::UpdateAccountRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  if (!SeesAccount(caller, request.id())) return NoSuchAccount();
  if (!caller.Has(v1::PERMISSION_USER_MANAGE)) {
    return absl::PermissionDeniedError("changing an account needs PERMISSION_USER_MANAGE");
  }
  ASSIGN_OR_RETURN(auto paths,
                   ValidateUpdateMask(request.update_mask(), {"name", "block_public_sharing"}));
  const bool set_name = paths.contains("name");
  const bool set_block = paths.contains("block_public_sharing");
  std::string name;
  if (set_name) {
    ASSIGN_OR_RETURN(name, ValidateName("name", request.name(), kMaxAccountName));
  }
  return IdempotentMutation<v1::UpdateAccountResponse>(
      db_, caller, "UpdateAccount", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::UpdateAccountResponse> {
        ASSIGN_OR_RETURN(auto account, ReadAccount(conn, request.id()));
        if (!account) return NoSuchAccount();
        if (set_name) {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare("UPDATE accounts SET name = ?2 WHERE id = ?1"));
          absl::Status status = stmt.Bind(1, request.id()).Bind(2, name).Run();
          if (absl::IsAlreadyExists(status)) {
            return absl::AlreadyExistsError("name: an account with this name exists");
          }
          RETURN_IF_ERROR(status);
          account->set_name(name);
        }
        if (set_block) {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "UPDATE accounts SET block_public_sharing = ?2 WHERE id = ?1"));
          RETURN_IF_ERROR(stmt.Bind(1, request.id()).Bind(2, request.block_public_sharing()).Run());
          account->set_block_public_sharing(request.block_public_sharing());
        }
        v1::UpdateAccountResponse response;
        *response.mutable_account() = *std::move(account);
        return response;
      });
}

absl::StatusOr<v1::CreateUserResponse> SqliteIdentityStore::CreateUser(
    const Caller& caller, const v1::CreateUserRequest& request) {
  std::string account_id = request.account_id().empty() ? caller.account_id : request.account_id();
  RETURN_IF_ERROR(ValidateUuid("account_id", account_id));
  if (!SeesAccount(caller, account_id)) return absl::NotFoundError("account_id: account not found");
  if (!caller.Has(v1::PERMISSION_USER_MANAGE)) {
    return absl::PermissionDeniedError("creating users needs PERMISSION_USER_MANAGE");
  }
  RETURN_IF_ERROR(ValidateToken("username", request.username(), kMaxUsername, "._@-"));
  RETURN_IF_ERROR(CheckDeviceAccessShape(request.device_access()));
  RETURN_IF_ERROR(CheckGrantableAccess(caller, request.device_access()));
  return IdempotentMutation<v1::CreateUserResponse>(
      db_, caller, "CreateUser", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::CreateUserResponse> {
        ASSIGN_OR_RETURN(auto account, ReadAccount(conn, account_id));
        if (!account) return absl::NotFoundError("account_id: account not found");
        ASSIGN_OR_RETURN(std::vector<int> permissions,
                         CheckPermissions(caller, request.permissions(), account->is_operator(), {}));
        std::string id = NewUuid();
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "INSERT INTO users (id, account_id, username, all_servers, create_time) "
            "VALUES (?1, ?2, ?3, 0, ?4)"));
        absl::Status status =
            stmt.Bind(1, id).Bind(2, account_id).Bind(3, request.username()).Bind(4, NowMicros()).Run();
        if (absl::IsAlreadyExists(status)) {
          return absl::AlreadyExistsError("username: taken in this account");
        }
        RETURN_IF_ERROR(status);
        RETURN_IF_ERROR(WritePermissions(conn, id, permissions));
        RETURN_IF_ERROR(WriteDeviceAccess(conn, id, account_id, request.device_access()));
        v1::CreateUserResponse response;
        ASSIGN_OR_RETURN(*response.mutable_user(), MustReadUser(conn, id));
        return response;
      });
}

absl::StatusOr<v1::GetUserResponse> SqliteIdentityStore::GetUser(const Caller& caller,
                                                                 const v1::GetUserRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  v1::GetUserResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(*response.mutable_user(), ManagedUser(conn, caller, request.id(), true));
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::ListUsersResponse> SqliteIdentityStore::ListUsers(
    const Caller& caller, const v1::ListUsersRequest& request) {
  std::string account_id = request.account_id().empty() ? caller.account_id : request.account_id();
  RETURN_IF_ERROR(ValidateUuid("account_id", account_id));
  if (!SeesAccount(caller, account_id)) return absl::NotFoundError("account_id: account not found");
  if (!caller.Has(v1::PERMISSION_USER_MANAGE)) {
    return absl::PermissionDeniedError("listing users needs PERMISSION_USER_MANAGE");
  }
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters = FilterKey({"users", account_id});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  RETURN_IF_ERROR(CheckCursor(after, 2));
  v1::ListUsersResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto account, ReadAccount(conn, account_id));
    if (!account) return absl::NotFoundError("account_id: account not found");
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id FROM users WHERE account_id = ?1 AND (?2 = 0 OR (username, id) > (?3, ?4)) "
        "ORDER BY username, id LIMIT ?5"));
    stmt.Bind(1, account_id).Bind(2, !after.empty());
    stmt.Bind(3, Part(after, 0)).Bind(4, Part(after, 1));
    stmt.Bind(5, page_size + 1);
    ASSIGN_OR_RETURN(auto page, PageIds(stmt, page_size));
    const auto& [ids, more] = page;
    for (const std::string& id : ids) {
      ASSIGN_OR_RETURN(*response.add_users(), MustReadUser(conn, id));
    }
    if (more && response.users_size() > 0) {
      const v1::User& last = response.users(response.users_size() - 1);
      response.set_next_page_token(EncodePageToken({last.username(), last.id()}, filters));
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::DeleteUserResponse> SqliteIdentityStore::DeleteUser(
    const Caller& caller, const v1::DeleteUserRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  return IdempotentMutation<v1::DeleteUserResponse>(
      db_, caller, "DeleteUser", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::DeleteUserResponse> {
        ASSIGN_OR_RETURN(v1::User user, ChangeableUser(conn, caller, request.id(), false));
        if (user.id() == caller.user_id) {
          return absl::FailedPreconditionError(
              "a user cannot delete itself; ask another user manager");
        }
        for (v1::Permission kept : {v1::PERMISSION_USER_MANAGE, v1::PERMISSION_PLATFORM_OPERATOR}) {
          if (!HasPermission(user, kept)) continue;
          ASSIGN_OR_RETURN(int64_t others, OtherHolders(conn, user.account_id(), user.id(), kept));
          if (others == 0) {
            return absl::FailedPreconditionError(absl::StrCat(
                "this is the account's last user with ", v1::Permission_Name(kept),
                "; grant it to another user first"));
          }
        }
        // Keys go with the user (ON DELETE CASCADE): they stop working at once.
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM users WHERE id = ?1"));
        RETURN_IF_ERROR(stmt.Bind(1, user.id()).Run());
        return v1::DeleteUserResponse();
      },
      nullptr,
      // The user is gone: only the caller's own right to manage users is left
      // to check.
      [&](SqliteConnection&, const v1::DeleteUserResponse&) {
        return RecheckUserManage(caller);
      });
}

absl::StatusOr<v1::SetUserPermissionsResponse> SqliteIdentityStore::SetUserPermissions(
    const Caller& caller, const v1::SetUserPermissionsRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("user_id", request.user_id()));
  return IdempotentMutation<v1::SetUserPermissionsResponse>(
      db_, caller, "SetUserPermissions", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::SetUserPermissionsResponse> {
        ASSIGN_OR_RETURN(v1::User user, ChangeableUser(conn, caller, request.user_id(), false));
        ASSIGN_OR_RETURN(auto account, ReadAccount(conn, user.account_id()));
        if (!account) return NoSuchAccount();
        std::set<int> already(user.permissions().begin(), user.permissions().end());
        ASSIGN_OR_RETURN(std::vector<int> permissions,
                         CheckPermissions(caller, request.permissions(), account->is_operator(),
                                          already));
        for (v1::Permission kept : {v1::PERMISSION_USER_MANAGE, v1::PERMISSION_PLATFORM_OPERATOR}) {
          if (!already.count(kept) ||
              std::find(permissions.begin(), permissions.end(), int{kept}) != permissions.end()) {
            continue;
          }
          ASSIGN_OR_RETURN(int64_t others, OtherHolders(conn, user.account_id(), user.id(), kept));
          if (others == 0) {
            return absl::FailedPreconditionError(absl::StrCat(
                "this would leave the account without a user holding ", v1::Permission_Name(kept)));
          }
        }
        RETURN_IF_ERROR(WritePermissions(conn, user.id(), permissions));
        v1::SetUserPermissionsResponse response;
        ASSIGN_OR_RETURN(*response.mutable_user(), MustReadUser(conn, user.id()));
        return response;
      },
      nullptr,
      [&](SqliteConnection& conn, const v1::SetUserPermissionsResponse&) {
        return ChangeableUser(conn, caller, request.user_id(), false).status();
      });
}

absl::StatusOr<v1::SetDeviceAccessResponse> SqliteIdentityStore::SetDeviceAccess(
    const Caller& caller, const v1::SetDeviceAccessRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("user_id", request.user_id()));
  RETURN_IF_ERROR(CheckDeviceAccessShape(request.device_access()));
  return IdempotentMutation<v1::SetDeviceAccessResponse>(
      db_, caller, "SetDeviceAccess", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::SetDeviceAccessResponse> {
        ASSIGN_OR_RETURN(v1::User user, ChangeableUser(conn, caller, request.user_id(), false));
        RETURN_IF_ERROR(CheckGrantableAccess(caller, request.device_access()));
        RETURN_IF_ERROR(WriteDeviceAccess(conn, user.id(), user.account_id(),
                                          request.device_access()));
        v1::SetDeviceAccessResponse response;
        ASSIGN_OR_RETURN(*response.mutable_user(), MustReadUser(conn, user.id()));
        return response;
      },
      nullptr,
      [&](SqliteConnection& conn, const v1::SetDeviceAccessResponse&) {
        RETURN_IF_ERROR(ChangeableUser(conn, caller, request.user_id(), false).status());
        return CheckGrantableAccess(caller, request.device_access());
      });
}

absl::StatusOr<v1::CreateApiKeyResponse> SqliteIdentityStore::CreateApiKey(
    const Caller& caller, const v1::CreateApiKeyRequest& request) {
  std::string user_id = request.user_id().empty() ? caller.user_id : request.user_id();
  RETURN_IF_ERROR(ValidateUuid("user_id", user_id));
  RETURN_IF_ERROR(ValidateText("description", request.description(), kMaxDescription));
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::CreateApiKeyResponse>(
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("CreateApiKey", request, request.user_id().empty() ? caller.user_id : ""),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::CreateApiKeyResponse> {
        ASSIGN_OR_RETURN(v1::User user, ChangeableUser(conn, caller, user_id, true));
        ASSIGN_OR_RETURN(auto count, conn.Prepare(
            "SELECT COUNT(*) FROM api_keys WHERE user_id = ?1 AND revoke_time IS NULL"));
        count.Bind(1, user.id());
        ASSIGN_OR_RETURN(bool row, count.Step());
        if (row && count.ColumnInt(0) >= kMaxUnrevokedKeys) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "the user already has ", kMaxUnrevokedKeys, " unrevoked API keys; revoke one"));
        }
        GeneratedApiKey key = GenerateApiKey();
        int64_t now = NowMicros();
        RETURN_IF_ERROR(InsertApiKey(conn, key, user.id(), request.description(), now));
        v1::CreateApiKeyResponse response;
        v1::ApiKey* api_key = response.mutable_api_key();
        api_key->set_id(key.id);
        api_key->set_user_id(user.id());
        api_key->set_description(request.description());
        api_key->set_prefix(key.prefix);
        *api_key->mutable_create_time() = ToTimestamp(now);
        response.set_secret(key.secret);
        return response;
      },
      // The secret is shown once; a repeat gets the key without it.
      [](v1::CreateApiKeyResponse* stored) { stored->clear_secret(); },
      [&](SqliteConnection& conn, const v1::CreateApiKeyResponse& r) {
        return ChangeableUser(conn, caller, r.api_key().user_id(), true).status();
      });
}

absl::StatusOr<v1::ListApiKeysResponse> SqliteIdentityStore::ListApiKeys(
    const Caller& caller, const v1::ListApiKeysRequest& request) {
  std::string user_id = request.user_id().empty() ? caller.user_id : request.user_id();
  RETURN_IF_ERROR(ValidateUuid("user_id", user_id));
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters = FilterKey({"api_keys", user_id, request.include_revoked() ? "1" : "0"});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  int64_t after_time = 0;
  if (!after.empty() && (after.size() != 2 || !absl::SimpleAtoi(after[0], &after_time))) {
    return absl::InvalidArgumentError("page_token: malformed");
  }
  v1::ListApiKeysResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    // The access CreateApiKey needs: a user manager may not survey the keys
    // of a colleague holding more than it does.
    ASSIGN_OR_RETURN(v1::User user, ChangeableUser(conn, caller, user_id, true));
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id, user_id, description, prefix, create_time, revoke_time FROM api_keys "
        "WHERE user_id = ?1 AND (?2 = 1 OR revoke_time IS NULL) "
        "AND (?3 = 0 OR (create_time, id) < (?4, ?5)) "
        "ORDER BY create_time DESC, id DESC LIMIT ?6"));
    stmt.Bind(1, user.id()).Bind(2, request.include_revoked()).Bind(3, !after.empty());
    stmt.Bind(4, after_time).Bind(5, after.empty() ? "" : after[1]).Bind(6, page_size + 1);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      if (response.api_keys_size() == page_size) {
        const v1::ApiKey& last = response.api_keys(page_size - 1);
        response.set_next_page_token(EncodePageToken(
            {absl::StrCat(FromTimestamp(last.create_time())), last.id()}, filters));
        break;
      }
      *response.add_api_keys() = ReadApiKeyRow(stmt);
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::RevokeApiKeyResponse> SqliteIdentityStore::RevokeApiKey(
    const Caller& caller, const v1::RevokeApiKeyRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  return IdempotentMutation<v1::RevokeApiKeyResponse>(
      db_, caller, "RevokeApiKey", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::RevokeApiKeyResponse> {
        std::string user_id;
        {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT user_id FROM api_keys WHERE id = ?1"));
          stmt.Bind(1, request.id());
          ASSIGN_OR_RETURN(bool row, stmt.Step());
          if (!row) return absl::NotFoundError("API key not found");
          user_id = stmt.ColumnText(0);
        }
        auto user = ChangeableUser(conn, caller, user_id, true);
        if (absl::IsNotFound(user.status())) return absl::NotFoundError("API key not found");
        RETURN_IF_ERROR(user.status());
        {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "UPDATE api_keys SET revoke_time = ?2 WHERE id = ?1 AND revoke_time IS NULL"));
          RETURN_IF_ERROR(stmt.Bind(1, request.id()).Bind(2, NowMicros()).Run());
        }
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "SELECT id, user_id, description, prefix, create_time, revoke_time FROM api_keys "
            "WHERE id = ?1"));
        stmt.Bind(1, request.id());
        ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) return absl::InternalError("revoked key vanished");
        v1::RevokeApiKeyResponse response;
        *response.mutable_api_key() = ReadApiKeyRow(stmt);
        return response;
      },
      nullptr,
      [&](SqliteConnection& conn, const v1::RevokeApiKeyResponse& r) -> absl::Status {
        auto user = ChangeableUser(conn, caller, r.api_key().user_id(), true);
        if (absl::IsNotFound(user.status())) return absl::NotFoundError("API key not found");
        return user.status();
      });
}

absl::StatusOr<v1::GetQuotaResponse> SqliteIdentityStore::GetQuota(
    const Caller& caller, const v1::GetQuotaRequest& request) {
  std::string account_id = request.account_id().empty() ? caller.account_id : request.account_id();
  RETURN_IF_ERROR(ValidateUuid("account_id", account_id));
  if (!SeesAccount(caller, account_id)) return NoSuchAccount();
  v1::GetQuotaResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(*response.mutable_quota(), ReadQuota(conn, account_id));
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::SetQuotaResponse> SqliteIdentityStore::SetQuota(
    const Caller& caller, const v1::SetQuotaRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("account_id", request.account_id()));
  if (!SeesAccount(caller, request.account_id())) return NoSuchAccount();
  if (!caller.is_operator) {
    return absl::PermissionDeniedError("setting quotas needs PERMISSION_PLATFORM_OPERATOR");
  }
  ASSIGN_OR_RETURN(auto paths, ValidateUpdateMask(request.update_mask(),
                                                  {"max_image_templates", "max_stored_bytes"}));
  const bool set_templates = paths.contains("max_image_templates");
  const bool set_bytes = paths.contains("max_stored_bytes");
  if (set_templates && request.max_image_templates() < 0) {
    return absl::InvalidArgumentError("max_image_templates: must not be negative");
  }
  if (set_bytes && request.max_stored_bytes() < 0) {
    return absl::InvalidArgumentError("max_stored_bytes: must not be negative");
  }
  return IdempotentMutation<v1::SetQuotaResponse>(
      db_, caller, "SetQuota", request,
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::SetQuotaResponse> {
        ASSIGN_OR_RETURN(QuotaLimits limits, ReadQuotaLimits(conn, request.account_id()));
        if (set_templates) limits.max_image_templates = request.max_image_templates();
        if (set_bytes) limits.max_stored_bytes = request.max_stored_bytes();
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "UPDATE accounts SET max_image_templates = ?2, max_stored_bytes = ?3 WHERE id = ?1"));
        stmt.Bind(1, request.account_id()).Bind(2, limits.max_image_templates);
        RETURN_IF_ERROR(stmt.Bind(3, limits.max_stored_bytes).Run());
        v1::SetQuotaResponse response;
        ASSIGN_OR_RETURN(*response.mutable_quota(), ReadQuota(conn, request.account_id()));
        return response;
      });
}

}  // namespace controlplane
