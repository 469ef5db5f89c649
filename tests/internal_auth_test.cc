// The internal API's shared secret end to end: a real controlplane and
// storaged (tests/stack.h) started with --internal-token-file. Without the
// token nobody can register a node, move one to their own address (and so
// receive the CHAP secrets in later capture and restore URLs), keep a dead
// node UP with heartbeats, or call a storaged.
#include <signal.h>

#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "tests/rpc.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace pb = imagetemplates::storagenode::v1;
namespace v1 = imagetemplates::v1;

std::string ReadLog(const std::string& path) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  return text.str();
}

class InternalAuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    StackOptions options;
    options.dir_prefix = "internalauth";
    options.node_datacenters = {"dc1"};
    options.node_missed_heartbeats = 3;  // a killed node goes DOWN in 1.5 s
    stack_ = std::make_unique<Stack>(options);
    ASSERT_NO_FATAL_FAILURE(stack_->Start());
    registry_ = pb::NodeRegistry::NewStub(
        grpc::CreateChannel(stack_->controlplane().address(), grpc::InsecureChannelCredentials()));
  }

  v1::StorageNode Node(const std::string& id) {
    v1::GetStorageNodeRequest request;
    request.set_id(id);
    v1::GetStorageNodeResponse response;
    grpc::Status status = Call(stack_->inventory(), &v1::InventoryService::Stub::GetStorageNode,
                               stack_->admin_key(), request, &response);
    EXPECT_TRUE(status.ok()) << id << ": " << status.error_message();
    return response.storage_node();
  }

  // RegisterNode as `token` ("" sends no authorization header).
  grpc::Status Register(const std::string& token, const std::string& id,
                        const std::string& address) {
    pb::RegisterNodeRequest request;
    request.set_node_id(id);
    request.set_datacenter("dc1");
    request.set_address(address);
    request.add_served_portals(absl::StrCat("127.0.0.1:", stack_->san(0).port()));
    pb::RegisterNodeResponse response;
    return Call(*registry_, &pb::NodeRegistry::Stub::RegisterNode, token, request, &response);
  }

  grpc::Status Heartbeat(const std::string& token, const std::string& id) {
    pb::HeartbeatRequest request;
    request.set_node_id(id);
    pb::HeartbeatResponse response;
    return Call(*registry_, &pb::NodeRegistry::Stub::Heartbeat, token, request, &response);
  }

  std::unique_ptr<Stack> stack_;
  std::unique_ptr<pb::NodeRegistry::Stub> registry_;
};

constexpr char kAttacker[] = "127.0.0.1:9";
constexpr char kWrongToken[] = "0000000000000000000000000000000000000000000000000000000000000000";

TEST_F(InternalAuthTest, NodeRegistryRefusesCallsWithoutTheToken) {
  const v1::StorageNode before = Node("n0");
  ASSERT_EQ(before.state(), v1::STORAGE_NODE_STATE_UP);
  ASSERT_NE(before.address(), kAttacker);

  for (const std::string& token : {std::string(), std::string(kWrongToken),
                                   stack_->admin_key()}) {
    SCOPED_TRACE("token: " + token);
    grpc::Status moved = Register(token, "n0", kAttacker);
    EXPECT_EQ(moved.error_code(), grpc::StatusCode::UNAUTHENTICATED) << moved.error_message();
    grpc::Status added = Register(token, "evil", kAttacker);
    EXPECT_EQ(added.error_code(), grpc::StatusCode::UNAUTHENTICATED) << added.error_message();
    grpc::Status beat = Heartbeat(token, "n0");
    EXPECT_EQ(beat.error_code(), grpc::StatusCode::UNAUTHENTICATED) << beat.error_message();
  }
  const v1::StorageNode after = Node("n0");
  EXPECT_EQ(after.address(), before.address());
  EXPECT_EQ(after.state(), v1::STORAGE_NODE_STATE_UP);
  v1::GetStorageNodeRequest evil;
  evil.set_id("evil");
  v1::GetStorageNodeResponse evil_response;
  EXPECT_EQ(Call(stack_->inventory(), &v1::InventoryService::Stub::GetStorageNode,
                 stack_->admin_key(), evil, &evil_response)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);

  const std::string log = ReadLog(stack_->ControlPlaneLog());
  EXPECT_TRUE(absl::StrContains(log, "refused RegisterNode from ipv4:127.0.0.1:")) << log;
  EXPECT_TRUE(absl::StrContains(log, "refused Heartbeat from ipv4:127.0.0.1:")) << log;
  EXPECT_FALSE(absl::StrContains(log, stack_->internal_token()));
}

TEST_F(InternalAuthTest, ForgedHeartbeatsDoNotKeepADeadNodeUp) {
  const std::string address = Node("n0").address();
  ASSERT_TRUE(stack_->storaged(0).Stop(SIGKILL).ok());
  // The stack's heartbeat interval is 500 ms: DOWN after 1.5 s of silence.
  const absl::Time deadline = absl::Now() + absl::Seconds(15);
  v1::StorageNode node;
  while (absl::Now() < deadline) {
    EXPECT_EQ(Heartbeat("", "n0").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(Heartbeat(kWrongToken, "n0").error_code(), grpc::StatusCode::UNAUTHENTICATED);
    node = Node("n0");
    if (node.state() == v1::STORAGE_NODE_STATE_DOWN) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(node.state(), v1::STORAGE_NODE_STATE_DOWN);

  // The token's holder can bring it back, and move it: that is logged.
  grpc::Status beat = Heartbeat(stack_->internal_token(), "n0");
  ASSERT_TRUE(beat.ok()) << beat.error_message();
  EXPECT_EQ(Node("n0").state(), v1::STORAGE_NODE_STATE_UP);
  grpc::Status moved = Register(stack_->internal_token(), "n0", kAttacker);
  ASSERT_TRUE(moved.ok()) << moved.error_message();
  EXPECT_EQ(Node("n0").address(), kAttacker);
  const std::string log = ReadLog(stack_->ControlPlaneLog());
  EXPECT_TRUE(
      absl::StrContains(log, absl::StrCat("storage node n0 in dc1 moved: ", address, " -> ",
                                          kAttacker)))
      << log;
}

TEST_F(InternalAuthTest, StoragedRefusesCallsWithoutTheToken) {
  const std::string address = Node("n0").address();
  auto bare = pb::StorageNode::NewStub(
      grpc::CreateChannel(address, grpc::InsecureChannelCredentials()));
  pb::GetNodeStatusRequest request;
  pb::GetNodeStatusResponse response;
  EXPECT_EQ(Call(*bare, &pb::StorageNode::Stub::GetNodeStatus, "", request, &response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Call(*bare, &pb::StorageNode::Stub::GetNodeStatus, kWrongToken, request, &response)
                .error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  pb::DeleteImageRequest del;
  del.set_image_id("anything");
  pb::DeleteImageResponse deleted;
  EXPECT_EQ(Call(*bare, &pb::StorageNode::Stub::DeleteImage, "", del, &deleted).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  // The stack's stub carries the token.
  grpc::ClientContext context;
  grpc::Status status = stack_->NodeStub("n0")->GetNodeStatus(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.status().node_id(), "n0");
  EXPECT_TRUE(absl::StrContains(ReadLog(stack_->StoragedLog(0)),
                                "refused GetNodeStatus from ipv4:127.0.0.1:"));
}

}  // namespace
}  // namespace tests
