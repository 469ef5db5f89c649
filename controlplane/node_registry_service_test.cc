// NodeRegistry rules and StorageNodeDirectory lookups against the real
// SQLite inventory, with a fake clock.
#include "controlplane/node_registry_service.h"

#include <atomic>
#include <memory>
#include <string>

#include "controlplane/credential_cipher.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_inventory_store.h"
#include "controlplane/storage_node_directory.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace pb = imagetemplates::storagenode::v1;
namespace v1 = imagetemplates::v1;
using absl::StatusCode;

class NodeRegistryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDatabase::Open(":memory:", Migrations());
    cipher_ = *CredentialCipher::Create(std::string(32, 'k'));
    inventory_ =
        std::make_unique<SqliteInventoryStore>(db_.get(), cipher_.get());
    Caller op;
    op.is_operator = true;
    for (const char* name : {"dal10", "fra02"}) {
      v1::CreateDatacenterRequest dc;
      dc.set_name(name);
      ASSERT_TRUE(inventory_->CreateDatacenter(op, dc).ok());
    }
    NodeRegistryOptions options;
    options.heartbeat_interval = absl::Seconds(2);
    options.missed_heartbeats = 3;
    options.now_micros = [this] { return now_.load(); };
    registry_ = std::make_unique<NodeRegistry>(inventory_.get(), options);
    directory_ = std::make_unique<StorageNodeDirectory>(
        inventory_.get(),
        [](const std::string& address) {
          return NewGrpcStorageNodeClient(address);
        },
        registry_->liveness_window(), [this] { return now_.load(); });
  }

  pb::RegisterNodeRequest Node(const std::string& id, const std::string& dc,
                               const std::string& portal) {
    pb::RegisterNodeRequest request;
    request.set_node_id(id);
    request.set_datacenter(dc);
    request.set_address("127.0.0.1:7000");
    request.add_served_portals(portal);
    return request;
  }

  std::atomic<int64_t> now_{1'000'000'000'000};
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<CredentialCipher> cipher_;
  std::unique_ptr<SqliteInventoryStore> inventory_;
  std::unique_ptr<NodeRegistry> registry_;
  std::unique_ptr<StorageNodeDirectory> directory_;
};

TEST_F(NodeRegistryTest, RegisterValidatesAndAnswersTheInterval) {
  auto ok = registry_->RegisterNode(Node("san1", "dal10", "10.0.0.1:3260"));
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(ok->heartbeat_interval().seconds(), 2);

  EXPECT_EQ(registry_->RegisterNode(Node("bad id!", "dal10", "10.0.0.9:3260"))
                .status()
                .code(),
            StatusCode::kInvalidArgument);
  auto no_address = Node("san9", "dal10", "10.0.0.9:3260");
  no_address.set_address("nohostport");
  EXPECT_EQ(registry_->RegisterNode(no_address).status().code(),
            StatusCode::kInvalidArgument);
  auto no_portals = Node("san9", "dal10", "10.0.0.9:3260");
  no_portals.clear_served_portals();
  EXPECT_EQ(registry_->RegisterNode(no_portals).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(registry_->RegisterNode(Node("san9", "nowhere", "10.0.0.9:3260"))
                .status()
                .code(),
            StatusCode::kNotFound);
  // Same id in another datacenter; a portal served by another live node.
  EXPECT_EQ(registry_->RegisterNode(Node("san1", "fra02", "10.0.0.9:3260"))
                .status()
                .code(),
            StatusCode::kFailedPrecondition);
  auto taken = registry_->RegisterNode(
      Node("san2", "dal10", "10.0.0.1"));  // :3260 implied
  EXPECT_EQ(taken.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(taken.status().message().find("san1"), std::string::npos)
      << taken.status();
  // Re-registering the same node is fine.
  EXPECT_TRUE(
      registry_->RegisterNode(Node("san1", "dal10", "10.0.0.1:3260")).ok());
}

TEST_F(NodeRegistryTest, HeartbeatsKeepNodesUpAndSilenceMarksThemDown) {
  ASSERT_TRUE(
      registry_->RegisterNode(Node("san1", "dal10", "10.0.0.1:3260")).ok());
  pb::HeartbeatRequest beat;
  beat.set_node_id("unknown");
  EXPECT_EQ(registry_->Heartbeat(beat).status().code(), StatusCode::kNotFound);

  beat.set_node_id("san1");
  beat.mutable_status()->set_free_bytes(123);
  now_ += 5'000'000;
  ASSERT_TRUE(registry_->Heartbeat(beat).ok());
  EXPECT_TRUE(registry_->SweepOnce()->empty());
  ASSERT_TRUE(directory_->ForPortal("dal10", "10.0.0.1:3260").ok());

  // 6 s without a heartbeat is the limit; just past it the node is down,
  // for the directory at once and in the rows after a sweep.
  now_ += 6'000'001;
  EXPECT_EQ(directory_->ForPortal("dal10", "10.0.0.1:3260").status().code(),
            StatusCode::kUnavailable);
  EXPECT_EQ(directory_->CheckDatacenter("dal10").code(),
            StatusCode::kUnavailable);
  auto down = registry_->SweepOnce();
  ASSERT_TRUE(down.ok());
  EXPECT_EQ(*down, std::vector<std::string>{"san1"});
  auto nodes = inventory_->ReadStorageNodes("dal10");
  ASSERT_EQ(nodes->size(), 1u);
  EXPECT_EQ((*nodes)[0].state(), v1::STORAGE_NODE_STATE_DOWN);
  EXPECT_EQ((*nodes)[0].free_bytes(), 123);

  // A DOWN node's portal may be taken over by a new node.
  ASSERT_TRUE(
      registry_->RegisterNode(Node("san2", "dal10", "10.0.0.1:3260")).ok());
  auto handle = directory_->ForPortal("dal10", "10.0.0.1");
  ASSERT_TRUE(handle.ok()) << handle.status();
  EXPECT_EQ(handle->node_id, "san2");
  // A heartbeat brings san1 back.
  ASSERT_TRUE(registry_->Heartbeat(beat).ok());
  EXPECT_TRUE(directory_->ById("san1").ok());
}

TEST_F(NodeRegistryTest, DirectoryExplainsMissingNodes) {
  ASSERT_TRUE(
      registry_->RegisterNode(Node("san1", "dal10", "10.0.0.1:3260")).ok());
  auto none = directory_->ForPortal("dal10", "10.0.0.7:3260");
  EXPECT_EQ(none.status().code(), StatusCode::kFailedPrecondition);
  EXPECT_NE(none.status().message().find("--portals=10.0.0.7:3260"),
            std::string::npos);
  // The portal is served, but in another datacenter.
  EXPECT_EQ(directory_->ForPortal("fra02", "10.0.0.1:3260").status().code(),
            StatusCode::kFailedPrecondition);
  EXPECT_EQ(directory_->ById("ghost").status().code(), StatusCode::kNotFound);
  EXPECT_TRUE(directory_->CheckDatacenter("dal10").ok());
  EXPECT_EQ(directory_->CheckDatacenter("fra02").code(),
            StatusCode::kUnavailable);
  // One client per node address.
  EXPECT_EQ(directory_->ById("san1")->client,
            directory_->ForPortal("dal10", "10.0.0.1")->client);
}

}  // namespace
}  // namespace controlplane
