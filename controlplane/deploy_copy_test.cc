// Deploys whose volumes sit on a node without the image copy it there from
// a node that has it (n1 is recorded as holding disk 0 but lacks it): a
// cancelled deploy stops waiting for another's copy, and an image found on
// the node is recorded as its replica.
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controlplane/testing/workflow_test_environment.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using Fake = FakeStorageNodeClient;

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

}  // namespace
}  // namespace controlplane
