#include "tests/stack.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "common/internal_token.h"
#include "common/tls.h"
#include "tests/rpc.h"

namespace tests {

namespace v1 = imagetemplates::v1;
namespace pb = imagetemplates::storagenode::v1;

Stack::Stack(StackOptions options) : options_(std::move(options)) {}

Stack::~Stack() {
  // The daemons first: they hold the stores open (the SANs go with the members).
  storaged_.clear();
  cp_.reset();
  if (dir_.empty() || KeepTestData()) return;
  std::error_code error;
  for (const auto& entry : std::filesystem::directory_iterator(dir_, error)) {
    if (absl::StartsWith(entry.path().filename().string(), "store")) {
      std::filesystem::remove_all(entry.path(), error);
    }
  }
}

void Stack::Start() {
  dir_ = MakeTempDir(options_.dir_prefix);
  ASSERT_FALSE(dir_.empty());
  if (options_.tls) {
    auto certs = MakeTestCertificates(dir_);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *std::move(certs);
    // NodeStub's internal channels too.
    common::SetInternalChannelCredentials(TlsCredentials(certs_.ca, certs_.cert, certs_.key));
  }
  for (size_t i = 0; i < options_.node_datacenters.size(); ++i) {
    auto san = San::Start();
    ASSERT_TRUE(san.ok()) << san.status();
    sans_.push_back(*std::move(san));
  }
  ASSERT_NO_FATAL_FAILURE(StartControlPlane(0));
  admin_ = ReadFirstLine(dir_ + "/admin.key");
  ASSERT_FALSE(admin_.empty());
  std::set<std::string> created;
  for (const std::string& name : options_.node_datacenters) {
    if (!created.insert(name).second) continue;
    v1::CreateDatacenterRequest request;
    request.set_name(name);
    v1::CreateDatacenterResponse response;
    grpc::Status status = Call(*inventory_, &v1::InventoryService::Stub::CreateDatacenter,
                               admin_, request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
  }
  for (size_t i = 0; i < options_.node_datacenters.size(); ++i) {
    ASSERT_NO_FATAL_FAILURE(StartStoraged(static_cast<int>(i)));
  }
  ASSERT_NO_FATAL_FAILURE(WaitNodesUp());
}

void Stack::StartControlPlane(int port) {
  if (internal_token_.empty()) {
    internal_token_ = WriteInternalToken(internal_token_file());
    ASSERT_FALSE(internal_token_.empty());
  }
  std::vector<std::string> argv = {
      options_.controlplane_binary.empty() ? RunfilePath("controlplane/controlplane")
                                           : options_.controlplane_binary,
      absl::StrCat("--listen=127.0.0.1:", port),
      "--db=" + dir_ + "/cp.db", "--admin-key-file=" + dir_ + "/admin.key",
      "--internal-token-file=" + internal_token_file(),
      absl::StrCat("--node-heartbeat-ms=", options_.node_heartbeat_ms),
      absl::StrCat("--node-missed-heartbeats=", options_.node_missed_heartbeats)};
  for (std::string& flag : TlsFlags(/*require_client_certs=*/false)) argv.push_back(flag);
  argv.insert(argv.end(), options_.controlplane_flags.begin(),
              options_.controlplane_flags.end());
  auto process = Process::StartServer(argv, ControlPlaneLog());
  ASSERT_TRUE(process.ok()) << process.status();
  cp_ = std::make_unique<Process>(*std::move(process));
  auto channel = grpc::CreateChannel(cp_->address(), client_credentials());
  identity_ = v1::IdentityService::NewStub(channel);
  inventory_ = v1::InventoryService::NewStub(channel);
  templates_ = v1::ImageTemplateService::NewStub(channel);
  operations_ = v1::OperationService::NewStub(channel);
}

void Stack::KillAndRestartControlPlane(const std::function<void()>& while_down) {
  const int port = cp_->port();
  ASSERT_TRUE(cp_->Stop(SIGKILL).ok());
  if (while_down) ASSERT_NO_FATAL_FAILURE(while_down());
  ASSERT_NO_FATAL_FAILURE(StartControlPlane(port));
}

std::string Stack::StoragedLog(int i) const { return absl::StrCat(dir_, "/storaged", i, ".log"); }

std::vector<std::string> Stack::TlsFlags(bool require_client_certs) const {
  if (!options_.tls) return {};
  std::vector<std::string> flags = {"--tls-cert-file=" + certs_.cert,
                                    "--tls-key-file=" + certs_.key, "--tls-ca-file=" + certs_.ca};
  if (require_client_certs) flags.push_back("--tls-client-ca-file=" + certs_.ca);
  return flags;
}

std::shared_ptr<grpc::ChannelCredentials> Stack::client_credentials() const {
  return options_.tls ? TlsCredentials(certs_.ca) : grpc::InsecureChannelCredentials();
}

void Stack::StartStoraged(int i) {
  std::vector<std::string> argv = {
      RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0",
      absl::StrCat("--store=", dir_, "/store", i),
      "--datacenter=" + options_.node_datacenters[i], absl::StrCat("--node-id=n", i),
      "--controlplane=" + cp_->address(), absl::StrCat("--portals=127.0.0.1:", sans_[i]->port()),
      "--internal-token-file=" + internal_token_file()};
  for (std::string& flag : TlsFlags(/*require_client_certs=*/true)) argv.push_back(flag);
  auto process = Process::StartServer(argv, StoragedLog(i));
  ASSERT_TRUE(process.ok()) << process.status();
  if (static_cast<int>(storaged_.size()) <= i) storaged_.resize(i + 1);
  storaged_[i] = std::make_unique<Process>(*std::move(process));
}

void Stack::WaitNodesUp() {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (absl::Now() < deadline) {
    v1::ListStorageNodesRequest request;
    request.set_state(v1::STORAGE_NODE_STATE_UP);
    v1::ListStorageNodesResponse response;
    if (Call(*inventory_, &v1::InventoryService::Stub::ListStorageNodes, admin_, request,
             &response)
            .ok() &&
        response.storage_nodes_size() == static_cast<int>(options_.node_datacenters.size())) {
      return;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
  FAIL() << "storage nodes did not register";
}

User Stack::NewUser(const std::string& account_name,
                    const std::vector<v1::Permission>& permissions) {
  return CreateAccountUser(*identity_, admin_, account_name, "user", permissions);
}

std::string Stack::AddIpPool(const std::string& datacenter, const std::string& subnet,
                             const std::string& gateway, const std::string& start,
                             const std::string& end, const std::vector<std::string>& dns) {
  v1::CreateIpPoolRequest request;
  request.set_datacenter(datacenter);
  request.set_subnet(subnet);
  request.set_gateway(gateway);
  for (const std::string& server : dns) request.add_dns_servers(server);
  request.add_ranges()->set_start(start);
  request.mutable_ranges(0)->set_end(end);
  v1::CreateIpPoolResponse response;
  grpc::Status status =
      Call(*inventory_, &v1::InventoryService::Stub::CreateIpPool, admin_, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.ip_pool().id();
}

std::string Stack::AddVolume(int san, const std::string& name, uint64_t size, Lun* out,
                             LunOptions options) {
  auto lun = sans_[san]->CreateLun(name, size, options);
  EXPECT_TRUE(lun.ok()) << lun.status();
  if (!lun.ok()) return "";
  v1::CreateSanVolumeRequest request;
  request.set_datacenter(options_.node_datacenters[san]);
  request.set_san_host(absl::StrCat("n", san));
  request.mutable_iscsi()->set_portal(absl::StrCat("127.0.0.1:", sans_[san]->port()));
  request.mutable_iscsi()->set_iqn(lun->iqn);
  request.mutable_iscsi()->set_lun(1);
  request.set_size_bytes(static_cast<int64_t>(size));
  request.set_thin(options.thin);
  v1::CreateSanVolumeResponse response;
  grpc::Status status =
      Call(*inventory_, &v1::InventoryService::Stub::CreateSanVolume, admin_, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  backing_[response.san_volume().id()] = lun->backing_path;
  if (out != nullptr) *out = *lun;
  return response.san_volume().id();
}

v1::Operation Stack::WaitOperation(const std::string& key, const std::string& id,
                                   absl::Duration timeout, absl::Duration poll) {
  const absl::Time deadline = absl::Now() + timeout;
  v1::Operation op;
  while (absl::Now() < deadline) {
    v1::GetOperationRequest request;
    request.set_id(id);
    if (Call(*operations_, &v1::OperationService::Stub::GetOperation, key, request, &op).ok() &&
        (op.state() == v1::OPERATION_STATE_SUCCEEDED ||
         op.state() == v1::OPERATION_STATE_FAILED ||
         op.state() == v1::OPERATION_STATE_CANCELLED)) {
      return op;
    }
    absl::SleepFor(poll);
  }
  ADD_FAILURE() << "operation " << id << " did not end: " << op.DebugString();
  return op;
}

v1::Operation Stack::WaitTransferStarted(const std::string& key, const std::string& id) {
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  v1::Operation op;
  while (absl::Now() < deadline) {
    v1::GetOperationRequest request;
    request.set_id(id);
    grpc::Status status =
        Call(*operations_, &v1::OperationService::Stub::GetOperation, key, request, &op);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (op.progress().bytes_done() > 0 || op.state() >= v1::OPERATION_STATE_SUCCEEDED) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return op;
}

v1::ImageTemplate Stack::GetTemplate(const std::string& key, const std::string& id) {
  v1::GetImageTemplateRequest request;
  request.set_id(id);
  v1::GetImageTemplateResponse response;
  grpc::Status status = Call(*templates_, &v1::ImageTemplateService::Stub::GetImageTemplate, key,
                             request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.image_template();
}

v1::CreateServerRequest Stack::ServerRequest(const std::string& account_id,
                                             const std::string& hostname,
                                             const std::vector<std::string>& volumes) {
  v1::CreateServerRequest request;
  request.set_account_id(account_id);
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
  for (size_t i = 0; i < volumes.size(); ++i) {
    auto* disk = request.add_disks();
    disk->set_device_index(static_cast<int>(i));
    disk->set_boot(i == 0);
    disk->set_san_volume_id(volumes[i]);
  }
  request.set_power_state(v1::POWER_STATE_RUNNING);
  auto* cred = request.add_credentials();
  cred->set_software("os");
  cred->set_username("root");
  cred->set_password("s3cret");
  return request;
}

std::string Stack::CreateServer(const v1::CreateServerRequest& request) {
  v1::CreateServerResponse response;
  grpc::Status status = Call(*inventory_, &v1::InventoryService::Stub::CreateServer, admin_,
                             request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.server().id();
}

v1::Server Stack::GetServer(const std::string& key, const std::string& id) {
  v1::GetServerRequest request;
  request.set_id(id);
  v1::GetServerResponse response;
  grpc::Status status =
      Call(*inventory_, &v1::InventoryService::Stub::GetServer, key, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.server();
}

std::unique_ptr<pb::StorageNode::Stub> Stack::NodeStub(const std::string& node_id) {
  v1::ListStorageNodesRequest request;
  v1::ListStorageNodesResponse nodes;
  grpc::Status status =
      Call(*inventory_, &v1::InventoryService::Stub::ListStorageNodes, admin_, request, &nodes);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::string address;
  for (const auto& node : nodes.storage_nodes()) {
    if (node.id() == node_id) address = node.address();
  }
  EXPECT_FALSE(address.empty()) << "storage node " << node_id << " is not registered";
  return pb::StorageNode::NewStub(common::CreateInternalChannel(address, internal_token_));
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string ReadFile(const std::string& path, uint64_t offset, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  in.seekg(static_cast<std::streamoff>(offset));
  std::string out(size, '\0');
  in.read(&out[0], static_cast<std::streamsize>(size));
  out.resize(static_cast<size_t>(in.gcount()));
  return out;
}

void FillRandom(const std::string& path, uint64_t offset, uint64_t size, uint64_t seed) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  std::vector<uint64_t> block(512 * 1024);
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

int Shell(const std::string& command) { return std::system(command.c_str()); }

std::string WriteInternalToken(const std::string& path) {
  std::string random = ReadFile("/dev/urandom", 0, 32);
  if (random.size() != 32) {
    ADD_FAILURE() << "cannot read /dev/urandom";
    return "";
  }
  std::string token = absl::BytesToHexString(random);
  ::unlink(path.c_str());
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  std::string line = token + "\n";
  bool ok = fd >= 0 && ::write(fd, line.data(), line.size()) == static_cast<ssize_t>(line.size());
  if (fd >= 0) ::close(fd);
  if (!ok) {
    ADD_FAILURE() << "cannot write " << path;
    return "";
  }
  return token;
}

}  // namespace tests
