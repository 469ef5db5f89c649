// Copying a template to a second datacenter end to end with real processes:
// two tgtd SANs, storaged n0 in dc1 and n1 in dc2 registered with the real
// controlplane. A template captured in dc1 is not deployable in dc2 until
// AddImageTemplateLocations has copied it there (storaged SendImage, only
// missing chunks); then a deploy in dc2 restores a byte-identical disk from
// n1. A second template sharing most data copies only its new chunks.
// Removing the location deletes the images on n1. kill -9 of the
// controlplane in the middle of a two-disk copy: after the restart the copy
// finishes or fails cleanly; with the source node gone too, it fails cleanly.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <memory>
#include <regex>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/rpc.h"
#include "tests/san.h"
#include "tests/stack.h"
#include "tests/two_datacenter_test.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
namespace pb = imagetemplates::storagenode::v1;
constexpr uint64_t kMiB = 1 << 20;

#define ASSERT_OK(status) ASSERT_TRUE((status).ok()) << (status).error_message()

class CopyTest : public TwoDatacenterTest {
 protected:
  CopyTest() : TwoDatacenterTest("copy", "10.30.0") {}

  // A RUNNING server in dc1 with `volumes` as its disks (the first boots).
  std::string AddServer(const std::string& hostname, const std::vector<std::string>& volumes) {
    return stack_.CreateServer(Stack::ServerRequest(account_id_, hostname, volumes));
  }

  v1::Operation Wait(const std::string& id) {
    return stack_.WaitOperation(key_, id, absl::Seconds(120));
  }

  // Captures the server (all its disks); returns the ACTIVE template.
  v1::ImageTemplate Create(const std::string& name, const std::string& server_id,
                           int disks = 1) {
    v1::CreateImageTemplateRequest request;
    request.set_server_id(server_id);
    request.set_name(name);
    for (int d = 1; d < disks; ++d) request.add_data_disk_indexes(d);
    v1::Operation op;
    grpc::Status status = Call(stack_.templates(),
                               &v1::ImageTemplateService::Stub::CreateImageTemplate, key_,
                               request, &op);
    EXPECT_TRUE(status.ok()) << status.error_message();
    if (!status.ok()) return v1::ImageTemplate();
    op = Wait(op.id());
    EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
    return GetTemplate(op.image_template_id());
  }

  v1::ImageTemplate GetTemplate(const std::string& id) { return stack_.GetTemplate(key_, id); }

  grpc::Status AddLocation(const std::string& id, const std::string& dc, v1::Operation* op) {
    v1::AddImageTemplateLocationsRequest request;
    request.set_id(id);
    request.add_datacenters(dc);
    return Call(stack_.templates(), &v1::ImageTemplateService::Stub::AddImageTemplateLocations,
                key_, request, op);
  }

  grpc::Status Deploy(const std::string& id, const std::string& dc, v1::Operation* op) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(id);
    request.set_datacenter(dc);
    request.set_quantity(1);
    request.add_hostnames("copied");
    request.set_domain("example.com");
    return Call(stack_.templates(), &v1::ImageTemplateService::Stub::DeployImageTemplate, key_,
                request, op);
  }

  grpc::Status NodeImage(int node, const std::string& image_id, pb::ImageManifestSummary* out) {
    auto stub = stack_.NodeStub(absl::StrCat("n", node));
    pb::GetImageRequest request;
    request.set_image_id(image_id);
    pb::GetImageResponse response;
    grpc::Status status = Call(*stub, &pb::StorageNode::Stub::GetImage, "", request, &response);
    *out = response.summary();
    return status;
  }

  // VerifyImage on node `node`: the manifest and every chunk of `image_id`
  // read back and checked against their digests.
  bool NodeImageVerified(int node, const std::string& image_id) {
    auto stub = stack_.NodeStub(absl::StrCat("n", node));
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    pb::VerifyImageRequest request;
    request.set_image_id(image_id);
    auto reader = stub->VerifyImage(&context, request);
    pb::VerifyImageProgress progress, last;
    while (reader->Read(&progress)) last = progress;
    grpc::Status status = reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_TRUE(last.result().ok()) << last.DebugString();
    return status.ok() && last.has_result() && last.result().ok();
  }

  // "<sent> of <total> chunks sent (<bytes> bytes" from n0's log line about
  // sending `image_id`.
  bool SendCounts(const std::string& image_id, uint64_t* sent, uint64_t* total,
                  uint64_t* bytes) {
    std::string log = ReadFile(stack_.StoragedLog(0));
    std::regex line("op=" + image_id +
                    " send to \\S+ done in \\S+: ([0-9]+) of ([0-9]+) chunks sent \\(([0-9]+) bytes");
    std::smatch m;
    if (!std::regex_search(log, m, line)) return false;
    return absl::SimpleAtoi(m[1].str(), sent) && absl::SimpleAtoi(m[2].str(), total) &&
           absl::SimpleAtoi(m[3].str(), bytes);
  }

  // A two-disk template of 512 and 256 MiB of random data captured on n0
  // (`luns` its sources), with volumes for one server from it on n1.
  v1::ImageTemplate BigTemplate(std::vector<Lun>* luns) {
    luns->resize(2);
    std::vector<std::string> sources;
    for (int d = 0; d < 2; ++d) {
      sources.push_back(
          stack_.AddVolume(0, absl::StrCat("big-src", d), kBigSizes[d], &(*luns)[d]));
      FillRandom((*luns)[d].backing_path, 0, kBigSizes[d], 23 + d);
      stack_.AddVolume(1, absl::StrCat("big-dst", d), kBigSizes[d]);
    }
    stack_.AddVolume(1, "cfg", kMiB);
    return Create("big", AddServer("big", sources), 2);
  }

  // Starts the copy of `template_id` to dc2 and returns once bytes cross.
  void StartCopyAndWaitForBytes(const std::string& template_id, v1::Operation* op) {
    ASSERT_OK(AddLocation(template_id, "dc2", op));
    *op = stack_.WaitTransferStarted(key_, op->id());
    ASSERT_EQ(op->state(), v1::OPERATION_STATE_RUNNING) << "copy ended before the kill";
    ASSERT_LT(op->progress().bytes_done(), op->progress().bytes_total());
  }

  static constexpr uint64_t kBigSizes[2] = {512 * kMiB, 256 * kMiB};
};

TEST_F(CopyTest, CopyToSecondDatacenterThenDeployThereByteIdentical) {
  const uint64_t size = 24 * kMiB;
  Lun lun;
  const std::string source = stack_.AddVolume(0, "src", size, &lun);
  FillRandom(lun.backing_path, 0, 20 * kMiB, 11);  // the tail stays zero
  const std::string at_capture = ReadFile(lun.backing_path);
  const std::string server = AddServer("source", {source});
  const v1::ImageTemplate t = Create("golden", server);
  ASSERT_EQ(t.disks_size(), 1);
  const std::string image_id = t.id() + "-disk0";

  // Room in dc2 for one server.
  const std::string target = stack_.AddVolume(1, "dst", size);
  stack_.AddVolume(1, "cfg", kMiB);
  v1::Operation op;
  grpc::Status refused = Deploy(t.id(), "dc2", &op);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_NE(refused.error_message().find("dc1"), std::string::npos) << refused.error_message();

  ASSERT_OK(AddLocation(t.id(), "dc2", &op));
  EXPECT_EQ(op.kind(), v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE);
  op = Wait(op.id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  v1::ImageTemplate copied = GetTemplate(t.id());
  ASSERT_EQ(copied.locations_size(), 2);
  for (const auto& location : copied.locations()) {
    EXPECT_EQ(location.status(), v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE)
        << location.DebugString();
  }
  pb::ImageManifestSummary on_n1;
  ASSERT_OK(NodeImage(1, image_id, &on_n1));
  EXPECT_EQ(on_n1.manifest_digest(), t.disks(0).manifest_digest());
  uint64_t sent = 0, total = 0, bytes = 0;
  ASSERT_TRUE(SendCounts(image_id, &sent, &total, &bytes));
  EXPECT_EQ(sent, total);  // n1 had nothing
  EXPECT_EQ(total, 20 * kMiB / (16 << 10));

  ASSERT_OK(Deploy(t.id(), "dc2", &op));
  op = Wait(op.id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  const std::string deployed = ReadFile(stack_.backing(target));
  ASSERT_EQ(deployed.size(), at_capture.size());
  EXPECT_TRUE(deployed == at_capture) << "the disk deployed in dc2 differs from the source";

  // A second template sharing all but 1 MiB: only its new chunks cross.
  FillRandom(lun.backing_path, 4 * kMiB, kMiB, 99);
  const v1::ImageTemplate t2 = Create("golden2", server);
  ASSERT_EQ(t2.disks_size(), 1);
  ASSERT_OK(AddLocation(t2.id(), "dc2", &op));
  op = Wait(op.id());
  ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  ASSERT_TRUE(SendCounts(t2.id() + "-disk0", &sent, &total, &bytes));
  EXPECT_EQ(total, 20 * kMiB / (16 << 10));
  EXPECT_EQ(sent, kMiB / (16 << 10));
  EXPECT_LE(bytes, kMiB + 64 * 1024);

  // Removing dc2 from the first template deletes its image on n1; the
  // second template's image (sharing the chunks) stays whole.
  v1::RemoveImageTemplateLocationsRequest remove;
  remove.set_id(t.id());
  remove.add_datacenters("dc2");
  v1::RemoveImageTemplateLocationsResponse removed;
  ASSERT_OK(Call(stack_.templates(),
                 &v1::ImageTemplateService::Stub::RemoveImageTemplateLocations, key_, remove,
                 &removed));
  EXPECT_EQ(removed.image_template().locations_size(), 1);
  EXPECT_EQ(NodeImage(1, image_id, &on_n1).error_code(), grpc::StatusCode::NOT_FOUND);
  ASSERT_OK(NodeImage(1, t2.id() + "-disk0", &on_n1));
  EXPECT_EQ(Deploy(t.id(), "dc2", &op).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

// kill -9 of the controlplane while a two-disk template (512 and 256 MiB of
// random data, copied at once) crosses from n0 to n1, restarted on the same
// port and database: the copy either finishes (dc2 AVAILABLE, a deploy there
// byte-identical) or fails cleanly (dc2 FAILED or gone, and the images this
// copy created on n1 deleted). n1 never holds a half-written image: each is
// there complete and verified, or not at all.
TEST_F(CopyTest, KillingTheControlPlaneDuringACopyFinishesOrUndoesIt) {
  std::vector<Lun> luns;
  const v1::ImageTemplate t = BigTemplate(&luns);
  ASSERT_EQ(t.disks_size(), 2);
  v1::Operation op;
  ASSERT_NO_FATAL_FAILURE(StartCopyAndWaitForBytes(t.id(), &op));
  ASSERT_NO_FATAL_FAILURE(stack_.KillAndRestartControlPlane());
  op = Wait(op.id());
  std::printf("copy after controlplane kill: %s %s\n",
              v1::OperationState_Name(op.state()).c_str(), op.error().message().c_str());
  // The kill cut n0's sends short: the first send of the larger disk failed.
  const std::string n0_log = ReadFile(stack_.StoragedLog(0));
  EXPECT_TRUE(std::regex_search(
      n0_log, std::regex("op=" + t.id() + "-disk0 send to \\S+ failed")))
      << n0_log;

  const v1::ImageTemplate after = GetTemplate(t.id());
  const v1::ImageTemplateLocation* dc2 = nullptr;
  for (const auto& location : after.locations()) {
    if (location.datacenter() == "dc2") dc2 = &location;
  }
  if (op.state() == v1::OPERATION_STATE_SUCCEEDED) {
    ASSERT_NE(dc2, nullptr) << after.DebugString();
    EXPECT_EQ(dc2->status(), v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
    for (int d = 0; d < 2; ++d) {
      const std::string image_id = absl::StrCat(t.id(), "-disk", d);
      pb::ImageManifestSummary on_n1;
      ASSERT_OK(NodeImage(1, image_id, &on_n1));
      EXPECT_EQ(on_n1.manifest_digest(), t.disks(d).manifest_digest());
      EXPECT_TRUE(NodeImageVerified(1, image_id));
    }
    // The nodes' heartbeats back off while the controlplane is away.
    ASSERT_NO_FATAL_FAILURE(stack_.WaitNodesUp());
    ASSERT_OK(Deploy(t.id(), "dc2", &op));
    op = Wait(op.id());
    ASSERT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
    ASSERT_EQ(op.deployed_servers().server_ids_size(), 1);
    const v1::Server server = stack_.GetServer(key_, op.deployed_servers().server_ids(0));
    int compared = 0;
    for (const v1::ServerDisk& disk : server.disks()) {
      if (disk.config_drive()) continue;
      const int d = disk.device_index();
      ASSERT_TRUE(d == 0 || d == 1) << disk.DebugString();
      for (uint64_t off = 0; off < kBigSizes[d]; off += 64 * kMiB) {
        ASSERT_TRUE(ReadFile(stack_.backing(disk.san_volume_id()), off, 64 * kMiB) ==
                    ReadFile(luns[d].backing_path, off, 64 * kMiB))
            << "disk " << d << " deployed in dc2 differs at " << off;
      }
      ++compared;
    }
    EXPECT_EQ(compared, 2);
  } else {
    EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
    if (dc2 != nullptr) {
      EXPECT_EQ(dc2->status(), v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED);
    }
    for (int d = 0; d < 2; ++d) {
      pb::ImageManifestSummary on_n1;
      const grpc::Status held = NodeImage(1, absl::StrCat(t.id(), "-disk", d), &on_n1);
      EXPECT_EQ(held.error_code(), grpc::StatusCode::NOT_FOUND) << held.error_message();
    }
    v1::Operation refused;
    EXPECT_EQ(Deploy(t.id(), "dc2", &refused).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  }
}

// The same kill, and the source node n0 killed for good: after the restart
// the copy cannot finish, so it fails (UNAVAILABLE, after the step's
// retries), dc2 turns FAILED and n1 holds neither image.
TEST_F(CopyTest, KillingTheControlPlaneAndTheSourceNodeFailsTheCopyCleanly) {
  std::vector<Lun> luns;
  const v1::ImageTemplate t = BigTemplate(&luns);
  ASSERT_EQ(t.disks_size(), 2);
  v1::Operation op;
  ASSERT_NO_FATAL_FAILURE(StartCopyAndWaitForBytes(t.id(), &op));
  ASSERT_TRUE(stack_.storaged(0).Stop(SIGKILL).ok());
  ASSERT_NO_FATAL_FAILURE(stack_.KillAndRestartControlPlane());
  op = Wait(op.id());
  std::printf("copy after controlplane and n0 kill: %s %s\n",
              v1::OperationState_Name(op.state()).c_str(), op.error().message().c_str());
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_FAILED) << op.DebugString();
  EXPECT_EQ(op.error().code(), static_cast<int>(grpc::StatusCode::UNAVAILABLE))
      << op.error().message();
  bool undone = false;
  for (const auto& step : op.finished_steps()) {
    if (step.name() == "undo_copies") undone = step.state() == v1::OPERATION_STATE_SUCCEEDED;
  }
  EXPECT_TRUE(undone) << op.DebugString();
  const v1::ImageTemplate after = GetTemplate(t.id());
  ASSERT_EQ(after.locations_size(), 2) << after.DebugString();
  for (const auto& location : after.locations()) {
    EXPECT_EQ(location.status(), location.datacenter() == "dc2"
                                     ? v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED
                                     : v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE)
        << location.DebugString();
  }
  for (int d = 0; d < 2; ++d) {
    pb::ImageManifestSummary on_n1;
    const grpc::Status held = NodeImage(1, absl::StrCat(t.id(), "-disk", d), &on_n1);
    EXPECT_EQ(held.error_code(), grpc::StatusCode::NOT_FOUND) << held.error_message();
  }
  v1::Operation refused;
  EXPECT_EQ(Deploy(t.id(), "dc2", &refused).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
}

}  // namespace
}  // namespace tests
