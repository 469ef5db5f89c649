// kill -9 of the real controlplane while a failed create undoes itself: the
// restarted controlplane finishes the undo with the recorded cause instead
// of running the create forward again (which, with a disk whose image the
// undo had already deleted marked captured in its checkpoint, made the
// template ACTIVE over a missing image). Real tgtd SANs and storaged nodes,
// as in create_deploy_test.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <map>
#include <string>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/create_deploy_fixture.h"
#include "tests/rpc.h"
#include "tests/san.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
namespace pb = imagetemplates::storagenode::v1;
constexpr uint64_t kMiB = 1 << 20;

bool Ended(const v1::Operation& op) {
  return op.state() == v1::OPERATION_STATE_SUCCEEDED ||
         op.state() == v1::OPERATION_STATE_FAILED ||
         op.state() == v1::OPERATION_STATE_CANCELLED;
}

// The finished step `name` (its last record), or null.
const v1::OperationStep* FinishedStep(const v1::Operation& op,
                                      const std::string& name) {
  const v1::OperationStep* found = nullptr;
  for (const v1::OperationStep& step : op.finished_steps()) {
    if (step.name() == name) found = &step;
  }
  return found;
}

// Each finished step's name -> how many times it was recorded.
std::map<std::string, int> StepCounts(const v1::Operation& op) {
  std::map<std::string, int> counts;
  for (const v1::OperationStep& step : op.finished_steps()) {
    ++counts[step.name()];
  }
  return counts;
}

class CreateUndoCrashTest : public CreateDeployTest {
 protected:
  v1::Operation GetOperation(const std::string& id) {
    v1::GetOperationRequest request;
    request.set_id(id);
    v1::Operation op;
    grpc::Status status =
        Call(stack_.operations(), &v1::OperationService::Stub::GetOperation,
             acme_.key, request, &op);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return op;
  }

  // Polls the operation until `done` holds for it or it ended; `timeout` is
  // only a hang guard.
  template <typename Predicate>
  v1::Operation WaitFor(const std::string& id, Predicate done,
                        absl::Duration timeout, const std::string& what) {
    const absl::Time deadline = absl::Now() + timeout;
    v1::Operation op;
    while (absl::Now() < deadline) {
      op = GetOperation(id);
      if (done(op) || Ended(op)) return op;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << "operation " << id << ": no " << what << ": "
                  << op.DebugString();
    return op;
  }

  // GetImage of `image_id` on storaged `node_id`.
  grpc::Status GetImage(const std::string& node_id,
                        const std::string& image_id) {
    auto stub = stack_.NodeStub(node_id);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() +
                         std::chrono::seconds(30));
    pb::GetImageRequest request;
    request.set_image_id(image_id);
    pb::GetImageResponse image;
    return stub->GetImage(&context, request, &image);
  }
};

// A create of a boot disk on SAN 0 (16 MiB, captured by n0) and a data disk
// on SAN 1 (1 GiB, captured by n1). n1 is killed for good during the
// capture: disk 0's capture succeeds, disk 1's fails after its UNAVAILABLE
// retries, and the undo's delete_images deletes disk 0's image from n0 and
// retries against the dead n1. The controlplane is killed right then and
// restarted, and n1 with it: the checkpoint still says disk 0 is captured,
// so only the recorded failure keeps the create from going forward.
TEST_F(CreateUndoCrashTest, RestartDuringTheUndoFinishesTheUndo) {
  Lun boot_lun, data_lun;
  const uint64_t boot_size = 16 * kMiB, data_size = 1024 * kMiB;
  const std::string boot_volume =
      AddVolume(0, "undo-boot", boot_size, &boot_lun);
  const std::string data_volume =
      AddVolume(1, "undo-data", data_size, &data_lun);
  FillRandom(boot_lun.backing_path, 0, boot_size, 19);
  FillRandom(data_lun.backing_path, 0, data_size, 23);
  const std::string source = AddServer(acme_, {boot_volume, data_volume});

  v1::Operation create = CreateTemplate(acme_, source, "undone", {1});
  ASSERT_FALSE(create.id().empty());
  const std::string template_id = create.image_template_id();
  const std::string disk0 = template_id + "-disk0";
  const std::string disk1 = template_id + "-disk1";
  // Past disk 0's bytes: disk 1's capture runs.
  create = WaitFor(
      create.id(),
      [&](const v1::Operation& op) {
        return op.progress().bytes_done() > static_cast<int64_t>(boot_size);
      },
      absl::Seconds(120), "capture of disk 1");
  ASSERT_FALSE(Ended(create)) << "capture ended before the kill";
  ASSERT_TRUE(stack_.storaged(1).Stop(SIGKILL).ok());
  const absl::Time storaged_kill = absl::Now();

  // Disk 0 captured: n0 holds its image.
  create = WaitFor(
      create.id(),
      [&](const v1::Operation& op) {
        return FinishedStep(op, "capture_disk_0") != nullptr;
      },
      absl::Seconds(120), "capture_disk_0 step");
  const v1::OperationStep* captured = FinishedStep(create, "capture_disk_0");
  ASSERT_NE(captured, nullptr) << create.DebugString();
  ASSERT_EQ(captured->state(), v1::OPERATION_STATE_SUCCEEDED)
      << captured->error().message();
  {
    grpc::Status held = GetImage("n0", disk0);
    ASSERT_TRUE(held.ok()) << held.error_message();
  }

  // Disk 1's capture fails after about 35 s of retries (step backoff
  // 1+2+4+8+15 s); delete_images then retries against n1 as long. The
  // bounds are hang guards.
  create = WaitFor(
      create.id(),
      [](const v1::Operation& op) { return op.step() == "delete_images"; },
      absl::Seconds(300), "delete_images step");
  std::printf("undo reached %s in %s\n", create.step().c_str(),
              absl::FormatDuration(absl::Now() - storaged_kill).c_str());
  ASSERT_EQ(create.state(), v1::OPERATION_STATE_RUNNING)
      << create.DebugString();
  ASSERT_EQ(create.step(), "delete_images") << create.DebugString();
  const v1::OperationStep* failed = FinishedStep(create, "capture_disk_1");
  ASSERT_NE(failed, nullptr) << create.DebugString();
  // The cause the undo runs for.
  const v1::Status cause = failed->error();
  ASSERT_EQ(cause.code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE))
      << create.DebugString();
  ASSERT_FALSE(cause.message().empty());
  // The undo's first attempt deletes disk 0's image (n0 is up); the step
  // keeps retrying for n1.
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  grpc::Status held;
  while ((held = GetImage("n0", disk0)).ok() && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  ASSERT_EQ(held.error_code(), grpc::StatusCode::NOT_FOUND)
      << held.error_message();
  create = GetOperation(create.id());
  ASSERT_EQ(create.state(), v1::OPERATION_STATE_RUNNING)
      << "the undo ended before the kill: " << create.DebugString();
  ASSERT_EQ(create.step(), "delete_images") << create.DebugString();
  EXPECT_EQ(GetTemplate(template_id).status(),
            v1::IMAGE_TEMPLATE_STATUS_CREATING);
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_STOPPED);

  // n1 comes back, so that a create going forward again would capture disk
  // 1 and succeed, and the undo can delete what n1 holds. It starts while
  // the controlplane is down, so the resumed delete_images does not spend
  // its retries waiting for it on a slow machine.
  ASSERT_NO_FATAL_FAILURE(
      stack_.KillAndRestartControlPlane([&] { stack_.StartStoraged(1); }));
  ASSERT_NO_FATAL_FAILURE(stack_.WaitNodesUp());
  create = WaitOperation(acme_.key, create.id(), absl::Seconds(300));
  std::printf("after controlplane kill: %s %s\n",
              v1::OperationState_Name(create.state()).c_str(),
              create.error().message().c_str());

  EXPECT_EQ(create.state(), v1::OPERATION_STATE_FAILED) << create.DebugString();
  EXPECT_EQ(create.error().code(), cause.code()) << create.DebugString();
  EXPECT_EQ(create.error().message(), cause.message());
  EXPECT_EQ(GetTemplate(template_id).status(),
            v1::IMAGE_TEMPLATE_STATUS_FAILED);
  EXPECT_EQ(GetServer(source).power_state(), v1::POWER_STATE_RUNNING);
  EXPECT_EQ(GetServer(source).state(), v1::SERVER_STATE_ACTIVE);
  // Each disk captured once (disk 1 failing), nothing recorded; the undo's
  // steps finished after the restart.
  std::map<std::string, int> steps = StepCounts(create);
  EXPECT_EQ(steps["capture_disk_0"], 1) << create.DebugString();
  EXPECT_EQ(steps["capture_disk_1"], 1) << create.DebugString();
  EXPECT_EQ(steps["record_template"], 0) << create.DebugString();
  EXPECT_EQ(steps["delete_images"], 1) << create.DebugString();
  EXPECT_EQ(steps["mark_failed"], 1) << create.DebugString();
  EXPECT_EQ(steps["power_restore"], 1) << create.DebugString();
  for (const v1::OperationStep& step : create.finished_steps()) {
    if (step.name() == "capture_disk_1") continue;
    EXPECT_EQ(step.state(), v1::OPERATION_STATE_SUCCEEDED)
        << step.name() << ": " << step.error().message();
  }
  EXPECT_EQ(GetImage("n0", disk0).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(GetImage("n1", disk1).error_code(), grpc::StatusCode::NOT_FOUND);
}

}  // namespace
}  // namespace tests
