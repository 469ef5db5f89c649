// imagectl end to end: a real tgtd, storaged and controlplane, driven only
// through the imagectl binary as a user would (subprocesses, stdout parsed as
// proto JSON, exit codes checked).
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/identity.pb.h"
#include "imagetemplates/v1/image_templates.pb.h"
#include "imagetemplates/v1/inventory.pb.h"
#include "imagetemplates/v1/operations.pb.h"
#include "tests/process.h"
#include "tests/san.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
constexpr uint64_t kMiB = 1 << 20;

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

struct Result {
  int code = -1;
  std::string out;
  std::string err;
};

template <typename Message>
Message Parse(const Result& result) {
  Message message;
  auto status = google::protobuf::util::JsonStringToMessage(result.out, &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\nstdout:\n"
                           << result.out << "\nstderr:\n"
                           << result.err;
  return message;
}

class ImagectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("imagectl");
    auto san = San::Start();
    ASSERT_TRUE(san.ok()) << san.status();
    san_ = *std::move(san);
    auto cp = Process::StartServer(
        {RunfilePath("controlplane/controlplane"), "--listen=127.0.0.1:0",
         "--db=" + dir_ + "/cp.db", "--node-heartbeat-ms=500"},
        dir_ + "/controlplane.log");
    ASSERT_TRUE(cp.ok()) << cp.status();
    cp_ = std::make_unique<Process>(*std::move(cp));
    admin_key_ = std::string(absl::StripAsciiWhitespace(ReadFile(dir_ + "/cp.db.admin-key")));
    ASSERT_FALSE(admin_key_.empty());
    auto storaged = Process::StartServer(
        {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + dir_ + "/store",
         "--datacenter=dc1", "--node-id=n0", "--controlplane=" + cp_->address(),
         absl::StrCat("--portals=127.0.0.1:", san_->port())},
        dir_ + "/storaged.log");
    ASSERT_TRUE(storaged.ok()) << storaged.status();
    storaged_ = std::make_unique<Process>(*std::move(storaged));
  }

  // Runs imagectl with `args`; the environment carries only what `env` says
  // (plus HOME pointing at an empty directory, so no user config leaks in).
  Result Run(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    static int n = 0;
    const std::string out_path = absl::StrCat(dir_, "/out", ++n);
    const std::string err_path = absl::StrCat(dir_, "/err", n);
    std::vector<std::string> argv = {RunfilePath("client/imagectl")};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<std::string> envp = {"HOME=" + dir_ + "/home", "PATH=/usr/bin:/bin"};
    envp.insert(envp.end(), env.begin(), env.end());
    pid_t pid = fork();
    if (pid == 0) {
      int out = open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      int err = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      dup2(out, STDOUT_FILENO);
      dup2(err, STDERR_FILENO);
      std::vector<char*> c_argv, c_env;
      for (auto& a : argv) c_argv.push_back(a.data());
      c_argv.push_back(nullptr);
      for (auto& e : envp) c_env.push_back(e.data());
      c_env.push_back(nullptr);
      execve(c_argv[0], c_argv.data(), c_env.data());
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    Result result;
    result.code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    result.out = ReadFile(out_path);
    result.err = ReadFile(err_path);
    return result;
  }

  // imagectl as the operator, flags only.
  Result Admin(std::vector<std::string> args) {
    args.insert(args.begin(), {"--endpoint=" + cp_->address(), "--api-key=" + admin_key_});
    return Run(args);
  }

  // imagectl as alice, through the environment.
  Result User(const std::vector<std::string>& args) {
    return Run(args, {"IMAGECTL_ENDPOINT=" + cp_->address(), "IMAGECTL_API_KEY=" + user_key_});
  }

  // A thin LUN added to the pool; returns the SAN volume id.
  std::string AddVolume(const std::string& name, uint64_t size, Lun* lun_out = nullptr) {
    LunOptions options;
    options.thin = true;
    auto lun = san_->CreateLun(name, size, options);
    EXPECT_TRUE(lun.ok()) << lun.status();
    Result r = Admin({"admin", "san-volume", "create", "--datacenter=dc1", "--san-host=n0",
                      absl::StrCat("--portal=127.0.0.1:", san_->port()), "--iqn=" + lun->iqn,
                      absl::StrCat("--size=", size), "--thin", "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    if (lun_out != nullptr) *lun_out = *lun;
    return Parse<v1::SanVolume>(r).id();
  }

  std::string dir_;
  std::unique_ptr<San> san_;
  std::unique_ptr<Process> cp_;
  std::unique_ptr<Process> storaged_;
  std::string admin_key_;
  std::string user_key_;
};

TEST_F(ImagectlTest, BootstrapCreateDeployAndErrors) {
  // --- the operator sets up inventory and a user, all through imagectl ---
  Result r = Admin({"admin", "datacenter", "create", "dc1", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::Datacenter>(r).name(), "dc1");
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (true) {
    r = Admin({"admin", "storage-node", "list", "--state=up", "-o", "json"});
    ASSERT_EQ(r.code, 0) << r.err;
    if (Parse<v1::ListStorageNodesResponse>(r).storage_nodes_size() == 1) break;
    ASSERT_LT(absl::Now(), deadline) << "storaged did not register";
    absl::SleepFor(absl::Milliseconds(200));
  }
  r = Admin({"admin", "ip-pool", "create", "--datacenter=dc1", "--subnet=10.20.0.0/24",
             "--gateway=10.20.0.1", "--dns=10.20.0.2", "--ranges=10.20.0.10-10.20.0.20", "-o",
             "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::IpPool>(r).total_count(), 11);
  r = Admin({"admin", "account", "create", "acme", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string account = Parse<v1::Account>(r).id();
  r = Admin({"admin", "user", "create", "--account=" + account, "--username=alice",
             "--permissions=image_template_manage,server_view,server_provision", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::User alice = Parse<v1::User>(r);
  EXPECT_EQ(alice.permissions_size(), 3);
  EXPECT_TRUE(alice.device_access().all_servers());
  r = Admin({"admin", "key", "create", "--user=" + alice.id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  user_key_ = Parse<v1::CreateApiKeyResponse>(r).secret();
  ASSERT_FALSE(user_key_.empty());

  // A source server whose boot disk holds a real ext4 filesystem.
  Lun source_lun;
  const std::string source_volume = AddVolume("src", 16 * kMiB, &source_lun);
  const std::string files = dir_ + "/files";
  ASSERT_EQ(std::system(absl::StrCat("mkdir -p ", files, " && seq 1 100000 > ", files,
                                     "/numbers && mkfs.ext4 -q -F -d ", files, " ",
                                     source_lun.backing_path, " >/dev/null 2>&1")
                            .c_str()),
            0);
  Lun target_lun;
  AddVolume("boot1", 16 * kMiB, &target_lun);
  Lun config_lun;
  AddVolume("cfg1", 4 * kMiB, &config_lun);
  r = Admin({"admin", "server", "create", "--account=" + account, "--hostname=source",
             "--domain=example.com", "--datacenter=dc1", "--cpus=2", "--memory-mib=2048",
             "--os=DEBIAN_12_64", "--boot-volume=" + source_volume,
             "--nic=eth0,02:00:00:00:00:01,10.99.0.5/24", "--credential=os:root:s3cret", "-o",
             "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string source = Parse<v1::Server>(r).id();

  // --- alice captures and deploys ---
  r = User({"image", "create", "--server=" + source, "--name=golden", "--tags=web,demo", "-o",
            "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::Operation create = Parse<v1::Operation>(r);
  EXPECT_EQ(create.state(), v1::OPERATION_STATE_SUCCEEDED);
  const std::string image = create.image_template_id();
  ASSERT_FALSE(image.empty());
  // Not a terminal: plain progress lines on stderr, nothing else on stdout.
  EXPECT_TRUE(absl::StrContains(r.err, "operation " + create.id())) << r.err;

  r = User({"image", "list", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto list = Parse<v1::ListImageTemplatesResponse>(r);
  ASSERT_EQ(list.image_templates_size(), 1);
  EXPECT_EQ(list.image_templates(0).name(), "golden");
  EXPECT_EQ(list.image_templates(0).status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  // The proto JSON mapping: lowerCamelCase names, enums by name.
  EXPECT_TRUE(absl::StrContains(r.out, "\"imageTemplates\"")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "\"IMAGE_TEMPLATE_STATUS_ACTIVE\"")) << r.out;

  r = User({"image", "list"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "ID ")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, image)) << r.out;

  r = User({"image", "edit", image, "--note=nginx", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::ImageTemplate edited = Parse<v1::ImageTemplate>(r);
  EXPECT_EQ(edited.note(), "nginx");
  EXPECT_EQ(edited.tags_size(), 2);  // untouched: not in the update mask

  r = User({"image", "deploy", image, "--datacenter=dc1", "--hostnames=web1",
            "--domain=example.com", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::Operation deploy = Parse<v1::Operation>(r);
  ASSERT_EQ(deploy.state(), v1::OPERATION_STATE_SUCCEEDED) << r.out;
  ASSERT_EQ(deploy.deployed_servers().server_ids_size(), 1);

  r = User({"server", "detail", deploy.deployed_servers().server_ids(0), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::Server web1 = Parse<v1::Server>(r);
  EXPECT_EQ(web1.hostname(), "web1");
  EXPECT_EQ(web1.source_image_template_id(), image);
  ASSERT_EQ(web1.configuration().network_interfaces_size(), 1);
  EXPECT_TRUE(absl::StartsWith(web1.configuration().network_interfaces(0).ip_address(),
                               "10.20.0."));
  EXPECT_EQ(ReadFile(target_lun.backing_path), ReadFile(source_lun.backing_path));

  r = User({"op", "list", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::ListOperationsResponse>(r).operations_size(), 2);
  r = User({"op", "get", deploy.id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::Operation>(r).kind(), v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE);

  // --no-wait prints only the operation id; op watch follows it.
  r = User({"image", "create", "--server=" + source, "--name=golden2", "--no-wait"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string op_id(absl::StripAsciiWhitespace(r.out));
  EXPECT_EQ(op_id.size(), 36u) << r.out;
  r = User({"op", "watch", op_id, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::Operation>(r).state(), v1::OPERATION_STATE_SUCCEEDED);

  // A config file works as well as the environment.
  const std::string config = dir_ + "/imagectl.config";
  std::ofstream(config) << "endpoint=" << cp_->address() << "\napi_key=" << user_key_ << "\n";
  r = Run({"--config=" + config, "image", "detail", image, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::ImageTemplate>(r).note(), "nginx");

  // --- errors and exit codes ---
  r = User({"image", "list", "--no-such-flag"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "unknown flag --no-such-flag")) << r.err;
  r = User({"image", "detail"});
  EXPECT_EQ(r.code, 2) << r.err;
  r = User({"image", "detail", "00000000-0000-4000-8000-000000000000"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "NOT_FOUND")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "what to do")) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  r = Run({"--endpoint=" + cp_->address(), "--api-key=not-a-key", "image", "list"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "UNAUTHENTICATED")) << r.err;
  r = User({"admin", "account", "list"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "PERMISSION_DENIED")) << r.err;
  r = User({"image", "create", "--server=" + source, "--name=golden"});  // name taken
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "ALREADY_EXISTS")) << r.err;
  r = User({"image", "create", "--help"});
  EXPECT_EQ(r.code, 0);
  EXPECT_TRUE(absl::StrContains(r.out, "Example:")) << r.out;
}

}  // namespace
}  // namespace tests
