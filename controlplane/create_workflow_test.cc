// CreateWorkflow through the operation runner, over the SQLite stores, the
// inventory compute driver and fake storage nodes: failure, cancel and
// transient errors, and what each leaves behind.
#include "controlplane/create_workflow.h"

#include <string>

#include "controlplane/testing/workflow_test_environment.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using Fake = FakeStorageNodeClient;

class CreateWorkflowTest : public WorkflowTestEnvironment,
                           public ::testing::WithParamInterface<v1::PowerState> {};

// A permanent storaged error on one disk: FAILED with that cause, the
// template FAILED (never ACTIVE), the other disk's image deleted, and the
// server back in the power state it had.
TEST_P(CreateWorkflowTest, PermanentCaptureErrorFailsAndUndoes) {
  const v1::PowerState prior = GetParam();
  const std::string server = AddServer(prior);
  nodes_[0]->Fail(Fake::kCapture, absl::ResourceExhaustedError("n0: image store full"));
  v1::Operation op = WaitTerminal(BeginCreate(server, "broken").id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(op.error().message(), "n0: image store full");
  EXPECT_EQ(Step(op, "capture_disk_0").state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(Step(op, "capture_disk_0").attempt_count(), 1);  // never retried
  EXPECT_EQ(Step(op, "delete_images").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(templates_->GetTemplate(op.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_FAILED);
  EXPECT_EQ(nodes_[1]->calls(Fake::kCapture), 1);
  EXPECT_TRUE(nodes_[0]->images().empty());
  EXPECT_TRUE(nodes_[1]->images().empty());
  EXPECT_TRUE(templates_->ListImageReplicas(op.image_template_id())->empty());
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), prior);
  EXPECT_EQ(inventory_->ReadServer(server)->state(), v1::SERVER_STATE_ACTIVE);
}

// Cancel while a capture runs: CANCELLED within seconds, undone the same
// way.
TEST_P(CreateWorkflowTest, CancelDuringCaptureUndoes) {
  const v1::PowerState prior = GetParam();
  const std::string server = AddServer(prior);
  nodes_[0]->Block(Fake::kCapture);
  const v1::Operation started = BeginCreate(server, "cancelled");
  ASSERT_TRUE(WaitFor([&] { return nodes_[0]->waiting() == 1; }));
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_STOPPED);
  const absl::Time cancel_time = absl::Now();
  RequestCancel(started.id());
  v1::Operation op = WaitTerminal(started.id());
  EXPECT_LT(absl::Now() - cancel_time, absl::Seconds(3));

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED) << op.DebugString();
  EXPECT_EQ(Step(op, "capture_disk_0").state(), v1::OPERATION_STATE_CANCELLED);
  EXPECT_EQ(templates_->GetTemplate(op.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_FAILED);
  EXPECT_TRUE(nodes_[0]->images().empty());
  EXPECT_TRUE(nodes_[1]->images().empty());
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), prior);
}

INSTANTIATE_TEST_SUITE_P(PriorPowerStates, CreateWorkflowTest,
                         ::testing::Values(v1::POWER_STATE_RUNNING, v1::POWER_STATE_STOPPED),
                         [](const ::testing::TestParamInfo<v1::PowerState>& info) {
                           return v1::PowerState_Name(info.param);
                         });

using CreateWorkflowRetryTest = WorkflowTestEnvironment;

// UNAVAILABLE twice, then the capture works: retried within the step, the
// template ACTIVE, the attempts recorded.
TEST_F(CreateWorkflowRetryTest, UnavailableIsRetriedThenSucceeds) {
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  nodes_[0]->Fail(Fake::kCapture, absl::UnavailableError("n0 restarting"), 2);
  v1::Operation op = WaitTerminal(BeginCreate(server, "retried").id());

  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "capture_disk_0").attempt_count(), 3);
  EXPECT_EQ(Step(op, "capture_disk_0").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Step(op, "capture_disk_1").attempt_count(), 1);
  EXPECT_EQ(nodes_[0]->calls(Fake::kCapture), 3);
  const v1::ImageTemplate t = *templates_->GetTemplate(op.image_template_id());
  EXPECT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  ASSERT_EQ(t.disks_size(), 2);
  EXPECT_EQ(t.disks(0).manifest_digest(), nodes_[0]->images()[t.id() + "-disk0"]);
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_RUNNING);
}

// UNAVAILABLE that never ends: FAILED after the step's attempts, with the
// UNAVAILABLE cause.
TEST_F(CreateWorkflowRetryTest, UnavailableThatPersistsFailsAfterTheAttempts) {
  const std::string server = AddServer(v1::POWER_STATE_RUNNING, /*data_disk=*/false);
  nodes_[0]->Fail(Fake::kCapture, absl::UnavailableError("n0 restarting"));
  v1::Operation op = WaitTerminal(BeginCreate(server, "down").id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Step(op, "capture_disk_0").attempt_count(), 4);
  EXPECT_EQ(templates_->GetTemplate(op.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_FAILED);
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_RUNNING);
}

// The template is recorded but the server cannot be powered back on: the
// operation fails with that cause, and the ACTIVE template keeps its images.
TEST_F(CreateWorkflowRetryTest, PowerRestoreFailureAfterRecordKeepsTheTemplate) {
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  compute_->FailPowerOn(absl::DeadlineExceededError("hypervisor did not answer"));
  v1::Operation op = WaitTerminal(BeginCreate(server, "kept").id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kDeadlineExceeded));
  EXPECT_EQ(Step(op, "record_template").state(), v1::OPERATION_STATE_SUCCEEDED);
  const v1::ImageTemplate t = *templates_->GetTemplate(op.image_template_id());
  EXPECT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  EXPECT_EQ(nodes_[0]->images().count(t.id() + "-disk0"), 1u);
  EXPECT_EQ(nodes_[1]->images().count(t.id() + "-disk1"), 1u);
  EXPECT_EQ(templates_->ListImageReplicas(t.id())->size(), 2u);
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_STOPPED);
}

}  // namespace
}  // namespace controlplane
