// Static addresses: reserved in the pool whose range holds them when the
// deploy is accepted, gateway and DNS filled from that pool, released with
// the server, and validated as IP literals before anything is taken. Pool
// addresses are reserved when a deploy is accepted too, and a deploy
// rechecks the template's visibility and status when it provisions.
#include <cstdint>
#include <functional>
#include <string>
#include <tuple>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/testing/deploy_test_fixture.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using Fake = FakeStorageNodeClient;

class DeployStaticAddressTest : public DeployTestFixture {
 protected:
  void SetUp() override {
    DeployTestFixture::SetUp();
    AddDeployVolumes(4);
    v1::CreateIpPoolRequest request;
    request.set_datacenter("dc1");
    request.set_subnet("10.30.0.0/24");
    request.set_gateway("10.30.0.1");
    request.add_dns_servers("10.30.0.2");
    request.add_ranges()->set_start("10.30.0.10");
    request.mutable_ranges(0)->set_end("10.30.0.11");
    auto response = inventory_->CreateIpPool(operator_, request);
    ASSERT_TRUE(response.ok()) << response.status();
    static_pool_ = response->ip_pool().id();
  }

  v1::DeployImageTemplateRequest Deploy(const std::string& hostname) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(template_.id());
    request.set_datacenter("dc1");
    request.set_quantity(1);
    request.add_hostnames(hostname);
    return request;
  }
  v1::DeployImageTemplateRequest DeployStatic(const std::string& hostname,
                                              const std::string& address) {
    v1::DeployImageTemplateRequest request = Deploy(hostname);
    request.add_networks()->mutable_static_address()->set_address(address);
    return request;
  }
  int64_t Allocated(const std::string& pool) {
    v1::GetIpPoolRequest request;
    request.set_id(pool);
    auto response = inventory_->GetIpPool(operator_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->ip_pool().allocated_count() : -1;
  }
  int FreeVolumes() {
    int n = 0;
    for (const v1::SanVolume& v : Volumes()) n += v.state() == v1::SAN_VOLUME_STATE_FREE;
    return n;
  }
  std::string NetworkConfigOf(const v1::Server& server) {
    for (const v1::ServerDisk& disk : server.disks()) {
      if (!disk.config_drive()) continue;
      for (auto& node : nodes_) {
        for (const auto& [url, config] : node->config_drives()) {
          if (url.find(disk.iscsi().iqn()) != std::string::npos) return config;
        }
      }
    }
    return "";
  }
  // Adds the account kOther and makes `other` one of its users, with the
  // owner's permissions. Call it inside ASSERT_NO_FATAL_FAILURE.
  void AddOtherAccount(Caller* other) {
    ASSERT_TRUE(AddTestAccount(*db_, kOther).ok());
    accounts_.AddAccount(kOther);
    *other = owner_;
    other->account_id = kOther;
    other->user_id = "other";
  }

  static constexpr char kOther[] = "00000000-0000-4000-8000-00000000000b";
  std::string static_pool_;
};

TEST_F(DeployStaticAddressTest, ReservedInItsPoolAndFilledFromIt) {
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("fixed", "10.30.0.10/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(Allocated(static_pool_), 1);  // reserved when accepted
  v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  const v1::Server server = DeployedServer(op);
  const v1::NetworkInterface nic = Nic(server);
  EXPECT_EQ(nic.ip_address(), "10.30.0.10/24");
  EXPECT_EQ(nic.gateway(), "10.30.0.1");
  ASSERT_EQ(nic.dns_servers_size(), 1);
  EXPECT_EQ(nic.dns_servers(0), "10.30.0.2");
  EXPECT_EQ(nic.ip_pool_id(), static_pool_);
  const std::string config = NetworkConfigOf(server);
  EXPECT_NE(config.find("      - 10.30.0.10/24\n"), std::string::npos) << config;
  EXPECT_NE(config.find("via: 10.30.0.1\n"), std::string::npos) << config;
  EXPECT_NE(config.find("addresses: [10.30.0.2]"), std::string::npos) << config;

  // Taken: refused at call time, nothing allocated.
  const int free_volumes = FreeVolumes();
  auto again = manager_->DeployImageTemplate(owner_, DeployStatic("twin", "10.30.0.10/24"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  EXPECT_NE(again.status().message().find("10.30.0.10 is already allocated"), std::string::npos)
      << again.status();
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(Allocated(static_pool_), 1);

  // The pool never hands it out: its next address is .11, then it is full.
  v1::DeployImageTemplateRequest from_pool = Deploy("pooled");
  from_pool.add_networks()->set_ip_pool_id(static_pool_);
  v1::Server pooled;
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, from_pool, &pooled));
  EXPECT_EQ(Nic(pooled).ip_address(), "10.30.0.11/24");
  from_pool.set_hostnames(0, "pooled2");
  EXPECT_EQ(manager_->DeployImageTemplate(owner_, from_pool).status().code(),
            absl::StatusCode::kResourceExhausted);

  // Two servers of one deploy asking for the same address.
  v1::DeployImageTemplateRequest pair = DeployStatic("a", "10.20.0.15/24");
  pair.set_quantity(2);
  pair.add_hostnames("b");
  pair.add_networks()->mutable_static_address()->set_address("10.20.0.15/24");
  EXPECT_EQ(manager_->DeployImageTemplate(owner_, pair).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(AllocatedAddresses(), 0);
}

// Pool addresses are taken when a deploy is accepted (review finding L5):
// two deploys wanting a pool's last address cannot both be accepted (the
// second used to fail in configure_network, after all its restores), the
// network step writes the reserved address, and a failed deploy returns it.
TEST_F(DeployStaticAddressTest, PoolAddressesAreTakenWhenTheDeployIsAccepted) {
  nodes_[0]->Block(Fake::kRestore);
  nodes_[0]->Fail(Fake::kRestore, absl::DataLossError("n0: chunk corrupt"));
  v1::DeployImageTemplateRequest two = Deploy("a1");
  two.set_quantity(2);
  two.add_hostnames("a2");
  two.add_networks()->set_ip_pool_id(static_pool_);
  two.add_networks()->set_ip_pool_id(static_pool_);
  auto doomed = manager_->DeployImageTemplate(owner_, two);
  ASSERT_TRUE(doomed.ok()) << doomed.status();
  // Held before any restore has finished.
  EXPECT_EQ(Allocated(static_pool_), 2);
  ASSERT_EQ(doomed->deployed_servers().server_ids_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const v1::NetworkInterface nic = Nic(DeployedServer(*doomed, i));
    EXPECT_EQ(nic.ip_address(), absl::StrCat("10.30.0.1", i, "/24"));
    EXPECT_EQ(nic.ip_pool_id(), static_pool_);
  }

  v1::DeployImageTemplateRequest one = Deploy("late");
  one.add_networks()->set_ip_pool_id(static_pool_);
  const int free_volumes = FreeVolumes();
  auto refused = manager_->DeployImageTemplate(owner_, one);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_EQ(refused.status().message(),
            absl::StrCat("the IP pools ", static_pool_,
                         " have 0 free addresses, the deploy needs 1; deploy fewer servers "
                         "or ask an operator to add addresses"));
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(Allocated(static_pool_), 2);

  nodes_[0]->Release(Fake::kRestore);
  const v1::Operation failed = WaitTerminal(doomed->id());
  EXPECT_EQ(failed.state(), v1::OPERATION_STATE_FAILED) << failed.DebugString();
  EXPECT_EQ(Allocated(static_pool_), 0);

  nodes_[0]->Fail(Fake::kRestore, absl::OkStatus(), 0);
  v1::Server server;
  v1::Operation op;
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, one, &server, &op));
  EXPECT_EQ(Step(op, "configure_network").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Nic(server).ip_address(), "10.30.0.10/24");
  const std::string config = NetworkConfigOf(server);
  EXPECT_NE(config.find("      - 10.30.0.10/24\n"), std::string::npos) << config;
  EXPECT_EQ(Allocated(static_pool_), 1);
}

// Overlapping pools: an address outside every range belongs to the pool
// whose subnet holds it most specifically, whatever order they were made in.
TEST_F(DeployStaticAddressTest, OverlappingPoolsTakeTheMostSpecificSubnet) {
  for (const auto& [subnet, gateway, first] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"10.40.0.0/16", "10.40.0.1", "10.40.5.10"},
           {"10.40.1.0/24", "10.40.1.1", "10.40.1.10"}}) {
    v1::CreateIpPoolRequest pool;
    pool.set_datacenter("dc1");
    pool.set_subnet(subnet);
    pool.set_gateway(gateway);
    pool.add_ranges()->set_start(first);
    pool.mutable_ranges(0)->set_end(first);
    ASSERT_TRUE(inventory_->CreateIpPool(operator_, pool).ok());
  }
  v1::Server server;
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, DeployStatic("inner", "10.40.1.200/24"), &server));
  EXPECT_EQ(Nic(server).gateway(), "10.40.1.1");
}

// Outside every pool's subnet: refused, naming the pools, nothing taken (no
// pool would keep the address from going to another server). Inside one:
// its prefix length, not its network, broadcast or gateway address. Given
// gateway and DNS win over the pool's.
TEST_F(DeployStaticAddressTest, OutsidePoolsRefusedOwnGatewayKept) {
  const int free_volumes = FreeVolumes();
  v1::DeployImageTemplateRequest request = DeployStatic("outside", "192.168.7.5/24");
  request.mutable_networks(0)->mutable_static_address()->set_gateway("192.168.7.1");
  auto refused = manager_->DeployImageTemplate(owner_, request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("192.168.7.5 lies in no IP pool of datacenter dc1"),
            std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("10.30.0.0/24 (IP pool " + static_pool_ + ")"),
            std::string::npos)
      << refused.status();
  struct Case {
    std::string address, message;
  };
  for (const Case& c : std::vector<Case>{
           {"10.30.0.10/16", "has prefix /16 but its subnet 10.30.0.0/24"},
           {"10.30.0.0/24", "is the network address of 10.30.0.0/24"},
           {"10.30.0.255/24", "is the broadcast address of 10.30.0.0/24"},
           {"10.30.0.1/24", "is the gateway of 10.30.0.0/24"}}) {
    refused = manager_->DeployImageTemplate(owner_, DeployStatic("bad", c.address));
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_NE(refused.status().message().find(c.message), std::string::npos) << refused.status();
  }
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(AllocatedAddresses(), 0);

  // In the subnet but outside the pool's ranges: reserved for the
  // datacenter, not as a pool address; gateway and DNS still come from the
  // pool.
  v1::Server server;
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, DeployStatic("manual", "10.30.0.50/24"), &server));
  v1::NetworkInterface nic = Nic(server);
  EXPECT_EQ(nic.ip_address(), "10.30.0.50/24");
  EXPECT_EQ(nic.gateway(), "10.30.0.1");
  EXPECT_EQ(nic.ip_pool_id(), "");
  EXPECT_EQ(Allocated(static_pool_), 0);

  request = DeployStatic("own-dns", "10.30.0.11/24");
  request.mutable_networks(0)->mutable_static_address()->set_gateway("10.30.0.254");
  request.mutable_networks(0)->mutable_static_address()->add_dns_servers("2001:db8::53");
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, request, &server));
  nic = Nic(server);
  EXPECT_EQ(nic.gateway(), "10.30.0.254");
  ASSERT_EQ(nic.dns_servers_size(), 1);
  EXPECT_EQ(nic.dns_servers(0), "2001:db8::53");
  EXPECT_EQ(Allocated(static_pool_), 1);
}

// Review finding M2: pools are shared by a datacenter's accounts, so a
// static address outside their ranges is reserved too: another account
// deploying it is refused (nothing taken) until the server holding it is
// released by a failed deploy or deleted.
TEST_F(DeployStaticAddressTest, OutOfRangeAddressesAreUniqueAcrossAccounts) {
  Caller other;
  ASSERT_NO_FATAL_FAILURE(AddOtherAccount(&other));
  ASSERT_TRUE(templates_
                  ->MutateTemplate(template_.id(),
                                   [&](TemplateTransaction& txn) {
                                     txn.image_template().set_visibility(v1::VISIBILITY_SHARED);
                                     return txn.AddShare(kOther, 1);
                                   })
                  .ok());
  auto count = [&](const std::string& sql) {
    int64_t n = -1;
    EXPECT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                     ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql));
                     ASSIGN_OR_RETURN(bool row, s.Step());
                     n = row ? s.ColumnInt(0) : -1;
                     return absl::OkStatus();
                   }).ok());
    return n;
  };
  auto deploy = [&](const Caller& caller, const std::string& hostname) {
    return manager_->DeployImageTemplate(caller, DeployStatic(hostname, "10.30.0.200/24"));
  };

  // A failed deploy gives it back.
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::InternalError("drive broke"));
  auto started = deploy(owner_, "doomed");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 1);
  EXPECT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 0);
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::OkStatus());

  v1::Server mine;
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, DeployStatic("mine", "10.30.0.200/24"), &mine));
  EXPECT_EQ(Nic(mine).ip_address(), "10.30.0.200/24");
  // Not a pool address: the pool's two stay free.
  EXPECT_EQ(Allocated(static_pool_), 0);

  const int free_volumes = FreeVolumes();
  const int64_t servers = count("SELECT COUNT(*) FROM servers");
  const int64_t operations = count("SELECT COUNT(*) FROM operations");
  auto refused = deploy(other, "theirs");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists) << refused.status();
  EXPECT_EQ(refused.status().message(),
            "networks.static_address.address: 10.30.0.200 is already used by a server in "
            "datacenter dc1; choose a free address or take one from a pool with ip_pool_id");
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(count("SELECT COUNT(*) FROM servers"), servers);
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM operations"), operations);
  // The owner's own second server cannot have it either.
  EXPECT_EQ(deploy(owner_, "twin").status().code(), absl::StatusCode::kAlreadyExists);

  v1::DeleteServerRequest remove;
  remove.set_id(mine.id());
  ASSERT_TRUE(inventory_->DeleteServer(operator_, remove).ok());
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 0);
  v1::Server theirs;
  ASSERT_NO_FATAL_FAILURE(DeployOne(other, DeployStatic("theirs", "10.30.0.200/24"), &theirs));
  EXPECT_EQ(Nic(theirs).ip_address(), "10.30.0.200/24");
}

// Servers the operator registered, and servers deployed before static
// addresses were recorded, hold their addresses only in their configuration;
// those are in use too.
TEST_F(DeployStaticAddressTest, AnAddressInAServersConfigurationIsTaken) {
  const std::string legacy = AddServer(v1::POWER_STATE_RUNNING, /*data_disk=*/false);
  auto read = inventory_->ReadServer(legacy);
  ASSERT_TRUE(read.ok()) << read.status();
  v1::UpdateServerRequest update;
  update.set_id(legacy);
  *update.mutable_configuration() = read->configuration();
  update.mutable_configuration()->mutable_network_interfaces(0)->set_ip_address("10.30.0.150/24");
  update.mutable_update_mask()->add_paths("configuration");
  ASSERT_TRUE(inventory_->UpdateServer(operator_, update).ok());

  const int free_volumes = FreeVolumes();
  auto refused = manager_->DeployImageTemplate(owner_, DeployStatic("dup", "10.30.0.150/24"));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists) << refused.status();
  EXPECT_EQ(refused.status().message(),
            "networks.static_address.address: 10.30.0.150 is already used by a server in "
            "datacenter dc1; choose a free address or take one from a pool with ip_pool_id");
  EXPECT_EQ(FreeVolumes(), free_volumes);

  v1::DeleteServerRequest remove;
  remove.set_id(legacy);
  ASSERT_TRUE(inventory_->DeleteServer(operator_, remove).ok());
  v1::Server now;
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, DeployStatic("now", "10.30.0.150/24"), &now));
  EXPECT_EQ(Nic(now).ip_address(), "10.30.0.150/24");
}

// A range added later over a recorded static address: the pool never hands
// that address out, and no other deploy takes it as static either.
TEST_F(DeployStaticAddressTest, ARangeAddedOverARecordedStaticAddressSkipsIt) {
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("fixed", "10.30.0.200/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  v1::CreateIpPoolRequest request;
  request.set_datacenter("dc1");
  request.set_subnet("10.30.0.0/24");
  request.set_gateway("10.30.0.1");
  request.add_ranges()->set_start("10.30.0.200");
  request.mutable_ranges(0)->set_end("10.30.0.201");
  auto later = inventory_->CreateIpPool(operator_, request);
  ASSERT_TRUE(later.ok()) << later.status();

  auto again = manager_->DeployImageTemplate(owner_, DeployStatic("twin", "10.30.0.200/24"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  v1::DeployImageTemplateRequest from_pool = Deploy("pooled");
  from_pool.add_networks()->set_ip_pool_id(later->ip_pool().id());
  v1::Server pooled;
  ASSERT_NO_FATAL_FAILURE(DeployOne(owner_, from_pool, &pooled));
  EXPECT_EQ(Nic(pooled).ip_address(), "10.30.0.201/24");
}

// A failed deploy returns its static address with the server.
TEST_F(DeployStaticAddressTest, FailedDeployReleasesTheStaticAddress) {
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::InternalError("drive broke"));
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("doomed", "10.30.0.10/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(Allocated(static_pool_), 1);
  EXPECT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(Allocated(static_pool_), 0);
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::OkStatus());
  started = manager_->DeployImageTemplate(owner_, DeployStatic("retry", "10.30.0.10/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
}

// Anything but IP literals is refused before anything is taken: these
// strings would otherwise land in the network-config YAML as they are.
TEST_F(DeployStaticAddressTest, NonLiteralsAreInvalidArguments) {
  struct Case {
    std::string address, gateway;
    std::vector<std::string> dns;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"10.30.0.10", "", {}, "networks.static_address.address"},
      {"10.30.0.300/24", "", {}, "networks.static_address.address"},
      {"10.30.0.10/33", "", {}, "networks.static_address.address"},
      {"10.30.0.10/24\n    dhcp4: true", "", {}, "networks.static_address.address"},
      {"web.example.com/24", "", {}, "networks.static_address.address"},
      {"10.30.0.10/24", "10.30.0.1\n    evil: true", {}, "networks.static_address.gateway"},
      {"10.30.0.10/24", "gw", {}, "networks.static_address.gateway"},
      {"10.30.0.10/24", "", {"10.30.0.2]"}, "networks.static_address.dns_servers"},
      {"10.30.0.10/24", "", {"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"},
       "networks.static_address.dns_servers"},
  };
  for (const Case& c : cases) {
    v1::DeployImageTemplateRequest request = DeployStatic("bad", c.address);
    auto* a = request.mutable_networks(0)->mutable_static_address();
    a->set_gateway(c.gateway);
    for (const std::string& dns : c.dns) a->add_dns_servers(dns);
    auto refused = manager_->DeployImageTemplate(owner_, request);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument)
        << c.address << " " << c.gateway << ": " << refused.status();
    EXPECT_EQ(refused.status().message().substr(0, c.field.size()), c.field) << refused.status();
  }
  EXPECT_EQ(Allocated(static_pool_), 0);
}

// A deploy whose checks passed on a template that an unshare, disable,
// location removal or delete then changed: the provisioning transaction
// sees the change and takes nothing. (deploy_->Begin gets the template as
// the manager loaded it before the change.)
TEST_F(DeployStaticAddressTest, ProvisioningRechecksVisibilityAndStatus) {
  Caller other;
  ASSERT_NO_FATAL_FAILURE(AddOtherAccount(&other));
  auto mutate = [&](const std::function<void(TemplateTransaction&)>& change) {
    ASSERT_TRUE(templates_
                    ->MutateTemplate(template_.id(),
                                     [&](TemplateTransaction& txn) {
                                       change(txn);
                                       return absl::OkStatus();
                                     })
                    .ok());
  };
  mutate([](TemplateTransaction& txn) {
    ASSERT_TRUE(txn.AddShare(kOther, 1).ok());
    txn.image_template().set_visibility(v1::VISIBILITY_SHARED);
  });
  const v1::ImageTemplate loaded = *templates_->GetTemplate(template_.id());
  const int free_volumes = FreeVolumes();
  auto begin = [&](const Caller& caller, const std::string& hostname) {
    v1::DeployImageTemplateRequest request = Deploy(hostname);
    return deploy_->Begin(caller, request, loaded, NowMicros());
  };

  // Unshared after the checks: NOT_FOUND, as for any invisible template.
  mutate([](TemplateTransaction& txn) {
    ASSERT_TRUE(txn.RemoveShare(kOther).ok());
    txn.image_template().set_visibility(v1::VISIBILITY_PRIVATE);
  });
  auto refused = begin(other, "late-share");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kNotFound) << refused.status();
  // The owner still deploys it.
  auto ok = begin(owner_, "owner");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(WaitTerminal(ok->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  const int after_owner = FreeVolumes();
  EXPECT_EQ(after_owner, free_volumes - 3);

  // Disabled, its location removed, then DELETING: FAILED_PRECONDITION.
  mutate([](TemplateTransaction& txn) { txn.image_template().set_disabled(true); });
  EXPECT_EQ(begin(owner_, "disabled").status().code(), absl::StatusCode::kFailedPrecondition);
  mutate([](TemplateTransaction& txn) {
    txn.image_template().set_disabled(false);
    txn.image_template().mutable_locations(0)->set_status(
        v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED);
  });
  EXPECT_EQ(begin(owner_, "no-location").status().code(),
            absl::StatusCode::kFailedPrecondition);
  mutate([](TemplateTransaction& txn) {
    txn.image_template().mutable_locations(0)->set_status(
        v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
    txn.image_template().set_status(v1::IMAGE_TEMPLATE_STATUS_DELETING);
  });
  refused = begin(owner_, "deleting");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("DELETING"), std::string::npos) << refused.status();
  // An operator still sees it (for it every template is visible), but not
  // as deployable.
  EXPECT_EQ(begin(operator_, "operator").status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Nothing was taken by the refused ones.
  EXPECT_EQ(FreeVolumes(), after_owner);
  v1::ListServersRequest list;
  list.set_page_size(100);
  auto servers = inventory_->ListServers(operator_, list);
  ASSERT_TRUE(servers.ok()) << servers.status();
  for (const v1::Server& server : servers->servers()) {
    EXPECT_TRUE(server.hostname() == "owner" || server.hostname().rfind("source", 0) == 0)
        << server.hostname();
  }
}

}  // namespace
}  // namespace controlplane
