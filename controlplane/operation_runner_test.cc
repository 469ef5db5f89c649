// The operation engine with scripted workflows over the real SQLite store.
#include "controlplane/operation_runner.h"

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

// Runs `script` as its workflow.
class ScriptedWorkflow final : public Workflow {
 public:
  explicit ScriptedWorkflow(
      std::function<absl::Status(OperationContext&)> script)
      : script_(std::move(script)) {}
  absl::Status Run(OperationContext& context) override {
    return script_(context);
  }

 private:
  std::function<absl::Status(OperationContext&)> script_;
};

class OperationRunnerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *OpenTemplateTestDatabase();
    ASSERT_TRUE(AddTestAccount(*db_, "acct").ok());
    store_ = std::make_unique<SqliteOperationStore>(db_.get());
    options_.poll_interval = absl::Milliseconds(50);
    options_.step_initial_backoff = absl::Milliseconds(10);
    options_.progress_interval = absl::Milliseconds(20);
  }

  std::string Insert(v1::OperationState state = v1::OPERATION_STATE_PENDING,
                     const std::string& checkpoint = "") {
    v1::Operation op;
    op.set_id(NewUuid());
    op.set_kind(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE);
    op.set_account_id("acct");
    op.set_state(state);
    *op.mutable_create_time() = ToTimestamp(NowMicros());
    OperationInternals internals;
    internals.params = "request";
    internals.checkpoint = checkpoint;
    EXPECT_TRUE(store_->InsertOperation(op, internals).ok());
    return op.id();
  }

  v1::Operation WaitTerminal(const std::string& id) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      auto op = store_->GetOperation(id);
      if (op.ok() && IsTerminal(op->state())) return *op;
      absl::SleepFor(absl::Milliseconds(10));
    }
    ADD_FAILURE() << "operation " << id << " did not end";
    return *store_->GetOperation(id);
  }

  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteOperationStore> store_;
  OperationRunnerOptions options_;
};

TEST_F(OperationRunnerTest, RunsStepsRetriesUnavailableAndReportsProgress) {
  std::atomic<int> calls{0};
  ScriptedWorkflow workflow([&](OperationContext& context) -> absl::Status {
    EXPECT_EQ(context.params(), "request");
    context.SetCheckpointSource([] { return std::string("after-first"); });
    int slot = context.progress().Add(1000);
    RETURN_IF_ERROR(context.RunStep("power_off", "", [&]() -> absl::Status {
      // Transient twice, then fine.
      if (++calls < 3) return absl::UnavailableError("node restarting");
      context.progress().Update(slot, 400, 1000);
      return absl::OkStatus();
    }));
    absl::SleepFor(absl::Milliseconds(100));  // let the monitor write progress
    context.progress().Complete(slot);
    return absl::OkStatus();
  });
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  const std::string id = Insert();
  v1::Operation op = WaitTerminal(id);
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED);
  ASSERT_EQ(op.finished_steps_size(), 1);
  EXPECT_EQ(op.finished_steps(0).name(), "power_off");
  EXPECT_EQ(op.finished_steps(0).attempt_count(), 3);
  EXPECT_EQ(op.finished_steps(0).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(op.progress().bytes_total(), 1000);
  EXPECT_EQ(op.progress().percent(), 100);
  EXPECT_EQ(op.step(), "");
  EXPECT_EQ(store_->GetInternals(id)->checkpoint, "after-first");
}

TEST_F(OperationRunnerTest, PermanentErrorsFailWithTheCause) {
  ScriptedWorkflow workflow([](OperationContext& context) {
    return context.RunStep("capture_disk_0", "", [] {
      return absl::ResourceExhaustedError("storage node x: image store full");
    });
  });
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  v1::Operation op = WaitTerminal(Insert());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(),
            static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(op.error().message(), "storage node x: image store full");
  ASSERT_EQ(op.finished_steps_size(), 1);
  EXPECT_EQ(op.finished_steps(0).attempt_count(), 1);
  EXPECT_EQ(op.finished_steps(0).state(), v1::OPERATION_STATE_FAILED);
}

// A busy database (ABORTED from SqliteDatabase) is retried like UNAVAILABLE;
// here a real one: SQLite refuses (SQLITE_LOCKED) to drop a table that a
// statement of the same connection is reading. Any other ABORTED is final,
// as a storage node's "deleted by DeleteImage" must be.
TEST_F(OperationRunnerTest, ABusyDatabaseIsRetriedOtherAbortedErrorsAreNot) {
  std::atomic<int> calls{0};
  absl::Status busy;
  ScriptedWorkflow workflow([&](OperationContext& context) -> absl::Status {
    RETURN_IF_ERROR(context.RunStep("record_template", "", [&]() -> absl::Status {
      if (++calls > 1) return absl::OkStatus();
      busy = db_->Transaction([](SqliteConnection& conn) -> absl::Status {
        ASSIGN_OR_RETURN(auto create, conn.Prepare("CREATE TABLE scratch (x INTEGER)"));
        RETURN_IF_ERROR(create.Run());
        ASSIGN_OR_RETURN(auto insert, conn.Prepare("INSERT INTO scratch (x) VALUES (1), (2)"));
        RETURN_IF_ERROR(insert.Run());
        ASSIGN_OR_RETURN(auto read, conn.Prepare("SELECT x FROM scratch"));
        ASSIGN_OR_RETURN(bool row, read.Step());
        if (!row) return absl::InternalError("no row");
        ASSIGN_OR_RETURN(auto drop, conn.Prepare("DROP TABLE scratch"));
        return drop.Run();
      });
      return busy;
    }));
    return context.RunStep("send_image", "", [] {
      return absl::AbortedError("image x was committed and then deleted by DeleteImage");
    });
  });
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  v1::Operation op = WaitTerminal(Insert());
  EXPECT_EQ(busy.code(), absl::StatusCode::kAborted) << busy;
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kAborted));
  EXPECT_EQ(op.error().message(), "image x was committed and then deleted by DeleteImage");
  ASSERT_EQ(op.finished_steps_size(), 2);
  EXPECT_EQ(op.finished_steps(0).name(), "record_template");
  EXPECT_EQ(op.finished_steps(0).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(op.finished_steps(0).attempt_count(), 2);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(op.finished_steps(1).name(), "send_image");
  EXPECT_EQ(op.finished_steps(1).state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.finished_steps(1).attempt_count(), 1);
}

// Undo work that must not be given up: retried whatever it fails with, also
// after a cancel, and the step keeps one record, updated in place.
TEST_F(OperationRunnerTest, RetryStepUntilDoneKeepsOneRecord) {
  std::atomic<int> calls{0};
  absl::Notification failing;
  ScriptedWorkflow workflow([&](OperationContext& context) -> absl::Status {
    context.SetCheckpointSource([] { return std::string("marked"); });
    auto mark = [&]() -> absl::Status {
      if (++calls == 2) {
        // The remaining attempts come after the cancel (hang guard: 10 s).
        const absl::Time deadline = absl::Now() + absl::Seconds(10);
        while (!context.cancelled() && absl::Now() < deadline) {
          absl::SleepFor(absl::Milliseconds(5));
        }
        EXPECT_TRUE(context.cancelled());
      }
      if (calls < 5) return absl::FailedPreconditionError("write refused");
      return absl::OkStatus();
    };
    absl::Status status =
        context.RunStep("mark_failed", "", mark, OperationContext::StepKind::kUndo);
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
    failing.Notify();
    EXPECT_TRUE(context.RetryStepUntilDone("mark_failed", mark, absl::Milliseconds(40)).ok());
    return absl::InternalError("the cause");
  });
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  const std::string id = Insert();
  ASSERT_TRUE(failing.WaitForNotificationWithTimeout(absl::Seconds(10)));
  ASSERT_TRUE(store_
                  ->UpdateOperation(id,
                                    [](v1::Operation&, OperationInternals& internals) {
                                      internals.cancel_requested = true;
                                      return absl::OkStatus();
                                    })
                  .ok());
  v1::Operation op = WaitTerminal(id);
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
  EXPECT_EQ(calls.load(), 5);
  ASSERT_EQ(op.finished_steps_size(), 1) << op.DebugString();
  EXPECT_EQ(op.finished_steps(0).name(), "mark_failed");
  EXPECT_EQ(op.finished_steps(0).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(op.finished_steps(0).attempt_count(), 5);
  EXPECT_EQ(op.finished_steps(0).error().code(), 0);
  EXPECT_EQ(store_->GetInternals(id)->checkpoint, "marked");
}

TEST_F(OperationRunnerTest, CancelInterruptsAndUndoStepsStillRun) {
  absl::Notification started;
  ScriptedWorkflow workflow([&](OperationContext& context) -> absl::Status {
    absl::Status forward =
        context.RunStep("capture_disk_0", "", [&]() -> absl::Status {
          started.Notify();
          // A long transfer that only the interrupt flag stops.
          while (!context.interrupt_flag()->load())
            absl::SleepFor(absl::Milliseconds(5));
          return absl::CancelledError("call cancelled");
        });
    EXPECT_EQ(forward.code(), absl::StatusCode::kCancelled);
    EXPECT_EQ(
        context.RunStep("more", "", [] { return absl::OkStatus(); }).code(),
        absl::StatusCode::kCancelled);
    RETURN_IF_ERROR(context.RunStep(
        "power_restore", "", [] { return absl::OkStatus(); },
        OperationContext::StepKind::kUndo));
    return forward;
  });
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  const std::string id = Insert();
  ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  const absl::Time cancel_time = absl::Now();
  ASSERT_TRUE(store_
                  ->UpdateOperation(
                      id,
                      [](v1::Operation& op, OperationInternals& internals) {
                        op.set_state(v1::OPERATION_STATE_CANCELLING);
                        internals.cancel_requested = true;
                        return absl::OkStatus();
                      })
                  .ok());
  v1::Operation op = WaitTerminal(id);
  EXPECT_LT(absl::Now() - cancel_time, absl::Seconds(15));
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED);
  ASSERT_EQ(op.finished_steps_size(), 2);
  EXPECT_EQ(op.finished_steps(0).state(), v1::OPERATION_STATE_CANCELLED);
  EXPECT_EQ(op.finished_steps(1).name(), "power_restore");
  EXPECT_EQ(op.finished_steps(1).state(), v1::OPERATION_STATE_SUCCEEDED);
}

TEST_F(OperationRunnerTest,
       StopLeavesTheRowAndTheNextRunnerResumesFromTheCheckpoint) {
  absl::Notification started;
  ScriptedWorkflow blocking([&](OperationContext& context) -> absl::Status {
    context.SetCheckpointSource([] { return std::string("disk0-done"); });
    RETURN_IF_ERROR(
        context.RunStep("capture_disk_0", "", [] { return absl::OkStatus(); }));
    return context.RunStep("capture_disk_1", "", [&]() -> absl::Status {
      started.Notify();
      while (!context.interrupt_flag()->load())
        absl::SleepFor(absl::Milliseconds(5));
      return absl::CancelledError("call cancelled");
    });
  });
  const std::string id = Insert();
  {
    OperationRunner runner(store_.get(), options_);
    runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &blocking);
    runner.Start();
    ASSERT_TRUE(started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  }  // The runner stops: the workflow returns ABORTED, the row stays RUNNING.
  EXPECT_EQ(store_->GetOperation(id)->state(), v1::OPERATION_STATE_RUNNING);

  std::string seen_checkpoint;
  ScriptedWorkflow resuming([&](OperationContext& context) -> absl::Status {
    seen_checkpoint = context.initial_checkpoint();
    return context.RunStep("capture_disk_1", "",
                           [] { return absl::OkStatus(); });
  });
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &resuming);
  runner.Start();
  v1::Operation op = WaitTerminal(id);
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(seen_checkpoint, "disk0-done");
  ASSERT_EQ(op.finished_steps_size(), 2);
  EXPECT_EQ(op.finished_steps(0).name(), "capture_disk_0");
  EXPECT_EQ(op.finished_steps(1).name(), "capture_disk_1");
}

TEST_F(OperationRunnerTest,
       APendingOperationCancelledBeforeItStartsEndsCancelled) {
  ScriptedWorkflow workflow([](OperationContext& context) -> absl::Status {
    EXPECT_TRUE(context.cancelled());
    return absl::CancelledError("cancelled before it started");
  });
  const std::string id = Insert(v1::OPERATION_STATE_CANCELLING);
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  EXPECT_EQ(WaitTerminal(id).state(), v1::OPERATION_STATE_CANCELLED);
}

// An undo step keeps its backoff after a cancel: a node restarting or a
// capture still winding down (FAILED_PRECONDITION answered as UNAVAILABLE)
// gets the time the retries are for, instead of three attempts at once.
TEST_F(OperationRunnerTest, UndoStepsOfACancelledOperationBackOffBetweenAttempts) {
  options_.step_initial_backoff = absl::Milliseconds(150);
  std::atomic<int> calls{0};
  ScriptedWorkflow workflow([&](OperationContext& context) -> absl::Status {
    EXPECT_TRUE(context.cancelled());
    RETURN_IF_ERROR(context.RunStep(
        "delete_images", "",
        [&]() -> absl::Status {
          if (++calls < 3) return absl::UnavailableError("n0 restarting");
          return absl::OkStatus();
        },
        OperationContext::StepKind::kUndo));
    return absl::CancelledError("cancelled");
  });
  const std::string id = Insert(v1::OPERATION_STATE_CANCELLING);
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  v1::Operation op = WaitTerminal(id);
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED);
  ASSERT_EQ(op.finished_steps_size(), 1);
  const v1::OperationStep& step = op.finished_steps(0);
  EXPECT_EQ(step.state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(step.attempt_count(), 3);
  // 150 ms, then 300 ms.
  EXPECT_GE(FromTimestamp(step.end_time()) - FromTimestamp(step.start_time()), 450'000);
}

// With every slot taken, a cancelled operation still runs its undo at once
// and gives back what it holds; new work keeps waiting for a slot.
TEST_F(OperationRunnerTest, ACancelledOperationDoesNotWaitForASlot) {
  options_.max_concurrent = 1;
  absl::Notification busy_started, release_busy;
  std::atomic<int> runs_of_waiting{0};
  std::string busy_id, waiting_id;
  ScriptedWorkflow workflow([&](OperationContext& context) -> absl::Status {
    if (context.id() == busy_id) {
      busy_started.Notify();
      release_busy.WaitForNotification();
      return absl::OkStatus();
    }
    if (context.id() == waiting_id) ++runs_of_waiting;
    return context.cancelled() ? absl::CancelledError("cancelled") : absl::OkStatus();
  });
  busy_id = Insert();
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  ASSERT_TRUE(busy_started.WaitForNotificationWithTimeout(absl::Seconds(10)));
  waiting_id = Insert();
  const std::string cancelled_id = Insert(v1::OPERATION_STATE_CANCELLING);
  EXPECT_EQ(WaitTerminal(cancelled_id).state(), v1::OPERATION_STATE_CANCELLED);
  absl::SleepFor(absl::Milliseconds(200));  // several polls
  EXPECT_EQ(runs_of_waiting.load(), 0);
  EXPECT_EQ(store_->GetOperation(waiting_id)->state(), v1::OPERATION_STATE_PENDING);
  release_busy.Notify();
  EXPECT_EQ(WaitTerminal(waiting_id).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(runs_of_waiting.load(), 1);
}

// A transfer that stalls stops showing its last rate and ETA once the rate
// window holds no progress.
TEST_F(OperationRunnerTest, AStalledTransferShowsNoRateAndNoEta) {
  options_.rate_window = absl::Milliseconds(200);
  absl::Notification seen_moving, release;
  std::atomic<int64_t> stalled_at{-1};
  ScriptedWorkflow workflow([&](OperationContext& context) -> absl::Status {
    return context.RunStep("capture_disk_0", "", [&]() -> absl::Status {
      int slot = context.progress().Add(100000);
      int64_t done = 0;
      // Moves until the test has seen a rate, however loaded the machine.
      for (int i = 0; i < 1000 && !seen_moving.HasBeenNotified(); ++i) {
        context.progress().Update(slot, done += 10, 100000);
        absl::SleepFor(absl::Milliseconds(10));
      }
      stalled_at = done;
      release.WaitForNotification();
      return absl::OkStatus();
    });
  });
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  const std::string id = Insert();
  auto progress = [&] { return store_->GetOperation(id)->progress(); };
  bool stalled = false;
  for (const absl::Time deadline = absl::Now() + absl::Seconds(20);
       absl::Now() < deadline && !stalled; absl::SleepFor(absl::Milliseconds(10))) {
    v1::OperationProgress p = progress();
    if (!seen_moving.HasBeenNotified() && p.bytes_per_second() > 0 && p.has_eta()) {
      seen_moving.Notify();
    }
    stalled = stalled_at >= 0 && p.bytes_done() == stalled_at && p.bytes_per_second() == 0 &&
              !p.has_eta();
  }
  release.Notify();
  EXPECT_TRUE(seen_moving.HasBeenNotified()) << progress().DebugString();
  EXPECT_TRUE(stalled) << progress().DebugString();
  EXPECT_EQ(WaitTerminal(id).state(), v1::OPERATION_STATE_SUCCEEDED);
}

// A cancel that comes while a failed operation undoes itself does not hide
// why it failed.
TEST_F(OperationRunnerTest, AFailureKeepsItsCauseWhenACancelComesDuringTheUndo) {
  ScriptedWorkflow workflow([](OperationContext& context) -> absl::Status {
    EXPECT_TRUE(context.cancelled());
    return absl::InternalError("n1: iSCSI write error");  // recorded before the cancel
  });
  const std::string id = Insert(v1::OPERATION_STATE_CANCELLING);
  OperationRunner runner(store_.get(), options_);
  runner.Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &workflow);
  runner.Start();
  v1::Operation op = WaitTerminal(id);
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kInternal));
  EXPECT_EQ(op.error().message(), "n1: iSCSI write error");
}

// Parallel steps save checkpoints at once: each write takes its snapshot
// inside the write, so a snapshot taken earlier never lands last (a copy's
// "created" flag saved by one disk must not be overwritten by another disk's
// older snapshot).
TEST_F(OperationRunnerTest, ParallelCheckpointWritesNeverGoBackwards) {
  const std::string id = Insert(v1::OPERATION_STATE_RUNNING);
  OperationContext context(store_.get(), options_, *store_->GetOperation(id),
                           *store_->GetInternals(id));
  absl::Mutex mu;
  std::string state = "old";
  absl::Notification first_snapshot, release;
  std::atomic<int> calls{0};
  context.SetCheckpointSource([&] {
    std::string value;
    {
      absl::MutexLock lock(&mu);
      value = state;
    }
    if (calls++ == 0) {
      first_snapshot.Notify();
      release.WaitForNotification();
    }
    return value;
  });
  std::thread first([&] { EXPECT_TRUE(context.SaveCheckpoint().ok()); });
  first_snapshot.WaitForNotification();
  {
    absl::MutexLock lock(&mu);
    state = "new";
  }
  std::thread second([&] { EXPECT_TRUE(context.SaveCheckpoint().ok()); });
  // Long enough for the second write to land first, were it not ordered.
  absl::SleepFor(absl::Milliseconds(100));
  release.Notify();
  first.join();
  second.join();
  EXPECT_EQ(store_->GetInternals(id)->checkpoint, "new");
}

}  // namespace
}  // namespace controlplane
