// Real servers end to end: tgtd, storaged and the controlplane with the QEMU
// compute driver, every server a qemu-system-x86_64 (TCG) booting the Debian
// guest of tools/make_boot_guest.sh straight from its SAN volume.
//
//  - a source VM boots from its LUN; a template is created while it runs (it
//    shuts down, is captured only after QEMU exited, and boots again);
//  - two servers deployed from the template boot from their restored volumes;
//    each console shows its own hostname, cloud-init's network table with its
//    own address and MAC, and a machine-id and SSH host key of its own;
//  - a deploy from a blank disk's template fails with the console's reason.
//
// Needs the guest (IMAGETEMPLATES_GUEST_DIR, default
// /var/tmp/imagetemplates-guest; tools/test.sh builds it): fails, never skips,
// without it. Takes several minutes.
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "controlplane/qemu_compute_driver.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/process.h"
#include "tests/rpc.h"
#include "tests/san.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kGuestDiskSize = 2048 * kMiB;
// The guest prints this once cloud-init finished (tools/make_boot_guest.sh).
constexpr char kIdentity[] = "imagetemplates-identity:";
constexpr char kSourceMac[] = "02:00:00:00:00:01";

#define ASSERT_OK(status) ASSERT_TRUE((status).ok()) << (status).error_message()

// Calls wait longer than elsewhere: the machine is busy booting guests.
constexpr std::chrono::seconds kCallTimeout(60);

bool Exists(const std::string& path) { return access(path.c_str(), R_OK) == 0; }

// "key=value" fields of the guest's identity line.
std::map<std::string, std::string> IdentityFields(const std::string& line) {
  std::map<std::string, std::string> fields;
  std::string rest = line.substr(line.find(kIdentity) + strlen(kIdentity));
  for (absl::string_view word : absl::StrSplit(rest, ' ', absl::SkipEmpty())) {
    std::pair<std::string, std::string> kv = absl::StrSplit(word, absl::MaxSplits('=', 1));
    fields[kv.first] = kv.second;
  }
  return fields;
}

// The time at the start of a log line ("2026-11-27T06:41:54.124Z ...").
absl::Time LogTime(const std::string& line) {
  absl::Time t;
  std::string err;
  std::string stamp = line.substr(0, line.find(' '));
  EXPECT_TRUE(absl::ParseTime("%Y-%m-%dT%H:%M:%E*SZ", stamp, &t, &err))
      << line << ": " << err;
  return t;
}

// The first line of `log` containing every one of `words`.
std::string FirstLine(const std::string& log, const std::vector<std::string>& words) {
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    bool all = true;
    for (const std::string& w : words) all = all && absl::StrContains(line, w);
    if (all) return std::string(line);
  }
  return "";
}

std::string Seconds(absl::Duration d) {
  return absl::StrFormat("%.0f s", absl::ToDoubleSeconds(d));
}

class QemuE2eTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* env = getenv("IMAGETEMPLATES_GUEST_DIR");
    guest_ = env != nullptr && *env != '\0' ? env : "/var/tmp/imagetemplates-guest";
    for (const char* file : {"disk.img", "vmlinuz", "initrd.img"}) {
      ASSERT_TRUE(Exists(guest_ + "/" + file))
          << guest_ << "/" << file << " is missing: build the guest with "
          << "tools/make_boot_guest.sh (tools/test.sh does) or point "
          << "IMAGETEMPLATES_GUEST_DIR at it";
    }
    ASSERT_EQ(Shell("command -v qemu-system-x86_64 >/dev/null"), 0)
        << "qemu-system-x86_64 is missing (tools/install-deps.sh installs it)";
    // Short: QMP socket paths are limited to 107 bytes.
    char state[] = "/tmp/itq-XXXXXX";
    ASSERT_NE(mkdtemp(state), nullptr);
    state_dir_ = state;
    StackOptions options;
    options.dir_prefix = "qemu-e2e";
    options.node_datacenters = {"dc1"};
    options.controlplane_flags = {
        "--compute-driver=qemu", "--qemu-state-dir=" + state_dir_,
        "--qemu-kernel=" + guest_ + "/vmlinuz", "--qemu-initrd=" + guest_ + "/initrd.img",
        std::string("--qemu-boot-marker=") + kIdentity, "--qemu-boot-timeout=900",
        "--power-off-timeout=240"};
    stack_ = std::make_unique<Stack>(options);
    stack_->Start();
    dir_ = stack_->dir();  // for TearDown's logs, also after a failed start
    ASSERT_FALSE(HasFatalFailure());
    admin_ = stack_->admin_key();
    stack_->AddIpPool("dc1", "10.20.0.0/24", "10.20.0.1", "10.20.0.10", "10.20.0.40",
                      {"10.20.0.2"});
    const User user = stack_->NewUser(
        "acme", {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_VIEW,
                 v1::PERMISSION_SERVER_PROVISION});
    account_id_ = user.account_id;
    key_ = user.key;
    ASSERT_FALSE(key_.empty());
  }

  void TearDown() override {
    // QEMU runs daemonized: stop every server this test started.
    if (!state_dir_.empty()) {
      Shell("for p in " + state_dir_ +
            "/*/qemu.pid; do [ -f \"$p\" ] && kill -9 $(cat \"$p\") 2>/dev/null; "
            "done; true");
      for (const std::string& id : started_servers_) {
        std::string console = state_dir_ + "/" + id + "/console.log";
        Shell("cp '" + console + "' '" + dir_ + "/console-" + id + ".log' 2>/dev/null");
      }
      Shell("rm -rf '" + state_dir_ + "'");
    }
    if (getenv("TEST_UNDECLARED_OUTPUTS_DIR") != nullptr && !dir_.empty()) {
      Shell(absl::StrCat("cp ", dir_, "/*.log \"$TEST_UNDECLARED_OUTPUTS_DIR\"/ 2>/dev/null"));
    }
    // The stack deletes its stores and SAN LUNs; the copied guest disks here
    // are this test's own.
    stack_.reset();
    if (!dir_.empty() && !KeepTestData()) Shell("rm -f '" + dir_ + "'/*.img");
  }

  // A thin LUN added to the pool, its bytes from `contents` (a file copied
  // sparsely) or zeroes; returns the volume id.
  std::string AddVolume(const std::string& name, uint64_t size,
                        const std::string& contents = "", Lun* out = nullptr) {
    LunOptions options;
    options.thin = true;
    if (!contents.empty()) {
      options.backing_path = dir_ + "/" + name + ".img";
      EXPECT_EQ(Shell("cp --sparse=always '" + contents + "' '" +
                      options.backing_path + "'"),
                0);
    }
    return stack_->AddVolume(0, name, size, out, options);
  }

  // A NoCloud seed for the source (what a deploy writes for new servers).
  std::string SourceSeed() {
    const std::string seed = dir_ + "/seed";
    EXPECT_EQ(Shell("mkdir -p " + seed), 0);
    std::ofstream(seed + "/meta-data")
        << "instance-id: source-instance-1\nlocal-hostname: source\n";
    std::ofstream(seed + "/user-data") << "#cloud-config\n";
    std::ofstream(seed + "/network-config")
        << "version: 2\nethernets:\n  eth0:\n    match: {macaddress: \""
        << kSourceMac << "\"}\n    set-name: eth0\n    addresses: [10.99.0.5/24]\n";
    const std::string iso = dir_ + "/seed.iso";
    EXPECT_EQ(Shell("cd " + seed + " && xorriso -as mkisofs -o " + iso +
                    " -V cidata -J -r meta-data user-data network-config "
                    ">/dev/null 2>&1"),
              0);
    return iso;
  }

  // A server of the account; disks in order (the first boots), `config` the
  // config drive volume or empty.
  std::string AddServer(const std::string& hostname, const std::string& boot,
                        const std::string& config) {
    v1::CreateServerRequest request;
    request.set_account_id(account_id_);
    request.set_type(v1::SERVER_TYPE_VIRTUAL);
    request.set_hostname(hostname);
    request.set_domain("example.com");
    request.set_datacenter("dc1");
    request.mutable_configuration()->set_cpu_count(2);
    request.mutable_configuration()->set_memory_mib(1024);
    request.mutable_configuration()->set_os_reference("DEBIAN_12_64");
    auto* nic = request.mutable_configuration()->add_network_interfaces();
    nic->set_name("eth0");
    nic->set_mac_address(kSourceMac);
    nic->set_ip_address("10.99.0.5/24");
    auto* disk = request.add_disks();
    disk->set_device_index(0);
    disk->set_boot(true);
    disk->set_san_volume_id(boot);
    if (!config.empty()) {
      auto* cfg = request.add_disks();
      cfg->set_device_index(15);
      cfg->set_config_drive(true);
      cfg->set_san_volume_id(config);
    }
    auto* cred = request.add_credentials();
    cred->set_software("os");
    cred->set_username("root");
    cred->set_password("s3cret");
    v1::CreateServerResponse response;
    grpc::Status status = Call(stack_->inventory(), &v1::InventoryService::Stub::CreateServer,
                               admin_, request, &response, kCallTimeout);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.server().id();
  }

  v1::Operation WaitOperation(const std::string& id, absl::Duration timeout) {
    return stack_->WaitOperation(key_, id, timeout, absl::Seconds(1));
  }

  v1::Operation Create(const std::string& server_id, const std::string& name) {
    v1::CreateImageTemplateRequest request;
    request.set_server_id(server_id);
    request.set_name(name);
    v1::Operation op;
    grpc::Status status = Call(stack_->templates(),
                               &v1::ImageTemplateService::Stub::CreateImageTemplate, key_,
                               request, &op, kCallTimeout);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return op;
  }

  v1::Operation Deploy(const std::string& template_id,
                       const std::vector<std::string>& hostnames) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(template_id);
    request.set_datacenter("dc1");
    request.set_quantity(static_cast<int32_t>(hostnames.size()));
    for (const std::string& h : hostnames) request.add_hostnames(h);
    request.set_domain("example.com");
    v1::Operation op;
    grpc::Status status = Call(stack_->templates(),
                               &v1::ImageTemplateService::Stub::DeployImageTemplate, key_,
                               request, &op, kCallTimeout);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return op;
  }

  v1::ImageTemplate GetTemplate(const std::string& id) {
    v1::GetImageTemplateRequest request;
    request.set_id(id);
    v1::GetImageTemplateResponse response;
    EXPECT_TRUE(Call(stack_->templates(), &v1::ImageTemplateService::Stub::GetImageTemplate,
                     key_, request, &response, kCallTimeout)
                    .ok());
    return response.image_template();
  }

  v1::Server GetServer(const std::string& id) {
    v1::GetServerRequest request;
    request.set_id(id);
    v1::GetServerResponse response;
    EXPECT_TRUE(Call(stack_->inventory(), &v1::InventoryService::Stub::GetServer, key_,
                     request, &response, kCallTimeout)
                    .ok());
    return response.server();
  }

  // The whole console through the API (as the user sees it).
  std::vector<std::string> Console(const std::string& server_id) {
    started_servers_.insert(server_id);
    v1::GetServerConsoleRequest request;
    request.set_server_id(server_id);
    request.set_line_count(10000);
    v1::GetServerConsoleResponse response;
    grpc::Status status = Call(stack_->inventory(),
                               &v1::InventoryService::Stub::GetServerConsole, key_, request,
                               &response, kCallTimeout);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return {response.lines().begin(), response.lines().end()};
  }

  // The identity lines the guest printed, oldest first.
  std::vector<std::map<std::string, std::string>> Identities(const std::string& server_id) {
    std::vector<std::map<std::string, std::string>> out;
    for (const std::string& line : Console(server_id)) {
      if (absl::StrContains(line, kIdentity)) out.push_back(IdentityFields(line));
    }
    return out;
  }

  std::string guest_;
  std::string state_dir_;
  std::unique_ptr<Stack> stack_;
  std::string dir_;
  std::string admin_;
  std::string account_id_;
  std::string key_;
  std::set<std::string> started_servers_;
};

TEST_F(QemuE2eTest, RunningSourceCapturedAndDeployedServersBootWithOwnIdentity) {
  const absl::Time test_start = absl::Now();
  Lun boot_lun, seed_lun;
  const std::string boot = AddVolume("src-boot", kGuestDiskSize, guest_ + "/disk.img", &boot_lun);
  const std::string config = AddVolume("src-cfg", 4 * kMiB, SourceSeed(), &seed_lun);
  const std::string source = AddServer("source", boot, config);
  ASSERT_FALSE(source.empty());
  started_servers_.insert(source);
  for (int i = 1; i <= 2; ++i) {
    AddVolume(absl::StrCat("boot", i), kGuestDiskSize);
    AddVolume(absl::StrCat("cfg", i), 4 * kMiB);
  }

  // "iscsi://127.0.0.1:PORT/IQN/1" as QEMU's drive options.
  auto LunDrive = [](const Lun& lun) {
    controlplane::QemuDrive drive;
    absl::string_view rest = absl::StripPrefix(lun.url, "iscsi://");
    drive.portal = std::string(rest.substr(0, rest.find('/')));
    drive.iqn = lun.iqn;
    drive.lun = 1;
    return drive;
  };
  // The hypervisor boots the source from its LUN: a driver on the same state
  // directory as the control plane's, so the control plane finds it running.
  controlplane::QemuOptions options;
  options.state_dir = state_dir_;
  options.kernel = guest_ + "/vmlinuz";
  options.initrd = guest_ + "/initrd.img";
  options.boot_marker = kIdentity;
  options.boot_timeout = absl::Minutes(15);
    auto hypervisor = controlplane::QemuComputeDriver::Create(
      options,
      [&](const std::string& id) -> absl::StatusOr<controlplane::QemuMachineSpec> {
        if (id != source) return absl::NotFoundError(id);
        controlplane::QemuMachineSpec spec;
        spec.server_id = id;
        spec.disks = {LunDrive(boot_lun)};
        spec.config_drive = LunDrive(seed_lun);
        spec.mac = kSourceMac;
        return spec;
      },
      nullptr);
  ASSERT_TRUE(hypervisor.ok()) << hypervisor.status();
  absl::Time t = absl::Now();
  absl::Status booted = (*hypervisor)->PowerOn(source, absl::Minutes(15), nullptr);
  ASSERT_TRUE(booted.ok()) << booted;
  const absl::Duration source_boot = absl::Now() - t;
  auto ids = Identities(source);
  ASSERT_EQ(ids.size(), 1u);
  EXPECT_EQ(ids[0]["hostname"], "source");
  EXPECT_EQ(ids[0]["last-shutdown"], "none");
  const std::string source_machine_id = ids[0]["machine-id"];
  const std::string source_host_key = ids[0]["ssh-host-key"];
  ASSERT_EQ(source_machine_id.size(), 32u) << source_machine_id;
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_RUNNING);

  // Create while it runs: shut down, captured, booted again.
  t = absl::Now();
  v1::Operation create = Create(source, "golden");
  create = WaitOperation(create.id(), absl::Minutes(25));
  const absl::Duration create_time = absl::Now() - t;
  ASSERT_EQ(create.state(), v1::OPERATION_STATE_SUCCEEDED) << create.DebugString();
  std::set<std::string> steps;
  for (const auto& step : create.finished_steps()) steps.insert(step.name());
  for (const char* step : {"power_off", "capture_disk_0", "record_template", "power_restore"}) {
    EXPECT_EQ(steps.count(step), 1u) << step;
  }
  // The guest shut down by itself: nothing was stopped hard.
  EXPECT_EQ(steps.count("power_off_forced"), 0u);
  const std::string template_id = create.image_template_id();
  ASSERT_EQ(GetTemplate(template_id).status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);

  // The capture's first read came after QEMU had exited: the driver logs the
  // exit, storaged logs the capture's start (it reads nothing before).
  const std::string cp_log = ReadFile(stack_->ControlPlaneLog());
  const std::string off_line =
      FirstLine(cp_log, {"qemu: server " + source, "powered off: guest shut down"});
  ASSERT_FALSE(off_line.empty()) << cp_log;
  const std::string capture_line =
      FirstLine(ReadFile(stack_->StoragedLog(0)), {"capture started"});
  ASSERT_FALSE(capture_line.empty());
  const absl::Time qemu_exit = LogTime(off_line);
  const absl::Time capture_start = LogTime(capture_line);
  EXPECT_LE(qemu_exit, capture_start) << off_line << "\n" << capture_line;

  // The source is back, with its own identity and the shutdown recorded.
  ids = Identities(source);
  ASSERT_EQ(ids.size(), 2u);
  EXPECT_EQ(ids[1]["hostname"], "source");
  EXPECT_EQ(ids[1]["machine-id"], source_machine_id);
  const std::string shutdown_stamp = ids[1]["last-shutdown"];
  ASSERT_NE(shutdown_stamp, "none");
  double shutdown_epoch = 0;
  ASSERT_TRUE(absl::SimpleAtod(shutdown_stamp, &shutdown_epoch)) << shutdown_stamp;
  // Written by the guest during the create's shutdown (clocks: the guest's
  // RTC is the host's).
  EXPECT_GT(shutdown_epoch, absl::ToUnixMicros(t) / 1e6 - 2);
  EXPECT_LT(shutdown_epoch, absl::ToUnixMicros(capture_start) / 1e6 + 2);

  // Deploy two servers; the operation ends when both booted.
  t = absl::Now();
  v1::Operation deploy = Deploy(template_id, {"web1", "web2"});
  deploy = WaitOperation(deploy.id(), absl::Minutes(25));
  const absl::Duration deploy_time = absl::Now() - t;
  ASSERT_EQ(deploy.state(), v1::OPERATION_STATE_SUCCEEDED) << deploy.DebugString();
  ASSERT_EQ(deploy.deployed_servers().server_ids_size(), 2);
  std::set<std::string> machine_ids = {source_machine_id};
  std::set<std::string> host_keys = {source_host_key};
  for (int i = 0; i < 2; ++i) {
    const std::string id = deploy.deployed_servers().server_ids(i);
    started_servers_.insert(id);
    v1::Server server = GetServer(id);
    EXPECT_EQ(server.power_state(), v1::POWER_STATE_RUNNING);
    EXPECT_EQ(server.state(), v1::SERVER_STATE_ACTIVE);
    ASSERT_EQ(server.configuration().network_interfaces_size(), 1);
    const v1::NetworkInterface& nic = server.configuration().network_interfaces(0);
    const std::string address = nic.ip_address().substr(0, nic.ip_address().find('/'));
    ASSERT_TRUE(absl::StartsWith(address, "10.20.0.")) << nic.ip_address();
    const std::vector<std::string> console = Console(id);
    const std::string all = absl::StrJoin(console, "\n");
    // Its own identity: hostname from the config drive, a fresh machine-id and
    // host key, and the source's shutdown on the restored disk.
    auto mine = Identities(id);
    ASSERT_EQ(mine.size(), 1u) << all;
    EXPECT_EQ(mine[0]["hostname"], server.hostname());
    EXPECT_EQ(mine[0]["last-shutdown"], shutdown_stamp);
    EXPECT_TRUE(machine_ids.insert(mine[0]["machine-id"]).second)
        << "machine-id " << mine[0]["machine-id"] << " is not new";
    EXPECT_EQ(mine[0]["machine-id"].size(), 32u);
    EXPECT_TRUE(host_keys.insert(mine[0]["ssh-host-key"]).second)
        << "ssh host key " << mine[0]["ssh-host-key"] << " is not new";
    EXPECT_TRUE(absl::StrContains(all, "imagetemplates: new instance, machine-id " +
                                           mine[0]["machine-id"]));
    // cloud-init's network table: eth0 up with the pool address and the MAC,
    // and the default route through the pool's gateway.
    bool row = false;
    bool route = false;
    for (const std::string& line : console) {
      if (!absl::StrContains(line, "ci-info:")) continue;
      std::vector<std::string> cells;
      for (absl::string_view cell : absl::StrSplit(line.substr(line.find("ci-info:") + 8), '|')) {
        cells.push_back(std::string(absl::StripAsciiWhitespace(cell)));
      }
      // "", Device, Up, Address, Mask, Scope, Hw-Address, ""
      if (cells.size() >= 7 && cells[1] == "eth0" && cells[2] == "True" &&
          cells[3] == address && cells[4] == "255.255.255.0" &&
          cells[6] == nic.mac_address()) {
        row = true;
      }
      // "", Route, Destination, Gateway, Genmask, Interface, Flags, ""
      if (cells.size() >= 7 && cells[2] == "0.0.0.0" && cells[3] == "10.20.0.1" &&
          cells[5] == "eth0") {
        route = true;
      }
    }
    EXPECT_TRUE(route) << "no default route via 10.20.0.1 on the console of "
                       << server.hostname();
    EXPECT_TRUE(row) << "no ci-info row for eth0 " << address << " "
                     << nic.mac_address() << " on the console of " << server.hostname();
    EXPECT_TRUE(absl::StrContains(all, "Datasource DataSourceNoCloud")) << server.hostname();
  }
  EXPECT_EQ(machine_ids.size(), 3u);

  // The source still runs (read from QMP, not assumed).
  auto state = (*hypervisor)->GetPowerState(source, absl::Seconds(30));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, v1::POWER_STATE_RUNNING);
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_RUNNING);

  // A template of a blank disk: its deploy fails from the console, not hung.
  const std::string blank = AddVolume("blank", 64 * kMiB);
  const std::string blank_server = AddServer("blank", blank, "");
  AddVolume("boot3", 64 * kMiB);
  AddVolume("cfg3", 4 * kMiB);
  v1::Operation blank_create = WaitOperation(Create(blank_server, "blank").id(), absl::Minutes(5));
  ASSERT_EQ(blank_create.state(), v1::OPERATION_STATE_SUCCEEDED) << blank_create.DebugString();
  t = absl::Now();
  v1::Operation broken = WaitOperation(
      Deploy(blank_create.image_template_id(), {"broken"}).id(), absl::Minutes(20));
  const absl::Duration broken_time = absl::Now() - t;
  ASSERT_EQ(broken.state(), v1::OPERATION_STATE_FAILED) << broken.DebugString();
  const std::string why = broken.error().message();
  EXPECT_TRUE(absl::StrContains(why, "did not boot")) << why;
  // initramfs-tools waits for the root device, then panics (panic=-1).
  EXPECT_TRUE(absl::StrContains(why, "/dev/vda1 does not exist") ||
              absl::StrContains(why, "Gave up waiting for root") ||
              absl::StrContains(why, "VFS: Unable to mount root"))
      << why;

  std::cerr << "qemu e2e: source boot " << Seconds(source_boot)
            << ", create (shutdown, capture, boot) " << Seconds(create_time)
            << ", deploy of 2 (restore, config drive, boot) " << Seconds(deploy_time)
            << ", failing deploy " << Seconds(broken_time) << ", whole test "
            << Seconds(absl::Now() - test_start) << "\n"
            << "qemu e2e: QEMU exit " << off_line << "\nqemu e2e: capture "
            << capture_line << "\n";
}

}  // namespace
}  // namespace tests
