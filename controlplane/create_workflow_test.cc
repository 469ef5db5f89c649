// CreateWorkflow through the operation runner, over the SQLite stores, the
// inventory compute driver and fake storage nodes: failure, cancel and
// transient errors, and what each leaves behind.
#include "controlplane/create_workflow.h"

#include <algorithm>
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

// Removes the finished steps with these names: what a crash before their
// records commit loses.
void DropSteps(v1::Operation& op, const std::vector<std::string>& names) {
  auto* steps = op.mutable_finished_steps();
  for (int i = steps->size() - 1; i >= 0; --i) {
    if (std::find(names.begin(), names.end(), (*steps)[i].name()) != names.end()) {
      steps->DeleteSubrange(i, 1);
    }
  }
}

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
                                        DropSteps(op, {"record_template"});
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


class CreateWorkflowUndoTest : public WorkflowTestEnvironment {
 protected:
  // `op`, a create of `server` whose disk 1 capture failed with n1's read
  // error, ended with that cause and is fully undone: nothing captured
  // again, the template FAILED with no disks, no image left, the server on.
  void ExpectUndone(const v1::Operation& op, const std::string& server) {
    EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
    EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kInternal));
    EXPECT_EQ(op.error().message(), "n1: iSCSI read error");
    EXPECT_EQ(Step(op, "record_template").name(), "");
    const v1::ImageTemplate t = *templates_->GetTemplate(op.image_template_id());
    EXPECT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_FAILED);
    EXPECT_EQ(t.disks_size(), 0);
    EXPECT_EQ(nodes_[0]->calls(Fake::kCapture), 1);
    EXPECT_EQ(nodes_[1]->calls(Fake::kCapture), 1);
    EXPECT_TRUE(nodes_[0]->images().empty());
    EXPECT_TRUE(nodes_[1]->images().empty());
    EXPECT_TRUE(templates_->ListImageReplicas(t.id())->empty());
    EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_RUNNING);
  }
};

// The control plane stops (SIGTERM) while a failed create is undoing:
// delete_images has deleted disk 0's image and waits on n1. The next start
// finishes the undo and fails with the recorded cause; it never captures
// again nor makes the template ACTIVE over the deleted image.
TEST_F(CreateWorkflowUndoTest, StopDuringUndoResumesTheUndo) {
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  nodes_[1]->Fail(Fake::kCapture, absl::InternalError("n1: iSCSI read error"));
  nodes_[1]->Block(Fake::kDelete);
  const v1::Operation started = BeginCreate(server, "undone");
  // Replicas are deleted in image id order: disk 0 on n0 first.
  ASSERT_TRUE(WaitFor([&] { return nodes_[1]->waiting() == 1; }));
  ASSERT_TRUE(nodes_[0]->images().empty());
  runner_->Stop();
  nodes_[1]->Release(Fake::kDelete);
  nodes_[1]->Fail(Fake::kCapture, absl::OkStatus(), 0);  // a second capture would work
  ASSERT_EQ(operations_->GetOperation(started.id())->state(), v1::OPERATION_STATE_RUNNING);
  ASSERT_EQ(templates_->GetTemplate(started.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_CREATING);

  StartRunner();
  const v1::Operation op = WaitTerminal(started.id());
  ExpectUndone(op, server);
  EXPECT_EQ(Step(op, "delete_images").state(), v1::OPERATION_STATE_SUCCEEDED);
}

// A kill -9 (or a lost final write) after delete_images committed and before
// the undo ended: the row is RUNNING again, the template CREATING and the
// server off. The rerun finishes the undo with the first cause instead of
// capturing the rest and recording a template whose disk 0 is gone.
TEST_F(CreateWorkflowUndoTest, RerunAfterLostEndFinishesTheUndo) {
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  nodes_[1]->Fail(Fake::kCapture, absl::InternalError("n1: iSCSI read error"));
  const v1::Operation failed = WaitTerminal(BeginCreate(server, "lost-end").id());
  ASSERT_EQ(failed.state(), v1::OPERATION_STATE_FAILED);
  runner_->Stop();
  nodes_[1]->Fail(Fake::kCapture, absl::OkStatus(), 0);
  ASSERT_TRUE(templates_
                  ->MutateTemplate(failed.image_template_id(),
                                   [](TemplateTransaction& txn) {
                                     txn.image_template().set_status(
                                         v1::IMAGE_TEMPLATE_STATUS_CREATING);
                                     return absl::OkStatus();
                                   })
                  .ok());
  ASSERT_TRUE(compute_->PowerOff(server, absl::Seconds(1)).ok());
  ASSERT_TRUE(operations_
                  ->UpdateOperation(failed.id(),
                                    [](v1::Operation& op, OperationInternals&) {
                                      op.set_state(v1::OPERATION_STATE_RUNNING);
                                      op.clear_end_time();
                                      op.clear_error();
                                      DropSteps(op, {"mark_failed", "power_restore"});
                                      return absl::OkStatus();
                                    })
                  .ok());

  StartRunner();
  ExpectUndone(WaitTerminal(failed.id()), server);
}

// Cancel requested while record_template runs, and the process dies between
// the template's commit (ACTIVE) and the step's (checkpoint not recorded).
// The resumed, cancelled create finds the template it recorded: it keeps it
// and its images, only powers the server back on, and ends SUCCEEDED as a
// cancel that came too late does.
TEST_F(CreateWorkflowUndoTest, CancelledCreateResumedAfterRecordKeepsTheTemplate) {
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  const v1::Operation done = WaitTerminal(BeginCreate(server, "late-cancel").id());
  ASSERT_EQ(done.state(), v1::OPERATION_STATE_SUCCEEDED);
  runner_->Stop();
  ASSERT_TRUE(compute_->PowerOff(server, absl::Seconds(1)).ok());
  ASSERT_TRUE(operations_
                  ->UpdateOperation(done.id(),
                                    [](v1::Operation& op, OperationInternals& internals) {
                                      op.set_state(v1::OPERATION_STATE_CANCELLING);
                                      op.clear_end_time();
                                      internals.cancel_requested = true;
                                      DropSteps(op, {"record_template", "power_restore"});
                                      internal::CreateCheckpoint cp;
                                      if (!cp.ParseFromString(internals.checkpoint)) {
                                        return absl::InternalError("checkpoint");
                                      }
                                      cp.set_recorded(false);
                                      internals.checkpoint = cp.SerializeAsString();
                                      return absl::OkStatus();
                                    })
                  .ok());

  StartRunner();
  const v1::Operation op = WaitTerminal(done.id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "delete_images").name(), "");  // never undone
  EXPECT_EQ(Step(op, "power_restore").state(), v1::OPERATION_STATE_SUCCEEDED);
  const v1::ImageTemplate t = *templates_->GetTemplate(op.image_template_id());
  EXPECT_EQ(t.status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  ASSERT_EQ(t.disks_size(), 2);
  EXPECT_EQ(nodes_[0]->images().size(), 1u);
  EXPECT_EQ(nodes_[1]->images().size(), 1u);
  EXPECT_EQ(t.disks(0).manifest_digest(), nodes_[0]->images()[t.id() + "-disk0"]);
  EXPECT_EQ(t.disks(1).manifest_digest(), nodes_[1]->images()[t.id() + "-disk1"]);
  EXPECT_EQ(templates_->ListImageReplicas(t.id())->size(), 2u);
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_RUNNING);
}

// mark_failed cannot write the template (a trigger refuses FAILED): the
// operation does not end while its template is still CREATING; it retries
// and ends FAILED with the capture's cause once the write goes through. The
// retries update the step's one record instead of adding one per attempt.
class CreateWorkflowMarkFailedTest : public CreateWorkflowUndoTest {
 protected:
  absl::Status Exec(const char* sql) {
    return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
      absl::StatusOr<SqliteStatement> s = conn.Prepare(sql);
      return s.ok() ? s->Run() : s.status();
    });
  }
  void RefuseFailed() {
    // 3 = IMAGE_TEMPLATE_STATUS_FAILED.
    static_assert(v1::IMAGE_TEMPLATE_STATUS_FAILED == 3);
    ASSERT_TRUE(Exec("CREATE TRIGGER refuse_failed BEFORE UPDATE OF status ON image_templates "
                     "WHEN NEW.status = 3 BEGIN SELECT RAISE(ABORT, 'injected write error'); END")
                    .ok());
  }
  std::vector<v1::OperationStep> Marks(const std::string& id) {
    std::vector<v1::OperationStep> marks;
    const v1::Operation op = *operations_->GetOperation(id);
    for (const auto& s : op.finished_steps()) {
      if (s.name() == "mark_failed") marks.push_back(s);
    }
    return marks;
  }
};

TEST_F(CreateWorkflowMarkFailedTest, MarkFailedErrorIsRetriedNotIgnored) {
  RefuseFailed();
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  nodes_[1]->Fail(Fake::kCapture, absl::InternalError("n1: iSCSI read error"));
  const v1::Operation started = BeginCreate(server, "unmarked");
  ASSERT_TRUE(WaitFor([&] {
    const std::vector<v1::OperationStep> marks = Marks(started.id());
    return !marks.empty() && marks.back().attempt_count() >= 5;
  }));
  v1::Operation running = *operations_->GetOperation(started.id());
  EXPECT_FALSE(IsTerminal(running.state())) << running.DebugString();
  EXPECT_EQ(templates_->GetTemplate(started.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_CREATING);
  // Five attempts, one record: FAILED with the latest error.
  std::vector<v1::OperationStep> marks = Marks(started.id());
  ASSERT_EQ(marks.size(), 1u) << running.DebugString();
  EXPECT_EQ(marks[0].state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(marks[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_NE(marks[0].error().message().find("injected write error"), std::string::npos)
      << marks[0].error().message();
  // The server does not wait for the template.
  EXPECT_EQ(inventory_->ReadServer(server)->power_state(), v1::POWER_STATE_RUNNING);

  ASSERT_TRUE(Exec("DROP TRIGGER refuse_failed").ok());
  const v1::Operation op = WaitTerminal(started.id());
  ExpectUndone(op, server);
  marks = Marks(started.id());
  ASSERT_EQ(marks.size(), 1u) << op.DebugString();
  EXPECT_EQ(marks[0].state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_GE(marks[0].attempt_count(), 6);
  EXPECT_EQ(marks[0].error().code(), 0);
}

// The retries end when the control plane stops: the operation stays
// RUNNING with its template CREATING, and the next start finishes the undo.
TEST_F(CreateWorkflowMarkFailedTest, MarkFailedRetriesStopWithTheControlPlane) {
  RefuseFailed();
  const std::string server = AddServer(v1::POWER_STATE_RUNNING);
  nodes_[1]->Fail(Fake::kCapture, absl::InternalError("n1: iSCSI read error"));
  const v1::Operation started = BeginCreate(server, "stopped");
  ASSERT_TRUE(WaitFor([&] {
    const std::vector<v1::OperationStep> marks = Marks(started.id());
    return !marks.empty() && marks.back().attempt_count() >= 3;
  }));
  runner_->Stop();  // returns only once the retry loop has ended
  EXPECT_EQ(operations_->GetOperation(started.id())->state(), v1::OPERATION_STATE_RUNNING);
  EXPECT_EQ(templates_->GetTemplate(started.image_template_id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_CREATING);
  ASSERT_EQ(Marks(started.id()).size(), 1u);

  ASSERT_TRUE(Exec("DROP TRIGGER refuse_failed").ok());
  StartRunner();
  const v1::Operation op = WaitTerminal(started.id());
  ExpectUndone(op, server);
  const std::vector<v1::OperationStep> marks = Marks(started.id());
  ASSERT_EQ(marks.size(), 2u) << op.DebugString();  // one per run
  EXPECT_EQ(marks[0].state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(marks[1].state(), v1::OPERATION_STATE_SUCCEEDED);
}

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
