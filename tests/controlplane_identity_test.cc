// Starts the real controlplane binary and exercises IdentityService,
// InventoryService and AuditService over gRPC with real API keys: bootstrap,
// authentication on every RPC, account isolation, permissions, credentials
// at rest, audit entries, pagination under concurrent inserts, bad input.
#include <signal.h>
#include <sys/stat.h>

#include <atomic>
#include <fstream>
#include <functional>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controlplane/credential_cipher.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_inventory_store.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/audit.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "tests/process.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string FirstLine(const std::string& path) {
  std::string all = ReadAll(path);
  return all.substr(0, all.find('\n'));
}

class ControlPlane {
 public:
  explicit ControlPlane(const std::string& dir) : dir_(dir) {
    WriteInternalToken(dir_ + "/internal.token");
  }

  void Start() {
    auto process = Process::StartServer(
        {RunfilePath("controlplane/controlplane"), "--listen=127.0.0.1:0", "--db=" + db(),
         "--admin-key-file=" + key_file(), "--internal-token-file=" + dir_ + "/internal.token"},
        dir_ + "/controlplane.log");
    ASSERT_TRUE(process.ok()) << process.status();
    process_ = std::make_unique<Process>(*std::move(process));
    auto channel =
        grpc::CreateChannel(process_->address(), grpc::InsecureChannelCredentials());
    identity_ = v1::IdentityService::NewStub(channel);
    inventory_ = v1::InventoryService::NewStub(channel);
    audit_ = v1::AuditService::NewStub(channel);
  }
  void Stop() {
    auto status = process_->Stop(SIGTERM);
    ASSERT_TRUE(status.ok()) << status.status();
    process_.reset();
  }

  std::string db() const { return dir_ + "/cp.db"; }
  std::string key_file() const { return dir_ + "/admin.key"; }
  std::string admin_key() const { return FirstLine(key_file()); }

  v1::IdentityService::Stub& identity() { return *identity_; }
  v1::InventoryService::Stub& inventory() { return *inventory_; }
  v1::AuditService::Stub& audit() { return *audit_; }

 private:
  std::string dir_;
  std::unique_ptr<Process> process_;
  std::unique_ptr<v1::IdentityService::Stub> identity_;
  std::unique_ptr<v1::InventoryService::Stub> inventory_;
  std::unique_ptr<v1::AuditService::Stub> audit_;
};

// Calls `rpc` with `key` (none if empty) and returns the status.
template <typename Stub, typename Request, typename Response>
grpc::Status Call(Stub& stub,
                  grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
                  const std::string& key, const Request& request, Response* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
  return (stub.*rpc)(&context, request, response);
}

#define EXPECT_CODE(status, code_) \
  EXPECT_EQ((status).error_code(), grpc::StatusCode::code_) << (status).error_message()
#define ASSERT_OK(status) ASSERT_TRUE((status).ok()) << (status).error_message()

class ControlPlaneIdentityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cp_ = std::make_unique<ControlPlane>(MakeTempDir("cpid"));
    cp_->Start();
    admin_ = cp_->admin_key();
    ASSERT_FALSE(admin_.empty());
  }

  std::string CreateAccount(const std::string& name) {
    v1::CreateAccountRequest request;
    request.set_name(name);
    v1::CreateAccountResponse response;
    grpc::Status status = Call(cp_->identity(), &v1::IdentityService::Stub::CreateAccount,
                               admin_, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.account().id();
  }

  // Creates a user in `account` and returns {user id, API key secret}.
  std::pair<std::string, std::string> CreateUser(const std::string& key,
                                                 const std::string& account,
                                                 const std::string& name,
                                                 std::vector<v1::Permission> permissions,
                                                 bool all_servers = true) {
    v1::CreateUserRequest request;
    request.set_account_id(account);
    request.set_username(name);
    for (auto p : permissions) request.add_permissions(p);
    request.mutable_device_access()->set_all_servers(all_servers);
    v1::CreateUserResponse user;
    grpc::Status status =
        Call(cp_->identity(), &v1::IdentityService::Stub::CreateUser, key, request, &user);
    EXPECT_TRUE(status.ok()) << status.error_message();
    v1::CreateApiKeyRequest key_request;
    key_request.set_user_id(user.user().id());
    v1::CreateApiKeyResponse api_key;
    status = Call(cp_->identity(), &v1::IdentityService::Stub::CreateApiKey, key, key_request,
                  &api_key);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {user.user().id(), api_key.secret()};
  }

  std::unique_ptr<ControlPlane> cp_;
  std::string admin_;
};

// One call of every RPC of the three services with an empty request.
std::vector<std::pair<std::string, std::function<grpc::Status(const std::string&)>>> EveryRpc(
    ControlPlane& cp) {
  std::vector<std::pair<std::string, std::function<grpc::Status(const std::string&)>>> rpcs;
#define RPC(service, stub, name)                                                    \
  rpcs.emplace_back(#name, [&cp](const std::string& key) {                          \
    v1::name##Request request;                                                      \
    v1::name##Response response;                                                    \
    return Call(cp.stub(), &v1::service::Stub::name, key, request, &response);      \
  })
  RPC(IdentityService, identity, GetCaller);
  RPC(IdentityService, identity, CreateAccount);
  RPC(IdentityService, identity, GetAccount);
  RPC(IdentityService, identity, ListAccounts);
  RPC(IdentityService, identity, UpdateAccount);
  RPC(IdentityService, identity, CreateUser);
  RPC(IdentityService, identity, GetUser);
  RPC(IdentityService, identity, ListUsers);
  RPC(IdentityService, identity, DeleteUser);
  RPC(IdentityService, identity, SetUserPermissions);
  RPC(IdentityService, identity, SetDeviceAccess);
  RPC(IdentityService, identity, CreateApiKey);
  RPC(IdentityService, identity, ListApiKeys);
  RPC(IdentityService, identity, RevokeApiKey);
  RPC(IdentityService, identity, GetQuota);
  RPC(IdentityService, identity, SetQuota);
  RPC(InventoryService, inventory, CreateServer);
  RPC(InventoryService, inventory, GetServer);
  RPC(InventoryService, inventory, ListServers);
  RPC(InventoryService, inventory, UpdateServer);
  RPC(InventoryService, inventory, DeleteServer);
  RPC(InventoryService, inventory, SetServerCredentials);
  RPC(InventoryService, inventory, GetServerCredentials);
  RPC(InventoryService, inventory, GetServerConsole);
  RPC(InventoryService, inventory, CreateDatacenter);
  RPC(InventoryService, inventory, ListDatacenters);
  RPC(InventoryService, inventory, DeleteDatacenter);
  RPC(InventoryService, inventory, CreateSanVolume);
  RPC(InventoryService, inventory, ListSanVolumes);
  RPC(InventoryService, inventory, DeleteSanVolume);
  RPC(InventoryService, inventory, ListStorageNodes);
  RPC(InventoryService, inventory, GetStorageNode);
  RPC(InventoryService, inventory, DeleteStorageNode);
  RPC(InventoryService, inventory, CreateIpPool);
  RPC(InventoryService, inventory, ListIpPools);
  RPC(InventoryService, inventory, GetIpPool);
  RPC(InventoryService, inventory, DeleteIpPool);
  RPC(AuditService, audit, ListAuditEvents);
#undef RPC
  return rpcs;
}

TEST_F(ControlPlaneIdentityTest, EveryRpcRefusesMissingUnknownAndRevokedKeys) {
  v1::CreateApiKeyRequest create;
  v1::CreateApiKeyResponse created;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::CreateApiKey, admin_, create,
                 &created));
  std::string revoked = created.secret();
  v1::RevokeApiKeyRequest revoke;
  revoke.set_id(created.api_key().id());
  v1::RevokeApiKeyResponse revoke_response;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::RevokeApiKey, admin_, revoke,
                 &revoke_response));
  EXPECT_TRUE(revoke_response.api_key().revoked());
  std::string unknown = admin_;
  unknown.back() = unknown.back() == 'A' ? 'B' : 'A';
  auto rpcs = EveryRpc(*cp_);
  EXPECT_EQ(rpcs.size(), 38u);
  for (const auto& [name, rpc] : rpcs) {
    for (const std::string& key : {std::string(), revoked, unknown, std::string("garbage")}) {
      grpc::Status status = rpc(key);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << name << " with key '" << key.substr(0, 12) << "': " << status.error_message();
    }
  }
  // The admin key still works.
  v1::GetCallerResponse caller;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::GetCaller, admin_,
                 v1::GetCallerRequest(), &caller));
  EXPECT_TRUE(caller.account().is_operator());
  EXPECT_EQ(caller.user().username(), "admin");
}

TEST_F(ControlPlaneIdentityTest, BootstrapKeyIsPrivateAndSurvivesRestart) {
  struct stat st;
  ASSERT_EQ(stat(cp_->key_file().c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_GE(admin_.size(), 4 + 36 + 1 + 43u);
  std::string db_bytes = ReadAll(cp_->db()) + ReadAll(cp_->db() + "-wal");
  EXPECT_EQ(db_bytes.find(admin_), std::string::npos) << "the key is stored in clear";
  cp_->Stop();
  cp_->Start();
  EXPECT_EQ(cp_->admin_key(), admin_);
  v1::GetCallerResponse caller;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::GetCaller, admin_,
                 v1::GetCallerRequest(), &caller));
  EXPECT_EQ(caller.user().username(), "admin");
}

TEST_F(ControlPlaneIdentityTest, AccountsAreIsolatedAndPermissionsEnforcedAndAudited) {
  std::string a = CreateAccount("acme");
  std::string b = CreateAccount("globex");
  auto [manager_id, manager] =
      CreateUser(admin_, a, "boss", {v1::PERMISSION_USER_MANAGE, v1::PERMISSION_SERVER_VIEW});
  auto [b_user_id, b_key] = CreateUser(admin_, b, "bob", {v1::PERMISSION_SERVER_VIEW});
  ASSERT_FALSE(manager.empty());

  // The manager creates a user and a key for it in its own account.
  auto [worker_id, worker] = CreateUser(manager, "", "worker", {v1::PERMISSION_SERVER_VIEW});
  ASSERT_FALSE(worker.empty());
  v1::GetCallerResponse worker_caller;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::GetCaller, worker,
                 v1::GetCallerRequest(), &worker_caller));
  EXPECT_EQ(worker_caller.account().id(), a);
  v1::ListUsersRequest list_users;
  v1::ListUsersResponse users;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::ListUsers, manager, list_users,
                 &users));
  EXPECT_EQ(users.users_size(), 2);

  // Permission denials for a known caller.
  v1::CreateUserRequest greedy;
  greedy.set_username("greedy");
  greedy.add_permissions(v1::PERMISSION_SERVER_PROVISION);
  v1::CreateUserResponse ignored_user;
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::CreateUser, manager, greedy,
                   &ignored_user),
              PERMISSION_DENIED);
  v1::CreateAccountRequest new_account;
  new_account.set_name("sneaky");
  v1::CreateAccountResponse ignored_account;
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::CreateAccount, manager,
                   new_account, &ignored_account),
              PERMISSION_DENIED);
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::ListUsers, worker, list_users,
                   &users),
              PERMISSION_DENIED);

  // Another account's user: NOT_FOUND for every id-taking call, unchanged.
  v1::GetUserRequest get_b;
  get_b.set_id(b_user_id);
  v1::GetUserResponse got;
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::GetUser, manager, get_b, &got),
              NOT_FOUND);
  v1::SetUserPermissionsRequest set_b;
  set_b.set_user_id(b_user_id);
  v1::SetUserPermissionsResponse set_response;
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::SetUserPermissions, manager,
                   set_b, &set_response),
              NOT_FOUND);
  v1::DeleteUserRequest delete_b;
  delete_b.set_id(b_user_id);
  delete_b.set_request_id("del-b");
  v1::DeleteUserResponse deleted;
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::DeleteUser, manager, delete_b,
                   &deleted),
              NOT_FOUND);
  v1::CreateApiKeyRequest key_for_b;
  key_for_b.set_user_id(b_user_id);
  v1::CreateApiKeyResponse key_response;
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::CreateApiKey, manager, key_for_b,
                   &key_response),
              NOT_FOUND);
  v1::GetAccountRequest get_account_b;
  get_account_b.set_id(b);
  v1::GetAccountResponse account_b;
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::GetAccount, manager,
                   get_account_b, &account_b),
              NOT_FOUND);
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::GetUser, admin_, get_b, &got));
  ASSERT_EQ(got.user().permissions_size(), 1);
  EXPECT_EQ(got.user().permissions(0), v1::PERMISSION_SERVER_VIEW);
  v1::GetCallerResponse b_caller;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::GetCaller, b_key,
                 v1::GetCallerRequest(), &b_caller));

  // The manager changes permissions in its account; revoking the worker's key
  // takes effect on the next call.
  v1::SetUserPermissionsRequest set_worker;
  set_worker.set_user_id(worker_id);
  set_worker.add_permissions(v1::PERMISSION_SERVER_VIEW);
  set_worker.add_permissions(v1::PERMISSION_USER_MANAGE);
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::SetUserPermissions, manager,
                 set_worker, &set_response));
  EXPECT_EQ(set_response.user().permissions_size(), 2);
  v1::ListApiKeysRequest list_keys;
  list_keys.set_user_id(worker_id);
  v1::ListApiKeysResponse keys;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::ListApiKeys, manager, list_keys,
                 &keys));
  ASSERT_EQ(keys.api_keys_size(), 1);
  v1::RevokeApiKeyRequest revoke;
  revoke.set_id(keys.api_keys(0).id());
  v1::RevokeApiKeyResponse revoked;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::RevokeApiKey, manager, revoke,
                 &revoked));
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::GetCaller, worker,
                   v1::GetCallerRequest(), &worker_caller),
              UNAUTHENTICATED);

  // Audit: the manager sees its account's allowed and refused calls, not B's.
  v1::ListAuditEventsRequest audit_request;
  v1::ListAuditEventsResponse events;
  ASSERT_OK(Call(cp_->audit(), &v1::AuditService::Stub::ListAuditEvents, manager, audit_request,
                 &events));
  std::multiset<std::pair<std::string, int>> seen;
  for (const auto& e : events.audit_events()) {
    EXPECT_EQ(e.account_id(), a);
    EXPECT_FALSE(e.peer().empty());
    seen.insert({e.method(), e.outcome().code()});
  }
  const std::string identity = "/imagetemplates.v1.IdentityService/";
  EXPECT_TRUE(seen.count({identity + "CreateUser", 0}));
  EXPECT_TRUE(seen.count({identity + "CreateUser", grpc::StatusCode::PERMISSION_DENIED}));
  EXPECT_TRUE(seen.count({identity + "DeleteUser", grpc::StatusCode::NOT_FOUND}));
  EXPECT_TRUE(seen.count({identity + "RevokeApiKey", 0}));
  bool found_request_id = false;
  for (const auto& e : events.audit_events()) {
    if (e.request_id() == "del-b") {
      found_request_id = true;
      EXPECT_EQ(e.target().id(), b_user_id);
      EXPECT_EQ(e.user_id(), manager_id);
    }
  }
  EXPECT_TRUE(found_request_id);
  audit_request.set_account_id(b);
  EXPECT_CODE(Call(cp_->audit(), &v1::AuditService::Stub::ListAuditEvents, manager,
                   audit_request, &events),
              NOT_FOUND);
  ASSERT_OK(Call(cp_->audit(), &v1::AuditService::Stub::ListAuditEvents, admin_, audit_request,
                 &events));
  v1::ListAuditEventsRequest all;
  all.set_method(identity + "CreateAccount");
  ASSERT_OK(Call(cp_->audit(), &v1::AuditService::Stub::ListAuditEvents, admin_, all, &events));
  EXPECT_GE(events.audit_events_size(), 3);  // two allowed, one refused
  EXPECT_CODE(Call(cp_->audit(), &v1::AuditService::Stub::ListAuditEvents, b_key,
                   v1::ListAuditEventsRequest(), &events),
              PERMISSION_DENIED);
}

TEST_F(ControlPlaneIdentityTest, ServersCredentialsAndIpPools) {
  std::string a = CreateAccount("acme");
  std::string b = CreateAccount("globex");
  v1::CreateDatacenterRequest dc;
  dc.set_name("dal10");
  v1::CreateDatacenterResponse dc_response;
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::CreateDatacenter, admin_, dc,
                 &dc_response));
  {
    // Storage nodes register through the NodeRegistry, which is not served
    // yet: register one straight in the database.
    auto db = controlplane::SqliteDatabase::Open(cp_->db(), controlplane::Migrations());
    ASSERT_TRUE(db.ok()) << db.status();
    auto cipher = controlplane::CredentialCipher::Create(std::string(32, 'x'));
    controlplane::SqliteInventoryStore store(db->get(), cipher->get());
    v1::StorageNode node;
    node.set_id("san1");
    node.set_datacenter("dal10");
    node.set_address("127.0.0.1:1");
    ASSERT_TRUE(store.UpsertStorageNode(node).ok());
  }
  const std::string password = "S3cret-Passw0rd-for-grep";
  const std::string chap = "chap-secret-for-grep";
  auto make_server = [&](const std::string& account, const std::string& hostname, int lun) {
    v1::CreateSanVolumeRequest volume;
    volume.set_datacenter("dal10");
    volume.set_san_host("san1");
    volume.mutable_iscsi()->set_portal("127.0.0.1:3260");
    volume.mutable_iscsi()->set_iqn("iqn.2003-01.org.example:t");
    volume.mutable_iscsi()->set_lun(lun);
    volume.mutable_iscsi()->set_chap_user("user");
    volume.mutable_iscsi()->set_chap_secret(chap);
    volume.set_size_bytes(int64_t{1} << 30);
    v1::CreateSanVolumeResponse volume_response;
    grpc::Status status = Call(cp_->inventory(), &v1::InventoryService::Stub::CreateSanVolume,
                               admin_, volume, &volume_response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(volume_response.san_volume().iscsi().chap_secret().empty());
    v1::CreateServerRequest server;
    server.set_account_id(account);
    server.set_type(v1::SERVER_TYPE_VIRTUAL);
    server.set_hostname(hostname);
    server.set_datacenter("dal10");
    server.mutable_configuration()->set_cpu_count(2);
    server.mutable_configuration()->set_memory_mib(4096);
    v1::ServerDisk* disk = server.add_disks();
    disk->set_boot(true);
    disk->set_san_volume_id(volume_response.san_volume().id());
    v1::SoftwareCredential* cred = server.add_credentials();
    cred->set_software("os");
    cred->set_username("root");
    cred->set_password(password);
    v1::CreateServerResponse response;
    status = Call(cp_->inventory(), &v1::InventoryService::Stub::CreateServer, admin_, server,
                  &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.server();
  };
  v1::Server web = make_server(a, "web1", 1);
  v1::Server other = make_server(b, "db1", 2);
  EXPECT_TRUE(web.has_credentials());
  EXPECT_TRUE(web.disks(0).iscsi().chap_secret().empty());

  auto [viewer_id, viewer] = CreateUser(admin_, a, "viewer", {v1::PERMISSION_SERVER_VIEW});
  auto [cred_id, cred_user] = CreateUser(
      admin_, a, "ops", {v1::PERMISSION_SERVER_VIEW, v1::PERMISSION_SERVER_CREDENTIALS_VIEW,
                         v1::PERMISSION_SERVER_PROVISION});
  auto [limited_id, limited] =
      CreateUser(admin_, a, "limited", {v1::PERMISSION_SERVER_VIEW}, false);

  v1::GetServerRequest get;
  get.set_id(web.id());
  v1::GetServerResponse got;
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::GetServer, viewer, get, &got));
  EXPECT_EQ(got.server().hostname(), "web1");
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::GetServer, limited, get, &got),
              NOT_FOUND);
  v1::ListServersResponse listed;
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::ListServers, viewer,
                 v1::ListServersRequest(), &listed));
  ASSERT_EQ(listed.servers_size(), 1);
  EXPECT_EQ(listed.servers(0).id(), web.id());

  // Another account's server: NOT_FOUND, and unchanged.
  v1::GetServerRequest get_other;
  get_other.set_id(other.id());
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::GetServer, cred_user, get_other,
                   &got),
              NOT_FOUND);
  v1::SetServerCredentialsRequest overwrite;
  overwrite.set_server_id(other.id());
  v1::SetServerCredentialsResponse overwritten;
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::SetServerCredentials,
                   cred_user, overwrite, &overwritten),
              NOT_FOUND);
  v1::GetServerCredentialsRequest other_creds;
  other_creds.set_server_id(other.id());
  v1::GetServerCredentialsResponse creds;
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::GetServerCredentials,
                   cred_user, other_creds, &creds),
              NOT_FOUND);
  v1::DeleteServerRequest delete_other;
  delete_other.set_id(other.id());
  v1::DeleteServerResponse deleted;
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::DeleteServer, cred_user,
                   delete_other, &deleted),
              NOT_FOUND);
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::GetServerCredentials, admin_,
                 other_creds, &creds));
  ASSERT_EQ(creds.credentials_size(), 1);
  EXPECT_EQ(creds.credentials(0).password(), password);

  // Credentials: only with SERVER_CREDENTIALS_VIEW.
  v1::GetServerCredentialsRequest web_creds;
  web_creds.set_server_id(web.id());
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::GetServerCredentials, viewer,
                   web_creds, &creds),
              PERMISSION_DENIED);
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::GetServerCredentials, cred_user,
                 web_creds, &creds));
  ASSERT_EQ(creds.credentials_size(), 1);
  EXPECT_EQ(creds.credentials(0).password(), password);
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::DeleteServer, viewer,
                   v1::DeleteServerRequest(), &deleted),
              INVALID_ARGUMENT);
  v1::DeleteServerRequest delete_web;
  delete_web.set_id(web.id());
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::DeleteServer, viewer,
                   delete_web, &deleted),
              PERMISSION_DENIED);

  // At rest: neither the password nor the CHAP secret appears in the files.
  std::string files = ReadAll(cp_->db()) + ReadAll(cp_->db() + "-wal");
  ASSERT_FALSE(files.empty());
  EXPECT_EQ(files.find(password), std::string::npos);
  EXPECT_EQ(files.find(chap), std::string::npos);
  EXPECT_NE(files.find("web1"), std::string::npos);  // the search itself works

  // IP pools are platform-wide: provisioners read, only operators change.
  v1::CreateIpPoolRequest pool;
  pool.set_datacenter("dal10");
  pool.set_subnet("10.1.0.0/24");
  pool.set_gateway("10.1.0.1");
  v1::IpRange* range = pool.add_ranges();
  range->set_start("10.1.0.10");
  range->set_end("10.1.0.20");
  v1::CreateIpPoolResponse pool_response;
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::CreateIpPool, cred_user, pool,
                   &pool_response),
              PERMISSION_DENIED);
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::CreateIpPool, admin_, pool,
                 &pool_response));
  EXPECT_EQ(pool_response.ip_pool().total_count(), 11);
  v1::GetIpPoolRequest get_pool;
  get_pool.set_id(pool_response.ip_pool().id());
  v1::GetIpPoolResponse got_pool;
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::GetIpPool, cred_user, get_pool,
                 &got_pool));
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::GetIpPool, viewer, get_pool,
                   &got_pool),
              PERMISSION_DENIED);
  v1::DeleteIpPoolRequest delete_pool;
  delete_pool.set_id(pool_response.ip_pool().id());
  v1::DeleteIpPoolResponse pool_deleted;
  EXPECT_CODE(Call(cp_->inventory(), &v1::InventoryService::Stub::DeleteIpPool, cred_user,
                   delete_pool, &pool_deleted),
              PERMISSION_DENIED);
  ASSERT_OK(Call(cp_->inventory(), &v1::InventoryService::Stub::GetIpPool, admin_, get_pool,
                 &got_pool));
  pool.mutable_ranges(0)->set_end("10.2.0.1");
  grpc::Status outside = Call(cp_->inventory(), &v1::InventoryService::Stub::CreateIpPool,
                              admin_, pool, &pool_response);
  EXPECT_CODE(outside, INVALID_ARGUMENT);
  EXPECT_EQ(outside.error_message().substr(0, 6), "ranges");

  // GetServerCredentials is audited; the password never reaches the log.
  v1::ListAuditEventsRequest audit;
  audit.set_target_id(web.id());
  v1::ListAuditEventsResponse events;
  ASSERT_OK(Call(cp_->audit(), &v1::AuditService::Stub::ListAuditEvents, admin_, audit, &events));
  bool saw_read = false;
  for (const auto& e : events.audit_events()) {
    if (e.method() == "/imagetemplates.v1.InventoryService/GetServerCredentials" &&
        e.outcome().code() == 0) {
      saw_read = true;
    }
    EXPECT_EQ(e.outcome().message().find(password), std::string::npos);
  }
  EXPECT_TRUE(saw_read);
}

TEST_F(ControlPlaneIdentityTest, PaginationSurvivesConcurrentInserts) {
  std::set<std::string> before;
  for (int i = 0; i < 40; ++i) before.insert(CreateAccount(absl::StrCat("acct-", 100 + i)));
  std::atomic<bool> stop{false};
  std::atomic<int> inserted{0};
  std::thread writer([&] {
    for (int i = 0; !stop && i < 200; ++i) {
      v1::CreateAccountRequest request;
      // Names sort both before and after the ones being paged.
      request.set_name(absl::StrCat(i % 2 ? "aaa-" : "zzz-", i));
      v1::CreateAccountResponse response;
      if (Call(cp_->identity(), &v1::IdentityService::Stub::CreateAccount, admin_, request,
               &response)
              .ok()) {
        ++inserted;
      }
    }
  });
  std::multiset<std::string> seen;
  v1::ListAccountsRequest request;
  request.set_page_size(3);
  int pages = 0;
  while (true) {
    v1::ListAccountsResponse page;
    grpc::Status status = Call(cp_->identity(), &v1::IdentityService::Stub::ListAccounts, admin_,
                               request, &page);
    ASSERT_OK(status);
    EXPECT_LE(page.accounts_size(), 3);
    for (const auto& account : page.accounts()) seen.insert(account.id());
    ++pages;
    if (page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }
  stop = true;
  writer.join();
  for (const std::string& id : before) EXPECT_EQ(seen.count(id), 1u) << id;
  for (const std::string& id : seen) EXPECT_EQ(seen.count(id), 1u) << "duplicate " << id;
  EXPECT_GT(pages, 10);

  // Bad pagination input.
  v1::ListAccountsResponse page;
  request.set_page_token("definitely-not-a-token");
  grpc::Status garbage = Call(cp_->identity(), &v1::IdentityService::Stub::ListAccounts, admin_,
                              request, &page);
  EXPECT_CODE(garbage, INVALID_ARGUMENT);
  EXPECT_NE(garbage.error_message().find("page_token"), std::string::npos);
  request.clear_page_token();
  request.set_page_size(-5);
  grpc::Status negative = Call(cp_->identity(), &v1::IdentityService::Stub::ListAccounts, admin_,
                               request, &page);
  EXPECT_CODE(negative, INVALID_ARGUMENT);
  EXPECT_NE(negative.error_message().find("page_size"), std::string::npos);
  request.set_page_size(1000000);
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::ListAccounts, admin_, request,
                 &page));
  EXPECT_LE(page.accounts_size(), 500);
  // A token is tied to its filters.
  request.set_page_size(2);
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::ListAccounts, admin_, request,
                 &page));
  request.set_page_token(page.next_page_token());
  request.set_name_contains("acct");
  EXPECT_CODE(Call(cp_->identity(), &v1::IdentityService::Stub::ListAccounts, admin_, request,
                   &page),
              INVALID_ARGUMENT);
}

TEST_F(ControlPlaneIdentityTest, BadInputNamesTheFieldAndNamesAreLiteral) {
  auto create = [&](const std::string& name, v1::CreateAccountResponse* response) {
    v1::CreateAccountRequest request;
    request.set_name(name);
    return Call(cp_->identity(), &v1::IdentityService::Stub::CreateAccount, admin_, request,
                response);
  };
  v1::CreateAccountResponse response;
  for (const std::string& bad : {std::string(""), std::string(101, 'n'), std::string("a\x01z"),
                                 std::string("line\nbreak")}) {
    grpc::Status status = create(bad, &response);
    EXPECT_CODE(status, INVALID_ARGUMENT);
    EXPECT_EQ(status.error_message().substr(0, 4), "name") << status.error_message();
  }
  const std::string sql = "Robert'); DROP TABLE accounts;--";
  ASSERT_OK(create(sql, &response));
  EXPECT_EQ(response.account().name(), sql);
  v1::GetAccountRequest get;
  get.set_id(response.account().id());
  v1::GetAccountResponse got;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::GetAccount, admin_, get, &got));
  EXPECT_EQ(got.account().name(), sql);
  EXPECT_CODE(create(sql, &response), ALREADY_EXISTS);

  get.set_id("1234");
  grpc::Status malformed =
      Call(cp_->identity(), &v1::IdentityService::Stub::GetAccount, admin_, get, &got);
  EXPECT_CODE(malformed, INVALID_ARGUMENT);
  EXPECT_EQ(malformed.error_message().substr(0, 2), "id");

  v1::CreateUserRequest user;
  user.set_username("x");
  user.add_permissions(static_cast<v1::Permission>(77));
  v1::CreateUserResponse user_response;
  grpc::Status unknown_enum =
      Call(cp_->identity(), &v1::IdentityService::Stub::CreateUser, admin_, user, &user_response);
  EXPECT_CODE(unknown_enum, INVALID_ARGUMENT);
  EXPECT_EQ(unknown_enum.error_message().substr(0, 11), "permissions");

  v1::ListServersRequest servers;
  servers.set_state(static_cast<v1::ServerState>(99));
  v1::ListServersResponse servers_response;
  grpc::Status bad_state = Call(cp_->inventory(), &v1::InventoryService::Stub::ListServers,
                                admin_, servers, &servers_response);
  EXPECT_CODE(bad_state, INVALID_ARGUMENT);
  EXPECT_EQ(bad_state.error_message().substr(0, 5), "state");

  // request_id: a repeat returns the first result; another request is refused.
  v1::CreateAccountRequest once;
  once.set_name("once");
  once.set_request_id("req-once");
  v1::CreateAccountResponse first, second;
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::CreateAccount, admin_, once,
                 &first));
  ASSERT_OK(Call(cp_->identity(), &v1::IdentityService::Stub::CreateAccount, admin_, once,
                 &second));
  EXPECT_EQ(first.account().id(), second.account().id());
  once.set_name("twice");
  grpc::Status reused =
      Call(cp_->identity(), &v1::IdentityService::Stub::CreateAccount, admin_, once, &second);
  EXPECT_CODE(reused, INVALID_ARGUMENT);
  EXPECT_EQ(reused.error_message().substr(0, 10), "request_id");
}

}  // namespace
}  // namespace tests
