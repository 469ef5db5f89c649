// Copying a template to a second datacenter end to end with real processes:
// two tgtd SANs, storaged n0 in dc1 and n1 in dc2 registered with the real
// controlplane. A template captured in dc1 is not deployable in dc2 until
// AddImageTemplateLocations has copied it there (storaged SendImage, only
// missing chunks); then a deploy in dc2 restores a byte-identical disk from
// n1. A second template sharing most data copies only its new chunks.
// Removing the location deletes the images on n1.
#include <fcntl.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/process.h"
#include "tests/rpc.h"
#include "tests/san.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
namespace pb = imagetemplates::storagenode::v1;
constexpr uint64_t kMiB = 1 << 20;

#define ASSERT_OK(status) ASSERT_TRUE((status).ok()) << (status).error_message()

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Fills [offset, offset + size) of `path` with pseudo-random bytes.
void FillRandom(const std::string& path, uint64_t offset, uint64_t size, uint64_t seed) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  std::vector<uint64_t> block(64 * 1024);
  uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  for (uint64_t off = 0; off < size; off += block.size() * 8) {
    for (uint64_t& v : block) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      v = x;
    }
    size_t n = static_cast<size_t>(std::min<uint64_t>(block.size() * 8, size - off));
    ASSERT_EQ(pwrite(fd, block.data(), n, static_cast<off_t>(offset + off)),
              static_cast<ssize_t>(n));
  }
  ::close(fd);
}

class CopyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("copy");
    for (int i = 0; i < 2; ++i) {
      auto san = San::Start();
      ASSERT_TRUE(san.ok()) << san.status();
      sans_.push_back(*std::move(san));
    }
    auto process = Process::StartServer(
        {RunfilePath("controlplane/controlplane"), "--listen=127.0.0.1:0",
         "--db=" + dir_ + "/cp.db", "--admin-key-file=" + dir_ + "/admin.key",
         "--node-heartbeat-ms=500"},
        dir_ + "/controlplane.log");
    ASSERT_TRUE(process.ok()) << process.status();
    cp_ = std::make_unique<Process>(*std::move(process));
    auto channel = grpc::CreateChannel(cp_->address(), grpc::InsecureChannelCredentials());
    identity_ = v1::IdentityService::NewStub(channel);
    inventory_ = v1::InventoryService::NewStub(channel);
    templates_ = v1::ImageTemplateService::NewStub(channel);
    operations_ = v1::OperationService::NewStub(channel);
    admin_ = ReadFile(dir_ + "/admin.key");
    admin_ = admin_.substr(0, admin_.find('\n'));
    for (const char* name : {"dc1", "dc2"}) {
      v1::CreateDatacenterRequest dc;
      dc.set_name(name);
      v1::CreateDatacenterResponse response;
      ASSERT_OK(Call(*inventory_, &v1::InventoryService::Stub::CreateDatacenter, admin_, dc,
                     &response));
    }
    for (int i = 0; i < 2; ++i) {
      auto node = Process::StartServer(
          {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0",
           absl::StrCat("--store=", dir_, "/store", i), absl::StrCat("--datacenter=dc", i + 1),
           absl::StrCat("--node-id=n", i), "--controlplane=" + cp_->address(),
           absl::StrCat("--portals=127.0.0.1:", sans_[i]->port())},
          absl::StrCat(dir_, "/storaged", i, ".log"));
      ASSERT_TRUE(node.ok()) << node.status();
      storaged_.push_back(std::make_unique<Process>(*std::move(node)));
    }
    WaitNodesUp();
    v1::CreateIpPoolRequest pool;
    pool.set_datacenter("dc2");
    pool.set_subnet("10.30.0.0/24");
    pool.set_gateway("10.30.0.1");
    pool.add_ranges()->set_start("10.30.0.10");
    pool.mutable_ranges(0)->set_end("10.30.0.20");
    v1::CreateIpPoolResponse pool_response;
    ASSERT_OK(Call(*inventory_, &v1::InventoryService::Stub::CreateIpPool, admin_, pool,
                   &pool_response));
    NewUser();
  }

  void WaitNodesUp() {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      v1::ListStorageNodesRequest request;
      request.set_state(v1::STORAGE_NODE_STATE_UP);
      v1::ListStorageNodesResponse response;
      if (Call(*inventory_, &v1::InventoryService::Stub::ListStorageNodes, admin_, request,
               &response)
              .ok() &&
          response.storage_nodes_size() == 2) {
        for (const auto& node : response.storage_nodes()) addresses_[node.id()] = node.address();
        return;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    FAIL() << "storage nodes did not register";
  }

  void NewUser() {
    v1::CreateAccountRequest account;
    account.set_name("acme");
    v1::CreateAccountResponse account_response;
    ASSERT_OK(Call(*identity_, &v1::IdentityService::Stub::CreateAccount, admin_, account,
                   &account_response));
    account_id_ = account_response.account().id();
    v1::CreateUserRequest request;
    request.set_account_id(account_id_);
    request.set_username("user");
    for (auto p : {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_VIEW,
                   v1::PERMISSION_SERVER_PROVISION}) {
      request.add_permissions(p);
    }
    request.mutable_device_access()->set_all_servers(true);
    v1::CreateUserResponse created;
    ASSERT_OK(Call(*identity_, &v1::IdentityService::Stub::CreateUser, admin_, request, &created));
    v1::CreateApiKeyRequest key;
    key.set_user_id(created.user().id());
    v1::CreateApiKeyResponse key_response;
    ASSERT_OK(Call(*identity_, &v1::IdentityService::Stub::CreateApiKey, admin_, key,
                   &key_response));
    key_ = key_response.secret();
  }

  // A thin LUN on SAN `san` (in datacenter dc<san+1>) added to the pool.
  std::string AddVolume(int san, const std::string& name, uint64_t size, Lun* out = nullptr) {
    LunOptions options;
    options.thin = true;
    auto lun = sans_[san]->CreateLun(name, size, options);
    EXPECT_TRUE(lun.ok()) << lun.status();
    v1::CreateSanVolumeRequest request;
    request.set_datacenter(absl::StrCat("dc", san + 1));
    request.set_san_host(absl::StrCat("n", san));
    request.mutable_iscsi()->set_portal(absl::StrCat("127.0.0.1:", sans_[san]->port()));
    request.mutable_iscsi()->set_iqn(lun->iqn);
    request.mutable_iscsi()->set_lun(1);
    request.set_size_bytes(static_cast<int64_t>(size));
    request.set_thin(true);
    v1::CreateSanVolumeResponse response;
    grpc::Status status =
        Call(*inventory_, &v1::InventoryService::Stub::CreateSanVolume, admin_, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    backing_[response.san_volume().id()] = lun->backing_path;
    if (out != nullptr) *out = *lun;
    return response.san_volume().id();
  }

  std::string AddServer(const std::string& hostname, const std::string& boot_volume) {
    v1::CreateServerRequest request;
    request.set_account_id(account_id_);
    request.set_type(v1::SERVER_TYPE_VIRTUAL);
    request.set_hostname(hostname);
    request.set_domain("example.com");
    request.set_datacenter("dc1");
    request.mutable_configuration()->set_cpu_count(1);
    request.mutable_configuration()->set_memory_mib(1024);
    request.mutable_configuration()->set_os_reference("UBUNTU_22_64");
    auto* nic = request.mutable_configuration()->add_network_interfaces();
    nic->set_name("eth0");
    nic->set_mac_address("02:00:00:00:00:01");
    auto* disk = request.add_disks();
    disk->set_device_index(0);
    disk->set_boot(true);
    disk->set_san_volume_id(boot_volume);
    request.set_power_state(v1::POWER_STATE_RUNNING);
    auto* cred = request.add_credentials();
    cred->set_software("os");
    cred->set_username("root");
    cred->set_password("s3cret");
    v1::CreateServerResponse response;
    grpc::Status status =
        Call(*inventory_, &v1::InventoryService::Stub::CreateServer, admin_, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.server().id();
  }

  v1::Operation Wait(const std::string& id) {
    const absl::Time deadline = absl::Now() + absl::Seconds(120);
    v1::Operation op;
    while (absl::Now() < deadline) {
      v1::GetOperationRequest request;
      request.set_id(id);
      if (Call(*operations_, &v1::OperationService::Stub::GetOperation, key_, request, &op).ok() &&
          (op.state() == v1::OPERATION_STATE_SUCCEEDED ||
           op.state() == v1::OPERATION_STATE_FAILED ||
           op.state() == v1::OPERATION_STATE_CANCELLED)) {
        return op;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    ADD_FAILURE() << "operation " << id << " did not end: " << op.DebugString();
    return op;
  }

  // Captures the server; returns the ACTIVE template.
  v1::ImageTemplate Create(const std::string& name, const std::string& server_id) {
    v1::CreateImageTemplateRequest request;
    request.set_server_id(server_id);
    request.set_name(name);
    v1::Operation op;
    grpc::Status status =
        Call(*templates_, &v1::ImageTemplateService::Stub::CreateImageTemplate, key_, request, &op);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) return v1::ImageTemplate();
    op = Wait(op.id());
    EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
    return GetTemplate(op.image_template_id());
  }

  v1::ImageTemplate GetTemplate(const std::string& id) {
    v1::GetImageTemplateRequest request;
    request.set_id(id);
    v1::GetImageTemplateResponse response;
    EXPECT_TRUE(Call(*templates_, &v1::ImageTemplateService::Stub::GetImageTemplate, key_,
                     request, &response)
                    .ok());
    return response.image_template();
  }

  grpc::Status AddLocation(const std::string& id, const std::string& dc, v1::Operation* op) {
    v1::AddImageTemplateLocationsRequest request;
    request.set_id(id);
    request.add_datacenters(dc);
    return Call(*templates_, &v1::ImageTemplateService::Stub::AddImageTemplateLocations, key_,
                request, op);
  }

  grpc::Status Deploy(const std::string& id, const std::string& dc, v1::Operation* op) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(id);
    request.set_datacenter(dc);
    request.set_quantity(1);
    request.add_hostnames("copied");
    request.set_domain("example.com");
    return Call(*templates_, &v1::ImageTemplateService::Stub::DeployImageTemplate, key_, request,
                op);
  }

  grpc::Status NodeImage(int node, const std::string& image_id, pb::ImageManifestSummary* out) {
    auto stub = pb::StorageNode::NewStub(
        grpc::CreateChannel(addresses_[absl::StrCat("n", node)], grpc::InsecureChannelCredentials()));
    pb::GetImageRequest request;
    request.set_image_id(image_id);
    pb::GetImageResponse response;
    grpc::Status status = Call(*stub, &pb::StorageNode::Stub::GetImage, "", request, &response);
    *out = response.summary();
    return status;
  }

  // "<sent> of <total> chunks sent (<bytes> bytes" from n0's log line about
  // sending `image_id`.
  bool SendCounts(const std::string& image_id, uint64_t* sent, uint64_t* total,
                  uint64_t* bytes) {
    std::string log = ReadFile(dir_ + "/storaged0.log");
    std::regex line("op=" + image_id +
                    " send to \\S+ done in \\S+: ([0-9]+) of ([0-9]+) chunks sent \\(([0-9]+) bytes");
    std::smatch m;
    if (!std::regex_search(log, m, line)) return false;
    return absl::SimpleAtoi(m[1].str(), sent) && absl::SimpleAtoi(m[2].str(), total) &&
           absl::SimpleAtoi(m[3].str(), bytes);
  }

  std::string dir_;
  std::vector<std::unique_ptr<San>> sans_;
  std::unique_ptr<Process> cp_;
  std::vector<std::unique_ptr<Process>> storaged_;
  std::map<std::string, std::string> addresses_;
  std::string admin_, key_, account_id_;
  std::map<std::string, std::string> backing_;
  std::unique_ptr<v1::IdentityService::Stub> identity_;
  std::unique_ptr<v1::InventoryService::Stub> inventory_;
  std::unique_ptr<v1::ImageTemplateService::Stub> templates_;
  std::unique_ptr<v1::OperationService::Stub> operations_;
};

TEST_F(CopyTest, CopyToSecondDatacenterThenDeployThereByteIdentical) {
  const uint64_t size = 24 * kMiB;
  Lun lun;
  const std::string source = AddVolume(0, "src", size, &lun);
  FillRandom(lun.backing_path, 0, 20 * kMiB, 11);  // the tail stays zero
  const std::string at_capture = ReadFile(lun.backing_path);
  const std::string server = AddServer("source", source);
  const v1::ImageTemplate t = Create("golden", server);
  ASSERT_EQ(t.disks_size(), 1);
  const std::string image_id = t.id() + "-disk0";

  // Room in dc2 for one server.
  const std::string target = AddVolume(1, "dst", size);
  AddVolume(1, "cfg", kMiB);
  v1::Operation op;
  grpc::Status refused = Deploy(t.id(), "dc2", &op);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("dc1"), std::string::npos) << refused.error_message();

  ASSERT_OK(AddLocation(t.id(), "dc2", &op));
  EXPECT_EQ(op.kind(), v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE);
  op = Wait(op.id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  v1::ImageTemplate copied = GetTemplate(t.id());
  ASSERT_EQ(copied.locations_size(), 2);
  for (const auto& location : copied.locations()) {
    EXPECT_EQ(location.status(), v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE)
        << location.DebugString();
  }
  pb::ImageManifestSummary on_n1;
  ASSERT_OK(NodeImage(1, image_id, &on_n1));
  EXPECT_EQ(on_n1.manifest_digest(), t.disks(0).manifest_digest());
  uint64_t sent = 0, total = 0, bytes = 0;
  ASSERT_TRUE(SendCounts(image_id, &sent, &total, &bytes));
  EXPECT_EQ(sent, total);  // n1 had nothing
  EXPECT_EQ(total, 20 * kMiB / (16 << 10));

  ASSERT_OK(Deploy(t.id(), "dc2", &op));
  op = Wait(op.id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  const std::string deployed = ReadFile(backing_[target]);
  ASSERT_EQ(deployed.size(), at_capture.size());
  EXPECT_TRUE(deployed == at_capture) << "the disk deployed in dc2 differs from the source";

  // A second template sharing all but 1 MiB: only its new chunks cross.
  FillRandom(lun.backing_path, 4 * kMiB, kMiB, 99);
  const v1::ImageTemplate t2 = Create("golden2", server);
  ASSERT_EQ(t2.disks_size(), 1);
  ASSERT_OK(AddLocation(t2.id(), "dc2", &op));
  op = Wait(op.id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  ASSERT_TRUE(SendCounts(t2.id() + "-disk0", &sent, &total, &bytes));
  EXPECT_EQ(total, 20 * kMiB / (16 << 10));
  EXPECT_EQ(sent, kMiB / (16 << 10));
  EXPECT_LE(bytes, kMiB + 64 * 1024);

  // Removing dc2 from the first template deletes its image on n1; the
  // second template's image (sharing the chunks) stays whole.
  v1::RemoveImageTemplateLocationsRequest remove;
  remove.set_id(t.id());
  remove.add_datacenters("dc2");
  v1::RemoveImageTemplateLocationsResponse removed;
  ASSERT_OK(Call(*templates_, &v1::ImageTemplateService::Stub::RemoveImageTemplateLocations,
                 key_, remove, &removed));
  EXPECT_EQ(removed.image_template().locations_size(), 1);
  EXPECT_EQ(NodeImage(1, image_id, &on_n1).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_OK(NodeImage(1, t2.id() + "-disk0", &on_n1));
  EXPECT_EQ(Deploy(t.id(), "dc2", &op).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace tests
