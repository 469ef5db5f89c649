// DeployWorkflow through the operation runner, over the SQLite stores, the
// inventory compute driver and fake storage nodes: failures in restore and
// in configure_network, cancel, and transient errors. A failed deploy leaves
// no server ACTIVE, every volume FREE and every address released.
#include "controlplane/deploy_workflow.h"

#include <string>

#include "controlplane/testing/workflow_test_environment.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using Fake = FakeStorageNodeClient;

class DeployWorkflowTest : public WorkflowTestEnvironment {
 protected:
  void SetUp() override {
    WorkflowTestEnvironment::SetUp();
    template_ = ActiveTemplate("golden");
    AddIpPool();
    AddDeployVolumes(2);
  }

  // Every server of `op` released: FAILED and STOPPED without disks, no
  // volume attached to it, no address left allocated.
  void ExpectReleased(const v1::Operation& op) {
    ASSERT_EQ(op.deployed_servers().server_ids_size(), 2);
    for (const std::string& id : op.deployed_servers().server_ids()) {
      v1::Server server = *inventory_->ReadServer(id);
      EXPECT_EQ(server.state(), v1::SERVER_STATE_FAILED) << server.hostname();
      EXPECT_EQ(server.power_state(), v1::POWER_STATE_STOPPED) << server.hostname();
      EXPECT_EQ(server.disks_size(), 0) << server.hostname();
      EXPECT_EQ(Step(op, "release_server").state(), v1::OPERATION_STATE_SUCCEEDED);
    }
    for (const v1::SanVolume& volume : Volumes()) {
      // Only the source server's two disks stay attached.
      if (volume.attached_server_id() == template_.source_server_id()) continue;
      EXPECT_EQ(volume.state(), v1::SAN_VOLUME_STATE_FREE) << volume.id();
      EXPECT_TRUE(volume.attached_server_id().empty()) << volume.id();
    }
    EXPECT_EQ(AllocatedAddresses(), 0);
  }

  v1::ImageTemplate template_;
};

TEST_F(DeployWorkflowTest, PermanentRestoreErrorReleasesEverything) {
  nodes_[1]->Fail(Fake::kRestore, absl::DataLossError("n1: chunk corrupt"));
  v1::Operation op = WaitTerminal(BeginDeploy(template_, 2, "web").id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_EQ(op.error().message(), "n1: chunk corrupt");
  EXPECT_EQ(Step(op, "restore_disk_1").state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(Step(op, "restore_disk_1").attempt_count(), 1);
  EXPECT_EQ(nodes_[0]->calls(Fake::kConfigDrive) + nodes_[1]->calls(Fake::kConfigDrive), 0);
  ExpectReleased(op);
}

// The restore is done; the config drive cannot be written. The address
// configure_network allocated goes back to the pool.
TEST_F(DeployWorkflowTest, PermanentConfigDriveErrorReleasesAddresses) {
  for (auto& node : nodes_) {
    node->Fail(Fake::kConfigDrive, absl::InvalidArgumentError("config drive too small"));
  }
  v1::Operation op = WaitTerminal(BeginDeploy(template_, 2, "web").id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(Step(op, "restore_disk_0").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Step(op, "configure_network").state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(nodes_[0]->calls(Fake::kConfigDrive) + nodes_[1]->calls(Fake::kConfigDrive), 2);
  ExpectReleased(op);
}

TEST_F(DeployWorkflowTest, CancelDuringRestoreReleasesEverything) {
  nodes_[0]->Block(Fake::kRestore);
  const v1::Operation started = BeginDeploy(template_, 2, "web");
  ASSERT_TRUE(WaitFor([&] { return nodes_[0]->waiting() == 2; }));
  const absl::Time cancel_time = absl::Now();
  RequestCancel(started.id());
  v1::Operation op = WaitTerminal(started.id());
  EXPECT_LT(absl::Now() - cancel_time, absl::Seconds(3));

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED) << op.DebugString();
  EXPECT_EQ(Step(op, "restore_disk_0").state(), v1::OPERATION_STATE_CANCELLED);
  EXPECT_EQ(Step(op, "configure_network").name(), "");
  ExpectReleased(op);
}

// Cancel after the restore, while configure_network writes the config
// drive: the address it took goes back too.
TEST_F(DeployWorkflowTest, CancelDuringConfigureNetworkReleasesAddresses) {
  for (auto& node : nodes_) node->Block(Fake::kConfigDrive);
  const v1::Operation started = BeginDeploy(template_, 2, "web");
  ASSERT_TRUE(WaitFor(
      [&] { return nodes_[0]->waiting() + nodes_[1]->waiting() == 2; }));
  EXPECT_EQ(AllocatedAddresses(), 2);
  RequestCancel(started.id());
  v1::Operation op = WaitTerminal(started.id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED) << op.DebugString();
  ExpectReleased(op);
}

TEST_F(DeployWorkflowTest, UnavailableIsRetriedThenSucceeds) {
  nodes_[0]->Fail(Fake::kRestore, absl::UnavailableError("n0 restarting"), 1);
  v1::Operation op = WaitTerminal(BeginDeploy(template_, 1, "web").id());

  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "restore_disk_0").attempt_count(), 2);
  EXPECT_EQ(Step(op, "restore_disk_0").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Step(op, "restore_disk_1").attempt_count(), 1);
  EXPECT_EQ(nodes_[0]->calls(Fake::kRestore), 2);
  EXPECT_EQ(nodes_[1]->calls(Fake::kRestore), 1);
  v1::Server server = *inventory_->ReadServer(op.deployed_servers().server_ids(0));
  EXPECT_EQ(server.state(), v1::SERVER_STATE_ACTIVE);
  EXPECT_EQ(server.power_state(), v1::POWER_STATE_RUNNING);
  EXPECT_EQ(AllocatedAddresses(), 1);
}

// configure_network retried on UNAVAILABLE: one address, no second restore.
TEST_F(DeployWorkflowTest, ConfigureNetworkRetryKeepsOneAddressAndNeverRestoresAgain) {
  for (auto& node : nodes_) {
    node->Fail(Fake::kConfigDrive, absl::UnavailableError("restarting"), 2);
  }
  v1::Operation op = WaitTerminal(BeginDeploy(template_, 1, "web").id());

  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "configure_network").attempt_count(), 3);
  EXPECT_EQ(nodes_[0]->calls(Fake::kRestore) + nodes_[1]->calls(Fake::kRestore), 2);
  EXPECT_EQ(AllocatedAddresses(), 1);
  v1::Server server = *inventory_->ReadServer(op.deployed_servers().server_ids(0));
  EXPECT_EQ(server.state(), v1::SERVER_STATE_ACTIVE);
}

// Operations that ImageTemplateManager inserts through the template and
// inventory stores start at once, not at the runner's next poll.
TEST_F(DeployWorkflowTest, OperationsStartWithoutWaitingForThePoll) {
  runner_->Stop();
  OperationRunnerOptions options;
  options.poll_interval = absl::Minutes(10);
  runner_ = std::make_unique<OperationRunner>(operations_.get(), options);
  runner_->Register(v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE, deploy_.get());
  runner_->Register(v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE, delete_.get());
  runner_->Start();
  ASSERT_TRUE(runner_->WaitIdle(absl::Seconds(5)));
  absl::SleepFor(absl::Milliseconds(50));  // the poller waits for changes

  v1::DeployImageTemplateRequest deploy;
  deploy.set_image_template_id(template_.id());
  deploy.set_datacenter("dc1");
  deploy.set_quantity(1);
  deploy.add_hostnames("web");
  absl::Time start = absl::Now();
  auto op = manager_->DeployImageTemplate(owner_, deploy);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(WaitTerminal(op->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));

  v1::DeleteImageTemplateRequest del;
  del.set_id(template_.id());
  start = absl::Now();
  op = manager_->DeleteImageTemplate(owner_, del);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(WaitTerminal(op->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
}

}  // namespace
}  // namespace controlplane
