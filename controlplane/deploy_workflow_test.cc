// DeployWorkflow through the operation runner, over the SQLite stores, the
// inventory compute driver and fake storage nodes: failures in restore and
// in configure_network, cancel, and transient errors. A failed deploy leaves
// no server ACTIVE, every volume FREE and every address released.
#include "controlplane/deploy_workflow.h"

#include <atomic>
#include <functional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "common/status_macros.h"
#include "controlplane/testing/workflow_test_environment.h"
#include "controlplane/workflow_checkpoint.pb.h"
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
  v1::Server server = *inventory_->ReadServer(op.deployed_servers().server_ids(0));
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
  v1::Server server = *inventory_->ReadServer(op.deployed_servers().server_ids(0));
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


// Static addresses: reserved in the pool whose range holds them when the
// deploy is accepted, gateway and DNS filled from that pool, released with
// the server, and validated as IP literals before anything is taken.
// Deploys whose volumes sit on a node without the image copy it there from
// a node that has it (n1 is recorded as holding disk 0 but lacks it).
class DeployCopyTest : public WorkflowTestEnvironment {
 protected:
  void SetUp() override {
    WorkflowTestEnvironment::SetUp();
    template_ = ActiveTemplate("golden");
    AddIpPool();
    ASSERT_TRUE(templates_
                    ->AddImageReplica({template_.id(), Disk0(), "n1",
                                       template_.disks(0).manifest_digest()})
                    .ok());
  }
  std::string Disk0() const { return template_.id() + "-disk0"; }
  // Both disks and the config drive of one server on n1.
  void AddVolumesOnN1() {
    AddVolume(1);
    AddVolume(1);
    AddVolume(1, 1 << 20);
  }
  v1::ImageTemplate template_;
};

// A deploy waiting for another's copy of the same image to the same node
// stops at once when cancelled (it used to wait for the whole copy under
// one lock shared by every deploy), and the copy it waited for completes.
TEST_F(DeployCopyTest, ACancelledDeployStopsWaitingForAnotherDeploysCopy) {
  AddVolumesOnN1();
  nodes_[0]->Block(Fake::kSend);
  const v1::Operation a = BeginDeploy(template_, 1, "a");
  ASSERT_TRUE(WaitFor([&] { return nodes_[0]->waiting() == 1; }));
  AddVolumesOnN1();
  const v1::Operation b = BeginDeploy(template_, 1, "b");
  ASSERT_TRUE(WaitFor([&] {
    auto op = operations_->GetOperation(b.id());
    return op.ok() && absl::StartsWith(op->step(), "restore_disk_");
  }));
  RequestCancel(b.id());
  ASSERT_TRUE(WaitFor([&] { return IsTerminal(operations_->GetOperation(b.id())->state()); }))
      << operations_->GetOperation(b.id())->DebugString();
  EXPECT_EQ(operations_->GetOperation(b.id())->state(), v1::OPERATION_STATE_CANCELLED);
  EXPECT_EQ(nodes_[0]->waiting(), 1);  // A's copy still runs
  EXPECT_EQ(nodes_[0]->calls(Fake::kSend), 1);
  nodes_[0]->Release(Fake::kSend);
  EXPECT_EQ(WaitTerminal(a.id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(nodes_[0]->calls(Fake::kSend), 1);
}

// Review finding L2: a node found holding the image with the right digest
// gets its replica recorded, as after a control plane that died between a
// copy and its record; otherwise deleting the template would never reach
// that copy. (No record of disk 0 at all, so the deploy may put it on n1.)
TEST_F(DeployCopyTest, AnImageFoundOnTheNodeIsRecordedAsItsReplica) {
  for (const char* node : {"n0", "n1"}) {
    ASSERT_TRUE(templates_->RemoveImageReplica(Disk0(), node).ok());
  }
  nodes_[1]->AddImage(Disk0(), template_.disks(0).manifest_digest());
  AddVolumesOnN1();
  const v1::Operation op = WaitTerminal(BeginDeploy(template_, 1, "a").id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(nodes_[0]->calls(Fake::kSend) + nodes_[1]->calls(Fake::kSend), 0);
  auto replicas = templates_->ListImageReplicas(template_.id());
  ASSERT_TRUE(replicas.ok()) << replicas.status();
  std::vector<std::string> disk0;
  for (const ImageReplica& replica : *replicas) {
    if (replica.image_id == Disk0()) {
      disk0.push_back(absl::StrCat(replica.node_id, " ", replica.manifest_digest));
    }
  }
  EXPECT_EQ(disk0, std::vector<std::string>{"n1 " + template_.disks(0).manifest_digest()});
}

class DeployStaticAddressTest : public DeployWorkflowTest {
 protected:
  void SetUp() override {
    DeployWorkflowTest::SetUp();
    AddDeployVolumes(4);
    v1::CreateIpPoolRequest request;
    request.set_datacenter("dc1");
    request.set_subnet("10.30.0.0/24");
    request.set_gateway("10.30.0.1");
    request.add_dns_servers("10.30.0.2");
    request.add_ranges()->set_start("10.30.0.10");
    request.mutable_ranges(0)->set_end("10.30.0.11");
    auto response = inventory_->CreateIpPool(operator_, request);
    ASSERT_TRUE(response.ok()) << response.status();
    static_pool_ = response->ip_pool().id();
  }

  v1::DeployImageTemplateRequest Deploy(const std::string& hostname) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(template_.id());
    request.set_datacenter("dc1");
    request.set_quantity(1);
    request.add_hostnames(hostname);
    return request;
  }
  v1::DeployImageTemplateRequest DeployStatic(const std::string& hostname,
                                              const std::string& address) {
    v1::DeployImageTemplateRequest request = Deploy(hostname);
    request.add_networks()->mutable_static_address()->set_address(address);
    return request;
  }
  int64_t Allocated(const std::string& pool) {
    v1::GetIpPoolRequest request;
    request.set_id(pool);
    auto response = inventory_->GetIpPool(operator_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->ip_pool().allocated_count() : -1;
  }
  int FreeVolumes() {
    int n = 0;
    for (const v1::SanVolume& v : Volumes()) n += v.state() == v1::SAN_VOLUME_STATE_FREE;
    return n;
  }
  std::string NetworkConfigOf(const v1::Server& server) {
    for (const v1::ServerDisk& disk : server.disks()) {
      if (!disk.config_drive()) continue;
      for (auto& node : nodes_) {
        for (const auto& [url, config] : node->config_drives()) {
          if (url.find(disk.iscsi().iqn()) != std::string::npos) return config;
        }
      }
    }
    return "";
  }

  std::string static_pool_;
};

TEST_F(DeployStaticAddressTest, ReservedInItsPoolAndFilledFromIt) {
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("fixed", "10.30.0.10/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(Allocated(static_pool_), 1);  // reserved when accepted
  v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  const v1::Server server = *inventory_->ReadServer(op.deployed_servers().server_ids(0));
  const v1::NetworkInterface& nic = server.configuration().network_interfaces(0);
  EXPECT_EQ(nic.ip_address(), "10.30.0.10/24");
  EXPECT_EQ(nic.gateway(), "10.30.0.1");
  ASSERT_EQ(nic.dns_servers_size(), 1);
  EXPECT_EQ(nic.dns_servers(0), "10.30.0.2");
  EXPECT_EQ(nic.ip_pool_id(), static_pool_);
  const std::string config = NetworkConfigOf(server);
  EXPECT_NE(config.find("      - 10.30.0.10/24\n"), std::string::npos) << config;
  EXPECT_NE(config.find("via: 10.30.0.1\n"), std::string::npos) << config;
  EXPECT_NE(config.find("addresses: [10.30.0.2]"), std::string::npos) << config;

  // Taken: refused at call time, nothing allocated.
  const int free_volumes = FreeVolumes();
  auto again = manager_->DeployImageTemplate(owner_, DeployStatic("twin", "10.30.0.10/24"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  EXPECT_NE(again.status().message().find("10.30.0.10 is already allocated"), std::string::npos)
      << again.status();
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(Allocated(static_pool_), 1);

  // The pool never hands it out: its next address is .11, then it is full.
  v1::DeployImageTemplateRequest from_pool = Deploy("pooled");
  from_pool.add_networks()->set_ip_pool_id(static_pool_);
  auto pooled = manager_->DeployImageTemplate(owner_, from_pool);
  ASSERT_TRUE(pooled.ok()) << pooled.status();
  op = WaitTerminal(pooled->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(inventory_->ReadServer(op.deployed_servers().server_ids(0))
                ->configuration()
                .network_interfaces(0)
                .ip_address(),
            "10.30.0.11/24");
  from_pool.set_hostnames(0, "pooled2");
  EXPECT_EQ(manager_->DeployImageTemplate(owner_, from_pool).status().code(),
            absl::StatusCode::kResourceExhausted);

  // Two servers of one deploy asking for the same address.
  v1::DeployImageTemplateRequest pair = DeployStatic("a", "10.20.0.15/24");
  pair.set_quantity(2);
  pair.add_hostnames("b");
  pair.add_networks()->mutable_static_address()->set_address("10.20.0.15/24");
  EXPECT_EQ(manager_->DeployImageTemplate(owner_, pair).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(AllocatedAddresses(), 0);
}

// Pool addresses are taken when a deploy is accepted (review finding L5):
// two deploys wanting a pool's last address cannot both be accepted (the
// second used to fail in configure_network, after all its restores), the
// network step writes the reserved address, and a failed deploy returns it.
TEST_F(DeployStaticAddressTest, PoolAddressesAreTakenWhenTheDeployIsAccepted) {
  nodes_[0]->Block(Fake::kRestore);
  nodes_[0]->Fail(Fake::kRestore, absl::DataLossError("n0: chunk corrupt"));
  v1::DeployImageTemplateRequest two = Deploy("a1");
  two.set_quantity(2);
  two.add_hostnames("a2");
  two.add_networks()->set_ip_pool_id(static_pool_);
  two.add_networks()->set_ip_pool_id(static_pool_);
  auto doomed = manager_->DeployImageTemplate(owner_, two);
  ASSERT_TRUE(doomed.ok()) << doomed.status();
  // Held before any restore has finished.
  EXPECT_EQ(Allocated(static_pool_), 2);
  ASSERT_EQ(doomed->deployed_servers().server_ids_size(), 2);
  for (int i = 0; i < 2; ++i) {
    const v1::NetworkInterface nic = inventory_->ReadServer(doomed->deployed_servers().server_ids(i))
                                         ->configuration()
                                         .network_interfaces(0);
    EXPECT_EQ(nic.ip_address(), absl::StrCat("10.30.0.1", i, "/24"));
    EXPECT_EQ(nic.ip_pool_id(), static_pool_);
  }

  v1::DeployImageTemplateRequest one = Deploy("late");
  one.add_networks()->set_ip_pool_id(static_pool_);
  const int free_volumes = FreeVolumes();
  auto refused = manager_->DeployImageTemplate(owner_, one);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_EQ(refused.status().message(),
            absl::StrCat("the IP pools ", static_pool_,
                         " have 0 free addresses, the deploy needs 1; deploy fewer servers "
                         "or ask an operator to add addresses"));
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(Allocated(static_pool_), 2);

  nodes_[0]->Release(Fake::kRestore);
  const v1::Operation failed = WaitTerminal(doomed->id());
  EXPECT_EQ(failed.state(), v1::OPERATION_STATE_FAILED) << failed.DebugString();
  EXPECT_EQ(Allocated(static_pool_), 0);

  nodes_[0]->Fail(Fake::kRestore, absl::OkStatus(), 0);
  auto accepted = manager_->DeployImageTemplate(owner_, one);
  ASSERT_TRUE(accepted.ok()) << accepted.status();
  const v1::Operation op = WaitTerminal(accepted->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "configure_network").state(), v1::OPERATION_STATE_SUCCEEDED);
  const v1::Server server = *inventory_->ReadServer(op.deployed_servers().server_ids(0));
  EXPECT_EQ(server.configuration().network_interfaces(0).ip_address(), "10.30.0.10/24");
  const std::string config = NetworkConfigOf(server);
  EXPECT_NE(config.find("      - 10.30.0.10/24\n"), std::string::npos) << config;
  EXPECT_EQ(Allocated(static_pool_), 1);
}

// Overlapping pools: an address outside every range belongs to the pool
// whose subnet holds it most specifically, whatever order they were made in.
TEST_F(DeployStaticAddressTest, OverlappingPoolsTakeTheMostSpecificSubnet) {
  for (const auto& [subnet, gateway, first] :
       std::vector<std::tuple<std::string, std::string, std::string>>{
           {"10.40.0.0/16", "10.40.0.1", "10.40.5.10"},
           {"10.40.1.0/24", "10.40.1.1", "10.40.1.10"}}) {
    v1::CreateIpPoolRequest pool;
    pool.set_datacenter("dc1");
    pool.set_subnet(subnet);
    pool.set_gateway(gateway);
    pool.add_ranges()->set_start(first);
    pool.mutable_ranges(0)->set_end(first);
    ASSERT_TRUE(inventory_->CreateIpPool(operator_, pool).ok());
  }
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("inner", "10.40.1.200/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(inventory_->ReadServer(op.deployed_servers().server_ids(0))
                ->configuration()
                .network_interfaces(0)
                .gateway(),
            "10.40.1.1");
}

// Outside every pool's subnet: refused, naming the pools, nothing taken (no
// pool would keep the address from going to another server). Inside one:
// its prefix length, not its network, broadcast or gateway address. Given
// gateway and DNS win over the pool's.
TEST_F(DeployStaticAddressTest, OutsidePoolsRefusedOwnGatewayKept) {
  const int free_volumes = FreeVolumes();
  v1::DeployImageTemplateRequest request = DeployStatic("outside", "192.168.7.5/24");
  request.mutable_networks(0)->mutable_static_address()->set_gateway("192.168.7.1");
  auto refused = manager_->DeployImageTemplate(owner_, request);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("192.168.7.5 lies in no IP pool of datacenter dc1"),
            std::string::npos)
      << refused.status();
  EXPECT_NE(refused.status().message().find("10.30.0.0/24 (IP pool " + static_pool_ + ")"),
            std::string::npos)
      << refused.status();
  struct Case {
    std::string address, message;
  };
  for (const Case& c : std::vector<Case>{
           {"10.30.0.10/16", "has prefix /16 but its subnet 10.30.0.0/24"},
           {"10.30.0.0/24", "is the network address of 10.30.0.0/24"},
           {"10.30.0.255/24", "is the broadcast address of 10.30.0.0/24"},
           {"10.30.0.1/24", "is the gateway of 10.30.0.0/24"}}) {
    refused = manager_->DeployImageTemplate(owner_, DeployStatic("bad", c.address));
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
    EXPECT_NE(refused.status().message().find(c.message), std::string::npos) << refused.status();
  }
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(AllocatedAddresses(), 0);

  // In the subnet but outside the pool's ranges: reserved for the
  // datacenter, not as a pool address; gateway and DNS still come from the
  // pool.
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("manual", "10.30.0.50/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  v1::NetworkInterface nic = inventory_->ReadServer(op.deployed_servers().server_ids(0))
                                 ->configuration()
                                 .network_interfaces(0);
  EXPECT_EQ(nic.ip_address(), "10.30.0.50/24");
  EXPECT_EQ(nic.gateway(), "10.30.0.1");
  EXPECT_EQ(nic.ip_pool_id(), "");
  EXPECT_EQ(Allocated(static_pool_), 0);

  request = DeployStatic("own-dns", "10.30.0.11/24");
  request.mutable_networks(0)->mutable_static_address()->set_gateway("10.30.0.254");
  request.mutable_networks(0)->mutable_static_address()->add_dns_servers("2001:db8::53");
  started = manager_->DeployImageTemplate(owner_, request);
  ASSERT_TRUE(started.ok()) << started.status();
  op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  nic = inventory_->ReadServer(op.deployed_servers().server_ids(0))
            ->configuration()
            .network_interfaces(0);
  EXPECT_EQ(nic.gateway(), "10.30.0.254");
  ASSERT_EQ(nic.dns_servers_size(), 1);
  EXPECT_EQ(nic.dns_servers(0), "2001:db8::53");
  EXPECT_EQ(Allocated(static_pool_), 1);
}

// Review finding M2: pools are shared by a datacenter's accounts, so a
// static address outside their ranges is reserved too: another account
// deploying it is refused (nothing taken) until the server holding it is
// released by a failed deploy or deleted.
TEST_F(DeployStaticAddressTest, OutOfRangeAddressesAreUniqueAcrossAccounts) {
  const std::string kOther = "00000000-0000-4000-8000-00000000000b";
  ASSERT_TRUE(AddTestAccount(*db_, kOther).ok());
  accounts_.AddAccount(kOther);
  Caller other = owner_;
  other.account_id = kOther;
  other.user_id = "other";
  ASSERT_TRUE(templates_
                  ->MutateTemplate(template_.id(),
                                   [&](TemplateTransaction& txn) {
                                     txn.image_template().set_visibility(v1::VISIBILITY_SHARED);
                                     return txn.AddShare(kOther, 1);
                                   })
                  .ok());
  auto count = [&](const std::string& sql) {
    int64_t n = -1;
    EXPECT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                     ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql));
                     ASSIGN_OR_RETURN(bool row, s.Step());
                     n = row ? s.ColumnInt(0) : -1;
                     return absl::OkStatus();
                   }).ok());
    return n;
  };
  auto deploy = [&](const Caller& caller, const std::string& hostname) {
    return manager_->DeployImageTemplate(caller, DeployStatic(hostname, "10.30.0.200/24"));
  };

  // A failed deploy gives it back.
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::InternalError("drive broke"));
  auto started = deploy(owner_, "doomed");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 1);
  EXPECT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 0);
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::OkStatus());

  started = deploy(owner_, "mine");
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  const std::string mine = op.deployed_servers().server_ids(0);
  EXPECT_EQ(inventory_->ReadServer(mine)->configuration().network_interfaces(0).ip_address(),
            "10.30.0.200/24");
  // Not a pool address: the pool's two stay free.
  EXPECT_EQ(Allocated(static_pool_), 0);

  const int free_volumes = FreeVolumes();
  const int64_t servers = count("SELECT COUNT(*) FROM servers");
  const int64_t operations = count("SELECT COUNT(*) FROM operations");
  auto refused = deploy(other, "theirs");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists) << refused.status();
  EXPECT_EQ(refused.status().message(),
            "networks.static_address.address: 10.30.0.200 is already used by a server in "
            "datacenter dc1; choose a free address or take one from a pool with ip_pool_id");
  EXPECT_EQ(FreeVolumes(), free_volumes);
  EXPECT_EQ(count("SELECT COUNT(*) FROM servers"), servers);
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 1);
  EXPECT_EQ(count("SELECT COUNT(*) FROM operations"), operations);
  // The owner's own second server cannot have it either.
  EXPECT_EQ(deploy(owner_, "twin").status().code(), absl::StatusCode::kAlreadyExists);

  v1::DeleteServerRequest remove;
  remove.set_id(mine);
  ASSERT_TRUE(inventory_->DeleteServer(operator_, remove).ok());
  EXPECT_EQ(count("SELECT COUNT(*) FROM static_addresses"), 0);
  started = deploy(other, "theirs");
  ASSERT_TRUE(started.ok()) << started.status();
  op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(inventory_->ReadServer(op.deployed_servers().server_ids(0))
                ->configuration()
                .network_interfaces(0)
                .ip_address(),
            "10.30.0.200/24");
}

// A range added later over a recorded static address: the pool never hands
// that address out, and no other deploy takes it as static either.
TEST_F(DeployStaticAddressTest, ARangeAddedOverARecordedStaticAddressSkipsIt) {
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("fixed", "10.30.0.200/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  v1::CreateIpPoolRequest request;
  request.set_datacenter("dc1");
  request.set_subnet("10.30.0.0/24");
  request.set_gateway("10.30.0.1");
  request.add_ranges()->set_start("10.30.0.200");
  request.mutable_ranges(0)->set_end("10.30.0.201");
  auto later = inventory_->CreateIpPool(operator_, request);
  ASSERT_TRUE(later.ok()) << later.status();

  auto again = manager_->DeployImageTemplate(owner_, DeployStatic("twin", "10.30.0.200/24"));
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  v1::DeployImageTemplateRequest from_pool = Deploy("pooled");
  from_pool.add_networks()->set_ip_pool_id(later->ip_pool().id());
  started = manager_->DeployImageTemplate(owner_, from_pool);
  ASSERT_TRUE(started.ok()) << started.status();
  const v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(inventory_->ReadServer(op.deployed_servers().server_ids(0))
                ->configuration()
                .network_interfaces(0)
                .ip_address(),
            "10.30.0.201/24");
}

// A failed deploy returns its static address with the server.
TEST_F(DeployStaticAddressTest, FailedDeployReleasesTheStaticAddress) {
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::InternalError("drive broke"));
  auto started = manager_->DeployImageTemplate(owner_, DeployStatic("doomed", "10.30.0.10/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(Allocated(static_pool_), 1);
  EXPECT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(Allocated(static_pool_), 0);
  for (auto& node : nodes_) node->Fail(Fake::kConfigDrive, absl::OkStatus());
  started = manager_->DeployImageTemplate(owner_, DeployStatic("retry", "10.30.0.10/24"));
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(WaitTerminal(started->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
}

// Anything but IP literals is refused before anything is taken: these
// strings would otherwise land in the network-config YAML as they are.
TEST_F(DeployStaticAddressTest, NonLiteralsAreInvalidArguments) {
  struct Case {
    std::string address, gateway;
    std::vector<std::string> dns;
    std::string field;
  };
  const std::vector<Case> cases = {
      {"10.30.0.10", "", {}, "networks.static_address.address"},
      {"10.30.0.300/24", "", {}, "networks.static_address.address"},
      {"10.30.0.10/33", "", {}, "networks.static_address.address"},
      {"10.30.0.10/24\n    dhcp4: true", "", {}, "networks.static_address.address"},
      {"web.example.com/24", "", {}, "networks.static_address.address"},
      {"10.30.0.10/24", "10.30.0.1\n    evil: true", {}, "networks.static_address.gateway"},
      {"10.30.0.10/24", "gw", {}, "networks.static_address.gateway"},
      {"10.30.0.10/24", "", {"10.30.0.2]"}, "networks.static_address.dns_servers"},
      {"10.30.0.10/24", "", {"1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4", "5.5.5.5"},
       "networks.static_address.dns_servers"},
  };
  for (const Case& c : cases) {
    v1::DeployImageTemplateRequest request = DeployStatic("bad", c.address);
    auto* a = request.mutable_networks(0)->mutable_static_address();
    a->set_gateway(c.gateway);
    for (const std::string& dns : c.dns) a->add_dns_servers(dns);
    auto refused = manager_->DeployImageTemplate(owner_, request);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument)
        << c.address << " " << c.gateway << ": " << refused.status();
    EXPECT_EQ(refused.status().message().substr(0, c.field.size()), c.field) << refused.status();
  }
  EXPECT_EQ(Allocated(static_pool_), 0);
}


// A deploy whose checks passed on a template that an unshare, disable,
// location removal or delete then changed: the provisioning transaction
// sees the change and takes nothing. (deploy_->Begin gets the template as
// the manager loaded it before the change.)
TEST_F(DeployStaticAddressTest, ProvisioningRechecksVisibilityAndStatus) {
  const std::string kOther = "00000000-0000-4000-8000-00000000000b";
  ASSERT_TRUE(AddTestAccount(*db_, kOther).ok());
  accounts_.AddAccount(kOther);
  Caller other = owner_;
  other.account_id = kOther;
  other.user_id = "other";
  auto mutate = [&](const std::function<void(TemplateTransaction&)>& change) {
    ASSERT_TRUE(templates_
                    ->MutateTemplate(template_.id(),
                                     [&](TemplateTransaction& txn) {
                                       change(txn);
                                       return absl::OkStatus();
                                     })
                    .ok());
  };
  mutate([](TemplateTransaction& txn) {
    ASSERT_TRUE(txn.AddShare("00000000-0000-4000-8000-00000000000b", 1).ok());
    txn.image_template().set_visibility(v1::VISIBILITY_SHARED);
  });
  const v1::ImageTemplate loaded = *templates_->GetTemplate(template_.id());
  const int free_volumes = FreeVolumes();
  auto begin = [&](const Caller& caller, const std::string& hostname) {
    v1::DeployImageTemplateRequest request = Deploy(hostname);
    return deploy_->Begin(caller, request, loaded, NowMicros());
  };

  // Unshared after the checks: NOT_FOUND, as for any invisible template.
  mutate([](TemplateTransaction& txn) {
    ASSERT_TRUE(txn.RemoveShare("00000000-0000-4000-8000-00000000000b").ok());
    txn.image_template().set_visibility(v1::VISIBILITY_PRIVATE);
  });
  auto refused = begin(other, "late-share");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kNotFound) << refused.status();
  // The owner still deploys it.
  auto ok = begin(owner_, "owner");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(WaitTerminal(ok->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
  const int after_owner = FreeVolumes();
  EXPECT_EQ(after_owner, free_volumes - 3);

  // Disabled, its location removed, then DELETING: FAILED_PRECONDITION.
  mutate([](TemplateTransaction& txn) { txn.image_template().set_disabled(true); });
  EXPECT_EQ(begin(owner_, "disabled").status().code(), absl::StatusCode::kFailedPrecondition);
  mutate([](TemplateTransaction& txn) {
    txn.image_template().set_disabled(false);
    txn.image_template().mutable_locations(0)->set_status(
        v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED);
  });
  EXPECT_EQ(begin(owner_, "no-location").status().code(),
            absl::StatusCode::kFailedPrecondition);
  mutate([](TemplateTransaction& txn) {
    txn.image_template().mutable_locations(0)->set_status(
        v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
    txn.image_template().set_status(v1::IMAGE_TEMPLATE_STATUS_DELETING);
  });
  refused = begin(owner_, "deleting");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("DELETING"), std::string::npos) << refused.status();
  // An operator still sees it (for it every template is visible), but not
  // as deployable.
  EXPECT_EQ(begin(operator_, "operator").status().code(),
            absl::StatusCode::kFailedPrecondition);

  // Nothing was taken by the refused ones.
  EXPECT_EQ(FreeVolumes(), after_owner);
  v1::ListServersRequest list;
  list.set_page_size(100);
  auto servers = inventory_->ListServers(operator_, list);
  ASSERT_TRUE(servers.ok()) << servers.status();
  for (const v1::Server& server : servers->servers()) {
    EXPECT_TRUE(server.hostname() == "owner" || server.hostname().rfind("source", 0) == 0)
        << server.hostname();
  }
}

}  // namespace
}  // namespace controlplane
