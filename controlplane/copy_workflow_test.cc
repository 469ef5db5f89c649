// CopyWorkflow through ImageTemplateManager and the operation runner, over
// the SQLite stores and fake storage nodes (n0, n1 in dc1; n2 in dc2): a copy
// makes the template deployable in dc2, its two disks copied at once; failure
// and cancel delete what the copy created (and nothing that was there
// before), also across a restart during the undo; removing a location deletes
// its data.
#include "controlplane/copy_workflow.h"

#include <string>

#include "absl/strings/match.h"
#include "controlplane/testing/workflow_test_environment.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using Fake = FakeStorageNodeClient;

class CopyWorkflowTest : public WorkflowTestEnvironment {
 protected:
  absl::StatusOr<v1::Operation> Add(const std::string& id, const std::string& dc,
                                    const std::string& request_id = "") {
    v1::AddImageTemplateLocationsRequest request;
    request.set_id(id);
    request.add_datacenters(dc);
    request.set_request_id(request_id);
    return manager_->AddImageTemplateLocations(owner_, request);
  }
  absl::StatusOr<v1::RemoveImageTemplateLocationsResponse> Remove(const std::string& id,
                                                                  const std::string& dc) {
    v1::RemoveImageTemplateLocationsRequest request;
    request.set_id(id);
    request.add_datacenters(dc);
    return manager_->RemoveImageTemplateLocations(owner_, request);
  }
  absl::StatusOr<v1::Operation> Deploy(const std::string& id, const std::string& dc) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(id);
    request.set_datacenter(dc);
    request.set_quantity(1);
    request.set_hostname_prefix("copy");
    request.set_domain("example.com");
    return manager_->DeployImageTemplate(owner_, request);
  }
  // Datacenter -> location status.
  std::map<std::string, v1::ImageTemplateLocationStatus> Locations(const std::string& id) {
    std::map<std::string, v1::ImageTemplateLocationStatus> out;
    const v1::ImageTemplate t = *templates_->GetTemplate(id);
    for (const auto& l : t.locations()) out[l.datacenter()] = l.status();
    return out;
  }
  // A new runner on the same stores, as after a control-plane restart
  // (after runner_->Stop()).
  void StartNewRunner() {
    OperationRunnerOptions options;
    options.poll_interval = absl::Milliseconds(20);
    options.step_max_attempts = 4;
    options.step_initial_backoff = absl::Milliseconds(10);
    options.step_max_backoff = absl::Milliseconds(40);
    options.progress_interval = absl::Milliseconds(20);
    runner_ = std::make_unique<OperationRunner>(operations_.get(), options);
    runner_->Register(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, create_.get());
    runner_->Register(v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE, deploy_.get());
    runner_->Register(v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE, delete_.get());
    runner_->Register(v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE, copy_.get());
    runner_->Start();
  }
  int ReplicasOn(const std::string& template_id, const std::string& node) {
    int n = 0;
    const std::vector<ImageReplica> replicas = *templates_->ListImageReplicas(template_id);
    for (const ImageReplica& r : replicas) {
      n += r.node_id == node ? 1 : 0;
    }
    return n;
  }
};

TEST_F(CopyWorkflowTest, CopiesEveryDiskThenTheTemplateDeploysInTheNewDatacenter) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  // Not deployable in dc2 yet: the refusal names where it is.
  auto refused = Deploy(t.id(), "dc2");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "dc1")) << refused.status();

  auto started = Add(t.id(), "dc2", "req-1");
  ASSERT_TRUE(started.ok()) << started.status();
  EXPECT_EQ(started->kind(), v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE);
  // The same request_id: the same operation.
  auto again = Add(t.id(), "dc2", "req-1");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), started->id());
  v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "copy_dc2_disk0").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Step(op, "copy_dc2_disk1").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Step(op, "record_locations").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(op.progress().bytes_done(), op.progress().bytes_total());

  // Each disk was sent by the node holding it, with the recorded digest.
  EXPECT_EQ(nodes_[0]->calls(Fake::kSend), 1);
  EXPECT_EQ(nodes_[1]->calls(Fake::kSend), 1);
  auto on_n2 = nodes_[2]->images();
  ASSERT_EQ(on_n2.size(), 2u);
  EXPECT_EQ(on_n2[t.id() + "-disk0"], t.disks(0).manifest_digest());
  EXPECT_EQ(on_n2[t.id() + "-disk1"], t.disks(1).manifest_digest());
  EXPECT_EQ(ReplicasOn(t.id(), "n2"), 2);
  EXPECT_EQ(Locations(t.id()),
            (std::map<std::string, v1::ImageTemplateLocationStatus>{
                {"dc1", v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE},
                {"dc2", v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE}}));
  EXPECT_EQ(Add(t.id(), "dc2").status().code(), absl::StatusCode::kAlreadyExists);

  // Deploy in dc2 restores from n2.
  AddVolume(2);
  AddVolume(2);
  AddVolume(2, 1 << 20);
  AddIpPool(10, "dc2");
  auto deployed = Deploy(t.id(), "dc2");
  ASSERT_TRUE(deployed.ok()) << deployed.status();
  op = WaitTerminal(deployed->id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(nodes_[2]->calls(Fake::kRestore), 2);
  EXPECT_EQ(nodes_[0]->calls(Fake::kRestore), 0);
}

TEST_F(CopyWorkflowTest, BothDisksAreCopiedAtOnce) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  nodes_[0]->Block(Fake::kSend);
  nodes_[1]->Block(Fake::kSend);
  auto started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  // Both sends are in flight together: one disk does not wait for the other.
  EXPECT_TRUE(WaitFor([&] { return nodes_[0]->waiting() == 1 && nodes_[1]->waiting() == 1; }));
  nodes_[0]->Release(Fake::kSend);
  nodes_[1]->Release(Fake::kSend);
  v1::Operation op = WaitTerminal(started->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(Step(op, "copy_dc2_disk0").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Step(op, "copy_dc2_disk1").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(nodes_[0]->calls(Fake::kSend), 1);
  EXPECT_EQ(nodes_[1]->calls(Fake::kSend), 1);
  auto on_n2 = nodes_[2]->images();
  ASSERT_EQ(on_n2.size(), 2u);
  EXPECT_EQ(on_n2[t.id() + "-disk0"], t.disks(0).manifest_digest());
  EXPECT_EQ(on_n2[t.id() + "-disk1"], t.disks(1).manifest_digest());
  EXPECT_EQ(ReplicasOn(t.id(), "n2"), 2);
  EXPECT_EQ(op.progress().bytes_done(), op.progress().bytes_total());
  EXPECT_EQ(Locations(t.id())["dc2"], v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
}

// A failed copy stops its sibling in flight at once (its step CANCELLED),
// and the undo leaves nothing on n2.
TEST_F(CopyWorkflowTest, AFailedDiskStopsTheCopyStillRunning) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  nodes_[0]->Block(Fake::kSend);  // disk0 stays in flight until cancelled
  nodes_[1]->Fail(Fake::kSend, absl::DataLossError("n1: chunk sha256 cd.. is corrupt"));
  const absl::Time start = absl::Now();
  auto started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Operation op = WaitTerminal(started->id());
  EXPECT_LT(absl::Now() - start, absl::Seconds(15));
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_EQ(Step(op, "copy_dc2_disk1").state(), v1::OPERATION_STATE_FAILED);
  const v1::OperationStep disk0 = Step(op, "copy_dc2_disk0");
  EXPECT_EQ(disk0.state(), v1::OPERATION_STATE_CANCELLED) << op.DebugString();
  EXPECT_TRUE(absl::StrContains(disk0.error().message(), "another disk")) << disk0.DebugString();
  EXPECT_TRUE(nodes_[2]->images().empty());
  EXPECT_EQ(ReplicasOn(t.id(), "n2"), 0);
  EXPECT_EQ(Locations(t.id())["dc2"], v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED);
}

// A control plane stopped while it undoes a failed copy finishes the undo
// at the next start: it does not copy again (the undo may already have
// deleted finished disks), and fails with the first cause.
TEST_F(CopyWorkflowTest, ARestartDuringTheUndoFinishesTheUndo) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  nodes_[1]->Block(Fake::kSend);
  auto started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitFor([&] { return nodes_[2]->images().size() == 1u; }));
  nodes_[1]->Fail(Fake::kSend, absl::DataLossError("n1: chunk sha256 ef.. is corrupt"));
  nodes_[2]->Block(Fake::kDelete);
  nodes_[1]->Release(Fake::kSend);
  ASSERT_TRUE(WaitFor([&] { return nodes_[2]->waiting() == 1; }));  // undoing
  runner_->Stop();
  nodes_[2]->Release(Fake::kDelete);
  ASSERT_EQ(operations_->GetOperation(started->id())->state(), v1::OPERATION_STATE_RUNNING);
  nodes_[1]->Fail(Fake::kSend, absl::OkStatus(), 0);  // a copy now would succeed

  StartNewRunner();
  v1::Operation op = WaitTerminal(started->id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_TRUE(absl::StrContains(op.error().message(), "corrupt")) << op.error().message();
  EXPECT_EQ(nodes_[1]->calls(Fake::kSend), 1);  // not copied again
  EXPECT_TRUE(nodes_[2]->images().empty());
  EXPECT_EQ(ReplicasOn(t.id(), "n2"), 0);
  EXPECT_EQ(Locations(t.id())["dc2"], v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED);
}

TEST_F(CopyWorkflowTest, FailureDeletesWhatTheCopyCreatedAndTheLocationCanBeRetried) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  // disk0 reaches n2 first, then disk1's copy fails.
  nodes_[1]->Block(Fake::kSend);
  auto started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitFor([&] { return nodes_[2]->images().size() == 1u; }));
  ASSERT_TRUE(WaitFor([&] { return ReplicasOn(t.id(), "n2") == 1; }));
  nodes_[1]->Fail(Fake::kSend, absl::DataLossError("n1: chunk sha256 ab.. is corrupt"));
  nodes_[1]->Release(Fake::kSend);
  v1::Operation op = WaitTerminal(started->id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_TRUE(absl::StrContains(op.error().message(), "corrupt")) << op.error().message();
  EXPECT_EQ(Step(op, "copy_dc2_disk0").state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(Step(op, "copy_dc2_disk1").state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(Step(op, "undo_copies").state(), v1::OPERATION_STATE_SUCCEEDED);
  // disk0 had reached n2; the undo deleted it.
  EXPECT_TRUE(nodes_[2]->images().empty());
  EXPECT_EQ(ReplicasOn(t.id(), "n2"), 0);
  EXPECT_EQ(Locations(t.id())["dc2"], v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED);
  // The source images are untouched.
  EXPECT_EQ(nodes_[0]->images().size(), 1u);
  EXPECT_EQ(nodes_[1]->images().size(), 1u);
  EXPECT_EQ(Deploy(t.id(), "dc2").status().code(), absl::StatusCode::kFailedPrecondition);

  // A FAILED location is copied again by adding it again.
  nodes_[1]->Fail(Fake::kSend, absl::OkStatus(), 0);
  started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  op = WaitTerminal(started->id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(nodes_[2]->images().size(), 2u);
  EXPECT_EQ(Locations(t.id())["dc2"], v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
  EXPECT_EQ(templates_->GetTemplate(t.id())->locations_size(), 2);
}

TEST_F(CopyWorkflowTest, CancelDeletesTheCopiesAndRemovesTheLocation) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  nodes_[1]->Block(Fake::kSend);
  auto started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitFor([&] { return nodes_[1]->waiting() == 1; }));
  EXPECT_EQ(Locations(t.id())["dc2"], v1::IMAGE_TEMPLATE_LOCATION_STATUS_COPYING);
  // A COPYING location cannot be removed, nor the template deleted.
  EXPECT_EQ(Remove(t.id(), "dc2").status().code(), absl::StatusCode::kFailedPrecondition);
  const absl::Time cancel_time = absl::Now();
  RequestCancel(started->id());
  v1::Operation op = WaitTerminal(started->id());
  EXPECT_LT(absl::Now() - cancel_time, absl::Seconds(15));
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_CANCELLED) << op.DebugString();
  EXPECT_TRUE(nodes_[2]->images().empty());
  EXPECT_EQ(ReplicasOn(t.id(), "n2"), 0);
  EXPECT_EQ(Locations(t.id()).count("dc2"), 0u);
  EXPECT_EQ(Locations(t.id()).size(), 1u);
}

TEST_F(CopyWorkflowTest, AnImageTheDestinationAlreadyHeldSurvivesTheUndo) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  nodes_[2]->AddImage(t.id() + "-disk0", t.disks(0).manifest_digest());
  nodes_[1]->Fail(Fake::kSend, absl::ResourceExhaustedError("n2: image store full"));
  auto started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Operation op = WaitTerminal(started->id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kResourceExhausted));
  EXPECT_EQ(nodes_[0]->calls(Fake::kSend), 0);  // nothing to send for disk0
  EXPECT_EQ(nodes_[2]->images().size(), 1u);
  EXPECT_EQ(nodes_[2]->images().count(t.id() + "-disk0"), 1u);

  // A destination holding the id with another digest: DATA_LOSS, kept.
  nodes_[1]->Fail(Fake::kSend, absl::OkStatus(), 0);
  nodes_[2]->AddImage(t.id() + "-disk0", "sha256:other");
  started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  op = WaitTerminal(started->id());
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kDataLoss));
  EXPECT_EQ(nodes_[2]->images()[t.id() + "-disk0"], "sha256:other");
}

TEST_F(CopyWorkflowTest, BeginChecksTheDatacenters) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  EXPECT_EQ(Add(t.id(), "dc9").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Add(t.id(), "dc1").status().code(), absl::StatusCode::kAlreadyExists);
  SetNodeUp(2, false);
  EXPECT_EQ(Add(t.id(), "dc2").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(Locations(t.id()).size(), 1u);  // nothing half-added
  SetNodeUp(2, true);
  // The destination goes down during the copy: UNAVAILABLE after the step's
  // retries, nothing left there.
  nodes_[0]->Block(Fake::kSend);
  auto started = Add(t.id(), "dc2");
  ASSERT_TRUE(started.ok()) << started.status();
  ASSERT_TRUE(WaitFor([&] { return nodes_[0]->waiting() == 1; }));
  nodes_[0]->Fail(Fake::kSend, absl::UnavailableError("peer fake-n2:7000 unreachable"));
  nodes_[0]->Release(Fake::kSend);
  v1::Operation op = WaitTerminal(started->id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_EQ(Step(op, "copy_dc2_disk0").attempt_count(), 4);
  EXPECT_TRUE(nodes_[2]->images().empty());
}

TEST_F(CopyWorkflowTest, RemovingALocationDeletesItsImages) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  v1::Operation op = WaitTerminal(Add(t.id(), "dc2")->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED);
  ASSERT_EQ(nodes_[2]->images().size(), 2u);

  auto removed = Remove(t.id(), "dc2");
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(removed->image_template().locations_size(), 1);
  EXPECT_TRUE(nodes_[2]->images().empty());
  EXPECT_EQ(ReplicasOn(t.id(), "n2"), 0);
  EXPECT_EQ(nodes_[0]->images().size(), 1u);
  // The last location cannot go.
  EXPECT_EQ(Remove(t.id(), "dc1").status().code(), absl::StatusCode::kFailedPrecondition);

  // Copy again, then remove the capture datacenter: dc2 alone holds it.
  op = WaitTerminal(Add(t.id(), "dc2")->id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED);
  ASSERT_TRUE(Remove(t.id(), "dc1").ok());
  EXPECT_TRUE(nodes_[0]->images().empty());
  EXPECT_TRUE(nodes_[1]->images().empty());
  EXPECT_EQ(nodes_[2]->images().size(), 2u);
  EXPECT_EQ(Deploy(t.id(), "dc1").status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Locations(t.id()),
            (std::map<std::string, v1::ImageTemplateLocationStatus>{
                {"dc2", v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE}}));
}

}  // namespace
}  // namespace controlplane
