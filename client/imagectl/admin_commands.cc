// imagectl admin ...: what operators and user managers run: accounts, users,
// keys, permissions, device access, inventory (datacenters, SAN volumes, IP
// pools, servers, storage nodes), quotas and the audit log. Also `whoami`.
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
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

void PrintUser(Context& ctx, const v1::User& u) {
  Print(ctx, u, [&] {
    PrintFields({{"id", u.id()},
                 {"username", u.username()},
                 {"account", u.account_id()},
                 {"permissions", PermissionNames(u.permissions())},
                 {"device access", DeviceAccessText(u.device_access())},
                 {"created", FormatTime(u.create_time())}});
  });
}

void PrintAccount(Context& ctx, const v1::Account& a) {
  Print(ctx, a, [&] {
    PrintFields({{"id", a.id()},
                 {"name", a.name()},
                 {"operator", a.is_operator() ? "yes" : "no"},
                 {"block public sharing", a.block_public_sharing() ? "yes" : "no"},
                 {"created", FormatTime(a.create_time())}});
  });
}

// The usual shape of a list: one positional-free command with paging flags.
struct Paging {
  int64_t page_size = 0;
  std::string page_token;
  void Define(common::FlagSet& flags) {
    flags.Int("page-size", &page_size, "fetch one page of this size (default: every page)");
    flags.String("page-token", &page_token, "fetch the page after this token");
  }
  bool one_page() const { return page_size > 0 || !page_token.empty(); }
  template <typename Request>
  void Apply(Request* request) const {
    request->set_page_size(static_cast<int32_t>(page_size));
    request->set_page_token(page_token);
  }
};

int AccountCreate(Context& ctx, const Args& args) {
  bool is_operator = false, block = false;
  common::FlagSet flags(
      "imagectl admin account create NAME [--operator] [--block-public-sharing]\n"
      "Creates an account (operators).\n"
      "Example:\n  imagectl admin account create acme");
  flags.Bool("operator", &is_operator, "an operator account (its users may hold platform_operator)");
  flags.Bool("block-public-sharing", &block, "the account's templates cannot be published");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin account create", flags, args, 1, 1, &pos)) return *rc;
  v1::CreateAccountRequest request;
  request.set_name(pos[0]);
  request.set_is_operator(is_operator);
  request.set_block_public_sharing(block);
  auto response = ctx.Call(&v1::IdentityService::Stub::CreateAccount, request);
  if (!response.ok()) return ctx.Fail(response.status());
  PrintAccount(ctx, response->account());
  return kExitOk;
}

int AccountList(Context& ctx, const Args& args) {
  std::string name_contains;
  Paging paging;
  common::FlagSet flags(
      "imagectl admin account list [--name-contains=S]\n"
      "Lists accounts by name (operators).\n"
      "Example:\n  imagectl admin account list --name-contains=acme");
  flags.String("name-contains", &name_contains, "case-insensitive substring of the name");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin account list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListAccountsRequest request;
  request.set_name_contains(name_contains);
  paging.Apply(&request);
  auto response =
      ListPages(ctx, &v1::IdentityService::Stub::ListAccounts, request, paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table({"ID", "NAME", "OPERATOR", "BLOCK PUBLIC", "CREATED"});
    for (const auto& a : response->accounts()) {
      table.Add({a.id(), a.name(), a.is_operator() ? "yes" : "no",
                 a.block_public_sharing() ? "yes" : "no", FormatTime(a.create_time())});
    }
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

int UserCreate(Context& ctx, const Args& args) {
  std::string account, username, permissions, servers = "all";
  common::FlagSet flags(absl::StrCat(
      "imagectl admin user create --username=NAME [--account=ACCOUNT_ID] "
      "[--permissions=a,b] [--servers=all|ID,ID]\n"
      "Creates a user (operators, or user managers in their own account).\n"
      "Permissions: image_template_manage, public_image_manage, server_provision,\n"
      "server_view, server_credentials_view, user_manage, audit_view, platform_operator.\n"
      "Example:\n  imagectl admin user create --account=",
      kExampleAccount,
      " --username=alice --permissions=image_template_manage,server_view,server_provision"));
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
  auto response = ctx.Call(&v1::IdentityService::Stub::CreateUser, request);
  if (!response.ok()) return ctx.Fail(response.status());
  PrintUser(ctx, response->user());
  return kExitOk;
}

int UserList(Context& ctx, const Args& args) {
  std::string account;
  Paging paging;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin user list [--account=ACCOUNT_ID]\n"
      "Lists the users of an account (user managers, operators).\n"
      "Example:\n  imagectl admin user list --account=",
      kExampleAccount));
  flags.String("account", &account, "the account (default: yours)");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin user list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListUsersRequest request;
  request.set_account_id(account);
  paging.Apply(&request);
  auto response =
      ListPages(ctx, &v1::IdentityService::Stub::ListUsers, request, paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table({"ID", "USERNAME", "PERMISSIONS", "DEVICE ACCESS", "CREATED"});
    for (const auto& u : response->users()) {
      table.Add({u.id(), u.username(), PermissionNames(u.permissions()),
                 DeviceAccessText(u.device_access()), FormatTime(u.create_time())});
    }
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

int KeyCreate(Context& ctx, const Args& args) {
  std::string user, description;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin key create [--user=USER_ID] [--description=TEXT]\n"
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
  auto response = ctx.Call(&v1::IdentityService::Stub::CreateApiKey, request);
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    PrintFields({{"id", response->api_key().id()},
                 {"user", response->api_key().user_id()},
                 {"prefix", response->api_key().prefix()},
                 {"secret", response->secret()}});
    std::fprintf(stderr, "keep the secret now: it is not shown again\n");
  });
  return kExitOk;
}

int KeyList(Context& ctx, const Args& args) {
  std::string user;
  bool include_revoked = false;
  Paging paging;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin key list [--user=USER_ID] [--include-revoked]\n"
      "Lists a user's API keys, newest first.\n"
      "Example:\n  imagectl admin key list --user=",
      kExampleUser));
  flags.String("user", &user, "the user (default: you)");
  flags.Bool("include-revoked", &include_revoked, "also list revoked keys");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin key list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListApiKeysRequest request;
  request.set_user_id(user);
  request.set_include_revoked(include_revoked);
  paging.Apply(&request);
  auto response =
      ListPages(ctx, &v1::IdentityService::Stub::ListApiKeys, request, paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table({"ID", "PREFIX", "DESCRIPTION", "REVOKED", "CREATED"});
    for (const auto& k : response->api_keys()) {
      table.Add({k.id(), k.prefix(), k.description(), k.revoked() ? "yes" : "no",
                 FormatTime(k.create_time())});
    }
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

int KeyRevoke(Context& ctx, const Args& args) {
  common::FlagSet flags(
      "imagectl admin key revoke KEY_ID\n"
      "Revokes an API key at once.\n"
      "Example:\n  imagectl admin key revoke 3f2504e0-4f89-41d3-9a0c-0305e82c3301");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin key revoke", flags, args, 1, 1, &pos)) return *rc;
  v1::RevokeApiKeyRequest request;
  request.set_id(pos[0]);
  auto response = ctx.Call(&v1::IdentityService::Stub::RevokeApiKey, request);
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, response->api_key(), [&] {
    std::printf("revoked key %s (%s)\n", response->api_key().id().c_str(),
                response->api_key().prefix().c_str());
  });
  return kExitOk;
}

int PermissionSet(Context& ctx, const Args& args) {
  std::string permissions;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin permission set USER_ID --permissions=a,b\n"
      "Replaces a user's permissions with the given set (--permissions= removes all).\n"
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
  auto response = ctx.Call(&v1::IdentityService::Stub::SetUserPermissions, request);
  if (!response.ok()) return ctx.Fail(response.status());
  PrintUser(ctx, response->user());
  return kExitOk;
}

int DeviceAccessSet(Context& ctx, const Args& args) {
  std::string servers;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin device-access set USER_ID --servers=all|ID,ID\n"
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
  auto response = ctx.Call(&v1::IdentityService::Stub::SetDeviceAccess, request);
  if (!response.ok()) return ctx.Fail(response.status());
  PrintUser(ctx, response->user());
  return kExitOk;
}

int DatacenterCreate(Context& ctx, const Args& args) {
  std::string description;
  common::FlagSet flags(
      "imagectl admin datacenter create NAME [--description=TEXT]\n"
      "Adds a datacenter (operators); NAME is 1..32 characters of [a-z0-9-].\n"
      "Example:\n  imagectl admin datacenter create dal10 --description=\"Dallas 10\"");
  flags.String("description", &description, "up to 1000 characters");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin datacenter create", flags, args, 1, 1, &pos)) return *rc;
  v1::CreateDatacenterRequest request;
  request.set_name(pos[0]);
  request.set_description(description);
  auto response = ctx.Call(&v1::InventoryService::Stub::CreateDatacenter, request);
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, response->datacenter(), [&] {
    PrintFields({{"name", response->datacenter().name()},
                 {"description", response->datacenter().description()}});
  });
  return kExitOk;
}

int DatacenterList(Context& ctx, const Args& args) {
  Paging paging;
  common::FlagSet flags(
      "imagectl admin datacenter list\n"
      "Lists datacenters (any authenticated caller).\n"
      "Example:\n  imagectl admin datacenter list -o json");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin datacenter list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListDatacentersRequest request;
  paging.Apply(&request);
  auto response = ListPages(ctx, &v1::InventoryService::Stub::ListDatacenters, request,
                            paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table({"NAME", "DESCRIPTION", "CREATED"});
    for (const auto& d : response->datacenters()) {
      table.Add({d.name(), d.description(), FormatTime(d.create_time())});
    }
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

int SanVolumeCreate(Context& ctx, const Args& args) {
  std::string datacenter, san_host, portal, iqn, size, chap_user, chap_secret;
  int64_t lun = 1;
  bool thin = false;
  common::FlagSet flags(
      "imagectl admin san-volume create --datacenter=DC --san-host=NODE_ID --portal=HOST:PORT "
      "--iqn=IQN --size=SIZE [flags]\n"
      "Adds an existing iSCSI LUN to a datacenter's volume pool as FREE (operators).\n"
      "Example:\n"
      "  imagectl admin san-volume create --datacenter=dal10 --san-host=san1 "
      "--portal=10.0.0.7:3260 --iqn=iqn.2003-01.org.example:vol-17 --size=10G --thin");
  flags.String("datacenter", &datacenter, "the datacenter (required)");
  flags.String("san-host", &san_host, "the storage node (storaged --node-id) serving it (required)");
  flags.String("portal", &portal, "iSCSI target portal HOST:PORT (required)");
  flags.String("iqn", &iqn, "target IQN (required)");
  flags.Int("lun", &lun, "logical unit number");
  flags.String("size", &size, "the LUN's size: bytes or with K/M/G/T (required)");
  flags.Bool("thin", &thin, "thin provisioned (unwritten blocks read as zeroes)");
  flags.String("chap-user", &chap_user, "CHAP user name, if the target needs CHAP");
  flags.String("chap-secret", &chap_secret, "CHAP secret");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin san-volume create", flags, args, 0, 0, &pos)) return *rc;
  if (datacenter.empty() || san_host.empty() || portal.empty() || iqn.empty() || size.empty()) {
    return ctx.UsageError("admin san-volume create",
                          "--datacenter, --san-host, --portal, --iqn and --size are required");
  }
  auto bytes = ParseSize(size);
  if (!bytes.ok()) {
    return ctx.UsageError("admin san-volume create",
                          "--size: " + std::string(bytes.status().message()));
  }
  v1::CreateSanVolumeRequest request;
  request.set_datacenter(datacenter);
  request.set_san_host(san_host);
  request.mutable_iscsi()->set_portal(portal);
  request.mutable_iscsi()->set_iqn(iqn);
  request.mutable_iscsi()->set_lun(static_cast<uint32_t>(lun));
  request.mutable_iscsi()->set_chap_user(chap_user);
  request.mutable_iscsi()->set_chap_secret(chap_secret);
  request.set_size_bytes(*bytes);
  request.set_thin(thin);
  auto response = ctx.Call(&v1::InventoryService::Stub::CreateSanVolume, request);
  if (!response.ok()) return ctx.Fail(response.status());
  const v1::SanVolume& v = response->san_volume();
  Print(ctx, v, [&] {
    PrintFields({{"id", v.id()},
                 {"datacenter", v.datacenter()},
                 {"san host", v.san_host()},
                 {"iscsi", absl::StrCat(v.iscsi().portal(), "/", v.iscsi().iqn(), "/",
                                        v.iscsi().lun())},
                 {"size", FormatBytes(v.size_bytes())},
                 {"thin", v.thin() ? "yes" : "no"},
                 {"state", ShortEnum(v1::SanVolumeState_Name(v.state()), "SAN_VOLUME_STATE_")}});
  });
  return kExitOk;
}

int SanVolumeList(Context& ctx, const Args& args) {
  std::string datacenter, san_host, state, min_size;
  Paging paging;
  common::FlagSet flags(
      "imagectl admin san-volume list [flags]\n"
      "Lists the SAN volume pool (operators).\n"
      "Example:\n  imagectl admin san-volume list --datacenter=dal10 --state=free");
  flags.String("datacenter", &datacenter, "only this datacenter");
  flags.String("san-host", &san_host, "only this storage node");
  flags.String("state", &state, "free or attached");
  flags.String("min-size", &min_size, "only volumes at least this large");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin san-volume list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListSanVolumesRequest request;
  request.set_datacenter(datacenter);
  request.set_san_host(san_host);
  if (!state.empty()) {
    auto v = ParseEnum(v1::SanVolumeState_descriptor(), "SAN_VOLUME_STATE_", "state", state);
    if (!v.ok()) return ctx.UsageError("admin san-volume list", std::string(v.status().message()));
    request.set_state(static_cast<v1::SanVolumeState>(*v));
  }
  if (!min_size.empty()) {
    auto bytes = ParseSize(min_size);
    if (!bytes.ok()) {
      return ctx.UsageError("admin san-volume list", std::string(bytes.status().message()));
    }
    request.set_min_size_bytes(*bytes);
  }
  paging.Apply(&request);
  auto response = ListPages(ctx, &v1::InventoryService::Stub::ListSanVolumes, request,
                            paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table({"ID", "DATACENTER", "SAN HOST", "ISCSI", "SIZE", "THIN", "STATE", "SERVER"});
    for (const auto& v : response->san_volumes()) {
      table.Add({v.id(), v.datacenter(), v.san_host(),
                 absl::StrCat(v.iscsi().portal(), "/", v.iscsi().iqn(), "/", v.iscsi().lun()),
                 FormatBytes(v.size_bytes()), v.thin() ? "yes" : "no",
                 ShortEnum(v1::SanVolumeState_Name(v.state()), "SAN_VOLUME_STATE_"),
                 v.attached_server_id()});
    }
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

void PrintIpPoolRow(Table* table, const v1::IpPool& p) {
  std::vector<std::string> ranges;
  for (const auto& r : p.ranges()) ranges.push_back(r.start() + "-" + r.end());
  table->Add({p.id(), p.datacenter(), p.subnet(), p.gateway(), absl::StrJoin(p.dns_servers(), ","),
              absl::StrJoin(ranges, ","), absl::StrCat(p.allocated_count(), "/", p.total_count())});
}

const std::vector<std::string> kIpPoolHeaders = {"ID",  "DATACENTER", "SUBNET", "GATEWAY",
                                                 "DNS", "RANGES",     "USED"};

int IpPoolCreate(Context& ctx, const Args& args) {
  std::string datacenter, subnet, gateway, dns, ranges;
  common::FlagSet flags(
      "imagectl admin ip-pool create --datacenter=DC --subnet=CIDR --gateway=IP "
      "--ranges=START-END[,START-END] [--dns=IP,IP]\n"
      "Adds addresses that deploys assign to new servers (operators).\n"
      "Example:\n"
      "  imagectl admin ip-pool create --datacenter=dal10 --subnet=10.20.0.0/24 "
      "--gateway=10.20.0.1 --dns=10.20.0.2 --ranges=10.20.0.10-10.20.0.99");
  flags.String("datacenter", &datacenter, "the datacenter (required)");
  flags.String("subnet", &subnet, "CIDR, for example 10.20.0.0/24 (required)");
  flags.String("gateway", &gateway, "gateway inside the subnet (required)");
  flags.String("dns", &dns, "comma-separated DNS servers, up to 4");
  flags.String("ranges", &ranges, "comma-separated START-END ranges (required)");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin ip-pool create", flags, args, 0, 0, &pos)) return *rc;
  if (datacenter.empty() || subnet.empty() || gateway.empty() || ranges.empty()) {
    return ctx.UsageError("admin ip-pool create",
                          "--datacenter, --subnet, --gateway and --ranges are required");
  }
  v1::CreateIpPoolRequest request;
  request.set_datacenter(datacenter);
  request.set_subnet(subnet);
  request.set_gateway(gateway);
  for (const auto& d : SplitList(dns)) request.add_dns_servers(d);
  for (const auto& r : SplitList(ranges)) {
    std::vector<std::string> ends = absl::StrSplit(r, '-');
    if (ends.size() != 2) {
      return ctx.UsageError("admin ip-pool create",
                            absl::StrCat("--ranges: \"", r, "\" is not START-END"));
    }
    auto* range = request.add_ranges();
    range->set_start(ends[0]);
    range->set_end(ends[1]);
  }
  auto response = ctx.Call(&v1::InventoryService::Stub::CreateIpPool, request);
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, response->ip_pool(), [&] {
    Table table(kIpPoolHeaders);
    PrintIpPoolRow(&table, response->ip_pool());
    table.Print(stdout);
  });
  return kExitOk;
}

int IpPoolList(Context& ctx, const Args& args) {
  std::string datacenter;
  Paging paging;
  common::FlagSet flags(
      "imagectl admin ip-pool list [--datacenter=DC]\n"
      "Lists IP pools (operators and server_provision users).\n"
      "Example:\n  imagectl admin ip-pool list --datacenter=dal10");
  flags.String("datacenter", &datacenter, "only this datacenter");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin ip-pool list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListIpPoolsRequest request;
  request.set_datacenter(datacenter);
  paging.Apply(&request);
  auto response =
      ListPages(ctx, &v1::InventoryService::Stub::ListIpPools, request, paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table(kIpPoolHeaders);
    for (const auto& p : response->ip_pools()) PrintIpPoolRow(&table, p);
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

int ServerCreate(Context& ctx, const Args& args) {
  std::string account, type = "virtual", hostname, domain, datacenter, os, boot_mode,
                       boot_volume, data_volumes, config_drive, nic, credential, power;
  int64_t cpus = 1, memory_mib = 1024;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin server create --account=ACCOUNT_ID --hostname=NAME --datacenter=DC "
      "--boot-volume=SAN_VOLUME_ID [flags]\n"
      "Registers a server in an account's inventory (operators); its disks are FREE SAN\n"
      "volumes, which become ATTACHED. Image templates need --credential recorded.\n"
      "Example:\n  imagectl admin server create --account=",
      kExampleAccount,
      " --hostname=web0 --domain=example.com --datacenter=dal10 --cpus=2 --memory-mib=4096 "
      "--os=DEBIAN_12_64 --boot-volume=VOLUME_ID --nic=eth0,02:00:00:00:00:01,10.99.0.5/24 "
      "--credential=os:root:s3cret"));
  flags.String("account", &account, "owning account (required)");
  flags.String("type", &type, "virtual or bare_metal");
  flags.String("hostname", &hostname, "RFC 1123 label (required)");
  flags.String("domain", &domain, "DNS domain");
  flags.String("datacenter", &datacenter, "the datacenter (required)");
  flags.Int("cpus", &cpus, "CPU count");
  flags.Int("memory-mib", &memory_mib, "memory in MiB");
  flags.String("os", &os, "operating system reference code, for example DEBIAN_12_64");
  flags.String("boot-mode", &boot_mode, "bios or uefi");
  flags.String("boot-volume", &boot_volume, "SAN volume id of the boot disk, device 0 (required)");
  flags.String("data-volumes", &data_volumes,
               "comma-separated SAN volume ids of data disks, devices 1, 2, ...");
  flags.String("config-drive-volume", &config_drive,
               "SAN volume id of a config drive (the next device index)");
  flags.String("nic", &nic, "one interface: NAME,MAC[,ADDRESS/PREFIX[,GATEWAY]]");
  flags.String("credential", &credential, "software credential SOFTWARE:USER:PASSWORD");
  flags.String("power", &power, "running (default) or stopped");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin server create", flags, args, 0, 0, &pos)) return *rc;
  if (account.empty() || hostname.empty() || datacenter.empty() || boot_volume.empty()) {
    return ctx.UsageError("admin server create",
                          "--account, --hostname, --datacenter and --boot-volume are required");
  }
  v1::CreateServerRequest request;
  request.set_account_id(account);
  auto t = ParseEnum(v1::ServerType_descriptor(), "SERVER_TYPE_", "type", type);
  if (!t.ok()) return ctx.UsageError("admin server create", std::string(t.status().message()));
  request.set_type(static_cast<v1::ServerType>(*t));
  request.set_hostname(hostname);
  request.set_domain(domain);
  request.set_datacenter(datacenter);
  v1::ServerConfiguration* config = request.mutable_configuration();
  config->set_cpu_count(static_cast<int32_t>(cpus));
  config->set_memory_mib(memory_mib);
  config->set_os_reference(os);
  if (!boot_mode.empty()) {
    auto b = ParseEnum(v1::BootMode_descriptor(), "BOOT_MODE_", "boot-mode", boot_mode);
    if (!b.ok()) return ctx.UsageError("admin server create", std::string(b.status().message()));
    config->set_boot_mode(static_cast<v1::BootMode>(*b));
  }
  if (!nic.empty()) {
    std::vector<std::string> parts = absl::StrSplit(nic, ',');
    if (parts.size() < 2 || parts.size() > 4) {
      return ctx.UsageError("admin server create",
                            "--nic: want NAME,MAC[,ADDRESS/PREFIX[,GATEWAY]]");
    }
    v1::NetworkInterface* n = config->add_network_interfaces();
    n->set_name(parts[0]);
    n->set_mac_address(parts[1]);
    if (parts.size() > 2) n->set_ip_address(parts[2]);
    if (parts.size() > 3) n->set_gateway(parts[3]);
  }
  int index = 0;
  auto add_disk = [&](const std::string& volume, bool boot, bool cfg) {
    v1::ServerDisk* disk = request.add_disks();
    disk->set_device_index(index++);
    disk->set_boot(boot);
    disk->set_config_drive(cfg);
    disk->set_san_volume_id(volume);
  };
  add_disk(boot_volume, true, false);
  for (const auto& v : SplitList(data_volumes)) add_disk(v, false, false);
  if (!config_drive.empty()) add_disk(config_drive, false, true);
  if (!credential.empty()) {
    std::vector<std::string> parts = absl::StrSplit(credential, absl::MaxSplits(':', 2));
    if (parts.size() != 3) {
      return ctx.UsageError("admin server create", "--credential: want SOFTWARE:USER:PASSWORD");
    }
    v1::SoftwareCredential* c = request.add_credentials();
    c->set_software(parts[0]);
    c->set_username(parts[1]);
    c->set_password(parts[2]);
  }
  if (!power.empty()) {
    auto p = ParseEnum(v1::PowerState_descriptor(), "POWER_STATE_", "power", power);
    if (!p.ok()) return ctx.UsageError("admin server create", std::string(p.status().message()));
    request.set_power_state(static_cast<v1::PowerState>(*p));
  }
  auto response = ctx.Call(&v1::InventoryService::Stub::CreateServer, request);
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, response->server(), [&] { PrintServerDetail(response->server()); });
  return kExitOk;
}

int StorageNodeList(Context& ctx, const Args& args) {
  std::string datacenter, state;
  Paging paging;
  common::FlagSet flags(
      "imagectl admin storage-node list [--datacenter=DC] [--state=up|down]\n"
      "Lists the storaged daemons that registered (operators).\n"
      "Example:\n  imagectl admin storage-node list --state=up");
  flags.String("datacenter", &datacenter, "only this datacenter");
  flags.String("state", &state, "up or down");
  paging.Define(flags);
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin storage-node list", flags, args, 0, 0, &pos)) return *rc;
  v1::ListStorageNodesRequest request;
  request.set_datacenter(datacenter);
  if (!state.empty()) {
    auto v = ParseEnum(v1::StorageNodeState_descriptor(), "STORAGE_NODE_STATE_", "state", state);
    if (!v.ok()) {
      return ctx.UsageError("admin storage-node list", std::string(v.status().message()));
    }
    request.set_state(static_cast<v1::StorageNodeState>(*v));
  }
  paging.Apply(&request);
  auto response = ListPages(ctx, &v1::InventoryService::Stub::ListStorageNodes, request,
                            paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    Table table({"ID", "DATACENTER", "ADDRESS", "PORTALS", "STATE", "FREE", "CAPACITY",
                 "LAST HEARTBEAT"});
    for (const auto& n : response->storage_nodes()) {
      table.Add({n.id(), n.datacenter(), n.address(), absl::StrJoin(n.served_portals(), ","),
                 ShortEnum(v1::StorageNodeState_Name(n.state()), "STORAGE_NODE_STATE_"),
                 FormatBytes(n.free_bytes()), FormatBytes(n.capacity_bytes()),
                 FormatTime(n.last_heartbeat_time())});
    }
    table.Print(stdout);
  });
  NoteNextPage(response->next_page_token());
  return kExitOk;
}

int AuditList(Context& ctx, const Args& args) {
  std::string account, target, method;
  Paging paging;
  paging.page_size = 50;
  common::FlagSet flags(
      "imagectl admin audit list [flags]\n"
      "Lists audit events, newest first (operators; user_manage or audit_view users for\n"
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
  common::FlagSet flags(absl::StrCat(
      "imagectl admin quota get [--account=ACCOUNT_ID]\n"
      "Shows an account's template limits and usage.\n"
      "Example:\n  imagectl admin quota get --account=",
      kExampleAccount));
  flags.String("account", &account, "the account (default: yours)");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin quota get", flags, args, 0, 0, &pos)) return *rc;
  v1::GetQuotaRequest request;
  request.set_account_id(account);
  auto response = ctx.Call(&v1::IdentityService::Stub::GetQuota, request);
  if (!response.ok()) return ctx.Fail(response.status());
  PrintQuota(ctx, response->quota());
  return kExitOk;
}

int QuotaSet(Context& ctx, const Args& args) {
  std::string account, max_stored;
  int64_t max_templates = 0;
  common::FlagSet flags(absl::StrCat(
      "imagectl admin quota set --account=ACCOUNT_ID [--max-templates=N] "
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
  auto response = ctx.Call(&v1::IdentityService::Stub::SetQuota, request);
  if (!response.ok()) return ctx.Fail(response.status());
  PrintQuota(ctx, response->quota());
  return kExitOk;
}

int WhoAmI(Context& ctx, const Args& args) {
  common::FlagSet flags(
      "imagectl whoami\n"
      "Shows the user, account and permissions of the API key in use.\n"
      "Example:\n  imagectl whoami -o json");
  Args pos;
  if (auto rc = ParseArgs(ctx, "whoami", flags, args, 0, 0, &pos)) return *rc;
  auto response = ctx.Call(&v1::IdentityService::Stub::GetCaller, v1::GetCallerRequest());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] {
    PrintFields({{"user", response->user().username() + " (" + response->user().id() + ")"},
                 {"account", response->account().name() + " (" + response->account().id() + ")"},
                 {"permissions", PermissionNames(response->user().permissions())},
                 {"device access", DeviceAccessText(response->user().device_access())},
                 {"api key", response->api_key_id()},
                 {"endpoint", ctx.globals().endpoint}});
  });
  return kExitOk;
}

}  // namespace

std::vector<Command> AdminCommands() {
  return {
      {"whoami", "show the user behind your API key", WhoAmI},
      {"admin account create", "create an account", AccountCreate},
      {"admin account list", "list accounts", AccountList},
      {"admin user create", "create a user", UserCreate},
      {"admin user list", "list the users of an account", UserList},
      {"admin key create", "create an API key (secret shown once)", KeyCreate},
      {"admin key list", "list a user's API keys", KeyList},
      {"admin key revoke", "revoke an API key", KeyRevoke},
      {"admin permission set", "replace a user's permissions", PermissionSet},
      {"admin device-access set", "replace a user's device access", DeviceAccessSet},
      {"admin datacenter create", "add a datacenter", DatacenterCreate},
      {"admin datacenter list", "list datacenters", DatacenterList},
      {"admin san-volume create", "add an iSCSI LUN to the volume pool", SanVolumeCreate},
      {"admin san-volume list", "list the SAN volume pool", SanVolumeList},
      {"admin ip-pool create", "add an IP pool", IpPoolCreate},
      {"admin ip-pool list", "list IP pools", IpPoolList},
      {"admin server create", "register a server in an account", ServerCreate},
      {"admin server list", "list servers of every account",
       [](Context& ctx, const Args& args) { return ServerList(ctx, args, "admin server list"); }},
      {"admin storage-node list", "list storage nodes", StorageNodeList},
      {"admin audit list", "list audit events", AuditList},
      {"admin quota get", "show an account's quota and usage", QuotaGet},
      {"admin quota set", "set an account's quota", QuotaSet},
  };
}

}  // namespace imagectl
