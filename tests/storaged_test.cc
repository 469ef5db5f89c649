// storaged as a real process against a real tgtd: captures and restores over
// iSCSI through the gRPC API, byte for byte, and every bad input the issue
// names.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/numbers.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "tests/process.h"
#include "tests/san.h"

namespace tests {
namespace {

namespace pb = imagetemplates::storagenode::v1;
constexpr uint64_t kMiB = 1 << 20;

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAt(const std::string& path, uint64_t offset, const std::string& data) {
  int fd = ::open(path.c_str(), O_WRONLY);
  ASSERT_GE(fd, 0) << path;
  ASSERT_EQ(pwrite(fd, data.data(), data.size(), offset), static_cast<ssize_t>(data.size()));
  ::close(fd);
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    memcpy(&out[i], &v, 8);
  }
  return out;
}

// Random data, a long zero run, compressible text and a random tail: every
// path of capture (data, zero, compressible, short last chunk).
void FillDisk(const std::string& path, uint64_t size, uint32_t seed) {
  WriteAt(path, 0, RandomBytes(size / 8 + 4096, seed));
  std::string text;
  while (text.size() < size / 12) {
    text += "the quick brown fox jumps over the lazy dog 0123456789\n";
  }
  WriteAt(path, size / 3, text);
  WriteAt(path, size - 12288, RandomBytes(12288, seed + 1));
}

int Shell(const std::string& command) { return std::system(command.c_str()); }

struct CaptureResult {
  grpc::Status status;
  pb::ImageManifestSummary summary;
  int progress_messages = 0;
};

class StoragedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("storaged");
    auto san = San::Start();
    ASSERT_TRUE(san.ok()) << san.status();
    san_ = *std::move(san);
    store_dir_ = dir_ + "/store";
    auto process = Process::StartServer(
        {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + store_dir_,
         "--datacenter=dc1", "--node-id=node1"},
        dir_ + "/storaged.log");
    ASSERT_TRUE(process.ok()) << process.status();
    storaged_ = std::make_unique<Process>(*std::move(process));
    stub_ = pb::StorageNode::NewStub(
        grpc::CreateChannel(storaged_->address(), grpc::InsecureChannelCredentials()));
  }

  // Stops storaged and starts it again on the same store, with `extra` flags.
  void RestartStoraged(const std::vector<std::string>& extra = {}) {
    auto stopped = storaged_->Stop(SIGTERM);
    ASSERT_TRUE(stopped.ok()) << stopped.status();
    std::vector<std::string> argv = {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0",
                                     "--store=" + store_dir_, "--datacenter=dc1",
                                     "--node-id=node1"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    auto process = Process::StartServer(argv, dir_ + "/storaged.log");
    ASSERT_TRUE(process.ok()) << process.status();
    storaged_ = std::make_unique<Process>(*std::move(process));
    stub_ = pb::StorageNode::NewStub(
        grpc::CreateChannel(storaged_->address(), grpc::InsecureChannelCredentials()));
  }

  Lun MakeLun(const std::string& name, uint64_t size, bool thin, uint32_t block = 512) {
    LunOptions options;
    options.thin = thin;
    options.block_size = block;
    auto lun = san_->CreateLun(name, size, options);
    EXPECT_TRUE(lun.ok()) << lun.status();
    return lun.ok() ? *lun : Lun{};
  }

  CaptureResult Capture(const std::string& id, const std::string& url) {
    CaptureResult result;
    grpc::ClientContext context;
    pb::CaptureVolumeRequest request;
    request.set_image_id(id);
    request.set_source_url(url);
    auto reader = stub_->CaptureVolume(&context, request);
    pb::CaptureVolumeProgress progress;
    while (reader->Read(&progress)) {
      ++result.progress_messages;
      if (progress.has_summary()) result.summary = progress.summary();
    }
    result.status = reader->Finish();
    return result;
  }

  grpc::Status Restore(const std::string& id, const std::string& url,
                       const std::string& digest = "") {
    grpc::ClientContext context;
    pb::RestoreVolumeRequest request;
    request.set_image_id(id);
    request.set_target_url(url);
    request.set_expected_manifest_digest(digest);
    auto reader = stub_->RestoreVolume(&context, request);
    pb::RestoreVolumeProgress progress;
    bool summary = false;
    while (reader->Read(&progress)) summary |= progress.has_summary();
    grpc::Status status = reader->Finish();
    if (status.ok()) {
      EXPECT_TRUE(summary);
    }
    return status;
  }

  pb::VerifyImageResult Verify(const std::string& id, grpc::Status* status) {
    grpc::ClientContext context;
    pb::VerifyImageRequest request;
    request.set_image_id(id);
    auto reader = stub_->VerifyImage(&context, request);
    pb::VerifyImageProgress progress;
    pb::VerifyImageResult result;
    while (reader->Read(&progress)) {
      if (progress.has_result()) result = progress.result();
    }
    *status = reader->Finish();
    return result;
  }

  pb::NodeStatus NodeStatus() {
    grpc::ClientContext context;
    pb::GetNodeStatusResponse response;
    EXPECT_TRUE(stub_->GetNodeStatus(&context, {}, &response).ok());
    return response.status();
  }

  std::vector<std::string> PackFiles() {
    std::vector<std::string> out;
    for (const auto& entry : std::filesystem::directory_iterator(store_dir_ + "/packs")) {
      if (absl::EndsWith(entry.path().string(), ".pack")) out.push_back(entry.path());
    }
    return out;
  }

  std::string dir_;
  std::string store_dir_;
  std::unique_ptr<San> san_;
  std::unique_ptr<Process> storaged_;
  std::unique_ptr<pb::StorageNode::Stub> stub_;
};

struct Geometry {
  bool thin;
  uint32_t block;
};

class StoragedRoundTripTest : public StoragedTest,
                              public ::testing::WithParamInterface<Geometry> {};

TEST_P(StoragedRoundTripTest, ByteIdenticalRoundTripAndZeroTail) {
  const Geometry g = GetParam();
  // Not a multiple of the 64 KiB chunk size.
  const uint64_t size = 24 * kMiB + 12288;
  Lun source = MakeLun("src", size, g.thin, g.block);
  FillDisk(source.backing_path, size, 7);

  CaptureResult captured = Capture("disk0", source.url);
  ASSERT_TRUE(captured.status.ok()) << captured.status.error_message();
  EXPECT_GE(captured.progress_messages, 1);
  const pb::ImageManifestSummary& s = captured.summary;
  EXPECT_EQ(s.image_id(), "disk0");
  EXPECT_EQ(s.volume_size_bytes(), size);
  EXPECT_EQ(s.block_size(), g.block);
  EXPECT_EQ(s.chunk_count(), (size + s.chunk_size() - 1) / s.chunk_size());
  EXPECT_GT(s.zero_chunk_count(), 0u);
  EXPECT_TRUE(absl::StartsWith(s.manifest_digest(), "sha256:"));
  // Random data does not compress; the text does, so stored < logical.
  EXPECT_LT(s.stored_bytes(), s.logical_bytes());

  Lun same = MakeLun("same", size, /*thin=*/true, g.block);
  WriteAt(same.backing_path, 5 * kMiB, std::string(kMiB, '\xab'));  // stale data
  ASSERT_TRUE(Restore("disk0", same.url, s.manifest_digest()).ok());
  EXPECT_TRUE(ReadAll(same.backing_path) == ReadAll(source.backing_path));

  // A larger, thick target holding garbage: the tail must read zero after.
  const uint64_t larger_size = size + 8 * kMiB;
  Lun larger = MakeLun("larger", larger_size, /*thin=*/false, g.block);
  WriteAt(larger.backing_path, size + kMiB, std::string(2 * kMiB, '\xcd'));
  ASSERT_TRUE(Restore("disk0", larger.url).ok());
  std::string restored = ReadAll(larger.backing_path);
  ASSERT_EQ(restored.size(), larger_size);
  EXPECT_TRUE(restored.substr(0, size) == ReadAll(source.backing_path));
  EXPECT_EQ(restored.find_first_not_of('\0', size), std::string::npos);

  // Smaller target: refused with both sizes, nothing written.
  Lun smaller = MakeLun("smaller", size - 1024 * 1024, /*thin=*/true, g.block);
  grpc::Status refused = Restore("disk0", smaller.url);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_TRUE(absl::StrContains(refused.error_message(), absl::StrCat(size)))
      << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(), absl::StrCat(size - kMiB)));
  EXPECT_EQ(ReadAll(smaller.backing_path).find_first_not_of('\0'), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Geometries, StoragedRoundTripTest,
                         ::testing::Values(Geometry{true, 512}, Geometry{false, 512},
                                           Geometry{true, 4096}, Geometry{false, 4096}),
                         [](const ::testing::TestParamInfo<Geometry>& info) {
                           return absl::StrCat(info.param.thin ? "thin" : "thick",
                                               info.param.block);
                         });

TEST_F(StoragedTest, Ext4GuestDiskDedupsAcrossCaptures) {
  // A real ext4 filesystem with files on it, as a guest's root disk.
  const uint64_t size = 64 * kMiB;
  Lun first = MakeLun("guest1", size, /*thin=*/true);
  ASSERT_EQ(Shell(absl::StrCat("mkfs.ext4 -q -F -E nodiscard -d /usr/include/absl ",
                             first.backing_path, " 64M")),
            0);
  CaptureResult one = Capture("guest1", first.url);
  ASSERT_TRUE(one.status.ok()) << one.status.error_message();
  EXPECT_GT(one.summary.new_stored_bytes(), 0u);

  // The same disk again stores nothing new.
  CaptureResult again = Capture("guest1-again", first.url);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_EQ(again.summary.new_stored_bytes(), 0u);
  EXPECT_EQ(again.summary.manifest_digest() == one.summary.manifest_digest(), false)
      << "different image ids must give different manifests";

  // A copy with a few files rewritten shares most chunks.
  Lun second = MakeLun("guest2", size, /*thin=*/true);
  ASSERT_EQ(Shell(absl::StrCat("cp --sparse=always ", first.backing_path, " ",
                             second.backing_path)),
            0);
  std::string edits = dir_ + "/edits";
  {
    std::ofstream cmds(edits);
    cmds << "rm /base/config.h\nwrite /etc/hostname /base/config.h\n"
         << "rm /strings/str_cat.h\nwrite /etc/os-release /strings/str_cat.h\n";
  }
  ASSERT_EQ(Shell(absl::StrCat("debugfs -w -f ", edits, " ", second.backing_path,
                             " >/dev/null 2>&1")),
            0);
  CaptureResult two = Capture("guest2", second.url);
  ASSERT_TRUE(two.status.ok()) << two.status.error_message();
  EXPECT_LT(two.summary.new_stored_bytes() * 10, one.summary.new_stored_bytes())
      << "new " << two.summary.new_stored_bytes() << " vs first "
      << one.summary.new_stored_bytes();

  Lun target = MakeLun("restored2", size, /*thin=*/true);
  ASSERT_TRUE(Restore("guest2", target.url).ok());
  EXPECT_TRUE(ReadAll(target.backing_path) == ReadAll(second.backing_path));
  EXPECT_EQ(Shell(absl::StrCat("e2fsck -fn ", target.backing_path, " >/dev/null 2>&1")), 0);

  pb::NodeStatus status = NodeStatus();
  EXPECT_EQ(status.node_id(), "node1");
  EXPECT_EQ(status.image_count(), 3u);
  EXPECT_GT(status.dedup_ratio(), 2.0);
  EXPECT_GT(status.capacity_bytes(), status.free_bytes());
}

TEST_F(StoragedTest, BadVolumesAndImagesGetClearCodes) {
  Lun lun = MakeLun("vol", 4 * kMiB, /*thin=*/true);
  EXPECT_EQ(Capture("x1", "http://127.0.0.1/iqn/1").status.error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Capture("x2", "iscsi://127.0.0.1:1/iqn.2026-11.test:vol/1").status.error_code(),
            grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(Capture("x3", absl::StrCat("iscsi://127.0.0.1:", san_->port(),
                                       "/iqn.2026-11.test:nope/1"))
                .status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Capture("x4", absl::StrCat("iscsi://127.0.0.1:", san_->port(),
                                       "/iqn.2026-11.test:vol/7"))
                .status.error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Capture("../etc", lun.url).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(Restore("no-such-image", lun.url).error_code(), grpc::StatusCode::NOT_FOUND);

  FillDisk(lun.backing_path, 4 * kMiB, 3);
  CaptureResult ok = Capture("good", lun.url);
  ASSERT_TRUE(ok.status.ok()) << ok.status.error_message();
  // A retried capture of a committed image answers with the same summary.
  CaptureResult retry = Capture("good", lun.url);
  ASSERT_TRUE(retry.status.ok());
  EXPECT_EQ(retry.summary.manifest_digest(), ok.summary.manifest_digest());
  Lun target = MakeLun("target", 4 * kMiB, /*thin=*/true);
  EXPECT_EQ(Restore("good", target.url, "sha256:" + std::string(64, '0')).error_code(),
            grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(ReadAll(target.backing_path).find_first_not_of('\0'), std::string::npos);

  // A manifest cut short is rejected when opened.
  std::string manifest = store_dir_ + "/images/good.manifest";
  std::string bytes = ReadAll(manifest);
  ASSERT_FALSE(bytes.empty());
  {
    std::ofstream out(manifest, std::ios::binary | std::ios::trunc);
    out << bytes.substr(0, bytes.size() - 5);
  }
  grpc::ClientContext context;
  pb::GetImageRequest get;
  get.set_image_id("good");
  pb::GetImageResponse got;
  EXPECT_EQ(stub_->GetImage(&context, get, &got).error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(Restore("good", target.url).error_code(), grpc::StatusCode::DATA_LOSS);
}

TEST_F(StoragedTest, CorruptAndMissingChunksAreDetected) {
  Lun lun = MakeLun("vol", 8 * kMiB, /*thin=*/false);
  FillDisk(lun.backing_path, 8 * kMiB, 11);
  ASSERT_TRUE(Capture("img", lun.url).status.ok());
  grpc::Status status;
  pb::VerifyImageResult clean = Verify("img", &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(clean.ok());
  EXPECT_TRUE(clean.manifest_ok());

  std::vector<std::string> packs = PackFiles();
  ASSERT_EQ(packs.size(), 1u);
  // Flip bytes inside the first frame: the random data at the volume start.
  std::string pack = ReadAll(packs[0]);
  WriteAt(packs[0], 4096, std::string(16, '\x5a'));
  pb::VerifyImageResult bad = Verify("img", &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(bad.ok());
  EXPECT_GT(bad.corrupt_chunk_digests_size(), 0);
  EXPECT_EQ(bad.corrupt_chunk_digests(0).size(), 32u);
  Lun target = MakeLun("target", 8 * kMiB, /*thin=*/true);
  grpc::Status restore = Restore("img", target.url);
  EXPECT_EQ(restore.error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_TRUE(absl::StrContains(restore.error_message(), "chunk")) << restore.error_message();

  // Removing the pack entirely: the chunks are missing (after a restart
  // reloads the index).
  ASSERT_EQ(::unlink(packs[0].c_str()), 0);
  ASSERT_NO_FATAL_FAILURE(RestartStoraged());
  pb::VerifyImageResult missing = Verify("img", &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_FALSE(missing.ok());
  EXPECT_GT(missing.missing_chunk_digests_size(), 0);
}

// Space of deleted images comes back without anyone calling CollectGarbage,
// and the scheduled scrub finds damage that the next capture of the same
// data repairs.
TEST_F(StoragedTest, MaintenanceCollectsAfterDeletesAndScrubsFindDamage) {
  ASSERT_NO_FATAL_FAILURE(
      RestartStoraged({"--gc-after-delete-seconds=0", "--scrub-interval-seconds=1"}));
  Lun keep = MakeLun("keep", 8 * kMiB, /*thin=*/false);
  FillDisk(keep.backing_path, 8 * kMiB, 21);
  ASSERT_TRUE(Capture("keep", keep.url).status.ok());
  Lun gone = MakeLun("gone", 8 * kMiB, /*thin=*/false);
  FillDisk(gone.backing_path, 8 * kMiB, 22);
  ASSERT_TRUE(Capture("gone", gone.url).status.ok());
  const uint64_t stored = NodeStatus().stored_bytes();

  grpc::ClientContext del_context;
  pb::DeleteImageRequest del;
  del.set_image_id("gone");
  pb::DeleteImageResponse deleted;
  ASSERT_TRUE(stub_->DeleteImage(&del_context, del, &deleted).ok());
  const absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (NodeStatus().stored_bytes() >= stored && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_LT(NodeStatus().stored_bytes(), stored) << "nothing collected after the delete";
  EXPECT_EQ(NodeStatus().image_count(), 1u);

  // Damage every pack left (the collection may have rewritten keep's).
  std::vector<std::string> packs = PackFiles();
  ASSERT_FALSE(packs.empty());
  for (const std::string& pack : packs) WriteAt(pack, 4096, std::string(16, '\x5a'));
  const std::string log_path = dir_ + "/storaged.log";
  std::string log;
  while (absl::Now() < deadline + absl::Seconds(60)) {
    log = ReadAll(log_path);
    if (absl::StrContains(log, "scrub: image damaged")) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  std::string damaged_line;
  for (absl::string_view line : absl::StrSplit(log, '\n')) {
    if (absl::StrContains(line, "scrub: image damaged")) damaged_line = std::string(line);
  }
  ASSERT_FALSE(damaged_line.empty()) << log;
  EXPECT_TRUE(absl::StrContains(damaged_line, "keep")) << damaged_line;
  // Finished scrubs are stamped in the store, so restarts do not reset the
  // weekly schedule.
  // (Written when a scrub ends, a moment after it logs; the first scrub may
  // be the one that logged.)
  int64_t stamp = 0;
  for (const absl::Time until = absl::Now() + absl::Seconds(60);
       !absl::SimpleAtoi(absl::StripAsciiWhitespace(ReadAll(store_dir_ + "/last-scrub")), &stamp) &&
       absl::Now() < until;) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_GT(stamp, absl::ToUnixSeconds(absl::Now()) - 600);

  // A verify now sees (and marks) every damaged chunk, even if the scrub
  // that logged was part way through when the bytes changed; the next
  // capture holding the same bytes stores them again.
  grpc::Status status;
  EXPECT_FALSE(Verify("keep", &status).ok());
  CaptureResult again = Capture("keep-again", keep.url);
  ASSERT_TRUE(again.status.ok()) << again.status.error_message();
  EXPECT_GT(again.summary.new_stored_bytes(), 0u);
  pb::VerifyImageResult repaired = Verify("keep", &status);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_TRUE(repaired.ok()) << repaired.corrupt_chunk_digests_size() << " corrupt";
  Lun target = MakeLun("target", 8 * kMiB, /*thin=*/true);
  ASSERT_TRUE(Restore("keep", target.url).ok());
  EXPECT_TRUE(ReadAll(target.backing_path) == ReadAll(keep.backing_path));
}

TEST_F(StoragedTest, DeleteAndCollectGarbageFreeSpace) {
  Lun lun = MakeLun("vol", 8 * kMiB, /*thin=*/true);
  FillDisk(lun.backing_path, 8 * kMiB, 5);
  ASSERT_TRUE(Capture("a", lun.url).status.ok());
  Lun other = MakeLun("other", 8 * kMiB, /*thin=*/true);
  FillDisk(other.backing_path, 8 * kMiB, 99);
  ASSERT_TRUE(Capture("b", other.url).status.ok());

  grpc::ClientContext del_context;
  pb::DeleteImageRequest del;
  del.set_image_id("a");
  pb::DeleteImageResponse deleted;
  ASSERT_TRUE(stub_->DeleteImage(&del_context, del, &deleted).ok());
  grpc::ClientContext again_context;
  EXPECT_EQ(stub_->DeleteImage(&again_context, del, &deleted).error_code(),
            grpc::StatusCode::NOT_FOUND);

  grpc::ClientContext gc_context;
  pb::CollectGarbageRequest gc;
  pb::CollectGarbageResponse collected;
  ASSERT_TRUE(stub_->CollectGarbage(&gc_context, gc, &collected).ok());
  EXPECT_GT(collected.chunks_removed(), 0u);
  EXPECT_GT(collected.bytes_freed(), 0u);

  // "b" survives the collection intact.
  Lun target = MakeLun("target", 8 * kMiB, /*thin=*/true);
  grpc::Status restored = Restore("b", target.url);
  ASSERT_TRUE(restored.ok()) << restored.error_message();
  std::string got = ReadAll(target.backing_path), want = ReadAll(other.backing_path);
  ASSERT_EQ(got.size(), want.size());
  size_t diff = 0;
  while (diff < got.size() && got[diff] == want[diff]) ++diff;
  EXPECT_EQ(diff, got.size()) << "first difference at " << diff;
  EXPECT_EQ(NodeStatus().image_count(), 1u);
}

TEST_F(StoragedTest, ConfigDriveReadsBackWithXorriso) {
  Lun lun = MakeLun("seed", 4 * kMiB, /*thin=*/true);
  grpc::ClientContext context;
  pb::WriteConfigDriveRequest request;
  request.set_target_url(lun.url);
  request.set_meta_data("instance-id: i-0042\nlocal-hostname: web-1\n");
  request.set_user_data("#cloud-config\n");
  request.set_network_config(
      "version: 2\nethernets:\n  eth0:\n    match:\n      macaddress: \"06:00:00:00:00:01\"\n"
      "    addresses: [10.0.0.5/24]\n");
  pb::WriteConfigDriveResponse response;
  grpc::Status status = stub_->WriteConfigDrive(&context, request, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_GT(response.bytes_written(), 0u);

  std::string out = dir_ + "/extracted";
  ASSERT_EQ(Shell(absl::StrCat("xorriso -osirrox on -indev ", lun.backing_path, " -extract / ",
                             out, " >/dev/null 2>&1")),
            0);
  EXPECT_EQ(ReadAll(out + "/meta-data"), request.meta_data());
  EXPECT_EQ(ReadAll(out + "/user-data"), request.user_data());
  EXPECT_EQ(ReadAll(out + "/network-config"), request.network_config());
  std::string pvd = dir_ + "/pvd";
  ASSERT_EQ(Shell(absl::StrCat("xorriso -indev ", lun.backing_path, " -pvd_info > ", pvd,
                             " 2>&1")),
            0);
  EXPECT_TRUE(absl::StrContains(ReadAll(pvd), "cidata")) << ReadAll(pvd);

  grpc::ClientContext bad_context;
  pb::WriteConfigDriveRequest empty = request;
  empty.clear_meta_data();
  EXPECT_EQ(stub_->WriteConfigDrive(&bad_context, empty, &response).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// Peak resident set of a process, from /proc.
uint64_t PeakRssBytes(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (absl::StartsWith(line, "VmHWM:")) return std::stoull(line.substr(6)) * 1024;
  }
  return 0;
}

TEST_F(StoragedTest, MemoryDoesNotGrowWithVolumeSize) {
  // 20 GiB thin and mostly unmapped, 2 GiB thick and read in full.
  const uint64_t big = 20ull << 30;
  Lun sparse = MakeLun("sparse", big, /*thin=*/true);
  FillDisk(sparse.backing_path, 64 * kMiB, 21);
  WriteAt(sparse.backing_path, big - kMiB, RandomBytes(kMiB, 22));
  CaptureResult a = Capture("sparse", sparse.url);
  ASSERT_TRUE(a.status.ok()) << a.status.error_message();
  Lun thick = MakeLun("thick", 2ull << 30, /*thin=*/false);
  FillDisk(thick.backing_path, 2ull << 30, 23);
  CaptureResult b = Capture("thick", thick.url);
  ASSERT_TRUE(b.status.ok()) << b.status.error_message();
  Lun target = MakeLun("target", big, /*thin=*/true);
  ASSERT_TRUE(Restore("sparse", target.url).ok());
  Lun thick_target = MakeLun("thick-target", 2ull << 30, /*thin=*/false);
  ASSERT_TRUE(Restore("thick", thick_target.url).ok());
  uint64_t peak = PeakRssBytes(storaged_->pid());
  EXPECT_GT(peak, 0u);
#if defined(__SANITIZE_ADDRESS__)
  // ASan's quarantine and shadow memory inflate RSS; the bound is for the
  // real build.
  GTEST_SKIP() << "peak RSS under AddressSanitizer: " << peak;
#endif
  EXPECT_LT(peak, 256 * kMiB) << "peak RSS " << peak;
  RecordProperty("peak_rss_bytes", std::to_string(peak));
}

TEST_F(StoragedTest, CancelStopsCaptureQuicklyAndLeavesNoImage) {
  // 16 GiB of a sparse backing file: many seconds to read whole, no disk.
  Lun lun = MakeLun("big", 16ull << 30, /*thin=*/false);
  grpc::ClientContext context;
  pb::CaptureVolumeRequest request;
  request.set_image_id("cancelled");
  request.set_source_url(lun.url);
  auto reader = stub_->CaptureVolume(&context, request);
  pb::CaptureVolumeProgress progress;
  ASSERT_TRUE(reader->Read(&progress));
  EXPECT_FALSE(progress.has_summary());
  absl::Time cancelled_at = absl::Now();
  context.TryCancel();
  while (reader->Read(&progress)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The server side must have stopped too: the job disappears from the
  // node status and no image is visible.
  absl::Duration stopped_after = absl::InfiniteDuration();
  while (absl::Now() - cancelled_at < absl::Seconds(60)) {
    if (NodeStatus().jobs_size() == 0) {
      stopped_after = absl::Now() - cancelled_at;
      break;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  // storaged checks for cancellation every 50 ms and stops within a second on
  // a quiet machine (printed); the bound leaves room for a loaded CI machine
  // while still far below reading the volume to its end.
  std::fprintf(stderr, "capture stopped %.3f s after the cancel\n",
               absl::ToDoubleSeconds(stopped_after));
  EXPECT_LT(stopped_after, absl::Seconds(5));
  grpc::ClientContext get_context;
  pb::GetImageRequest get;
  get.set_image_id("cancelled");
  pb::GetImageResponse got;
  EXPECT_EQ(stub_->GetImage(&get_context, get, &got).error_code(), grpc::StatusCode::NOT_FOUND);
}

// With --internal-token-file every StorageNode call must carry
// "authorization: Bearer <token>"; health stays open. Anyone else could read
// or overwrite any iSCSI volume the node can reach, or delete images.
TEST_F(StoragedTest, InternalTokenGuardsEveryCallWhenGiven) {
  const std::string token = "storaged-test-internal-token-0123456789abcdef";
  const std::string token_file = dir_ + "/internal.token";
  std::ofstream(token_file) << token << "\n";
  ASSERT_EQ(::chmod(token_file.c_str(), 0600), 0);
  const std::string log = dir_ + "/guarded.log";
  auto guarded = Process::StartServer(
      {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + dir_ + "/store2",
       "--datacenter=dc1", "--node-id=node2", "--internal-token-file=" + token_file},
      log);
  ASSERT_TRUE(guarded.ok()) << guarded.status();
  auto channel = grpc::CreateChannel(guarded->address(), grpc::InsecureChannelCredentials());
  auto stub = pb::StorageNode::NewStub(channel);
  Lun lun = MakeLun("guarded", 8 * kMiB, /*thin=*/false);
  FillDisk(lun.backing_path, 8 * kMiB, 7);

  auto capture = [&](const std::string& header, pb::ImageManifestSummary* summary) {
    grpc::ClientContext context;
    if (!header.empty()) context.AddMetadata("authorization", header);
    pb::CaptureVolumeRequest request;
    request.set_image_id("guarded");
    request.set_source_url(lun.url);
    auto reader = stub->CaptureVolume(&context, request);
    pb::CaptureVolumeProgress progress;
    int messages = 0;
    while (reader->Read(&progress)) {
      ++messages;
      if (progress.has_summary()) *summary = progress.summary();
    }
    grpc::Status status = reader->Finish();
    if (!status.ok()) {
      EXPECT_EQ(messages, 0) << "progress before the token check";
    }
    return status;
  };
  auto get_image = [&](const std::string& header) {
    grpc::ClientContext context;
    if (!header.empty()) context.AddMetadata("authorization", header);
    pb::GetImageRequest request;
    request.set_image_id("guarded");
    pb::GetImageResponse response;
    return stub->GetImage(&context, request, &response);
  };
  auto delete_image = [&](const std::string& header) {
    grpc::ClientContext context;
    if (!header.empty()) context.AddMetadata("authorization", header);
    pb::DeleteImageRequest request;
    request.set_image_id("guarded");
    pb::DeleteImageResponse response;
    return stub->DeleteImage(&context, request, &response);
  };
  auto node_status = [&](const std::string& header) {
    grpc::ClientContext context;
    if (!header.empty()) context.AddMetadata("authorization", header);
    pb::GetNodeStatusResponse response;
    return stub->GetNodeStatus(&context, {}, &response);
  };

  const std::string good = "Bearer " + token;
  for (const std::string& bad :
       {std::string(), std::string("Bearer wrong-token-of-the-same-kind-0123456789abcdef"), token,
        good + "x", "Bearer " + token.substr(0, token.size() - 1)}) {
    SCOPED_TRACE("authorization: " + bad);
    pb::ImageManifestSummary summary;
    grpc::Status status = capture(bad, &summary);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
    EXPECT_EQ(get_image(bad).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(delete_image(bad).error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_EQ(node_status(bad).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  // Nothing was captured by the refused calls.
  EXPECT_EQ(get_image(good).error_code(), grpc::StatusCode::NOT_FOUND);

  // Health answers without a token.
  grpc::ClientContext health_context;
  grpc::health::v1::HealthCheckResponse health;
  ASSERT_TRUE(grpc::health::v1::Health::NewStub(channel)
                  ->Check(&health_context, {}, &health)
                  .ok());
  EXPECT_EQ(health.status(), grpc::health::v1::HealthCheckResponse::SERVING);

  // The token works end to end.
  pb::ImageManifestSummary summary;
  grpc::Status captured = capture(good, &summary);
  ASSERT_TRUE(captured.ok()) << captured.error_message();
  EXPECT_EQ(summary.volume_size_bytes(), 8 * kMiB);
  EXPECT_TRUE(get_image(good).ok());
  EXPECT_TRUE(node_status(good).ok());
  EXPECT_TRUE(delete_image(good).ok());
  EXPECT_EQ(get_image(good).error_code(), grpc::StatusCode::NOT_FOUND);

  // One log line per refusal, naming the method and the peer.
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  EXPECT_TRUE(absl::StrContains(text.str(), "refused CaptureVolume from ipv4:127.0.0.1:"))
      << text.str();
  EXPECT_TRUE(absl::StrContains(text.str(), "no internal token")) << text.str();
  EXPECT_TRUE(absl::StrContains(text.str(), "wrong internal token")) << text.str();
  EXPECT_FALSE(absl::StrContains(text.str(), token)) << "the log must not show the token";
}

TEST_F(StoragedTest, SecondStoragedOnTheSameStoreFailsAtStart) {
  const std::string log = dir_ + "/second.log";
  auto second = Process::StartServer(
      {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + store_dir_,
       "--datacenter=dc1", "--node-id=node2"},
      log, absl::Seconds(60));
  EXPECT_FALSE(second.ok());
  std::stringstream text;
  text << std::ifstream(log).rdbuf();
  EXPECT_TRUE(absl::StrContains(text.str(), absl::StrCat("is in use by another storaged (pid ",
                                                          storaged_->pid(), ")")))
      << text.str();
  // The first one is unaffected.
  grpc::ClientContext context;
  pb::GetNodeStatusResponse status;
  EXPECT_TRUE(stub_->GetNodeStatus(&context, {}, &status).ok());

  // Once it stops, the store can be opened again.
  ASSERT_TRUE(storaged_->Stop(SIGTERM).ok());
  storaged_.reset();
  auto third = Process::StartServer(
      {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + store_dir_,
       "--datacenter=dc1", "--node-id=node3"},
      dir_ + "/third.log");
  EXPECT_TRUE(third.ok()) << third.status();
}

TEST(StoragedHealthTest, NotServingUntilTheStoreOpens) {
  std::string dir = MakeTempDir("health");
  std::string blocker = dir + "/blocker";
  { std::ofstream(blocker) << "a file where the store's parent should be"; }
  auto process = Process::StartServer(
      {RunfilePath("storaged/storaged"), "--listen=127.0.0.1:0", "--store=" + blocker + "/store",
       "--datacenter=dc1", "--node-id=node1"},
      dir + "/storaged.log");
  ASSERT_TRUE(process.ok()) << process.status();
  auto channel = grpc::CreateChannel(process->address(), grpc::InsecureChannelCredentials());
  auto health = grpc::health::v1::Health::NewStub(channel);
  auto check = [&] {
    grpc::ClientContext context;
    grpc::health::v1::HealthCheckResponse response;
    EXPECT_TRUE(health->Check(&context, {}, &response).ok());
    return response.status();
  };
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::NOT_SERVING);
  auto stub = pb::StorageNode::NewStub(channel);
  grpc::ClientContext context;
  pb::GetNodeStatusResponse status;
  EXPECT_EQ(stub->GetNodeStatus(&context, {}, &status).error_code(),
            grpc::StatusCode::UNAVAILABLE);

  // Once the path becomes usable the node recovers by itself.
  ASSERT_EQ(::unlink(blocker.c_str()), 0);
  ASSERT_EQ(::mkdir(blocker.c_str(), 0755), 0);
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (check() != grpc::health::v1::HealthCheckResponse::SERVING && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(check(), grpc::health::v1::HealthCheckResponse::SERVING);
}

}  // namespace
}  // namespace tests
