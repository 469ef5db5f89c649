// Not a test: times AddImageTemplateLocations of a two-disk template between
// two real storaged nodes (dc1 -> dc2) through the controlplane, for this
// build's controlplane and, side by side in alternating rounds, a baseline
// binary (e.g. one that copies disks one after another). Prints each round
// and the median ratio; the operation's own create and end times are used.
//
//   bazel build //tests:copy_bench
//   flock /tmp/itbench.lock bazel-bin/tests/copy_bench
//       --baseline=/tmp/cp-serial --disk-mib=512 --rounds=3
#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"
#include "tests/rpc.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
using google::protobuf::util::TimeUtil;
constexpr uint64_t kMiB = 1 << 20;

std::string baseline;
uint64_t disk_mib = 512;
int rounds = 3;

// Seconds the copy operation of a fresh stack took with `binary`.
double CopySeconds(const std::string& binary) {
  StackOptions options;
  options.dir_prefix = "copybench";
  options.node_datacenters = {"dc1", "dc2"};
  options.controlplane_binary = binary;
  Stack stack(options);
  stack.Start();
  if (::testing::Test::HasFatalFailure()) return -1;
  const User user = stack.NewUser("bench", {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE,
                                            v1::PERMISSION_SERVER_VIEW});
  const uint64_t size = disk_mib * kMiB;
  std::vector<std::string> volumes;
  for (int d = 0; d < 2; ++d) {
    Lun lun;
    volumes.push_back(stack.AddVolume(0, absl::StrCat("disk", d), size, &lun));
    FillRandom(lun.backing_path, 0, size, 100 + d);
  }
  const std::string server =
      stack.CreateServer(Stack::ServerRequest(user.account_id, "bench", volumes));
  if (server.empty()) return -1;
  v1::CreateImageTemplateRequest create;
  create.set_server_id(server);
  create.set_name("bench");
  create.add_data_disk_indexes(1);
  v1::Operation op;
  EXPECT_TRUE(Call(stack.templates(), &v1::ImageTemplateService::Stub::CreateImageTemplate,
                   user.key, create, &op)
                  .ok());
  op = stack.WaitOperation(user.key, op.id(), absl::Seconds(600));
  if (op.state() != v1::OPERATION_STATE_SUCCEEDED) return -1;
  v1::AddImageTemplateLocationsRequest add;
  add.set_id(op.image_template_id());
  add.add_datacenters("dc2");
  EXPECT_TRUE(Call(stack.templates(), &v1::ImageTemplateService::Stub::AddImageTemplateLocations,
                   user.key, add, &op)
                  .ok());
  op = stack.WaitOperation(user.key, op.id(), absl::Seconds(600), absl::Milliseconds(20));
  EXPECT_EQ(op.state(), v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
  if (op.state() != v1::OPERATION_STATE_SUCCEEDED) return -1;
  return TimeUtil::DurationToMilliseconds(op.end_time() - op.create_time()) / 1000.0;
}

TEST(CopyBench, TwoDiskCopy) {
  ASSERT_FALSE(baseline.empty()) << "--baseline=PATH of a controlplane binary is required";
  std::vector<double> ratios;
  std::printf("2 disks x %llu MiB random, dc1 -> dc2\n%-6s %12s %12s %8s\n",
              static_cast<unsigned long long>(disk_mib), "round", "baseline s", "this s",
              "ratio");
  for (int r = 0; r < rounds; ++r) {
    // Alternate which goes first, so drift in load hits both.
    double base, ours;
    if (r % 2 == 0) {
      base = CopySeconds(baseline);
      ours = CopySeconds("");
    } else {
      ours = CopySeconds("");
      base = CopySeconds(baseline);
    }
    ASSERT_GT(base, 0);
    ASSERT_GT(ours, 0);
    ratios.push_back(base / ours);
    std::printf("%-6d %12.2f %12.2f %8.2f\n", r + 1, base, ours, base / ours);
  }
  std::sort(ratios.begin(), ratios.end());
  std::printf("median speedup (baseline / this): %.2f\n", ratios[ratios.size() / 2]);
}

}  // namespace
}  // namespace tests

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (absl::ConsumePrefix(&arg, "--baseline=")) {
      tests::baseline = std::string(arg);
    } else if (absl::ConsumePrefix(&arg, "--disk-mib=")) {
      if (!absl::SimpleAtoi(arg, &tests::disk_mib)) return 2;
    } else if (absl::ConsumePrefix(&arg, "--rounds=")) {
      if (!absl::SimpleAtoi(arg, &tests::rounds)) return 2;
    } else {
      std::fprintf(stderr, "unknown flag %s\n", argv[i]);
      return 2;
    }
  }
  return RUN_ALL_TESTS();
}
