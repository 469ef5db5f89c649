// imagectl admin ... for identity: accounts, users, API keys, permissions,
// device access, quotas and the audit log. Also `whoami`.
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "client/imagectl/cli.h"

namespace imagectl {

namespace v1 = imagetemplates::v1;
using Args = std::vector<std::string>;

namespace {

constexpr char kExampleAccount[] = "5f0c6b2a-1d3e-4f5a-8b9c-0d1e2f3a4b5c";
constexpr char kExampleUser[] = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d";

std::string PermissionNames(const google::protobuf::RepeatedField<int>& permissions) {
  std::vector<std::string> names;
  for (int p : permissions) {
    names.push_back(absl::AsciiStrToLower(
        ShortEnum(v1::Permission_Name(static_cast<v1::Permission>(p)), "PERMISSION_")));
  }
  return absl::StrJoin(names, ",");
}

absl::Status ParsePermissions(const std::string& value, v1::User* user) {
  for (const std::string& item : SplitList(value)) {
    auto p = ParseEnum(v1::Permission_descriptor(), "PERMISSION_", "permissions", item);
    if (!p.ok()) return p.status();
    user->add_permissions(static_cast<v1::Permission>(*p));
  }
  return absl::OkStatus();
}

// "all" or comma-separated server ids.
void ParseDeviceAccess(const std::string& value, v1::DeviceAccess* access) {
  if (value == "all") {
    access->set_all_servers(true);
    return;
  }
  for (const std::string& id : SplitList(value)) access->add_server_ids(id);
}

std::string DeviceAccessText(const v1::DeviceAccess& access) {
  if (access.all_servers()) return "all servers";
  if (access.server_ids_size() == 0) return "no servers";
  return absl::StrJoin(access.server_ids(), ",");
}

void UserFields(const v1::User& u) {
  PrintFields({{"id", u.id()},
               {"username", u.username()},
               {"account", u.account_id()},
               {"permissions", PermissionNames(u.permissions())},
               {"device access", DeviceAccessText(u.device_access())},
               {"created", FormatTime(u.create_time())}});
}

void PrintUser(Context& ctx, const v1::User& u) {
  Print(ctx, u, [&] { UserFields(u); });
}

void AccountFields(const v1::Account& a) {
  PrintFields({{"id", a.id()},
               {"name", a.name()},
               {"operator", a.is_operator() ? "yes" : "no"},
               {"block public sharing", a.block_public_sharing() ? "yes" : "no"},
               {"created", FormatTime(a.create_time())}});
}

void PrintAccount(Context& ctx, const v1::Account& a) {
  Print(ctx, a, [&] { AccountFields(a); });
}

int AccountCreate(Context& ctx, const Args& args) {
  bool is_operator = false, block = false;
  common::FlagSet flags(
      "imagectl admin account create NAME [--operator] "
      "[--block-public-sharing]\n"
      "Creates an account (operators).\n"
      "Example:\n  imagectl admin account create acme");
  flags.Bool("operator", &is_operator,
             "an operator account (its users may hold platform_operator)");
  flags.Bool("block-public-sharing", &block, "the account's templates cannot be published");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin account create", flags, args, 1, 1, &pos)) return *rc;
  v1::CreateAccountRequest request;
  request.set_name(pos[0]);
  request.set_is_operator(is_operator);
  request.set_block_public_sharing(block);
  return RunCall(ctx, &v1::IdentityService::Stub::CreateAccount, request,
                 [&](const auto& response) { PrintAccount(ctx, response.account()); });
}

int AccountList(Context& ctx, const Args& args) {
  std::string name_contains;
  common::FlagSet flags(
      "imagectl admin account list [--name-contains=S]\n"
      "Lists accounts by name (operators).\n"
      "Example:\n  imagectl admin account list --name-contains=acme");
  flags.String("name-contains", &name_contains, "case-insensitive substring of the name");
  return RunList(
      ctx, "admin account list", flags, args, &v1::IdentityService::Stub::ListAccounts,
      [&](v1::ListAccountsRequest* request) {
        request->set_name_contains(name_contains);
        return absl::OkStatus();
      },
      [](const v1::ListAccountsResponse& response) {
        Table table({"ID", "NAME", "OPERATOR", "BLOCK PUBLIC", "CREATED"});
        for (const auto& a : response.accounts()) {
          table.Add({a.id(), a.name(), a.is_operator() ? "yes" : "no",
                     a.block_public_sharing() ? "yes" : "no", FormatTime(a.create_time())});
        }
        table.Print(stdout);
      });
}

int UserCreate(Context& ctx, const Args& args) {
  std::string account, username, permissions, servers = "all";
  common::FlagSet flags(
      absl::StrCat("imagectl admin user create --username=NAME [--account=ACCOUNT_ID] "
                   "[--permissions=a,b] [--servers=all|ID,ID]\n"
                   "Creates a user (operators, or user managers in their own account).\n"
                   "Permissions: image_template_manage, public_image_manage, "
                   "server_provision,\n"
                   "server_view, server_credentials_view, user_manage, audit_view, "
                   "platform_operator.\n"
                   "Example:\n  imagectl admin user create --account=",
                   kExampleAccount,
                   " --username=alice "
                   "--permissions=image_template_manage,server_view,server_provision"));
  flags.String("account", &account, "the account (default: yours)");
  flags.String("username", &username, "1..64 characters of [A-Za-z0-9._@-] (required)");
  flags.String("permissions", &permissions, "comma-separated permissions");
  flags.String("servers", &servers, "device access: all, or comma-separated server ids");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin user create", flags, args, 0, 0, &pos)) return *rc;
  if (username.empty()) return ctx.UsageError("admin user create", "--username is required");
  v1::User perms;
  if (absl::Status s = ParsePermissions(permissions, &perms); !s.ok()) {
    return ctx.UsageError("admin user create", std::string(s.message()));
  }
  v1::CreateUserRequest request;
  request.set_account_id(account);
  request.set_username(username);
  *request.mutable_permissions() = perms.permissions();
  ParseDeviceAccess(servers, request.mutable_device_access());
  return RunCall(ctx, &v1::IdentityService::Stub::CreateUser, request,
                 [&](const auto& response) { PrintUser(ctx, response.user()); });
}

int UserList(Context& ctx, const Args& args) {
  std::string account;
  common::FlagSet flags(
      absl::StrCat("imagectl admin user list [--account=ACCOUNT_ID]\n"
                   "Lists the users of an account (user managers, operators).\n"
                   "Example:\n  imagectl admin user list --account=",
                   kExampleAccount));
  flags.String("account", &account, "the account (default: yours)");
  return RunList(
      ctx, "admin user list", flags, args, &v1::IdentityService::Stub::ListUsers,
      [&](v1::ListUsersRequest* request) {
        request->set_account_id(account);
        return absl::OkStatus();
      },
      [](const v1::ListUsersResponse& response) {
        Table table({"ID", "USERNAME", "PERMISSIONS", "DEVICE ACCESS", "CREATED"});
        for (const auto& u : response.users()) {
          table.Add({u.id(), u.username(), PermissionNames(u.permissions()),
                     DeviceAccessText(u.device_access()), FormatTime(u.create_time())});
        }
        table.Print(stdout);
      });
}

int KeyCreate(Context& ctx, const Args& args) {
  std::string user, description;
  common::FlagSet flags(
      absl::StrCat("imagectl admin key create [--user=USER_ID] [--description=TEXT]\n"
                   "Creates an API key; its secret is shown only this once.\n"
                   "Example:\n  imagectl admin key create --user=",
                   kExampleUser, " --description=\"CI pipeline\""));
  flags.String("user", &user, "the user (default: you)");
  flags.String("description", &description, "up to 200 characters");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin key create", flags, args, 0, 0, &pos)) return *rc;
  v1::CreateApiKeyRequest request;
  request.set_user_id(user);
  request.set_description(description);
  return RunCall(ctx, &v1::IdentityService::Stub::CreateApiKey, request, [&](const auto& r) {
    Print(ctx, r, [&] {
      PrintFields({{"id", r.api_key().id()},
                   {"user", r.api_key().user_id()},
                   {"prefix", r.api_key().prefix()},
                   {"secret", r.secret()}});
      std::fprintf(stderr, "keep the secret now: it is not shown again\n");
    });
  });
}

int KeyList(Context& ctx, const Args& args) {
  std::string user;
  bool include_revoked = false;
  common::FlagSet flags(
      absl::StrCat("imagectl admin key list [--user=USER_ID] [--include-revoked]\n"
                   "Lists a user's API keys, newest first.\n"
                   "Example:\n  imagectl admin key list --user=",
                   kExampleUser));
  flags.String("user", &user, "the user (default: you)");
  flags.Bool("include-revoked", &include_revoked, "also list revoked keys");
  return RunList(
      ctx, "admin key list", flags, args, &v1::IdentityService::Stub::ListApiKeys,
      [&](v1::ListApiKeysRequest* request) {
        request->set_user_id(user);
        request->set_include_revoked(include_revoked);
        return absl::OkStatus();
      },
      [](const v1::ListApiKeysResponse& response) {
        Table table({"ID", "PREFIX", "DESCRIPTION", "REVOKED", "CREATED"});
        for (const auto& k : response.api_keys()) {
          table.Add({k.id(), k.prefix(), k.description(), k.revoked() ? "yes" : "no",
                     FormatTime(k.create_time())});
        }
        table.Print(stdout);
      });
}

int PermissionSet(Context& ctx, const Args& args) {
  std::string permissions;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin permission set USER_ID --permissions=a,b\n"
      "Replaces a user's permissions with the given set (--permissions= "
      "removes all).\n"
      "Example:\n  imagectl admin permission set ",
      kExampleUser, " --permissions=image_template_manage,server_view,server_provision"));
  flags.String("permissions", &permissions, "the complete new set, comma-separated");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin permission set", flags, args, 1, 1, &pos)) return *rc;
  if (!FlagGiven(args, "permissions")) {
    return ctx.UsageError("admin permission set", "--permissions is required");
  }
  v1::User perms;
  if (absl::Status s = ParsePermissions(permissions, &perms); !s.ok()) {
    return ctx.UsageError("admin permission set", std::string(s.message()));
  }
  v1::SetUserPermissionsRequest request;
  request.set_user_id(pos[0]);
  *request.mutable_permissions() = perms.permissions();
  return RunCall(ctx, &v1::IdentityService::Stub::SetUserPermissions, request,
                 [&](const auto& response) { PrintUser(ctx, response.user()); });
}

int DeviceAccessSet(Context& ctx, const Args& args) {
  std::string servers;
  common::FlagSet flags(
      absl::StrCat("imagectl admin device-access set USER_ID --servers=all|ID,ID\n"
                   "Replaces which servers of the account a user may see and act on.\n"
                   "Example:\n  imagectl admin device-access set ",
                   kExampleUser, " --servers=all"));
  flags.String("servers", &servers, "all, or comma-separated server ids (required)");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin device-access set", flags, args, 1, 1, &pos)) return *rc;
  if (!FlagGiven(args, "servers")) {
    return ctx.UsageError("admin device-access set", "--servers is required");
  }
  v1::SetDeviceAccessRequest request;
  request.set_user_id(pos[0]);
  ParseDeviceAccess(servers, request.mutable_device_access());
  return RunCall(ctx, &v1::IdentityService::Stub::SetDeviceAccess, request,
                 [&](const auto& response) { PrintUser(ctx, response.user()); });
}

int AuditList(Context& ctx, const Args& args) {
  std::string account, target, method;
  Paging paging;
  paging.page_size = 50;
  common::FlagSet flags(
      "imagectl admin audit list [flags]\n"
      "Lists audit events, newest first (operators; user_manage or audit_view "
      "users for\n"
      "their account). One page by default.\n"
      "Example:\n"
      "  imagectl admin audit list "
      "--method=/imagetemplates.v1.ImageTemplateService/DeployImageTemplate");
  flags.String("account", &account, "the account (operators; default: every account)");
  flags.String("target", &target, "only events about this resource id");
  flags.String("method", &method, "only this full gRPC method name");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin audit list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListAuditEventsRequest request;
  request.set_account_id(account);
  request.set_target_id(target);
  request.set_method(method);
  paging.Apply(&request);
  auto response =
      ListPages(ctx, &v1::AuditService::Stub::ListAuditEvents, request, /*one_page=*/true);
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table({"TIME", "METHOD", "OUTCOME", "TARGET", "USER", "PEER"});
    for (const auto& e : response->audit_events()) {
      std::string method_name = e.method().substr(e.method().rfind('/') + 1);
      table.Add({FormatTime(e.time()), method_name,
                 absl::StatusCodeToString(static_cast<absl::StatusCode>(e.outcome().code())),
                 e.target().id(), e.user_id(), e.peer()});
    }
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

void PrintQuota(Context& ctx, const v1::Quota& q) {
  auto limit = [](int64_t v, bool bytes) {
    if (v == 0) return std::string("unlimited");
    return bytes ? FormatBytes(v) : absl::StrCat(v);
  };
  Print(ctx, q, [&] {
    PrintFields({{"account", q.account_id()},
                 {"image templates", absl::StrCat(q.image_template_count(), " of ",
                                                  limit(q.max_image_templates(), false))},
                 {"stored", absl::StrCat(FormatBytes(q.stored_bytes()), " of ",
                                         limit(q.max_stored_bytes(), true))}});
  });
}

int QuotaGet(Context& ctx, const Args& args) {
  std::string account;
  common::FlagSet flags(
      absl::StrCat("imagectl admin quota get [--account=ACCOUNT_ID]\n"
                   "Shows an account's template limits and usage.\n"
                   "Example:\n  imagectl admin quota get --account=",
                   kExampleAccount));
  flags.String("account", &account, "the account (default: yours)");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin quota get", flags, args, 0, 0, &pos)) return *rc;
  v1::GetQuotaRequest request;
  request.set_account_id(account);
  return RunCall(ctx, &v1::IdentityService::Stub::GetQuota, request,
                 [&](const auto& response) { PrintQuota(ctx, response.quota()); });
}

int QuotaSet(Context& ctx, const Args& args) {
  std::string account, max_stored;
  int64_t max_templates = 0;
  common::FlagSet flags(
      absl::StrCat("imagectl admin quota set --account=ACCOUNT_ID [--max-templates=N] "
                   "[--max-stored=SIZE]\n"
                   "Sets an account's limits (operators); 0 means unlimited.\n"
                   "Example:\n  imagectl admin quota set --account=",
                   kExampleAccount, " --max-templates=20 --max-stored=500G"));
  flags.String("account", &account, "the account (required)");
  flags.Int("max-templates", &max_templates, "templates not deleted");
  flags.String("max-stored", &max_stored, "stored bytes of all templates (K/M/G/T)");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin quota set", flags, args, 0, 0, &pos)) return *rc;
  if (account.empty()) return ctx.UsageError("admin quota set", "--account is required");
  v1::SetQuotaRequest request;
  request.set_account_id(account);
  if (FlagGiven(args, "max-templates")) {
    request.set_max_image_templates(max_templates);
    request.mutable_update_mask()->add_paths("max_image_templates");
  }
  if (FlagGiven(args, "max-stored")) {
    auto bytes = ParseSize(max_stored);
    if (!bytes.ok()) {
      return ctx.UsageError("admin quota set", std::string(bytes.status().message()));
    }
    request.set_max_stored_bytes(*bytes);
    request.mutable_update_mask()->add_paths("max_stored_bytes");
  }
  if (request.update_mask().paths_size() == 0) {
    return ctx.UsageError("admin quota set", "give --max-templates or --max-stored");
  }
  return RunCall(ctx, &v1::IdentityService::Stub::SetQuota, request,
                 [&](const auto& response) { PrintQuota(ctx, response.quota()); });
}

int WhoAmI(Context& ctx, const Args& args) {
  common::FlagSet flags(
      "imagectl whoami\n"
      "Shows the user, account and permissions of the API key in use.\n"
      "Example:\n  imagectl whoami -o json");
  Args pos;
  if (auto rc = ParseArgs(ctx, "whoami", flags, args, 0, 0, &pos)) return *rc;
  return RunCall(ctx, &v1::IdentityService::Stub::GetCaller, v1::GetCallerRequest(),
                 [&](const auto& r) {
                   Print(ctx, r, [&] {
                     PrintFields({{"user", r.user().username() + " (" + r.user().id() + ")"},
                                  {"account", r.account().name() + " (" + r.account().id() + ")"},
                                  {"permissions", PermissionNames(r.user().permissions())},
                                  {"device access", DeviceAccessText(r.user().device_access())},
                                  {"api key", r.api_key_id()},
                                  {"endpoint", ctx.globals().endpoint}});
                   });
                 });
}

int AccountUpdate(Context& ctx, const Args& args) {
  std::string name;
  bool block = false;
  common::FlagSet flags(
      absl::StrCat("imagectl admin account update ACCOUNT_ID [--name=NAME] "
                   "[--block-public-sharing=true|false]\n"
                   "Renames an account or sets whether its templates may be published "
                   "(operators, or\n"
                   "user managers for their own account). Only the flags given change.\n"
                   "Example:\n  imagectl admin account update ",
                   kExampleAccount, " --block-public-sharing=true"));
  flags.String("name", &name, "the new name, 1..100 characters, unique");
  flags.Bool("block-public-sharing", &block, "true: the account's templates cannot be published");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin account update", flags, args, 1, 1, &pos)) return *rc;
  v1::UpdateAccountRequest request;
  request.set_id(pos[0]);
  if (FlagGiven(args, "name")) {
    request.set_name(name);
    request.mutable_update_mask()->add_paths("name");
  }
  if (FlagGiven(args, "block-public-sharing")) {
    request.set_block_public_sharing(block);
    request.mutable_update_mask()->add_paths("block_public_sharing");
  }
  if (request.update_mask().paths_size() == 0) {
    return ctx.UsageError("admin account update", "give --name or --block-public-sharing");
  }
  return RunCall(ctx, &v1::IdentityService::Stub::UpdateAccount, request,
                 [&](const auto& response) { PrintAccount(ctx, response.account()); });
}
}  // namespace

std::vector<Command> AdminIdentityCommands() {
  using Stub = v1::IdentityService::Stub;
  return {
      {"whoami", "show the user behind your API key", WhoAmI},
      {"admin account create", "create an account", AccountCreate},
      IdCommand({"admin account get", "show an account", "ACCOUNT_ID",
                 "Shows an account: your own, or any for operators.", kExampleAccount},
                "id", &Stub::GetAccount,
                PrintPart(&v1::GetAccountResponse::account, AccountFields)),
      {"admin account list", "list accounts", AccountList},
      {"admin account update", "rename an account or block publishing", AccountUpdate},
      {"admin user create", "create a user", UserCreate},
      IdCommand({"admin user get", "show a user", "USER_ID",
                 "Shows a user: yourself, a user of your account "
                 "(user_manage), or any user\n"
                 "(operators).",
                 kExampleUser},
                "id", &Stub::GetUser, PrintPart(&v1::GetUserResponse::user, UserFields)),
      {"admin user list", "list the users of an account", UserList},
      IdCommand({"admin user delete", "delete a user and revoke its keys", "USER_ID",
                 "Deletes a user and revokes its API keys (user_manage in the "
                 "account, or\n"
                 "operators). Refused for yourself and for the last user manager.",
                 kExampleUser},
                "id", &Stub::DeleteUser, PrintDeleted("user")),
      {"admin key create", "create an API key (secret shown once)", KeyCreate},
      {"admin key list", "list a user's API keys", KeyList},
      IdCommand({"admin key revoke", "revoke an API key", "KEY_ID",
                 "Revokes an API key at once; calls with it fail "
                 "UNAUTHENTICATED from now on.",
                 "3f2504e0-4f89-41d3-9a0c-0305e82c3301"},
                "id", &Stub::RevokeApiKey,
                PrintPart(&v1::RevokeApiKeyResponse::api_key,
                          [](const v1::ApiKey& k) {
                            std::printf("revoked key %s (%s)\n", k.id().c_str(),
                                        k.prefix().c_str());
                          })),
      {"admin permission set", "replace a user's permissions", PermissionSet},
      {"admin device-access set", "replace a user's device access", DeviceAccessSet},
      {"admin audit list", "list audit events", AuditList},
      {"admin quota get", "show an account's quota and usage", QuotaGet},
      {"admin quota set", "set an account's quota", QuotaSet},
  };
}

}  // namespace imagectl
