// InventoryStore rules against a real SQLite file with the real migrations.
#include "controlplane/sqlite_inventory_store.h"

#include <optional>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/api_key_authenticator.h"
#include "controlplane/bootstrap.h"
#include "controlplane/idempotency.h"
#include "controlplane/migrations.h"
#include "controlplane/ids.h"
#include "controlplane/sqlite_identity_store.h"
#include "controlplane/sqlite_operation_store.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

class InventoryStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    const char* dir = getenv("TEST_TMPDIR");
    std::string base = absl::StrCat(dir ? dir : "/tmp", "/inventory", ++n, "_", getpid());
    auto db = SqliteDatabase::Open(base + ".db", Migrations());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    auto boot = Bootstrap(db_.get(), base + ".key");
    ASSERT_TRUE(boot.ok()) << boot.status();
    op_ = CallerFor(boot->user_id);
    cipher_ = *CredentialCipher::Create(std::string(32, 'k'));
    identity_ = std::make_unique<SqliteIdentityStore>(db_.get());
    store_ = std::make_unique<SqliteInventoryStore>(db_.get(), cipher_.get());

    v1::CreateDatacenterRequest dc;
    dc.set_name("dal10");
    ASSERT_TRUE(store_->CreateDatacenter(op_, dc).ok());
    v1::StorageNode node;
    node.set_id("san1");
    node.set_datacenter("dal10");
    node.set_address("127.0.0.1:9000");
    ASSERT_TRUE(store_->UpsertStorageNode(node).ok());
    v1::CreateAccountRequest account;
    account.set_name("acme");
    account_a_ = identity_->CreateAccount(op_, account)->account().id();
    account.set_name("globex");
    account_b_ = identity_->CreateAccount(op_, account)->account().id();
  }

  Caller CallerFor(const std::string& user_id) {
    Caller caller;
    EXPECT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                     ASSIGN_OR_RETURN(caller, LoadCaller(conn, user_id));
                     return absl::OkStatus();
                   }).ok());
    return caller;
  }

  Caller NewUser(const std::string& account, const std::string& name,
                 std::vector<v1::Permission> permissions, bool all_servers) {
    v1::CreateUserRequest request;
    request.set_account_id(account);
    request.set_username(name);
    for (auto p : permissions) request.add_permissions(p);
    request.mutable_device_access()->set_all_servers(all_servers);
    auto user = identity_->CreateUser(op_, request);
    EXPECT_TRUE(user.ok()) << user.status();
    return CallerFor(user->user().id());
  }

  std::string NewVolume(int lun, const std::string& chap_secret = "") {
    v1::CreateSanVolumeRequest request;
    request.set_datacenter("dal10");
    request.set_san_host("san1");
    request.mutable_iscsi()->set_portal("127.0.0.1:3260");
    request.mutable_iscsi()->set_iqn("iqn.2003-01.org.example:pool");
    request.mutable_iscsi()->set_lun(lun);
    if (!chap_secret.empty()) {
      request.mutable_iscsi()->set_chap_user("chap");
      request.mutable_iscsi()->set_chap_secret(chap_secret);
    }
    request.set_size_bytes(int64_t{1} << 30);
    auto volume = store_->CreateSanVolume(op_, request);
    EXPECT_TRUE(volume.ok()) << volume.status();
    return volume.ok() ? volume->san_volume().id() : "";
  }

  v1::Server NewServer(const std::string& account, const std::string& hostname, int lun) {
    v1::CreateServerRequest request;
    request.set_account_id(account);
    request.set_type(v1::SERVER_TYPE_VIRTUAL);
    request.set_hostname(hostname);
    request.set_datacenter("dal10");
    request.mutable_configuration()->set_cpu_count(2);
    request.mutable_configuration()->set_memory_mib(2048);
    v1::ServerDisk* disk = request.add_disks();
    disk->set_boot(true);
    disk->set_san_volume_id(NewVolume(lun, "chapsecret123"));
    v1::SoftwareCredential* cred = request.add_credentials();
    cred->set_software("os");
    cred->set_username("root");
    cred->set_password("Tr0ub4dor&3");
    auto server = store_->CreateServer(op_, request);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? server->server() : v1::Server();
  }

  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<CredentialCipher> cipher_;
  std::unique_ptr<SqliteIdentityStore> identity_;
  std::unique_ptr<SqliteInventoryStore> store_;
  Caller op_;
  std::string account_a_, account_b_;
};

TEST_F(InventoryStoreTest, ServersAreSeenOnlyInsideAccountAndDeviceAccess) {
  v1::Server server = NewServer(account_a_, "web1", 1);
  ASSERT_EQ(server.disks_size(), 1);
  EXPECT_TRUE(server.has_credentials());
  EXPECT_EQ(server.power_state(), v1::POWER_STATE_RUNNING);
  EXPECT_EQ(server.disks(0).iscsi().chap_user(), "chap");
  EXPECT_TRUE(server.disks(0).iscsi().chap_secret().empty());

  Caller viewer = NewUser(account_a_, "viewer", {v1::PERMISSION_SERVER_VIEW}, true);
  Caller limited = NewUser(account_a_, "limited", {v1::PERMISSION_SERVER_VIEW}, false);
  Caller blind = NewUser(account_a_, "blind", {}, true);
  Caller outsider = NewUser(account_b_, "outsider", {v1::PERMISSION_SERVER_VIEW,
                                                     v1::PERMISSION_SERVER_CREDENTIALS_VIEW},
                            true);
  v1::GetServerRequest get;
  get.set_id(server.id());
  EXPECT_TRUE(store_->GetServer(viewer, get).ok());
  EXPECT_EQ(store_->GetServer(limited, get).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetServer(blind, get).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->GetServer(outsider, get).status().code(), absl::StatusCode::kNotFound);
  v1::GetServerCredentialsRequest creds;
  creds.set_server_id(server.id());
  EXPECT_EQ(store_->GetServerCredentials(outsider, creds).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->GetServerCredentials(viewer, creds).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto plain = store_->GetServerCredentials(op_, creds);
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_EQ(plain->credentials_size(), 1);
  EXPECT_EQ(plain->credentials(0).password(), "Tr0ub4dor&3");

  v1::ListServersRequest list;
  EXPECT_EQ(store_->ListServers(viewer, list)->servers_size(), 1);
  EXPECT_EQ(store_->ListServers(limited, list)->servers_size(), 0);
  EXPECT_EQ(store_->ListServers(outsider, list)->servers_size(), 0);
  list.set_account_id(account_a_);
  EXPECT_EQ(store_->ListServers(outsider, list).status().code(), absl::StatusCode::kNotFound);

  // Device access granted to the server makes it visible.
  v1::SetDeviceAccessRequest grant;
  grant.set_user_id(limited.user_id);
  grant.mutable_device_access()->add_server_ids(server.id());
  ASSERT_TRUE(identity_->SetDeviceAccess(op_, grant).ok());
  EXPECT_TRUE(store_->GetServer(CallerFor(limited.user_id), get).ok());
  // A server of another account cannot be granted.
  v1::Server b_server = NewServer(account_b_, "db1", 2);
  grant.mutable_device_access()->add_server_ids(b_server.id());
  EXPECT_EQ(identity_->SetDeviceAccess(op_, grant).status().code(), absl::StatusCode::kNotFound);

  // Non-operators cannot change servers; invisible ones stay NOT_FOUND.
  v1::DeleteServerRequest del;
  del.set_id(server.id());
  EXPECT_EQ(store_->DeleteServer(viewer, del).status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->DeleteServer(outsider, del).status().code(), absl::StatusCode::kNotFound);
  ASSERT_TRUE(store_->DeleteServer(op_, del).ok());
  v1::ListSanVolumesRequest free;
  free.set_state(v1::SAN_VOLUME_STATE_FREE);
  auto volumes = store_->ListSanVolumes(op_, free);
  ASSERT_TRUE(volumes.ok());
  EXPECT_EQ(volumes->san_volumes_size(), 1);  // the deleted server's volume
  for (const auto& v : volumes->san_volumes()) EXPECT_TRUE(v.iscsi().chap_secret().empty());
}

TEST_F(InventoryStoreTest, ServerHeldByAnOperationCannotBeChangedOrRemoved) {
  v1::Server server = NewServer(account_a_, "held", 1);
  SqliteOperationStore operations(db_.get());
  auto start = [&](v1::OperationKind kind) {
    v1::Operation op;
    op.set_id(NewUuid());
    op.set_kind(kind);
    op.set_account_id(account_a_);
    op.set_state(v1::OPERATION_STATE_RUNNING);
    if (kind == v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE) {
      op.mutable_target()->set_type(v1::RESOURCE_TYPE_SERVER);
      op.mutable_target()->set_id(server.id());
    } else {
      op.mutable_target()->set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
      op.mutable_target()->set_id(NewUuid());
      op.mutable_deployed_servers()->add_server_ids(NewUuid());
      op.mutable_deployed_servers()->add_server_ids(server.id());
    }
    EXPECT_TRUE(operations.InsertOperation(op, {}).ok());
    return op.id();
  };
  auto finish = [&](const std::string& id) {
    ASSERT_TRUE(operations.UpdateOperation(id, [](v1::Operation& op, OperationInternals&) {
      op.set_state(v1::OPERATION_STATE_SUCCEEDED);
      return absl::OkStatus();
    }).ok());
  };
  v1::UpdateServerRequest update;
  update.set_id(server.id());
  update.set_hostname("renamed");
  update.mutable_update_mask()->add_paths("hostname");
  v1::DeleteServerRequest del;
  del.set_id(server.id());
  v1::GetServerRequest get;
  get.set_id(server.id());
  for (auto kind : {v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE,
                    v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE}) {
    std::string op = start(kind);
    auto refused = store_->UpdateServer(op_, update);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
    EXPECT_NE(refused.status().message().find(op), std::string::npos) << refused.status();
    EXPECT_EQ(store_->DeleteServer(op_, del).status().code(),
              absl::StatusCode::kFailedPrecondition);
    auto unchanged = store_->GetServer(op_, get);
    ASSERT_TRUE(unchanged.ok()) << unchanged.status();
    EXPECT_EQ(unchanged->server().hostname(), "held");
    EXPECT_EQ(unchanged->server().disks_size(), 1);
    finish(op);
  }
  // Once the operations ended, both go through.
  auto updated = store_->UpdateServer(op_, update);
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_EQ(updated->server().hostname(), "renamed");
  EXPECT_TRUE(store_->DeleteServer(op_, del).ok());
  EXPECT_EQ(store_->GetServer(op_, get).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(InventoryStoreTest, SecretsAreEncryptedAtRest) {
  v1::Server server = NewServer(account_a_, "web1", 1);
  std::string raw;
  ASSERT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                   ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
                       "SELECT group_concat(hex(password)) FROM server_credentials"));
                   ASSIGN_OR_RETURN(bool row, stmt.Step());
                   if (row) raw = stmt.ColumnText(0);
                   ASSIGN_OR_RETURN(auto chap, conn.Prepare(
                       "SELECT group_concat(hex(chap_secret)) FROM san_volumes"));
                   ASSIGN_OR_RETURN(row, chap.Step());
                   if (row) raw += chap.ColumnText(0);
                   return absl::OkStatus();
                 }).ok());
  ASSERT_FALSE(raw.empty());
  auto hex = [](const std::string& s) {
    std::string out;
    for (unsigned char c : s) out += absl::StrCat(absl::Hex(c, absl::kZeroPad2));
    return absl::AsciiStrToUpper(out);
  };
  EXPECT_EQ(raw.find(hex("Tr0ub4dor&3")), std::string::npos);
  EXPECT_EQ(raw.find(hex("chapsecret123")), std::string::npos);
  auto volume = store_->ReadSanVolumeWithSecret(server.disks(0).san_volume_id());
  ASSERT_TRUE(volume.ok());
  EXPECT_EQ(volume->iscsi().chap_secret(), "chapsecret123");
}

// Request fingerprints are plain SHA-256 in the database: over a password or
// CHAP secret, anyone holding the file could confirm a guess offline.
TEST_F(InventoryStoreTest, FingerprintsOfRequestsWithSecretsConfirmNoGuess) {
  v1::Server server = NewServer(account_a_, "web1", 1);
  v1::SetServerCredentialsRequest set;
  set.set_server_id(server.id());
  set.set_request_id("rotate-1");
  v1::SoftwareCredential* cred = set.add_credentials();
  cred->set_software("os");
  cred->set_username("root");
  cred->set_password("summer2026");
  ASSERT_TRUE(store_->SetServerCredentials(op_, set).ok());
  v1::CreateSanVolumeRequest volume;
  volume.set_datacenter("dal10");
  volume.set_san_host("san1");
  volume.mutable_iscsi()->set_portal("127.0.0.1:3260");
  volume.mutable_iscsi()->set_iqn("iqn.2003-01.org.example:pool");
  volume.mutable_iscsi()->set_lun(7);
  volume.mutable_iscsi()->set_chap_user("chap");
  volume.mutable_iscsi()->set_chap_secret("guessable-secret");
  volume.set_size_bytes(int64_t{1} << 30);
  volume.set_request_id("vol-7");
  ASSERT_TRUE(store_->CreateSanVolume(op_, volume).ok());

  std::vector<std::string> stored;
  ASSERT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                   ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
                       "SELECT hex(fingerprint) FROM idempotent_requests"));
                   while (true) {
                     ASSIGN_OR_RETURN(bool row, stmt.Step());
                     if (!row) break;
                     stored.push_back(stmt.ColumnText(0));
                   }
                   return absl::OkStatus();
                 }).ok());
  ASSERT_EQ(stored.size(), 2u);
  auto hex = [](const std::string& s) {
    std::string out;
    for (unsigned char c : s) out += absl::StrCat(absl::Hex(c, absl::kZeroPad2));
    return absl::AsciiStrToUpper(out);
  };
  for (const std::string& guess :
       {hex(RequestFingerprint("SetServerCredentials", set)),
        hex(RequestFingerprint("CreateSanVolume", volume))}) {
    EXPECT_THAT(stored, ::testing::Not(::testing::Contains(guess)));
  }
  // Repeats still answer; another secret under the same request_id is
  // another request.
  EXPECT_TRUE(store_->SetServerCredentials(op_, set).ok());
  EXPECT_TRUE(store_->CreateSanVolume(op_, volume).ok());
  set.mutable_credentials(0)->set_password("winter2026");
  EXPECT_EQ(store_->SetServerCredentials(op_, set).status().code(),
            absl::StatusCode::kInvalidArgument);
  volume.mutable_iscsi()->set_chap_secret("another-secret");
  EXPECT_EQ(store_->CreateSanVolume(op_, volume).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(InventoryStoreTest, ListServersChecksItsHostnameFilter) {
  NewServer(account_a_, "web1", 1);
  v1::ListServersRequest list;
  list.set_hostname_contains(std::string(254, 'w'));
  absl::Status status = store_->ListServers(op_, list).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "hostname_contains")) << status;
  list.set_hostname_contains("web\x01");
  EXPECT_EQ(store_->ListServers(op_, list).status().code(), absl::StatusCode::kInvalidArgument);
  list.set_hostname_contains("WEB");
  auto page = store_->ListServers(op_, list);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->servers_size(), 1);
  EXPECT_EQ(page->servers(0).hostname(), "web1");
}

TEST_F(InventoryStoreTest, CreateServerChecksVolumesAndInput) {
  v1::CreateServerRequest request;
  request.set_account_id(account_a_);
  request.set_type(v1::SERVER_TYPE_VIRTUAL);
  request.set_hostname("ok");
  request.set_datacenter("dal10");
  request.mutable_configuration()->set_cpu_count(1);
  request.mutable_configuration()->set_memory_mib(512);
  v1::ServerDisk* disk = request.add_disks();
  disk->set_boot(true);
  disk->set_san_volume_id(NewVolume(7));
  ASSERT_TRUE(store_->CreateServer(op_, request).ok());
  request.set_hostname("again");
  EXPECT_EQ(store_->CreateServer(op_, request).status().code(),
            absl::StatusCode::kFailedPrecondition);  // volume ATTACHED
  auto expect_invalid = [&](v1::CreateServerRequest r, const std::string& field) {
    auto status = store_->CreateServer(op_, r).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_EQ(status.message().substr(0, field.size()), field) << status;
  };
  v1::CreateServerRequest r = request;
  r.set_hostname("bad_host!");
  expect_invalid(r, "hostname");
  r = request;
  r.set_type(static_cast<v1::ServerType>(42));
  expect_invalid(r, "type");
  r = request;
  r.mutable_disks(0)->set_boot(false);
  expect_invalid(r, "disks");
  r = request;
  r.mutable_disks(0)->set_san_volume_id("xyz");
  expect_invalid(r, "disks.san_volume_id");
  r = request;
  r.set_account_id(account_b_);
  r.mutable_disks(0)->set_san_volume_id("00000000-0000-4000-8000-000000000000");
  EXPECT_EQ(store_->CreateServer(op_, r).status().code(), absl::StatusCode::kNotFound);
  Caller manager = NewUser(account_a_, "m", {v1::PERMISSION_USER_MANAGE}, true);
  EXPECT_EQ(store_->CreateServer(manager, request).status().code(),
            absl::StatusCode::kPermissionDenied);
}

TEST_F(InventoryStoreTest, IpPoolsAreValidated) {
  v1::CreateIpPoolRequest request;
  request.set_datacenter("dal10");
  request.set_subnet("10.0.0.0/24");
  request.set_gateway("10.0.0.1");
  request.add_dns_servers("8.8.8.8");
  v1::IpRange* range = request.add_ranges();
  range->set_start("10.0.0.10");
  range->set_end("10.0.0.99");
  auto pool = store_->CreateIpPool(op_, request);
  ASSERT_TRUE(pool.ok()) << pool.status();
  EXPECT_EQ(pool->ip_pool().total_count(), 90);
  EXPECT_EQ(store_->CreateIpPool(op_, request).status().code(), absl::StatusCode::kAlreadyExists);
  auto expect_invalid = [&](v1::CreateIpPoolRequest r, const std::string& field) {
    auto status = store_->CreateIpPool(op_, r).status();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << field;
    EXPECT_EQ(status.message().substr(0, field.size()), field) << status;
  };
  v1::CreateIpPoolRequest r = request;
  r.set_subnet("10.0.0.1/24");
  expect_invalid(r, "subnet");
  r = request;
  r.set_subnet("10.0.0.0/33");
  expect_invalid(r, "subnet");
  r = request;
  r.set_gateway("10.0.1.1");
  expect_invalid(r, "gateway");
  r = request;
  r.set_gateway("10.0.0.50");
  expect_invalid(r, "gateway");
  r = request;
  r.mutable_ranges(0)->set_end("10.0.1.5");
  expect_invalid(r, "ranges");
  r = request;
  r.mutable_ranges(0)->set_start("10.0.0.200");
  r.mutable_ranges(0)->set_end("10.0.0.100");
  expect_invalid(r, "ranges");
  r = request;
  v1::IpRange* overlap = r.add_ranges();
  overlap->set_start("10.0.0.50");
  overlap->set_end("10.0.0.120");
  expect_invalid(r, "ranges");

  Caller provisioner = NewUser(account_a_, "p", {v1::PERMISSION_SERVER_PROVISION}, true);
  Caller viewer = NewUser(account_a_, "v", {v1::PERMISSION_SERVER_VIEW}, true);
  v1::GetIpPoolRequest get;
  get.set_id(pool->ip_pool().id());
  EXPECT_TRUE(store_->GetIpPool(provisioner, get).ok());
  EXPECT_EQ(store_->GetIpPool(viewer, get).status().code(), absl::StatusCode::kPermissionDenied);
  v1::DeleteIpPoolRequest del;
  del.set_id(pool->ip_pool().id());
  EXPECT_EQ(store_->DeleteIpPool(provisioner, del).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(store_->DeleteIpPool(op_, del).ok());
  EXPECT_EQ(store_->GetIpPool(provisioner, get).status().code(), absl::StatusCode::kNotFound);
}

// A deploy's server as ProvisionServers leaves it: PROVISIONING, a boot disk
// and a config drive (two new volumes), in an operation of its own; with an
// address of `address_pool` ("" = any pool) unless nullopt.
absl::StatusOr<std::vector<v1::Server>> TryProvision(
    SqliteInventoryStore& store, const Caller& op, const std::string& account,
    const std::string& hostname, std::optional<std::string> address_pool = std::nullopt) {
  ProvisionPlan plan;
  plan.account_id = account;
  plan.datacenter = "dal10";
  plan.server_ids = {NewUuid()};
  plan.hostnames = {hostname};
  if (address_pool) plan.address_pools = {address_pool};
  ProvisionDisk disk;
  disk.boot = true;
  disk.min_size_bytes = 1 << 20;
  plan.disks = {disk};
  return store.ProvisionServers(
      plan, [&](const std::vector<v1::Server>&)
                -> absl::StatusOr<std::pair<v1::Operation, OperationInternals>> {
        v1::Operation operation;
        operation.set_id(NewUuid());
        operation.set_kind(v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE);
        operation.set_account_id(account);
        operation.set_user_id(op.user_id);
        operation.set_state(v1::OPERATION_STATE_PENDING);
        return std::make_pair(operation, OperationInternals());
      });
}

v1::Server Provision(SqliteInventoryStore& store, const Caller& op, const std::string& account,
                     const std::string& hostname) {
  auto servers = TryProvision(store, op, account, hostname);
  EXPECT_TRUE(servers.ok()) << servers.status();
  return servers.ok() && servers->size() == 1 ? (*servers)[0] : v1::Server();
}

class DeployGuardTest : public InventoryStoreTest {
 protected:
  void SetUp() override {
    InventoryStoreTest::SetUp();
    for (int lun = 1; lun <= 4; ++lun) NewVolume(lun);
    v1::CreateIpPoolRequest request;
    request.set_datacenter("dal10");
    request.set_subnet("10.0.0.0/24");
    request.set_gateway("10.0.0.1");
    request.add_ranges()->set_start("10.0.0.10");
    request.mutable_ranges(0)->set_end("10.0.0.19");
    auto pool = store_->CreateIpPool(op_, request);
    ASSERT_TRUE(pool.ok()) << pool.status();
    pool_id_ = pool->ip_pool().id();
    server_ = Provision(*store_, op_, account_a_, "web1");
    ASSERT_EQ(server_.state(), v1::SERVER_STATE_PROVISIONING);
    ASSERT_EQ(server_.disks_size(), 2);
  }

  int64_t Allocated() {
    v1::GetIpPoolRequest get;
    get.set_id(pool_id_);
    auto pool = store_->GetIpPool(op_, get);
    EXPECT_TRUE(pool.ok()) << pool.status();
    return pool.ok() ? pool->ip_pool().allocated_count() : -1;
  }

  std::string pool_id_;
  v1::Server server_;
};

TEST_F(DeployGuardTest, AllocateAddressOnlyForProvisioningServers) {
  auto first = store_->AllocateAddress(server_.id(), "");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->address, "10.0.0.10/24");
  // A retried network step keeps its address.
  auto again = store_->AllocateAddress(server_.id(), pool_id_);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->address, "10.0.0.10/24");
  EXPECT_EQ(Allocated(), 1);

  ASSERT_TRUE(store_->ReleaseServer(server_.id()).ok());
  EXPECT_EQ(Allocated(), 0);
  auto released = store_->AllocateAddress(server_.id(), "");
  EXPECT_EQ(released.status().code(), absl::StatusCode::kFailedPrecondition) << released.status();
  EXPECT_EQ(store_->AllocateAddress(server_.id(), pool_id_).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Allocated(), 0);
  EXPECT_TRUE(store_->ReadServer(server_.id())->configuration().network_interfaces(0)
                  .ip_address()
                  .empty());

  // Nor to an ACTIVE server (one that is not a deploy's, or finished).
  v1::Server active = NewServer(account_a_, "db1", 9);
  ASSERT_EQ(active.state(), v1::SERVER_STATE_ACTIVE);
  EXPECT_EQ(store_->AllocateAddress(active.id(), "").status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Allocated(), 0);
  EXPECT_EQ(store_->AllocateAddress(NewUuid(), "").status().code(), absl::StatusCode::kNotFound);
}

// Review finding L5: provisioning takes the pool address (it used to only
// count free ones, so two deploys could both be accepted for the last one).
TEST_F(DeployGuardTest, ProvisioningReservesThePoolAddress) {
  for (int lun = 5; lun <= 8; ++lun) NewVolume(lun);
  v1::CreateIpPoolRequest request;
  request.set_datacenter("dal10");
  request.set_subnet("10.1.0.0/24");
  request.set_gateway("10.1.0.1");
  request.add_dns_servers("10.1.0.2");
  request.add_ranges()->set_start("10.1.0.10");
  request.mutable_ranges(0)->set_end("10.1.0.10");
  auto one = store_->CreateIpPool(op_, request);
  ASSERT_TRUE(one.ok()) << one.status();
  const std::string pool = one->ip_pool().id();

  auto first = TryProvision(*store_, op_, account_a_, "web2", pool);
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string id = (*first)[0].id();
  const v1::NetworkInterface nic = store_->ReadServer(id)->configuration().network_interfaces(0);
  EXPECT_EQ(nic.ip_address(), "10.1.0.10/24");
  EXPECT_EQ(nic.gateway(), "10.1.0.1");
  ASSERT_EQ(nic.dns_servers_size(), 1);
  EXPECT_EQ(nic.dns_servers(0), "10.1.0.2");
  EXPECT_EQ(nic.ip_pool_id(), pool);
  EXPECT_EQ((*first)[0].configuration().network_interfaces(0).ip_address(), "10.1.0.10/24");

  // The pool is full now: the next provisioning is refused, nothing kept.
  auto second = TryProvision(*store_, op_, account_a_, "web3", pool);
  EXPECT_EQ(second.status().code(), absl::StatusCode::kResourceExhausted) << second.status();
  EXPECT_EQ(second.status().message(),
            absl::StrCat("the IP pools ", pool,
                         " have 0 free addresses, the deploy needs 1; deploy fewer servers or "
                         "ask an operator to add addresses"));
  v1::GetIpPoolRequest get;
  get.set_id(pool);
  EXPECT_EQ(store_->GetIpPool(op_, get)->ip_pool().allocated_count(), 1);

  // The network step finds the reservation.
  auto network = store_->AllocateAddress(id, pool);
  ASSERT_TRUE(network.ok()) << network.status();
  EXPECT_EQ(network->address, "10.1.0.10/24");
  EXPECT_EQ(network->ip_pool_id, pool);
  EXPECT_EQ(store_->GetIpPool(op_, get)->ip_pool().allocated_count(), 1);

  // Released with the server; then the next deploy gets it.
  ASSERT_TRUE(store_->ReleaseServer(id).ok());
  EXPECT_EQ(store_->GetIpPool(op_, get)->ip_pool().allocated_count(), 0);
  EXPECT_TRUE(
      store_->ReadServer(id)->configuration().network_interfaces(0).ip_address().empty());
  auto third = TryProvision(*store_, op_, account_a_, "web3", pool);
  ASSERT_TRUE(third.ok()) << third.status();
  EXPECT_EQ((*third)[0].configuration().network_interfaces(0).ip_address(), "10.1.0.10/24");

  // "" takes the first pool with a free address: pool_id_ (created first).
  auto any = TryProvision(*store_, op_, account_a_, "web4", "");
  ASSERT_TRUE(any.ok()) << any.status();
  EXPECT_EQ((*any)[0].configuration().network_interfaces(0).ip_address(), "10.0.0.10/24");
  EXPECT_EQ(Allocated(), 1);
}

TEST_F(DeployGuardTest, OnlyAProvisioningServerBecomesActive) {
  ASSERT_TRUE(store_->SetServerState(server_.id(), v1::SERVER_STATE_ACTIVE).ok());
  EXPECT_EQ(store_->ReadServer(server_.id())->state(), v1::SERVER_STATE_ACTIVE);
  // The activate step run again after a restart.
  EXPECT_TRUE(store_->SetServerState(server_.id(), v1::SERVER_STATE_ACTIVE).ok());

  v1::Server other = Provision(*store_, op_, account_a_, "web2");
  ASSERT_TRUE(store_->ReleaseServer(other.id()).ok());
  absl::Status status = store_->SetServerState(other.id(), v1::SERVER_STATE_ACTIVE);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_EQ(store_->ReadServer(other.id())->state(), v1::SERVER_STATE_FAILED);
  // Other transitions are not guarded.
  EXPECT_TRUE(store_->SetServerState(server_.id(), v1::SERVER_STATE_FAILED).ok());
  EXPECT_EQ(store_->SetServerState(NewUuid(), v1::SERVER_STATE_ACTIVE).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DeployGuardTest, DeployStepsReadOnlyVolumesStillAttachedToTheServer) {
  v1::Server other = Provision(*store_, op_, account_a_, "web2");
  for (const v1::ServerDisk& disk : server_.disks()) {
    auto volume = store_->ReadAttachedVolumeWithSecret(disk.san_volume_id(), server_.id());
    ASSERT_TRUE(volume.ok()) << volume.status();
    EXPECT_EQ(volume->id(), disk.san_volume_id());
    EXPECT_EQ(store_->ReadAttachedVolumeWithSecret(disk.san_volume_id(), other.id())
                  .status()
                  .code(),
              absl::StatusCode::kFailedPrecondition);
  }
  ASSERT_TRUE(store_->ReleaseServer(server_.id()).ok());
  for (const v1::ServerDisk& disk : server_.disks()) {
    auto volume = store_->ReadAttachedVolumeWithSecret(disk.san_volume_id(), server_.id());
    EXPECT_EQ(volume.status().code(), absl::StatusCode::kFailedPrecondition) << volume.status();
  }
  // Freed volumes go to the next deploy; the released server still gets none.
  v1::Server next = Provision(*store_, op_, account_a_, "web3");
  for (const v1::ServerDisk& disk : next.disks()) {
    EXPECT_TRUE(store_->ReadAttachedVolumeWithSecret(disk.san_volume_id(), next.id()).ok());
    EXPECT_EQ(store_->ReadAttachedVolumeWithSecret(disk.san_volume_id(), server_.id())
                  .status()
                  .code(),
              absl::StatusCode::kFailedPrecondition);
  }
  EXPECT_EQ(store_->ReadAttachedVolumeWithSecret(NewUuid(), server_.id()).status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace controlplane
