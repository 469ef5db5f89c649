// CreateWorkflow through the operation runner, over the SQLite stores, the
// inventory compute driver and fake storage nodes: failure, cancel and
// transient errors, and what each leaves behind.
#include "controlplane/create_workflow.h"

#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "controlplane/testing/workflow_test_environment.h"
#include "controlplane/workflow_checkpoint.pb.h"
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
  EXPECT_LT(absl::Now() - cancel_time, absl::Seconds(15));

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


// The control plane stops (SIGTERM) while record_template runs, and
// `lose_step_record` also drops what a crash between the template's commit
// and the step's would lose: the step and the checkpoint's `recorded`. Either
// way the resumed create finishes SUCCEEDED with the template ACTIVE and its
// images kept, never undoing an ACTIVE template.
class CreateWorkflowStopTest : public WorkflowTestEnvironment,
                               public ::testing::WithParamInterface<bool> {};

TEST_P(CreateWorkflowStopTest, StopDuringRecordResumesAndKeepsTheImages) {
  const bool lose_step_record = GetParam();
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  absl::Notification reached;
  SetBeforeRecord([&](OperationContext& context) {
    if (!reached.HasBeenNotified()) reached.Notify();
    // Held until the runner is stopping, so the write lands during Stop().
    WaitFor([&] { return context.stopping(); });
  });
  const v1::Operation started = BeginCreate(server, "stopped");
  ASSERT_TRUE(reached.WaitForNotificationWithTimeout(absl::Seconds(10)));
  runner_->Stop();
  SetBeforeRecord(nullptr);

  v1::Operation stopped = *operations_->GetOperation(started.id());
  EXPECT_EQ(stopped.state(), v1::OPERATION_STATE_RUNNING);
  ASSERT_EQ(templates_->GetTemplate(started.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  if (lose_step_record) {
    ASSERT_TRUE(operations_
                    ->UpdateOperation(started.id(),
                                      [](v1::Operation& op, OperationInternals& internals) {
                                        internal::CreateCheckpoint cp;
                                        if (!cp.ParseFromString(internals.checkpoint)) {
                                          return absl::InternalError("checkpoint");
                                        }
                                        cp.set_recorded(false);
                                        internals.checkpoint = cp.SerializeAsString();
                                        auto* steps = op.mutable_finished_steps();
                                        for (int i = steps->size() - 1; i >= 0; --i) {
                                          if ((*steps)[i].name() == "record_template") {
                                            steps->DeleteSubrange(i, 1);
                                          }
                                        }
                                        return absl::OkStatus();
                                      })
                    .ok());
  } else {
    EXPECT_EQ(Step(stopped, "record_template").state(), v1::OPERATION_STATE_SUCCEEDED)
        << stopped.DebugString();
  }
  StartRunner();
  v1::Operation op = WaitTerminal(started.id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "delete_images").name(), "");  // never undone
  const v1::ImageTemplate t = *templates_->GetTemplate(op.image_template_id());
  EXPECT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  ASSERT_EQ(t.disks_size(), 2);
  EXPECT_EQ(t.disks(0).manifest_digest(), nodes_[0]->images()[t.id() + "-disk0"]);
  EXPECT_EQ(t.disks(1).manifest_digest(), nodes_[1]->images()[t.id() + "-disk1"]);
  EXPECT_FALSE(t.disks(0).manifest_digest().empty());
  EXPECT_EQ(templates_->ListImageReplicas(t.id())->size(), 2u);
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_RUNNING);
}

INSTANTIATE_TEST_SUITE_P(StepRecord, CreateWorkflowStopTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "StepRecordLost" : "StepRecordKept";
                         });


using CreateWorkflowQuotaTest = WorkflowTestEnvironment;

// max_stored_bytes is checked again once the capture knows its bytes: a
// capture that would take the account over it fails the operation with
// RESOURCE_EXHAUSTED and is undone; one that lands exactly on it succeeds.
// (The fake stores a quarter of each 4 MiB disk: 2 MiB per template.)
TEST_F(CreateWorkflowQuotaTest, CaptureOverStoredBytesQuotaFailsAndUndoes) {
  const v1::ImageTemplate first = ActiveTemplate("first");
  ASSERT_EQ(templates_->GetUsage(kAccount)->stored_bytes, 2 << 20);
  accounts_.SetQuota(kAccount, TemplateQuota{0, (3 << 20)});
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  v1::Operation op = WaitTerminal(BeginCreate(server, "too-big").id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_NE(op.error().message().find("quota is 3145728"), std::string::npos)
      << op.error().message();
  EXPECT_EQ(Step(op, "record_template").state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(templates_->GetTemplate(op.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_FAILED);
  EXPECT_TRUE(templates_->ListImageReplicas(op.image_template_id())->empty());
  EXPECT_EQ(nodes_[0]->images().count(op.image_template_id() + "-disk0"), 0u);
  EXPECT_EQ(nodes_[0]->images().count(first.id() + "-disk0"), 1u);
  EXPECT_EQ(templates_->GetUsage(kAccount)->stored_bytes, 2 << 20);
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_RUNNING);

  accounts_.SetQuota(kAccount, TemplateQuota{0, (4 << 20)});
  op = WaitTerminal(BeginCreate(server, "fits").id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(templates_->GetUsage(kAccount)->stored_bytes, 4 << 20);
  // Now at the quota: refused at call time.
  auto refused = manager_->CreateImageTemplate(owner_, [&] {
    v1::CreateImageTemplateRequest request;
    request.set_server_id(server);
    request.set_name("more");
    return request;
  }());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
}

// Creates racing for the last template of the quota: exactly the quota's
// worth get in.
TEST_F(CreateWorkflowQuotaTest, ConcurrentCreatesNeverOvershootTheTemplateCount) {
  constexpr int kCreates = 8;
  accounts_.SetQuota(kAccount, TemplateQuota{2, 0});
  std::vector<std::string> servers;
  for (int i = 0; i < kCreates; ++i) {
    servers.push_back(AddServer(v1::POWER_STATE_STOPPED, /*data_disk=*/false));
  }
  std::vector<absl::StatusOr<v1::Operation>> results(kCreates, absl::UnknownError(""));
  std::vector<std::thread> threads;
  absl::Notification go;
  for (int i = 0; i < kCreates; ++i) {
    threads.emplace_back([&, i] {
      v1::CreateImageTemplateRequest request;
      request.set_server_id(servers[i]);
      request.set_name(absl::StrCat("racer", i));
      go.WaitForNotification();
      results[i] = manager_->CreateImageTemplate(owner_, request);
    });
  }
  go.Notify();
  for (std::thread& thread : threads) thread.join();
  int created = 0;
  for (const auto& result : results) {
    if (result.ok()) {
      ++created;
    } else {
      EXPECT_EQ(result.status().code(), absl::StatusCode::kResourceExhausted) << result.status();
    }
  }
  EXPECT_EQ(created, 2);
  EXPECT_EQ(templates_->GetUsage(kAccount)->template_count, 2);
}

// An operator capturing an account's server is held to that account's
// quota, not the operator account's.
TEST_F(CreateWorkflowQuotaTest, OperatorCaptureIsCheckedAgainstTheOwnersQuota) {
  const std::string kOperatorAccount = "00000000-0000-4000-8000-0000000000ff";
  ASSERT_TRUE(AddTestAccount(*db_, kOperatorAccount).ok());
  accounts_.AddAccount(kOperatorAccount, {}, TemplateQuota{1, 0});
  v1::ImageTemplate own;
  own.set_id(NewUuid());
  own.set_owner_account_id(kOperatorAccount);
  own.set_name("operators-own");
  own.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  ASSERT_TRUE(templates_->InsertTemplate(own).ok());
  Caller op_caller = operator_;
  op_caller.account_id = kOperatorAccount;
  const std::string server = AddServer(v1::POWER_STATE_STOPPED, /*data_disk=*/false);
  v1::CreateImageTemplateRequest request;
  request.set_server_id(server);
  request.set_name("for-the-owner");

  // The operator account is at its quota; the owner is not.
  auto created = manager_->CreateImageTemplate(op_caller, request);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_EQ(WaitTerminal(created->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(templates_->GetTemplate(created->image_template_id())->owner_account_id(), kAccount);

  // The owner is at its quota; the operator account has room.
  accounts_.SetQuota(kOperatorAccount, TemplateQuota{0, 0});
  accounts_.SetQuota(kAccount, TemplateQuota{1, 0});
  request.set_name("over");
  auto refused = manager_->CreateImageTemplate(op_caller, request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find(kAccount), std::string::npos) << refused.status();
  EXPECT_EQ(templates_->GetUsage(kAccount)->template_count, 1);
}

}  // namespace
}  // namespace controlplane
