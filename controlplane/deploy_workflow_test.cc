// DeployWorkflow through the operation runner, over the SQLite stores, the
// inventory compute driver and fake storage nodes: failures in restore and
// in configure_network, cancel, and transient errors. A failed deploy leaves
// no server ACTIVE, every volume FREE and every address released.
#include "controlplane/deploy_workflow.h"

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "controlplane/testing/deploy_test_fixture.h"
#include "controlplane/workflow_checkpoint.pb.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using Fake = FakeStorageNodeClient;

class DeployWorkflowTest : public DeployTestFixture {
 protected:
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

  // Puts a FAILED operation back to RUNNING, as when its end was never
  // written (kill -9 after its last step, or a failed final write), so the
  // next runner runs it again. `forget_failure` also drops the recorded
  // cause from its checkpoint, as if that write had been lost too.
  void Rewind(const std::string& id, bool forget_failure) {
    ASSERT_TRUE(operations_
                    ->UpdateOperation(id,
                                      [&](v1::Operation& op, OperationInternals& internals) {
                                        op.set_state(v1::OPERATION_STATE_RUNNING);
                                        op.clear_end_time();
                                        op.clear_error();
                                        internal::DeployCheckpoint cp;
                                        if (!cp.ParseFromString(internals.checkpoint)) {
                                          return absl::InternalError("bad checkpoint");
                                        }
                                        EXPECT_NE(cp.failure_code(), 0);
                                        if (forget_failure) {
                                          cp.clear_failure_code();
                                          cp.clear_failure_message();
                                        }
                                        internals.checkpoint = cp.SerializeAsString();
                                        return absl::OkStatus();
                                      })
                    .ok());
  }

  int Calls(Fake::Call call) {
    int calls = 0;
    for (auto& node : nodes_) calls += node->calls(call);
    return calls;
  }

  // `op`, run again from its step `from` after its first run failed with
  // n1's restore error: it released its two servers (nothing else, each
  // step SUCCEEDED), restored and configured nothing, and failed with that
  // cause.
  void ExpectReleasedAgainWithTheCause(const v1::Operation& op, int from, int restores) {
    EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
    EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kInternal));
    EXPECT_EQ(op.error().message(), "n1: iSCSI write error");
    ASSERT_EQ(op.finished_steps_size() - from, 2) << op.DebugString();
    for (int i = from; i < op.finished_steps_size(); ++i) {
      EXPECT_EQ(op.finished_steps(i).name(), "release_server");
      EXPECT_EQ(op.finished_steps(i).state(), v1::OPERATION_STATE_SUCCEEDED);
    }
    EXPECT_EQ(Calls(Fake::kRestore), restores);
    EXPECT_EQ(Calls(Fake::kConfigDrive), 0);
    ExpectReleased(op);
  }

  // As QEMU: powering off a server without disks (a released one) fails.
  void PowerOffFailsWithoutDisks() {
    compute_->SetPowerOffHook([this](const std::string& id) -> absl::Status {
      absl::StatusOr<v1::Server> server = inventory_->ReadServer(id);
      if (server.ok() && server->disks_size() == 0) {
        return absl::FailedPreconditionError("server has no disk to boot from");
      }
      return absl::OkStatus();
    });
  }
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
  EXPECT_EQ(AllocatedAddresses(), 2);  // reserved when the deploy was accepted
  const absl::Time cancel_time = absl::Now();
  RequestCancel(started.id());
  v1::Operation op = WaitTerminal(started.id());
  EXPECT_LT(absl::Now() - cancel_time, absl::Seconds(15));

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED) << op.DebugString();
  EXPECT_EQ(Step(op, "restore_disk_0").state(), v1::OPERATION_STATE_CANCELLED);
  EXPECT_EQ(Step(op, "configure_network").name(), "");
  ExpectReleased(op);
}

// Cancel while the new servers boot (the QEMU driver waits up to its boot
// timeout): the wait stops at once and everything is released.
TEST_F(DeployWorkflowTest, CancelDuringPowerOnReleasesEverything) {
  compute_->HangPowerOn(true);
  const v1::Operation started = BeginDeploy(template_, 2, "web");
  ASSERT_TRUE(WaitFor([&] { return compute_->power_ons_waiting() == 2; }));
  const absl::Time cancel_time = absl::Now();
  RequestCancel(started.id());
  v1::Operation op = WaitTerminal(started.id());
  EXPECT_LT(absl::Now() - cancel_time, absl::Seconds(15));
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED) << op.DebugString();
  EXPECT_EQ(Step(op, "activate").state(), v1::OPERATION_STATE_CANCELLED);
  EXPECT_EQ(compute_->power_ons_waiting(), 0);
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
  v1::Server server = DeployedServer(op);
  EXPECT_EQ(server.state(), v1::SERVER_STATE_ACTIVE);
  EXPECT_EQ(server.power_state(), v1::POWER_STATE_RUNNING);
  EXPECT_EQ(AllocatedAddresses(), 1);
}

// Review finding M1: a deploy copies the credentials its template recorded
// when the create was accepted, never what the source server holds now (a
// deploying user whose device access excludes the source would otherwise
// read its current password off the new server). A password rotated on the
// source after the capture stays there; deploys keep the snapshot after the
// source is deleted; the snapshot is sealed and goes with the record.
TEST_F(DeployWorkflowTest, DeployedServersGetTheCredentialsRecordedAtCapture) {
  v1::SetServerCredentialsRequest rotate;
  rotate.set_server_id(template_.source_server_id());
  v1::SoftwareCredential* rotated = rotate.add_credentials();
  rotated->set_software("os");
  rotated->set_username("root");
  rotated->set_password("rotated-after-capture");
  ASSERT_TRUE(inventory_->SetServerCredentials(operator_, rotate).ok());
  auto expect_captured = [&](const v1::Operation& op) {
    ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
    v1::GetServerCredentialsRequest get;
    get.set_server_id(op.deployed_servers().server_ids(0));
    auto creds = inventory_->GetServerCredentials(operator_, get);
    ASSERT_TRUE(creds.ok()) << creds.status();
    ASSERT_EQ(creds->credentials_size(), 1);
    EXPECT_EQ(creds->credentials(0).software(), "os");
    EXPECT_EQ(creds->credentials(0).username(), "root");
    EXPECT_EQ(creds->credentials(0).password(), "secret");
  };
  expect_captured(WaitTerminal(BeginDeploy(template_, 1, "web").id()));

  v1::DeleteServerRequest remove;
  remove.set_id(template_.source_server_id());
  ASSERT_TRUE(inventory_->DeleteServer(operator_, remove).ok());
  expect_captured(WaitTerminal(BeginDeploy(template_, 1, "later").id()));

  auto snapshot = [&]() {
    std::string passwords;
    EXPECT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                     ASSIGN_OR_RETURN(SqliteStatement s,
                                      conn.Prepare("SELECT password FROM template_credentials "
                                                   "WHERE template_id = ?1"));
                     s.Bind(1, template_.id());
                     while (true) {
                       ASSIGN_OR_RETURN(bool row, s.Step());
                       if (!row) return absl::OkStatus();
                       passwords += s.ColumnBlob(0) + "|";
                     }
                   }).ok());
    return passwords;
  };
  const std::string sealed = snapshot();
  EXPECT_FALSE(sealed.empty());
  EXPECT_EQ(sealed.find("secret"), std::string::npos);
  ASSERT_TRUE(templates_
                  ->MutateTemplate(template_.id(),
                                   [](TemplateTransaction& txn) {
                                     txn.image_template().set_status(
                                         v1::IMAGE_TEMPLATE_STATUS_DELETED);
                                     return absl::OkStatus();
                                   })
                  .ok());
  EXPECT_EQ(snapshot(), "");
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
  v1::Server server = DeployedServer(op);
  EXPECT_EQ(server.state(), v1::SERVER_STATE_ACTIVE);
}

// R3 of review8: a failed deploy released its servers, then the process died
// before the operation's end was written. Run again, it finishes the release
// and fails with the recorded cause: nothing is restored onto the freed
// volumes, no address or config drive goes to a released server, none
// becomes ACTIVE, and another deploy may take the volumes. Releasing again
// succeeds although powering off a released server fails (as on QEMU).
TEST_F(DeployWorkflowTest, RunAgainAfterReleaseEndsWithTheRecordedCause) {
  PowerOffFailsWithoutDisks();
  nodes_[1]->Fail(Fake::kRestore, absl::InternalError("n1: iSCSI write error"));
  const v1::Operation failed = WaitTerminal(BeginDeploy(template_, 2, "web").id());
  ASSERT_EQ(failed.state(), v1::OPERATION_STATE_FAILED) << failed.DebugString();
  ExpectReleased(failed);
  runner_->Stop();
  nodes_[1]->Fail(Fake::kRestore, absl::OkStatus(), 0);
  const int restores = Calls(Fake::kRestore);
  Rewind(failed.id(), /*forget_failure=*/false);
  StartRunner();
  ExpectReleasedAgainWithTheCause(WaitTerminal(failed.id()), failed.finished_steps_size(),
                                  restores);

  // Another deploy gets the volumes; the released servers stay released.
  const v1::Operation second = WaitTerminal(BeginDeploy(template_, 2, "other").id());
  EXPECT_EQ(second.state(), v1::OPERATION_STATE_SUCCEEDED) << second.DebugString();
  for (const std::string& id : failed.deployed_servers().server_ids()) {
    const v1::Server server = *inventory_->ReadServer(id);
    EXPECT_EQ(server.state(), v1::SERVER_STATE_FAILED);
    EXPECT_EQ(server.disks_size(), 0);
  }
  EXPECT_EQ(AllocatedAddresses(), 2);
}

// R3b of review8: the control plane stops (SIGTERM) while a failed deploy
// releases its servers: the first is released, the second's power-off is
// cut short. At the next start the release is finished, never the deploy.
TEST_F(DeployWorkflowTest, StoppedDuringReleaseFinishesTheReleaseAtRestart) {
  std::atomic<int> power_offs{0};
  std::thread stopper;
  absl::Notification stopped;
  compute_->SetPowerOffHook([&](const std::string&) -> absl::Status {
    const int call = ++power_offs;
    if (call == 1) return absl::OkStatus();
    if (call == 2) {
      stopper = std::thread([&] {
        runner_->Stop();
        stopped.Notify();
      });
    }
    // Stop waits for this call: give it time to begin, then fail as a
    // power-off it cut short (every retry too, until it stopped the step).
    absl::SleepFor(absl::Milliseconds(300));
    return absl::UnavailableError("hypervisor busy");
  });
  nodes_[1]->Fail(Fake::kRestore, absl::InternalError("n1: iSCSI write error"));
  const v1::Operation started = BeginDeploy(template_, 2, "web");
  const bool stopped_in_release = WaitFor([&] { return stopped.HasBeenNotified(); });
  if (stopper.joinable()) stopper.join();
  ASSERT_TRUE(stopped_in_release);
  const v1::Operation interrupted = *operations_->GetOperation(started.id());
  ASSERT_EQ(interrupted.state(), v1::OPERATION_STATE_RUNNING);
  int released = 0;
  for (const std::string& id : started.deployed_servers().server_ids()) {
    released += inventory_->ReadServer(id)->state() == v1::SERVER_STATE_FAILED;
  }
  ASSERT_EQ(released, 1);

  PowerOffFailsWithoutDisks();
  nodes_[1]->Fail(Fake::kRestore, absl::OkStatus(), 0);
  const int restores = Calls(Fake::kRestore);
  StartRunner();
  ExpectReleasedAgainWithTheCause(WaitTerminal(started.id()),
                                  interrupted.finished_steps_size(), restores);
}

// The stores' guards, should the recorded cause be lost: a released deploy
// run forward again fails at its first step that would touch a released
// server (restore, address, config drive, activate), releases again, and
// leaves every server released.
TEST_F(DeployWorkflowTest, GuardsStopARunForwardOverReleasedServers) {
  struct Case {
    std::string name;
    std::function<void()> fail;
    std::function<void()> heal;
  };
  const std::vector<Case> cases = {
      {"restore",
       [&] { nodes_[1]->Fail(Fake::kRestore, absl::InternalError("n1: write error")); },
       [&] { nodes_[1]->Fail(Fake::kRestore, absl::OkStatus(), 0); }},
      {"config drive",
       [&] {
         for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::InternalError("full"));
       },
       [&] {
         for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::OkStatus(), 0);
       }},
      {"power on", [&] { compute_->FailPowerOn(absl::InternalError("no host")); },
       [&] { compute_->FailPowerOn(absl::OkStatus()); }},
  };
  int round = 0;
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    c.fail();
    const v1::Operation failed =
        WaitTerminal(BeginDeploy(template_, 2, absl::StrCat("web", ++round)).id());
    ASSERT_EQ(failed.state(), v1::OPERATION_STATE_FAILED) << failed.DebugString();
    ExpectReleased(failed);
    runner_->Stop();
    c.heal();
    const int restores = Calls(Fake::kRestore);
    const int config_drives = Calls(Fake::kConfigDrive);
    Rewind(failed.id(), /*forget_failure=*/true);
    StartRunner();
    const v1::Operation op = WaitTerminal(failed.id());

    EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
    EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition))
        << op.error().message();
    EXPECT_EQ(Calls(Fake::kRestore), restores);
    EXPECT_EQ(Calls(Fake::kConfigDrive), config_drives);
    ExpectReleased(op);
    for (const std::string& id : op.deployed_servers().server_ids()) {
      EXPECT_EQ(inventory_->ReadServer(id)->power_state(), v1::POWER_STATE_STOPPED);
    }
  }
}

// A power-off that fails with something other than UNAVAILABLE or NOT_FOUND
// is retried by the release step: the server is released once it succeeds.
TEST_F(DeployWorkflowTest, ReleaseRetriesAFailedPowerOff) {
  std::atomic<int> failures{2};
  compute_->SetPowerOffHook([&](const std::string&) -> absl::Status {
    if (failures.fetch_sub(1) > 0) return absl::DeadlineExceededError("power off timed out");
    return absl::OkStatus();
  });
  nodes_[1]->Fail(Fake::kRestore, absl::DataLossError("n1: chunk corrupt"));
  const v1::Operation op = WaitTerminal(BeginDeploy(template_, 2, "web").id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  int attempts = 0;
  for (const v1::OperationStep& step : op.finished_steps()) {
    if (step.name() != "release_server") continue;
    EXPECT_EQ(step.state(), v1::OPERATION_STATE_SUCCEEDED);
    attempts += step.attempt_count();
  }
  EXPECT_EQ(attempts, 4);
  ExpectReleased(op);
  compute_->SetPowerOffHook(nullptr);
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
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));

  v1::DeleteImageTemplateRequest del;
  del.set_id(template_.id());
  start = absl::Now();
  op = manager_->DeleteImageTemplate(owner_, del);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(WaitTerminal(op->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
}

}  // namespace
}  // namespace controlplane
