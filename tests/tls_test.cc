// TLS end to end with real processes: the controlplane serves TLS, every
// storaged requires client certificates, and every internal call (node
// registration and heartbeats, controlplane -> storaged, storaged ->
// storaged copies) checks its peer; a template is created, copied to a
// second datacenter and deployed there, byte for byte. Clients without the
// right roots or client certificates get nowhere.
#include <string>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/rpc.h"
#include "tests/stack.h"
#include "tests/tls_certificates.h"
#include "tests/two_datacenter_test.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
namespace pb = imagetemplates::storagenode::v1;

constexpr uint64_t kMiB = 1 << 20;

#define ASSERT_OK(status) ASSERT_TRUE((status).ok()) << (status).error_message()

class TlsTest : public TwoDatacenterTest {
 protected:
  TlsTest() : TwoDatacenterTest("tls", "10.40.0", /*tls=*/true) {}

  // ListStorageNodes as the operator over a channel made with `credentials`.
  grpc::Status ListNodes(const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    auto stub = v1::InventoryService::NewStub(
        grpc::CreateChannel(stack_.controlplane().address(), credentials));
    v1::ListStorageNodesRequest request;
    v1::ListStorageNodesResponse response;
    return Call(*stub, &v1::InventoryService::Stub::ListStorageNodes, stack_.admin_key(),
                request, &response);
  }

  // GetNodeStatus on storaged n0, with the internal token, over `credentials`.
  grpc::Status NodeStatus(const std::shared_ptr<grpc::ChannelCredentials>& credentials) {
    auto stub = pb::StorageNode::NewStub(
        grpc::CreateChannel(stack_.storaged(0).address(), credentials));
    pb::GetNodeStatusRequest request;
    pb::GetNodeStatusResponse response;
    return Call(*stub, &pb::StorageNode::Stub::GetNodeStatus,
                stack_.internal_token(), request, &response);
  }

  v1::Operation Run(grpc::Status status, const v1::Operation& op) {
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) return op;
    return stack_.WaitOperation(key_, op.id(), absl::Seconds(120));
  }

};

TEST_F(TlsTest, EveryHopIsTlsAndTheDataArrivesIntact) {
  const uint64_t size = 16 * kMiB;
  Lun lun;
  const std::string source = stack_.AddVolume(0, "src", size, &lun);
  FillRandom(lun.backing_path, 0, 12 * kMiB, 5);
  const std::string at_capture = ReadFile(lun.backing_path);
  const std::string server =
      stack_.CreateServer(Stack::ServerRequest(account_id_, "source", {source}));

  v1::CreateImageTemplateRequest create;
  create.set_server_id(server);
  create.set_name("golden");
  v1::Operation op;
  op = Run(Call(stack_.templates(), &v1::ImageTemplateService::Stub::CreateImageTemplate, key_,
                create, &op),
           op);
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  const std::string template_id = op.image_template_id();

  v1::AddImageTemplateLocationsRequest copy;
  copy.set_id(template_id);
  copy.add_datacenters("dc2");
  op = Run(Call(stack_.templates(), &v1::ImageTemplateService::Stub::AddImageTemplateLocations,
                key_, copy, &op),
           op);
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();

  const std::string target = stack_.AddVolume(1, "dst", size);
  stack_.AddVolume(1, "cfg", kMiB);
  v1::DeployImageTemplateRequest deploy;
  deploy.set_image_template_id(template_id);
  deploy.set_datacenter("dc2");
  deploy.set_quantity(1);
  deploy.add_hostnames("copied");
  op = Run(Call(stack_.templates(), &v1::ImageTemplateService::Stub::DeployImageTemplate, key_,
                deploy, &op),
           op);
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_TRUE(ReadFile(stack_.backing(target)) == at_capture)
      << "the disk deployed in dc2 differs from the source";
}

TEST_F(TlsTest, ClientsWithoutTheRightRootsOrCertificatesAreRefused) {
  const TestCertificates& certs = stack_.certificates();
  ASSERT_OK(ListNodes(stack_.client_credentials()));
  // Plaintext to a TLS port, and TLS trusting another CA: no connection.
  EXPECT_EQ(ListNodes(grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(ListNodes(TlsCredentials(certs.other_ca)).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  // storaged also wants a client certificate from the deployment's CA; the
  // token alone is not enough.
  ASSERT_OK(NodeStatus(TlsCredentials(certs.ca, certs.cert, certs.key)));
  EXPECT_EQ(NodeStatus(TlsCredentials(certs.ca)).error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(NodeStatus(TlsCredentials(certs.ca, certs.other_cert, certs.other_key)).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(NodeStatus(grpc::InsecureChannelCredentials()).error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace tests
