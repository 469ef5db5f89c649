// Starts the real controlplane and storaged binaries on free ports and checks
// what every client relies on: health is SERVING, reflection lists and
// describes the services, unimplemented RPCs say UNIMPLEMENTED, SIGTERM stops
// the process cleanly. Health and reflection need no internal token even when
// the internal API does; a bad --internal-token-file stops the start.
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "src/proto/grpc/reflection/v1alpha/reflection.grpc.pb.h"
#include "tests/process.h"
#include "tests/stack.h"

namespace tests {
namespace {

using grpc::reflection::v1alpha::ServerReflection;
using grpc::reflection::v1alpha::ServerReflectionRequest;
using grpc::reflection::v1alpha::ServerReflectionResponse;

struct Binary {
  std::string path;
  std::vector<std::string> extra_args;
  std::set<std::string> services;
};

std::vector<Binary> Binaries(const std::string& dir) {
  return {
      {"controlplane/controlplane",
       {"--db=" + dir + "/cp.db", "--internal-token-file=" + dir + "/internal.token"},
       {"imagetemplates.v1.ImageTemplateService", "imagetemplates.v1.OperationService",
        "imagetemplates.v1.IdentityService", "imagetemplates.v1.InventoryService",
        "imagetemplates.v1.AuditService", "imagetemplates.storagenode.v1.NodeRegistry",
        "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}},
      {"storaged/storaged",
       {"--store=" + dir + "/store", "--datacenter=dc1", "--node-id=node1"},
       {"imagetemplates.storagenode.v1.StorageNode", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection"}},
      {"storaged/storaged",
       {"--store=" + dir + "/store", "--datacenter=dc1", "--node-id=node1",
        "--internal-token-file=" + dir + "/internal.token"},
       {"imagetemplates.storagenode.v1.StorageNode", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection"}},
  };
}

class ServerSmokeTest : public ::testing::TestWithParam<int> {};

std::vector<ServerReflectionResponse> Reflect(grpc::Channel* channel,
                                              const std::vector<ServerReflectionRequest>& requests) {
  auto stub = ServerReflection::NewStub(
      std::shared_ptr<grpc::Channel>(channel, [](grpc::Channel*) {}));
  grpc::ClientContext context;
  auto stream = stub->ServerReflectionInfo(&context);
  std::vector<ServerReflectionResponse> responses;
  for (const auto& request : requests) {
    EXPECT_TRUE(stream->Write(request));
    ServerReflectionResponse response;
    EXPECT_TRUE(stream->Read(&response));
    responses.push_back(response);
  }
  stream->WritesDone();
  EXPECT_TRUE(stream->Finish().ok());
  return responses;
}

TEST_P(ServerSmokeTest, HealthReflectionAndCleanShutdown) {
  std::string dir = MakeTempDir("smoke");
  ASSERT_FALSE(WriteInternalToken(dir + "/internal.token").empty());
  Binary binary = Binaries(dir)[GetParam()];
  std::vector<std::string> argv = {RunfilePath(binary.path), "--listen=127.0.0.1:0"};
  argv.insert(argv.end(), binary.extra_args.begin(), binary.extra_args.end());
  auto process = Process::StartServer(argv, dir + "/server.log");
  ASSERT_TRUE(process.ok()) << process.status();

  auto channel = grpc::CreateChannel(process->address(), grpc::InsecureChannelCredentials());

  grpc::health::v1::HealthCheckRequest health_request;
  grpc::health::v1::HealthCheckResponse health_response;
  grpc::ClientContext health_context;
  grpc::Status health_status = grpc::health::v1::Health::NewStub(channel)->Check(
      &health_context, health_request, &health_response);
  ASSERT_TRUE(health_status.ok()) << health_status.error_message();
  EXPECT_EQ(health_response.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  ServerReflectionRequest list;
  list.set_list_services("*");
  ServerReflectionRequest describe_health;
  describe_health.set_file_containing_symbol("grpc.health.v1.Health");
  ServerReflectionRequest describe_unknown;
  describe_unknown.set_file_containing_symbol("no.such.Service");
  auto responses = Reflect(channel.get(), {list, describe_health, describe_unknown});
  ASSERT_EQ(responses.size(), 3u);
  std::set<std::string> listed;
  for (const auto& service : responses[0].list_services_response().service()) {
    listed.insert(service.name());
  }
  EXPECT_EQ(listed, binary.services);
  EXPECT_GT(responses[1].file_descriptor_response().file_descriptor_proto_size(), 0);
  EXPECT_EQ(responses[2].error_response().error_code(), grpc::StatusCode::NOT_FOUND);

  // Every listed service of ours must be describable by reflection, which is
  // what grpcurl and dynamic clients need.
  std::vector<ServerReflectionRequest> describes;
  for (const std::string& name : binary.services) {
    ServerReflectionRequest request;
    request.set_file_containing_symbol(name);
    describes.push_back(request);
  }
  for (const auto& response : Reflect(channel.get(), describes)) {
    EXPECT_FALSE(response.has_error_response())
        << response.original_request().file_containing_symbol() << ": "
        << response.error_response().error_message();
  }

  auto wait_status = process->Stop(SIGTERM);
  ASSERT_TRUE(wait_status.ok()) << wait_status.status();
  EXPECT_TRUE(WIFEXITED(*wait_status));
  EXPECT_EQ(WEXITSTATUS(*wait_status), 0);
}

std::string BinaryName(const ::testing::TestParamInfo<int>& info) {
  switch (info.param) {
    case 0:
      return "controlplane";
    case 1:
      return "storaged";
    default:
      return "storaged_with_token";
  }
}

INSTANTIATE_TEST_SUITE_P(Binaries, ServerSmokeTest, ::testing::Values(0, 1, 2), BinaryName);

TEST(ServerStartupTest, RefusesUnknownFlagsAndBadListenAddresses) {
  std::string dir = MakeTempDir("badflags");
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--no-such-flag=1"},
        std::vector<std::string>{"--listen=not-an-address"}}) {
    std::vector<std::string> argv = {RunfilePath("controlplane/controlplane"),
                                     "--db=" + dir + "/cp.db"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto process = Process::StartServer(argv, dir + "/server.log", absl::Seconds(60));
    EXPECT_EQ(process.status().code(), absl::StatusCode::kFailedPrecondition)
        << extra[0] << ": " << process.status();
  }
}

std::string ReadLog(const std::string& path) {
  std::stringstream text;
  text << std::ifstream(path).rdbuf();
  return text.str();
}

void WriteFile(const std::string& path, const std::string& contents, int mode) {
  ::unlink(path.c_str());
  std::ofstream(path) << contents;
  ASSERT_EQ(::chmod(path.c_str(), mode), 0);
}

// Starts `argv` expecting it to exit with code 2 before listening, its log
// naming `message`.
void ExpectRefusedStart(std::vector<std::string> argv, const std::string& log,
                        const std::string& message) {
  auto process = Process::StartServer(argv, log, absl::Seconds(60));
  ASSERT_EQ(process.status().code(), absl::StatusCode::kFailedPrecondition)
      << argv.back() << ": " << process.status();
  // Process reports the raw wait status: exit code 2 is 512.
  EXPECT_TRUE(absl::StrContains(process.status().message(), "(wait status 512)"))
      << process.status();
  std::string text = ReadLog(log);
  EXPECT_TRUE(absl::StrContains(text, message)) << "want \"" << message << "\" in:\n" << text;
}

TEST(ServerStartupTest, RefusesAMissingShortOrReadableInternalToken) {
  const std::string dir = MakeTempDir("badtoken");
  WriteFile(dir + "/short.token", std::string(31, 'a') + "\n", 0600);
  WriteFile(dir + "/readable.token", std::string(40, 'a') + "\n", 0644);
  WriteFile(dir + "/group.token", std::string(40, 'a') + "\n", 0640);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "--internal-token-file is required"},
      {"--internal-token-file=" + dir + "/missing.token",
       "internal token file " + dir + "/missing.token: No such file or directory"},
      {"--internal-token-file=" + dir + "/short.token", "has 31 bytes; at least 32 are needed"},
      {"--internal-token-file=" + dir + "/readable.token",
       "mode 0644 lets group or others read it; it holds a secret: chmod 600"},
      {"--internal-token-file=" + dir + "/group.token", "mode 0640 lets group or others"},
  };
  int n = 0;
  for (const auto& [flag, message] : cases) {
    std::vector<std::string> argv = {RunfilePath("controlplane/controlplane"),
                                     "--listen=127.0.0.1:0", "--db=" + dir + "/cp.db"};
    if (!flag.empty()) argv.push_back(flag);
    SCOPED_TRACE("controlplane " + flag);
    ExpectRefusedStart(argv, absl::StrCat(dir, "/cp", n++, ".log"), message);
  }
  // storaged needs the token only to join a control plane.
  for (const auto& [flag, message] : cases) {
    std::vector<std::string> argv = {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0",
                                     "--store=" + dir + "/store", "--datacenter=dc1",
                                     "--node-id=node1", "--controlplane=127.0.0.1:1",
                                     "--portals=127.0.0.1:3260"};
    if (!flag.empty()) argv.push_back(flag);
    SCOPED_TRACE("storaged " + flag);
    ExpectRefusedStart(argv, absl::StrCat(dir, "/storaged", n++, ".log"),
                       flag.empty() ? "--internal-token-file is required with --controlplane"
                                    : message);
  }
  // Nothing was created in the controlplane's database path.
  EXPECT_FALSE(std::ifstream(dir + "/cp.db").good());
}

TEST(ServerStartupTest, StandaloneStoragedWithoutTokenWarns) {
  const std::string dir = MakeTempDir("notoken");
  const std::string log = dir + "/storaged.log";
  auto process = Process::StartServer(
      {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + dir + "/store",
       "--datacenter=dc1", "--node-id=node1"},
      log);
  ASSERT_TRUE(process.ok()) << process.status();
  EXPECT_TRUE(absl::StrContains(ReadLog(log), "serving the StorageNode API UNAUTHENTICATED"))
      << ReadLog(log);
}

}  // namespace
}  // namespace tests
