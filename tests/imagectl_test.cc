// imagectl end to end: a real tgtd, storaged and controlplane (tests/stack.h,
// one node n0 in dc1), driven only through the imagectl binary as a user
// would (subprocesses, stdout parsed as proto JSON, exit codes checked).
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/identity.pb.h"
#include "imagetemplates/v1/image_templates.pb.h"
#include "imagetemplates/v1/inventory.pb.h"
#include "imagetemplates/v1/operations.pb.h"
#include "tests/imagectl_runner.h"
#include "tests/process.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
constexpr uint64_t kMiB = 1 << 20;

using Result = ImagectlResult;

template <typename Message>
Message Parse(const Result& result) {
  Message message;
  auto status = google::protobuf::util::JsonStringToMessage(result.out, &message);
  EXPECT_TRUE(status.ok()) << status.ToString() << "\nstdout:\n"
                           << result.out << "\nstderr:\n"
                           << result.err;
  return message;
}

StackOptions OneNode() {
  StackOptions options;
  options.dir_prefix = "imagectl";
  options.node_datacenters = {"dc1"};
  return options;
}

class ImagectlTest : public ::testing::Test {
 protected:
  // SAN, controlplane, dc1 and storaged n0 UP.
  void SetUp() override {
    ASSERT_NO_FATAL_FAILURE(stack_.Start());
    dir_ = stack_.dir();
  }

  std::string Endpoint() { return stack_.controlplane().address(); }

  // Runs imagectl with `args`; the environment carries only what `env` says
  // (plus HOME pointing at an empty directory, so no user config leaks in).
  Result Run(const std::vector<std::string>& args, const std::vector<std::string>& env = {}) {
    return RunImagectl(dir_, args, env);
  }

  // imagectl as the operator, flags only.
  Result Admin(std::vector<std::string> args) {
    args.insert(args.begin(), {"--endpoint=" + Endpoint(), "--api-key=" + stack_.admin_key()});
    return Run(args);
  }

  // imagectl as alice, through the environment.
  Result User(const std::vector<std::string>& args) {
    return Run(args, {"IMAGECTL_ENDPOINT=" + Endpoint(), "IMAGECTL_API_KEY=" + user_key_});
  }

  // A thin LUN added to the pool with `admin san-volume create`; returns the
  // SAN volume id.
  std::string AddVolume(const std::string& name, uint64_t size, Lun* lun_out = nullptr) {
    LunOptions options;
    options.thin = true;
    auto lun = stack_.san(0).CreateLun(name, size, options);
    EXPECT_TRUE(lun.ok()) << lun.status();
    if (lun_out != nullptr) *lun_out = *lun;
    return AddVolumeRecord(lun->iqn, size);
  }

  // A pool record for target `iqn` on the SAN, which need not exist there.
  std::string AddVolumeRecord(const std::string& iqn, uint64_t size) {
    Result r = Admin({"admin", "san-volume", "create", "--datacenter=dc1", "--san-host=n0",
                      absl::StrCat("--portal=127.0.0.1:", stack_.san(0).port()), "--iqn=" + iqn,
                      absl::StrCat("--size=", size), "--thin", "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    return Parse<v1::SanVolume>(r).id();
  }

  // As the operator: an IP pool in dc1, account acme and its user alice
  // (user_key_) with `permissions`. Returns acme's id.
  std::string Bootstrap(const std::string& permissions) {
    Result r = Admin({"admin", "ip-pool", "create", "--datacenter=dc1",
                      "--subnet=10.20.0.0/24", "--gateway=10.20.0.1", "--dns=10.20.0.2",
                      "--ranges=10.20.0.10-10.20.0.20", "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    pool_ = Parse<v1::IpPool>(r);
    EXPECT_EQ(pool_.total_count(), 11);
    r = Admin({"admin", "account", "create", "acme", "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    const std::string account = Parse<v1::Account>(r).id();
    r = Admin({"admin", "user", "create", "--account=" + account, "--username=alice",
               "--permissions=" + permissions, "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    alice_ = Parse<v1::User>(r);
    EXPECT_TRUE(alice_.device_access().all_servers());
    r = Admin({"admin", "key", "create", "--user=" + alice_.id(), "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    user_key_ = Parse<v1::CreateApiKeyResponse>(r).secret();
    EXPECT_FALSE(user_key_.empty());
    return account;
  }

  // Waits until storaged n0 is registered and UP.
  void WaitNodeUp() {
    const absl::Time deadline = absl::Now() + absl::Seconds(60);
    while (true) {
      Result r = Admin({"admin", "storage-node", "list", "--state=up", "-o", "json"});
      ASSERT_EQ(r.code, 0) << r.err;
      if (Parse<v1::ListStorageNodesResponse>(r).storage_nodes_size() == 1) return;
      ASSERT_LT(absl::Now(), deadline) << "storaged did not register";
      absl::SleepFor(absl::Milliseconds(200));
    }
  }

  // A source server of `account` on `volume` with credentials os:root:s3cret.
  std::string AddServer(const std::string& account, const std::string& hostname,
                        const std::string& volume) {
    Result r = Admin({"admin", "server", "create", "--account=" + account,
                      "--hostname=" + hostname, "--domain=example.com", "--datacenter=dc1",
                      "--cpus=2", "--memory-mib=2048", "--os=DEBIAN_12_64",
                      "--boot-volume=" + volume, "--nic=eth0,02:00:00:00:00:01,10.99.0.5/24",
                      "--credential=os:root:s3cret", "-o", "json"});
    EXPECT_EQ(r.code, 0) << r.err;
    return Parse<v1::Server>(r).id();
  }

  Stack stack_{OneNode()};
  std::string dir_;
  std::string user_key_;
  v1::User alice_;
  v1::IpPool pool_;
};

TEST_F(ImagectlTest, BootstrapCreateDeployAndErrors) {
  // --- the operator sets up inventory and a user, all through imagectl ---
  const std::string account =
      Bootstrap("image_template_manage,server_view,server_provision");
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(alice_.permissions_size(), 3);
  Result r;

  // A source server whose boot disk holds a real ext4 filesystem.
  Lun source_lun;
  const std::string source_volume = AddVolume("src", 16 * kMiB, &source_lun);
  const std::string files = dir_ + "/files";
  ASSERT_EQ(Shell(absl::StrCat("mkdir -p ", files, " && seq 1 100000 > ", files,
                               "/numbers && mkfs.ext4 -q -F -d ", files, " ",
                               source_lun.backing_path, " >/dev/null 2>&1")),
            0);
  Lun target_lun;
  AddVolume("boot1", 16 * kMiB, &target_lun);
  Lun config_lun;
  AddVolume("cfg1", 4 * kMiB, &config_lun);
  const std::string source = AddServer(account, "source", source_volume);
  ASSERT_FALSE(HasFailure());

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

  // A copy to a second datacenter, whose storaged serves another SAN host:
  // `image datacenter add` follows the copy operation like create and deploy.
  r = Admin({"admin", "datacenter", "create", "dc2", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::Datacenter>(r).name(), "dc2");
  auto storaged2 = Process::StartServer(
      {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + dir_ + "/store2",
       "--datacenter=dc2", "--node-id=n1", "--controlplane=" + Endpoint(),
       "--portals=127.0.0.1:1", "--internal-token-file=" + stack_.internal_token_file()},
      dir_ + "/storaged2.log");
  ASSERT_TRUE(storaged2.ok()) << storaged2.status();
  for (const absl::Time until = absl::Now() + absl::Seconds(60);;) {
    r = Admin({"admin", "storage-node", "get", "n1", "-o", "json"});
    if (r.code == 0 && Parse<v1::StorageNode>(r).state() == v1::STORAGE_NODE_STATE_UP) break;
    ASSERT_LT(absl::Now(), until) << "the second storaged did not register: " << r.err;
    absl::SleepFor(absl::Milliseconds(200));
  }
  r = User({"image", "datacenter", "add", image, "--datacenters=dc2", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::Operation copy = Parse<v1::Operation>(r);
  EXPECT_EQ(copy.kind(), v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE);
  EXPECT_EQ(copy.state(), v1::OPERATION_STATE_SUCCEEDED) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "operation " + copy.id())) << r.err;  // progress
  r = User({"image", "datacenter", "list", image, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  std::map<std::string, v1::ImageTemplateLocation> locations;
  const auto listed = Parse<v1::ListImageTemplateLocationsResponse>(r);
  for (const auto& l : listed.locations()) locations[l.datacenter()] = l;
  ASSERT_EQ(locations.size(), 2u) << r.out;
  EXPECT_EQ(locations["dc2"].status(), v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
  EXPECT_EQ(locations["dc2"].operation_id(), copy.id());
  r = User({"image", "datacenter", "add", image, "--datacenters=dc2"});  // there already
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "ALREADY_EXISTS")) << r.err;
  r = User({"image", "datacenter", "remove", image, "--datacenters=dc2", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::ImageTemplate>(r).locations_size(), 1) << r.out;
  r = User({"image", "datacenter", "add", image, "--datacenters=dc2", "--no-wait"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string copy_id(absl::StripAsciiWhitespace(r.out));
  EXPECT_EQ(copy_id.size(), 36u) << r.out;
  r = User({"op", "watch", copy_id, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::Operation>(r).state(), v1::OPERATION_STATE_SUCCEEDED) << r.out;

  // A config file works as well as the environment.
  const std::string config = dir_ + "/imagectl.config";
  std::ofstream(config) << "endpoint=" << Endpoint() << "\napi_key=" << user_key_ << "\n";
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
  r = Run({"--endpoint=" + Endpoint(), "--api-key=not-a-key", "image", "list"});
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

// The admin get/update/delete commands and the server credentials and console
// commands: output content in both formats, and exit codes.
TEST_F(ImagectlTest, AdminGetUpdateDeleteCommands) {
  const std::string account = Bootstrap("image_template_manage,server_view,user_manage");
  ASSERT_FALSE(HasFailure());
  const std::string missing = "00000000-0000-4000-8000-000000000000";

  // Every command answers --help with an example.
  for (const char* path :
       {"admin account get", "admin account update", "admin user get", "admin user delete",
        "admin key revoke", "admin datacenter delete", "admin san-volume get",
        "admin san-volume delete", "admin ip-pool get", "admin ip-pool delete",
        "admin server update", "admin server delete", "admin storage-node get",
        "admin storage-node delete", "server credentials get", "server credentials set",
        "server console"}) {
    std::vector<std::string> args = absl::StrSplit(path, ' ');
    args.push_back("--help");
    Result r = Run(args);
    EXPECT_EQ(r.code, 0) << path << ": " << r.err;
    EXPECT_TRUE(absl::StrContains(r.out, "Example:\n  imagectl " + std::string(path)))
        << path << ": " << r.out;
  }

  // --- accounts ---
  Result r = Admin({"admin", "account", "get", account, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::Account acme = Parse<v1::Account>(r);
  EXPECT_EQ(acme.id(), account);
  EXPECT_EQ(acme.name(), "acme");
  EXPECT_FALSE(acme.block_public_sharing());
  r = Admin({"admin", "account", "get", account});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "name:")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "acme")) << r.out;
  r = User({"admin", "account", "update", account, "--name=acme-corp",
            "--block-public-sharing", "-o", "json"});  // a user manager, own account
  ASSERT_EQ(r.code, 0) << r.err;
  acme = Parse<v1::Account>(r);
  EXPECT_EQ(acme.name(), "acme-corp");
  EXPECT_TRUE(acme.block_public_sharing());
  r = Admin({"admin", "account", "update", account, "--block-public-sharing=false", "-o",
             "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  acme = Parse<v1::Account>(r);
  EXPECT_EQ(acme.name(), "acme-corp");  // not in the update mask
  EXPECT_FALSE(acme.block_public_sharing());
  r = Admin({"admin", "account", "update", account});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "give --name or --block-public-sharing")) << r.err;
  r = Admin({"admin", "account", "get", missing});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "NOT_FOUND")) << r.err;
  r = Admin({"admin", "account", "get", "not-a-uuid"});
  EXPECT_EQ(r.code, 2) << r.err;

  // --- users and keys ---
  r = Admin({"admin", "user", "create", "--account=" + account, "--username=bob",
             "--permissions=server_view", "--servers=", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::User bob = Parse<v1::User>(r);
  r = User({"admin", "user", "get", bob.id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::User got = Parse<v1::User>(r);
  EXPECT_EQ(got.username(), "bob");
  EXPECT_EQ(got.account_id(), account);
  ASSERT_EQ(got.permissions_size(), 1);
  EXPECT_EQ(got.permissions(0), v1::PERMISSION_SERVER_VIEW);
  EXPECT_FALSE(got.device_access().all_servers());
  r = User({"admin", "user", "get", bob.id()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "server_view")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "no servers")) << r.out;
  r = Admin({"admin", "key", "create", "--user=" + bob.id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::CreateApiKeyResponse bob_key = Parse<v1::CreateApiKeyResponse>(r);
  r = Admin({"admin", "key", "revoke", bob_key.api_key().id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(Parse<v1::ApiKey>(r).revoked());
  r = Run({"--endpoint=" + Endpoint(), "--api-key=" + bob_key.secret(), "whoami"});
  EXPECT_EQ(r.code, 3) << r.err;  // revoked at once
  r = User({"admin", "user", "delete", bob.id()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "deleted user " + bob.id() + "\n");
  r = User({"admin", "user", "get", bob.id()});
  EXPECT_EQ(r.code, 3) << r.err;
  r = User({"admin", "user", "delete", alice_.id()});  // herself
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "FAILED_PRECONDITION")) << r.err;
  r = User({"admin", "user", "delete", missing, "-o", "json"});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;

  // --- storage nodes ---
  r = Admin({"admin", "storage-node", "get", "n0", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::StorageNode node = Parse<v1::StorageNode>(r);
  EXPECT_EQ(node.datacenter(), "dc1");
  EXPECT_EQ(node.state(), v1::STORAGE_NODE_STATE_UP);
  ASSERT_EQ(node.served_portals_size(), 1);
  EXPECT_EQ(node.served_portals(0), absl::StrCat("127.0.0.1:", stack_.san(0).port()));
  EXPECT_GT(node.capacity_bytes(), 0);
  r = Admin({"admin", "storage-node", "get", "n0"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "UP")) << r.out;
  r = User({"admin", "storage-node", "get", "n0"});
  EXPECT_EQ(r.code, 3) << r.err;  // operators only
  EXPECT_TRUE(absl::StrContains(r.err, "PERMISSION_DENIED")) << r.err;
  // Forgotten while it serves no volume; the running storaged registers again.
  r = Admin({"admin", "storage-node", "delete", "n0", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(r.out), "{}");
  WaitNodeUp();
  ASSERT_FALSE(HasFailure());
  r = Admin({"admin", "storage-node", "get", "no-such-node"});
  EXPECT_EQ(r.code, 3) << r.err;

  // --- SAN volumes and servers ---
  const std::string volume = AddVolume("boot", 8 * kMiB);
  r = Admin({"admin", "storage-node", "delete", "n0"});  // serves a volume now
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "FAILED_PRECONDITION")) << r.err;
  r = Admin({"admin", "san-volume", "get", volume, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::SanVolume v = Parse<v1::SanVolume>(r);
  EXPECT_EQ(v.id(), volume);
  EXPECT_EQ(v.size_bytes(), static_cast<int64_t>(8 * kMiB));
  EXPECT_EQ(v.state(), v1::SAN_VOLUME_STATE_FREE);
  EXPECT_EQ(v.iscsi().iqn(), "iqn.2026-11.test:boot");
  r = Admin({"admin", "san-volume", "get", missing});
  EXPECT_EQ(r.code, 3) << r.err;
  const std::string server = AddServer(account, "web0", volume);
  ASSERT_FALSE(HasFailure());
  r = Admin({"admin", "san-volume", "get", volume});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "ATTACHED")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, server)) << r.out;
  r = Admin({"admin", "san-volume", "delete", volume});
  EXPECT_EQ(r.code, 1) << r.err;  // attached
  EXPECT_TRUE(absl::StrContains(r.err, "FAILED_PRECONDITION")) << r.err;

  r = Admin({"admin", "server", "update", server, "--hostname=web9", "--power=stopped",
             "--memory-mib=4096", "--boot-mode=uefi", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::Server s = Parse<v1::Server>(r);
  EXPECT_EQ(s.hostname(), "web9");
  EXPECT_EQ(s.domain(), "example.com");  // untouched
  EXPECT_EQ(s.power_state(), v1::POWER_STATE_STOPPED);
  EXPECT_EQ(s.configuration().memory_mib(), 4096);
  EXPECT_EQ(s.configuration().boot_mode(), v1::BOOT_MODE_UEFI);
  EXPECT_EQ(s.configuration().cpu_count(), 2);  // kept from the server
  EXPECT_EQ(s.configuration().os_reference(), "DEBIAN_12_64");
  ASSERT_EQ(s.configuration().network_interfaces_size(), 1);
  EXPECT_EQ(s.configuration().network_interfaces(0).mac_address(), "02:00:00:00:00:01");
  r = Admin({"admin", "server", "update", server, "--power=sideways"});
  EXPECT_EQ(r.code, 2) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "running, stopped")) << r.err;
  r = Admin({"admin", "server", "update", server});
  EXPECT_EQ(r.code, 2) << r.err;
  r = Admin({"admin", "server", "update", server, "--hostname=-bad-"});
  EXPECT_EQ(r.code, 2) << r.err;  // the server's INVALID_ARGUMENT
  EXPECT_TRUE(absl::StrContains(r.err, "INVALID_ARGUMENT")) << r.err;
  r = User({"admin", "server", "update", server, "--hostname=web8"});
  EXPECT_EQ(r.code, 3) << r.err;  // operators only
  r = Admin({"admin", "server", "update", missing, "--cpus=4"});
  EXPECT_EQ(r.code, 3) << r.err;

  // Credentials: alice lacks server_credentials_view; the operator has it all.
  r = User({"server", "credentials", "get", server});
  EXPECT_EQ(r.code, 3) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "PERMISSION_DENIED")) << r.err;
  r = Admin({"server", "credentials", "get", server});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StartsWith(r.out, "SOFTWARE")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "s3cret")) << r.out;
  r = Admin({"server", "credentials", "set", server, "os:root:n3w", "mysql:admin:pa:ss,x"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = Admin({"server", "credentials", "get", server, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto creds = Parse<v1::GetServerCredentialsResponse>(r);
  ASSERT_EQ(creds.credentials_size(), 2) << r.out;
  std::map<std::string, std::string> passwords;
  for (const auto& c : creds.credentials()) passwords[c.software() + ":" + c.username()] = c.password();
  EXPECT_EQ(passwords["os:root"], "n3w");
  EXPECT_EQ(passwords["mysql:admin"], "pa:ss,x");
  r = Admin({"server", "credentials", "set", server, "nocolons"});
  EXPECT_EQ(r.code, 2) << r.err;
  r = Admin({"server", "credentials", "set", server});
  EXPECT_EQ(r.code, 2) << r.err;
  r = Admin({"server", "credentials", "set", server, "--clear", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_FALSE(Parse<v1::Server>(r).has_credentials());
  r = Admin({"server", "credentials", "get", server, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::GetServerCredentialsResponse>(r).credentials_size(), 0);

  // The console needs a compute driver that can read it; the inventory
  // driver cannot, which must show as UNAVAILABLE (exit 1), not as output.
  r = User({"server", "console", server, "--lines=5", "-o", "json"});
  if (r.code == 0) {
    EXPECT_LE(Parse<v1::GetServerConsoleResponse>(r).lines_size(), 5);
  } else {
    EXPECT_EQ(r.code, 1) << r.err;
    EXPECT_TRUE(absl::StrContains(r.err, "UNAVAILABLE")) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
  r = User({"server", "console", server, "--lines=20000"});
  EXPECT_EQ(r.code, 2) << r.err;
  r = User({"server", "console", missing});
  EXPECT_EQ(r.code, 3) << r.err;

  r = User({"admin", "server", "delete", server});
  EXPECT_EQ(r.code, 3) << r.err;  // operators only
  r = Admin({"admin", "server", "delete", server});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "deleted server " + server + "\n");
  r = Admin({"server", "detail", server});
  EXPECT_EQ(r.code, 3) << r.err;
  r = Admin({"admin", "san-volume", "get", volume, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::SanVolume>(r).state(), v1::SAN_VOLUME_STATE_FREE);
  r = Admin({"admin", "san-volume", "delete", volume});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "deleted SAN volume " + volume + "\n");
  r = Admin({"admin", "san-volume", "get", volume});
  EXPECT_EQ(r.code, 3) << r.err;

  // --- IP pools ---
  r = User({"admin", "ip-pool", "get", pool_.id()});
  EXPECT_EQ(r.code, 3) << r.err;  // needs server_provision
  r = Admin({"admin", "ip-pool", "get", pool_.id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  v1::IpPool pool = Parse<v1::IpPool>(r);
  EXPECT_EQ(pool.subnet(), "10.20.0.0/24");
  EXPECT_EQ(pool.allocated_count(), 0);
  ASSERT_EQ(pool.ranges_size(), 1);
  EXPECT_EQ(pool.ranges(0).end(), "10.20.0.20");
  r = Admin({"admin", "ip-pool", "get", pool_.id()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "10.20.0.10-10.20.0.20")) << r.out;
  EXPECT_TRUE(absl::StrContains(r.out, "0/11")) << r.out;
  r = Admin({"admin", "ip-pool", "delete", pool_.id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(absl::StripAsciiWhitespace(r.out), "{}");
  r = Admin({"admin", "ip-pool", "get", pool_.id()});
  EXPECT_EQ(r.code, 3) << r.err;

  // --- datacenters ---
  r = Admin({"admin", "datacenter", "delete", "dc1"});  // n0 is still in it
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "FAILED_PRECONDITION")) << r.err;
  r = Admin({"admin", "datacenter", "create", "dc2"});
  ASSERT_EQ(r.code, 0) << r.err;
  r = User({"admin", "datacenter", "delete", "dc2"});
  EXPECT_EQ(r.code, 3) << r.err;
  r = Admin({"admin", "datacenter", "delete", "dc2"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(r.out, "deleted datacenter dc2\n");
  r = Admin({"admin", "datacenter", "list", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto dcs = Parse<v1::ListDatacentersResponse>(r);
  ASSERT_EQ(dcs.datacenters_size(), 1);
  EXPECT_EQ(dcs.datacenters(0).name(), "dc1");
  r = Admin({"admin", "datacenter", "delete", "dc2"});
  EXPECT_EQ(r.code, 3) << r.err;
}

// Exit code 4: a create whose source disk cannot be read ends FAILED, and a
// real create cancelled with `op cancel` mid-capture ends CANCELLED.
TEST_F(ImagectlTest, FailedAndCancelledOperationsExitFour) {
  const std::string account = Bootstrap("image_template_manage,server_view,server_provision");
  ASSERT_FALSE(HasFailure());

  // The pool names a target tgtd does not have: the capture fails NOT_FOUND.
  const std::string ghost = AddVolumeRecord("iqn.2026-11.test:ghost", 8 * kMiB);
  const std::string broken = AddServer(account, "broken", ghost);
  ASSERT_FALSE(HasFailure());
  Result r = User({"image", "create", "--server=" + broken, "--name=never", "-o", "json"});
  EXPECT_EQ(r.code, 4) << r.err;
  v1::Operation failed = Parse<v1::Operation>(r);
  EXPECT_EQ(failed.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_NE(failed.error().code(), 0);
  EXPECT_TRUE(absl::StrContains(r.err, "ended FAILED")) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "what to do")) << r.err;
  r = User({"image", "detail", failed.image_template_id(), "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::ImageTemplate>(r).status(), v1::IMAGE_TEMPLATE_STATUS_FAILED);
  r = User({"op", "watch", failed.id()});  // an ended operation: its result again
  EXPECT_EQ(r.code, 4) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "FAILED")) << r.out;
  r = User({"op", "cancel", failed.id()});  // already terminal
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_TRUE(absl::StrContains(r.err, "FAILED_PRECONDITION")) << r.err;

  // A source disk of 512 MiB of random bytes takes seconds to capture.
  const uint64_t size = 512 * kMiB;
  const absl::Time t0 = absl::Now();
  Lun lun;
  const std::string volume = AddVolume("big", size, &lun);
  ASSERT_EQ(Shell(absl::StrCat("head -c ", size, " /dev/urandom | dd of=", lun.backing_path,
                               " bs=1M conv=notrunc status=none")),
            0);
  const std::string source = AddServer(account, "big", volume);
  ASSERT_FALSE(HasFailure());
  r = User({"image", "create", "--server=" + source, "--name=cancelled", "--no-wait"});
  ASSERT_EQ(r.code, 0) << r.err;
  const std::string op(absl::StripAsciiWhitespace(r.out));
  ASSERT_EQ(op.size(), 36u) << r.out;
  // Cancel once bytes move.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (true) {
    r = User({"op", "get", op, "-o", "json"});
    ASSERT_EQ(r.code, 0) << r.err;
    const v1::Operation running = Parse<v1::Operation>(r);
    ASSERT_NE(running.state(), v1::OPERATION_STATE_SUCCEEDED) << "capture ended before the cancel";
    ASSERT_NE(running.state(), v1::OPERATION_STATE_FAILED) << r.out;
    if (running.progress().bytes_done() > 0) break;
    ASSERT_LT(absl::Now(), deadline) << "the capture did not start";
    absl::SleepFor(absl::Milliseconds(20));
  }
  // storaged is frozen while the cancel is sent, so a fast (or a slowed
  // down) machine cannot finish the capture first.
  const pid_t storaged = stack_.storaged(0).pid();
  ASSERT_EQ(::kill(storaged, SIGSTOP), 0);
  const absl::Time t1 = absl::Now();
  r = User({"op", "cancel", op, "-o", "json"});
  ASSERT_EQ(::kill(storaged, SIGCONT), 0);
  ASSERT_EQ(r.code, 0) << r.err;
  const v1::Operation cancelling = Parse<v1::Operation>(r);
  EXPECT_TRUE(cancelling.state() == v1::OPERATION_STATE_CANCELLING ||
              cancelling.state() == v1::OPERATION_STATE_CANCELLED)
      << r.out;
  EXPECT_LT(cancelling.progress().bytes_done(), static_cast<int64_t>(size)) << r.out;
  r = User({"op", "watch", op, "-o", "json"});
  EXPECT_EQ(r.code, 4) << r.err;
  const v1::Operation cancelled = Parse<v1::Operation>(r);
  EXPECT_EQ(cancelled.state(), v1::OPERATION_STATE_CANCELLED) << r.out;
  EXPECT_TRUE(absl::StrContains(r.err, "ended CANCELLED")) << r.err;
  std::printf("fill + start + capture running: %s; cancel to CANCELLED: %s\n",
              absl::FormatDuration(t1 - t0).c_str(), absl::FormatDuration(absl::Now() - t1).c_str());
  r = User({"op", "get", op});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_TRUE(absl::StrContains(r.out, "CANCELLED")) << r.out;
  // Undone: the server is running again and no template became ACTIVE.
  r = User({"server", "detail", source, "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::Server>(r).power_state(), v1::POWER_STATE_RUNNING);
  r = User({"image", "list", "--status=active", "-o", "json"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(Parse<v1::ListImageTemplatesResponse>(r).image_templates_size(), 0) << r.out;
}

// stdout of `imagectl ARGS` (no stack needed: --help only).
std::string Help(const std::string& args) {
  std::string out;
  FILE* pipe = popen((RunfilePath("client/imagectl") + " " + args + " 2>/dev/null").c_str(), "r");
  if (pipe == nullptr) return out;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), pipe)) > 0) out.append(buffer, n);
  pclose(pipe);
  return out;
}

// Every command's --help has an example, and the README's command reference
// names every command imagectl has and every flag of each (client/imagectl/readme_reference.py writes those rows).
TEST(ImagectlReadmeTest, DocumentsEveryCommandAndFlag) {
  const std::string readme = ReadFile(RunfilePath("README.md"));
  ASSERT_FALSE(readme.empty());
  const std::string top = Help("--help");
  const size_t begin = top.find("Commands:\n");
  ASSERT_NE(begin, std::string::npos) << top;
  const std::string commands = top.substr(begin + 10, top.find("\n\n", begin) - begin - 10);
  int count = 0;
  for (absl::string_view line : absl::StrSplit(commands, '\n')) {
    const std::string path(absl::StripAsciiWhitespace(line.substr(0, 32)));
    ++count;
    const std::string help = Help(path + " --help");
    EXPECT_TRUE(absl::StrContains(help, "Example:\n  imagectl " + path)) << help;
    const size_t row = readme.find("\n| `" + path);
    ASSERT_NE(row, std::string::npos) << "README lacks a row for `imagectl " << path << "`";
    const std::string text = readme.substr(row + 1, readme.find('\n', row + 1) - row - 1);
    const size_t flags = help.find("\nFlags:\n");
    const size_t global = help.find("\nGlobal flags");
    if (flags == std::string::npos || flags > global) continue;
    for (absl::string_view flag_line :
         absl::StrSplit(help.substr(flags + 8, global - flags - 8), '\n')) {
      if (!absl::StartsWith(flag_line, "  --")) continue;
      const std::string flag(flag_line.substr(2, flag_line.find(' ', 2) - 2));
      EXPECT_TRUE(absl::StrContains(text, "`" + flag + "`"))
          << "README's row for " << path << " lacks " << flag << ":\n" << text;
    }
  }
  EXPECT_GT(count, 60);
}

}  // namespace
}  // namespace tests
