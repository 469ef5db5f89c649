// Create and deploy end to end with real processes: two tgtd SANs, two
// storaged nodes registered with the real controlplane binary, real files on
// the guest disks, config drives read back with xorriso, kill -9 of a
// storaged during a capture and of the controlplane during a deploy, cancel
// of a create during its capture, and a storaged killed for good during a
// deploy's restore.
#include <signal.h>

#include <cstdio>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/create_deploy_fixture.h"
#include "tests/process.h"
#include "tests/rpc.h"
#include "tests/san.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
namespace pb = imagetemplates::storagenode::v1;
constexpr uint64_t kMiB = 1 << 20;

#define ASSERT_OK(status) ASSERT_TRUE((status).ok()) << (status).error_message()
#define EXPECT_CODE(status, code_)                          \
  EXPECT_EQ((status).error_code(), grpc::StatusCode::code_) \
      << (status).error_message()

TEST_F(CreateDeployTest, CreateThenDeployThreeServersShareAndPublish) {
  const absl::Time start = absl::Now();
  // Source: boot disk on SAN 0 with random data, data disk on SAN 1 holding
  // a real ext4 filesystem with files.
  Lun boot_lun, data_lun;
  const uint64_t boot_size = 16 * kMiB, data_size = 16 * kMiB;
  std::string boot_volume = AddVolume(0, "src-boot", boot_size, &boot_lun);
  std::string data_volume = AddVolume(1, "src-data", data_size, &data_lun);
  FillRandom(boot_lun.backing_path, 0, boot_size - 3 * kMiB, 7);
  std::string files = dir_ + "/files";
  ASSERT_EQ(Shell(absl::StrCat(
                "mkdir -p ", files, "/etc && echo hello > ", files,
                "/etc/motd && head -c 3000000 /dev/urandom > ", files,
                "/blob.bin && seq 1 200000 > ", files, "/numbers.txt")),
            0);
  ASSERT_EQ(Shell(absl::StrCat("mkfs.ext4 -q -F -d ", files, " ",
                               data_lun.backing_path, " >/dev/null 2>&1")),
            0);
  const std::string boot_at_capture = ReadFile(boot_lun.backing_path);
  const std::string data_at_capture = ReadFile(data_lun.backing_path);
  ASSERT_EQ(boot_at_capture.size(), boot_size);
  const std::string source = AddServer(acme_, {boot_volume, data_volume});

  // Deploy targets on the SAN hosts whose nodes hold each image (storaged
  // cannot copy images between nodes yet); one larger pair; config drives
  // on both.
  for (int i = 0; i < 5; ++i) {
    AddVolume(0, absl::StrCat("boot", i), boot_size);
    AddVolume(1, absl::StrCat("data", i), data_size);
    AddVolume(i % 2, absl::StrCat("cfg", i), 4 * kMiB);
  }
  AddVolume(0, "boot-big", 32 * kMiB);
  AddVolume(1, "data-big", 24 * kMiB);
  // Volumes on the wrong host are never used for a disk.
  AddVolume(1, "boot-wrong-host", 64 * kMiB);

  // Pre-flight refusals.
  grpc::Status refused;
  CreateTemplate(acme_, source, "bad", {7}, &refused);
  EXPECT_CODE(refused, FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "no disk 7"))
      << refused.error_message();
  CreateTemplate(acme_, source, "bad", {0}, &refused);
  EXPECT_CODE(refused, INVALID_ARGUMENT);

  v1::Operation create = CreateTemplate(acme_, source, "golden", {1});
  ASSERT_FALSE(create.id().empty());
  const v1::ImageTemplateStatus early =
      GetTemplate(create.image_template_id()).status();
  EXPECT_TRUE(early == v1::IMAGE_TEMPLATE_STATUS_CREATING ||
              early == v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  // A second create of the same server while the first runs is refused (if
  // the first already ended, it simply runs too).
  v1::Operation second_create =
      CreateTemplate(acme_, source, "golden2", {}, &refused);
  if (!refused.ok()) {
    EXPECT_CODE(refused, FAILED_PRECONDITION);
    EXPECT_TRUE(absl::StrContains(refused.error_message(), "busy"))
        << refused.error_message();
  }
  create = WaitOperation(acme_.key, create.id());
  ASSERT_EQ(create.state(), v1::OPERATION_STATE_SUCCEEDED)
      << create.DebugString();
  if (refused.ok()) WaitOperation(acme_.key, second_create.id());
  const absl::Duration create_time = absl::Now() - start;
  const v1::ImageTemplate t = GetTemplate(create.image_template_id());
  ASSERT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  ASSERT_EQ(t.disks_size(), 2);
  EXPECT_TRUE(t.disks(0).boot());
  EXPECT_EQ(t.disks(0).logical_size_bytes(), static_cast<int64_t>(boot_size));
  EXPECT_TRUE(absl::StartsWith(t.disks(1).manifest_digest(), "sha256:"));
  EXPECT_GT(t.disks(1).stored_size_bytes(), 0);
  EXPECT_EQ(t.configuration().cpu_count(), 2);
  EXPECT_TRUE(t.configuration().network_interfaces(0).ip_address().empty());
  ASSERT_EQ(t.locations_size(), 1);
  EXPECT_EQ(t.locations(0).datacenter(), "dc1");
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_RUNNING);
  std::set<std::string> steps;
  for (const auto& step : create.finished_steps()) steps.insert(step.name());
  EXPECT_TRUE(steps.count("power_off") && steps.count("capture_disk_0") &&
              steps.count("capture_disk_1") && steps.count("record_template") &&
              steps.count("power_restore"))
      << create.DebugString();

  // Three deploys at once; the third onto larger volumes.
  const absl::Time deploy_start = absl::Now();
  std::vector<v1::Operation> deploys(3);
  std::vector<grpc::Status> statuses(3);
  std::vector<std::thread> threads;
  for (int i = 0; i < 3; ++i) {
    threads.emplace_back([&, i] {
      v1::DeployImageTemplateRequest request =
          DeployRequest(t.id(), absl::StrCat("web", i + 1));
      if (i == 2) {
        auto* size = request.add_disk_sizes();
        size->set_device_index(0);
        size->set_size_bytes(32 * kMiB);
        size = request.add_disk_sizes();
        size->set_device_index(1);
        size->set_size_bytes(24 * kMiB);
      }
      statuses[i] = Deploy(acme_, request, &deploys[i]);
    });
  }
  for (auto& thread : threads) thread.join();
  std::set<std::string> addresses;
  for (int i = 0; i < 3; ++i) {
    ASSERT_OK(statuses[i]);
    v1::Operation op = WaitOperation(acme_.key, deploys[i].id());
    ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
    ASSERT_EQ(op.deployed_servers().server_ids_size(), 1);
    v1::Server server = GetServer(op.deployed_servers().server_ids(0));
    EXPECT_EQ(server.state(), v1::SERVER_STATE_ACTIVE);
    EXPECT_EQ(server.power_state(), v1::POWER_STATE_RUNNING);
    EXPECT_EQ(server.hostname(), absl::StrCat("web", i + 1));
    EXPECT_EQ(server.source_image_template_id(), t.id());
    EXPECT_TRUE(server.has_credentials());
    ASSERT_EQ(server.configuration().network_interfaces_size(), 1);
    const v1::NetworkInterface& nic =
        server.configuration().network_interfaces(0);
    EXPECT_NE(nic.mac_address(), "02:00:00:00:00:01");
    EXPECT_TRUE(absl::StartsWith(nic.ip_address(), "10.20.0."))
        << nic.ip_address();
    addresses.insert(nic.ip_address());
    ASSERT_EQ(server.disks_size(), 3);
    for (const v1::ServerDisk& disk : server.disks()) {
      const std::string& path = stack_.backing(disk.san_volume_id());
      if (disk.config_drive()) {
        auto cidata = ReadConfigDrive(path);
        EXPECT_TRUE(absl::StrContains(cidata["meta-data"],
                                      "instance-id: " + server.id()))
            << cidata["meta-data"];
        EXPECT_TRUE(absl::StrContains(
            cidata["meta-data"], absl::StrCat("local-hostname: web", i + 1)));
        EXPECT_TRUE(
            absl::StrContains(cidata["network-config"], nic.mac_address()))
            << cidata["network-config"];
        EXPECT_TRUE(
            absl::StrContains(cidata["network-config"], nic.ip_address()));
        EXPECT_TRUE(
            absl::StrContains(cidata["network-config"], "via: 10.20.0.1"));
        EXPECT_TRUE(absl::StrContains(cidata["network-config"], "10.20.0.2"));
        continue;
      }
      const std::string& expected =
          disk.boot() ? boot_at_capture : data_at_capture;
      const std::string written = ReadFile(path);
      ASSERT_EQ(written.size(), static_cast<size_t>(disk.size_bytes()));
      EXPECT_EQ(disk.size_bytes() > static_cast<int64_t>(expected.size()),
                i == 2);
      EXPECT_TRUE(written.compare(0, expected.size(), expected) == 0)
          << "disk " << disk.device_index() << " of web" << i + 1 << " differs";
      EXPECT_TRUE(AllZero(written.substr(expected.size())));
    }
  }
  EXPECT_EQ(addresses.size(), 3u);
  const absl::Duration deploy_time = absl::Now() - deploy_start;

  // Another account: a private template is invisible, a shared one deploys.
  User globex = NewUser(
      "globex", {v1::PERMISSION_SERVER_PROVISION, v1::PERMISSION_SERVER_VIEW});
  v1::Operation op;
  EXPECT_CODE(Deploy(globex, DeployRequest(t.id(), "g1"), &op), NOT_FOUND);
  {
    v1::ShareImageTemplateRequest share;
    share.set_id(t.id());
    share.add_account_ids(globex.account_id);
    v1::ShareImageTemplateResponse response;
    ASSERT_OK(Call(stack_.templates(),
                   &v1::ImageTemplateService::Stub::ShareImageTemplate,
                   acme_.key, share, &response));
  }
  ASSERT_OK(Deploy(globex, DeployRequest(t.id(), "g1"), &op));
  op = WaitOperation(globex.key, op.id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_FALSE(
      GetServer(op.deployed_servers().server_ids(0)).has_credentials());

  // A public template deploys for everybody.
  User initech = NewUser("initech", {v1::PERMISSION_SERVER_PROVISION});
  EXPECT_CODE(Deploy(initech, DeployRequest(t.id(), "i1"), &op), NOT_FOUND);
  {
    v1::PublishImageTemplateRequest publish;
    publish.set_id(t.id());
    v1::PublishImageTemplateResponse response;
    ASSERT_OK(Call(stack_.templates(),
                   &v1::ImageTemplateService::Stub::PublishImageTemplate,
                   acme_.key, publish, &response));
  }
  ASSERT_OK(Deploy(initech, DeployRequest(t.id(), "i1"), &op));
  EXPECT_EQ(WaitOperation(initech.key, op.id()).state(),
            v1::OPERATION_STATE_SUCCEEDED);

  // The same request_id twice: one operation.
  v1::DeployImageTemplateRequest again = DeployRequest(t.id(), "once");
  again.set_request_id("deploy-once-1");
  v1::Operation first, second;
  ASSERT_OK(Deploy(acme_, again, &first));
  ASSERT_OK(Deploy(acme_, again, &second));
  EXPECT_EQ(first.id(), second.id());
  EXPECT_EQ(WaitOperation(acme_.key, first.id()).state(),
            v1::OPERATION_STATE_SUCCEEDED);
  {
    v1::ListServersRequest list;
    list.set_hostname_contains("once");
    v1::ListServersResponse servers;
    ASSERT_OK(Call(stack_.inventory(), &v1::InventoryService::Stub::ListServers,
                   admin_, list, &servers));
    EXPECT_EQ(servers.servers_size(), 1);
  }
  // The pool is now short of volumes: RESOURCE_EXHAUSTED, nothing taken.
  const int64_t allocated = AllocatedAddresses();
  v1::DeployImageTemplateRequest too_many = DeployRequest(t.id(), "x");
  too_many.clear_hostnames();
  too_many.set_hostname_prefix("many");
  too_many.set_quantity(5);
  EXPECT_CODE(Deploy(acme_, too_many, &op), RESOURCE_EXHAUSTED);
  EXPECT_EQ(AllocatedAddresses(), allocated);

  // Delete: images removed from every node, record DELETED.
  {
    v1::UnpublishImageTemplateRequest unpublish;
    unpublish.set_id(t.id());
    v1::UnpublishImageTemplateResponse response;
    ASSERT_OK(Call(stack_.templates(),
                   &v1::ImageTemplateService::Stub::UnpublishImageTemplate,
                   acme_.key, unpublish, &response));
    v1::DeleteImageTemplateRequest del;
    del.set_id(t.id());
    ASSERT_OK(Call(stack_.templates(),
                   &v1::ImageTemplateService::Stub::DeleteImageTemplate,
                   acme_.key, del, &op));
    op = WaitOperation(acme_.key, op.id());
    EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
    EXPECT_EQ(GetTemplate(t.id()).status(), v1::IMAGE_TEMPLATE_STATUS_DELETED);
  }
  std::printf(
      "e2e timing: create %s, three concurrent deploys %s, whole test %s\n",
      absl::FormatDuration(create_time).c_str(),
      absl::FormatDuration(deploy_time).c_str(),
      absl::FormatDuration(absl::Now() - start).c_str());
}

TEST_F(CreateDeployTest,
       KillingStoragedDuringCaptureAndControlPlaneDuringDeploy) {
  const uint64_t size = 1024 * kMiB;
  Lun lun;
  std::string boot_volume = AddVolume(0, "big-src", size, &lun);
  FillRandom(lun.backing_path, 0, size, 11);
  const std::string source = AddServer(acme_, {boot_volume});
  AddVolume(0, "big-target", size);
  AddVolume(0, "cfg", 4 * kMiB);

  // kill -9 of the node capturing the disk, restarted at once.
  v1::Operation create = CreateTemplate(acme_, source, "big", {});
  ASSERT_FALSE(create.id().empty());
  create = stack_.WaitTransferStarted(acme_.key, create.id());
  ASSERT_EQ(create.state(), v1::OPERATION_STATE_RUNNING)
      << "capture ended before the kill";
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_STOPPED);
  ASSERT_TRUE(stack_.storaged(0).Stop(SIGKILL).ok());
  absl::SleepFor(absl::Seconds(1));
  ASSERT_NO_FATAL_FAILURE(stack_.StartStoraged(0));
  create = WaitOperation(acme_.key, create.id());
  std::printf("after storaged kill: %s %s\n",
              v1::OperationState_Name(create.state()).c_str(),
              create.error().message().c_str());
  EXPECT_TRUE(create.state() == v1::OPERATION_STATE_SUCCEEDED ||
              create.state() == v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_RUNNING);
  v1::ImageTemplate t = GetTemplate(create.image_template_id());
  if (create.state() == v1::OPERATION_STATE_FAILED) {
    EXPECT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_FAILED);
    // Capture again, undisturbed, for the deploy below.
    create = WaitOperation(acme_.key,
                           CreateTemplate(acme_, source, "big2", {}).id());
    ASSERT_EQ(create.state(), v1::OPERATION_STATE_SUCCEEDED)
        << create.DebugString();
    t = GetTemplate(create.image_template_id());
  }
  ASSERT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  {
    // An ACTIVE template's data is all there: the node holds the image with
    // the recorded digest.
    ASSERT_NO_FATAL_FAILURE(stack_.WaitNodesUp());
    auto stub = stack_.NodeStub("n0");
    grpc::ClientContext context;
    pb::GetImageRequest get;
    get.set_image_id(t.id() + "-disk0");
    pb::GetImageResponse image;
    ASSERT_OK(stub->GetImage(&context, get, &image));
    EXPECT_EQ(image.summary().manifest_digest(), t.disks(0).manifest_digest());
  }

  // kill -9 of the control plane during the deploy's restore.
  v1::Operation deploy;
  ASSERT_OK(Deploy(acme_, DeployRequest(t.id(), "crash1"), &deploy));
  deploy = stack_.WaitTransferStarted(acme_.key, deploy.id());
  ASSERT_EQ(deploy.state(), v1::OPERATION_STATE_RUNNING)
      << "restore ended before the kill";
  ASSERT_NO_FATAL_FAILURE(stack_.KillAndRestartControlPlane());
  deploy = WaitOperation(acme_.key, deploy.id());
  std::printf("after controlplane kill: %s %s\n",
              v1::OperationState_Name(deploy.state()).c_str(),
              deploy.error().message().c_str());
  ASSERT_EQ(deploy.deployed_servers().server_ids_size(), 1);
  v1::Server server = GetServer(deploy.deployed_servers().server_ids(0));
  if (deploy.state() == v1::OPERATION_STATE_SUCCEEDED) {
    EXPECT_EQ(server.state(), v1::SERVER_STATE_ACTIVE);
    EXPECT_EQ(AllocatedAddresses(), 1);
    for (const v1::ServerDisk& disk : server.disks()) {
      if (disk.config_drive()) continue;
      // Byte-identical after the resumed restore (compared in 64 MiB pieces).
      for (uint64_t off = 0; off < size; off += 64 * kMiB) {
        ASSERT_EQ(ReadFile(stack_.backing(disk.san_volume_id()), off, 64 * kMiB),
                  ReadFile(lun.backing_path, off, 64 * kMiB))
            << "at " << off;
      }
    }
  } else {
    EXPECT_EQ(deploy.state(), v1::OPERATION_STATE_FAILED);
    EXPECT_EQ(server.state(), v1::SERVER_STATE_FAILED);
    EXPECT_EQ(server.disks_size(), 0);
    EXPECT_EQ(AllocatedAddresses(), 0);
    for (const v1::SanVolume& volume : Volumes()) {
      EXPECT_NE(volume.attached_server_id(), server.id());
    }
  }
}

// Cancel of a real create while storaged captures a 1 GiB disk: CANCELLED
// within seconds, the server running again, no ACTIVE template, and the
// node does not hold the image.
TEST_F(CreateDeployTest, CancellingACreateDuringCaptureUndoesIt) {
  const uint64_t size = 1024 * kMiB;
  Lun lun;
  std::string boot_volume = AddVolume(0, "cancel-src", size, &lun);
  FillRandom(lun.backing_path, 0, size, 13);
  const std::string source = AddServer(acme_, {boot_volume});

  v1::Operation create = CreateTemplate(acme_, source, "cancelled", {});
  ASSERT_FALSE(create.id().empty());
  create = stack_.WaitTransferStarted(acme_.key, create.id());
  ASSERT_EQ(create.state(), v1::OPERATION_STATE_RUNNING)
      << "capture ended before the cancel";
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_STOPPED);
  const absl::Time cancel_time = absl::Now();
  v1::CancelOperationRequest cancel;
  cancel.set_id(create.id());
  v1::Operation cancelling;
  ASSERT_OK(Call(stack_.operations(), &v1::OperationService::Stub::CancelOperation,
                 acme_.key, cancel, &cancelling));
  create = WaitOperation(acme_.key, create.id(), absl::Seconds(30));
  const absl::Duration to_end = absl::Now() - cancel_time;
  std::printf("create cancelled at %lld of %lld bytes, ended in %s\n",
              static_cast<long long>(cancelling.progress().bytes_done()),
              static_cast<long long>(cancelling.progress().bytes_total()),
              absl::FormatDuration(to_end).c_str());
  EXPECT_EQ(create.state(), v1::OPERATION_STATE_CANCELLED)
      << create.DebugString();
  // CANCELLED itself shows the cancel reached the capture; the bound only
  // rules out running to the end, with room for a loaded machine.
  EXPECT_LT(to_end, absl::Seconds(20));
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_RUNNING);
  EXPECT_EQ(GetServer(source).state(), v1::SERVER_STATE_ACTIVE);
  EXPECT_EQ(GetTemplate(create.image_template_id()).status(),
            v1::IMAGE_TEMPLATE_STATUS_FAILED);
  {
    v1::ListImageTemplatesRequest request;
    request.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
    v1::ListImageTemplatesResponse response;
    ASSERT_OK(Call(stack_.templates(),
                   &v1::ImageTemplateService::Stub::ListImageTemplates,
                   acme_.key, request, &response));
    EXPECT_EQ(response.image_templates_size(), 0);
  }
  auto stub = stack_.NodeStub("n0");
  grpc::ClientContext context;
  pb::GetImageRequest get;
  get.set_image_id(create.image_template_id() + "-disk0");
  pb::GetImageResponse image;
  EXPECT_CODE(stub->GetImage(&context, get, &image), NOT_FOUND);
}

// kill -9 of the storaged restoring a deploy, never restarted: the deploy
// fails (after its retries) with UNAVAILABLE, its volumes are FREE again,
// no address stays allocated and the server is not ACTIVE.
TEST_F(CreateDeployTest, KillingStoragedDuringRestoreFailsTheDeployCleanly) {
  const uint64_t size = 1024 * kMiB;
  Lun lun;
  std::string boot_volume = AddVolume(0, "restore-src", size, &lun);
  FillRandom(lun.backing_path, 0, size, 17);
  const std::string source = AddServer(acme_, {boot_volume});
  v1::Operation create = WaitOperation(
      acme_.key, CreateTemplate(acme_, source, "big", {}).id());
  ASSERT_EQ(create.state(), v1::OPERATION_STATE_SUCCEEDED)
      << create.DebugString();
  AddVolume(0, "restore-target", size);
  AddVolume(1, "restore-cfg", 4 * kMiB);

  v1::Operation deploy;
  ASSERT_OK(Deploy(acme_, DeployRequest(create.image_template_id(), "doomed"),
                   &deploy));
  deploy = stack_.WaitTransferStarted(acme_.key, deploy.id());
  ASSERT_EQ(deploy.state(), v1::OPERATION_STATE_RUNNING)
      << "restore ended before the kill";
  ASSERT_TRUE(stack_.storaged(0).Stop(SIGKILL).ok());
  const absl::Time kill_time = absl::Now();
  deploy = WaitOperation(acme_.key, deploy.id());
  std::printf("deploy after storaged kill: %s in %s: %s\n",
              v1::OperationState_Name(deploy.state()).c_str(),
              absl::FormatDuration(absl::Now() - kill_time).c_str(),
              deploy.error().message().c_str());
  EXPECT_EQ(deploy.state(), v1::OPERATION_STATE_FAILED) << deploy.DebugString();
  EXPECT_EQ(deploy.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE))
      << deploy.error().message();
  int restore_attempts = 0;
  for (const auto& step : deploy.finished_steps()) {
    if (step.name() == "restore_disk_0") restore_attempts = step.attempt_count();
  }
  EXPECT_GT(restore_attempts, 1) << deploy.DebugString();
  ASSERT_EQ(deploy.deployed_servers().server_ids_size(), 1);
  const v1::Server server = GetServer(deploy.deployed_servers().server_ids(0));
  EXPECT_EQ(server.state(), v1::SERVER_STATE_FAILED);
  EXPECT_NE(server.power_state(), v1::POWER_STATE_RUNNING);
  EXPECT_EQ(server.disks_size(), 0);
  EXPECT_EQ(AllocatedAddresses(), 0);
  for (const v1::SanVolume& volume : Volumes()) {
    if (volume.id() == boot_volume) continue;
    EXPECT_EQ(volume.state(), v1::SAN_VOLUME_STATE_FREE) << volume.id();
    EXPECT_NE(volume.attached_server_id(), server.id());
  }
}

}  // namespace
}  // namespace tests
