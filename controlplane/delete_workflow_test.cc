// DeleteWorkflow through ImageTemplateManager and the operation runner, over
// the SQLite stores and fake storage nodes: a node that is down fails the
// delete with UNAVAILABLE naming it, and DeleteImageTemplate may be called
// again once it is back.
#include "controlplane/delete_workflow.h"

#include <string>

#include "absl/strings/match.h"
#include "controlplane/testing/workflow_test_environment.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using Fake = FakeStorageNodeClient;

using DeleteWorkflowTest = WorkflowTestEnvironment;

v1::DeleteImageTemplateRequest DeleteRequest(const std::string& id) {
  v1::DeleteImageTemplateRequest request;
  request.set_id(id);
  return request;
}

TEST_F(DeleteWorkflowTest, DeletesEveryImageThenTheRecord) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  ASSERT_EQ(nodes_[0]->images().size(), 1u);
  auto started = manager_->DeleteImageTemplate(owner_, DeleteRequest(t.id()));
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Operation op = WaitTerminal(started->id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(templates_->GetTemplate(t.id())->status(), v1::IMAGE_TEMPLATE_STATUS_DELETED);
  EXPECT_TRUE(nodes_[0]->images().empty());
  EXPECT_TRUE(nodes_[1]->images().empty());
  EXPECT_TRUE(templates_->ListImageReplicas(t.id())->empty());
}

// A node holding an image is down: the delete fails with UNAVAILABLE naming
// it, after deleting what it could; the template stays DELETING (its shares
// are gone, nobody deploys it) and DeleteImageTemplate is accepted again,
// finishing the job once the node is back.
TEST_F(DeleteWorkflowTest, NodeDownFailsWithUnavailableAndTheDeleteCanBeRetried) {
  const v1::ImageTemplate t = ActiveTemplate("golden");
  SetNodeUp(1, false);
  auto started = manager_->DeleteImageTemplate(owner_, DeleteRequest(t.id()));
  ASSERT_TRUE(started.ok()) << started.status();
  v1::Operation op = WaitTerminal(started->id());

  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op.error().code(), static_cast<int>(absl::StatusCode::kUnavailable));
  EXPECT_TRUE(absl::StrContains(op.error().message(), "storage node n1"))
      << op.error().message();
  EXPECT_EQ(Step(op, "delete_images").attempt_count(), 4);
  EXPECT_EQ(templates_->GetTemplate(t.id())->status(), v1::IMAGE_TEMPLATE_STATUS_DELETING);
  EXPECT_TRUE(nodes_[0]->images().empty());
  EXPECT_EQ(nodes_[1]->images().size(), 1u);
  ASSERT_EQ(templates_->ListImageReplicas(t.id())->size(), 1u);
  EXPECT_EQ(templates_->ListImageReplicas(t.id())->at(0).node_id, "n1");

  // Still down: the retry fails the same way.
  auto again = manager_->DeleteImageTemplate(owner_, DeleteRequest(t.id()));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_NE(again->id(), op.id());
  EXPECT_EQ(WaitTerminal(again->id()).state(), v1::OPERATION_STATE_FAILED);

  SetNodeUp(1, true);
  auto retry = manager_->DeleteImageTemplate(owner_, DeleteRequest(t.id()));
  ASSERT_TRUE(retry.ok()) << retry.status();
  op = WaitTerminal(retry->id());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  EXPECT_EQ(templates_->GetTemplate(t.id())->status(), v1::IMAGE_TEMPLATE_STATUS_DELETED);
  EXPECT_TRUE(nodes_[1]->images().empty());
  EXPECT_TRUE(templates_->ListImageReplicas(t.id())->empty());
  // DELETED is final.
  EXPECT_EQ(manager_->DeleteImageTemplate(owner_, DeleteRequest(t.id())).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace controlplane
