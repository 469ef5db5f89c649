#include "storaged/config_drive_writer.h"

#include <stdio.h>
#include <sys/wait.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storaged/iscsi_volume.h"
#include "tests/san.h"

namespace storaged {
namespace {

using ::testing::HasSubstr;

// Runs a shell command; returns its stdout, fails the test on a non-zero exit.
std::string RunShell(const std::string& command) {
  std::string out;
  FILE* pipe = popen((command + " 2>&1").c_str(), "r");
  EXPECT_NE(pipe, nullptr);
  if (pipe == nullptr) return out;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) out.append(buf, n);
  int status = pclose(pipe);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << command << "\n" << out;
  return out;
}

std::string Slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ConfigDrive SampleDrive() {
  ConfigDrive drive;
  drive.meta_data = "instance-id: vs-0001\nlocal-hostname: web-1\n";
  drive.user_data =
      "#cloud-config\nusers:\n  - name: ops\n    ssh_authorized_keys:\n"
      "      - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExample ops@example\n";
  drive.network_config =
      "version: 2\nethernets:\n  eth0:\n    dhcp4: false\n    addresses: [10.1.2.3/24]\n";
  return drive;
}

class ConfigDriveWriterTest : public ::testing::TestWithParam<uint32_t> {};

TEST_P(ConfigDriveWriterTest, WritesNoCloudSeedThatXorrisoReads) {
  auto san = tests::San::Start();
  ASSERT_TRUE(san.ok()) << san.status();
  tests::LunOptions options;
  options.block_size = GetParam();
  options.thin = true;
  auto lun = (*san)->CreateLun("seed", 4 << 20, options);
  ASSERT_TRUE(lun.ok()) << lun.status();
  auto volume = IscsiVolume::Open(lun->url);
  ASSERT_TRUE(volume.ok()) << volume.status();

  const ConfigDrive drive = SampleDrive();
  ASSERT_TRUE(WriteConfigDrive(drive, **volume).ok());

  std::string pvd = RunShell(absl::StrCat("xorriso -indev ", lun->backing_path, " -pvd_info"));
  EXPECT_THAT(pvd, HasSubstr("Volume Id    : cidata"));

  std::string dir = absl::StrCat((*san)->dir(), "/extracted");
  RunShell(absl::StrCat("xorriso -osirrox on -indev ", lun->backing_path, " -extract / ", dir));
  EXPECT_EQ(Slurp(dir + "/meta-data"), drive.meta_data);
  EXPECT_EQ(Slurp(dir + "/user-data"), drive.user_data);
  EXPECT_EQ(Slurp(dir + "/network-config"), drive.network_config);
}

INSTANTIATE_TEST_SUITE_P(BlockSizes, ConfigDriveWriterTest, ::testing::Values(512u, 4096u));

TEST(ConfigDriveImageTest, OmitsEmptyNetworkConfig) {
  ConfigDrive drive = SampleDrive();
  drive.network_config.clear();
  auto image = BuildConfigDriveImage(drive);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_EQ(image->size() % 2048, 0u);
  EXPECT_EQ(image->substr(32768 + 1, 5), "CD001");  // primary volume descriptor
  EXPECT_EQ(image->find("network-config"), std::string::npos);
  EXPECT_NE(image->find("user-data"), std::string::npos);
}

TEST(ConfigDriveWriterSizeTest, RefusesAVolumeSmallerThanTheImage) {
  auto san = tests::San::Start();
  ASSERT_TRUE(san.ok()) << san.status();
  auto lun = (*san)->CreateLun("tiny", 64 * 1024);
  ASSERT_TRUE(lun.ok()) << lun.status();
  auto volume = IscsiVolume::Open(lun->url);
  ASSERT_TRUE(volume.ok()) << volume.status();
  auto image = BuildConfigDriveImage(SampleDrive());
  ASSERT_TRUE(image.ok());

  absl::Status status = WriteConfigDrive(SampleDrive(), **volume).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrCat(image->size())));
  EXPECT_THAT(std::string(status.message()), HasSubstr("65536"));
}

// The control plane gives up on a call after its deadline and retries the
// step: a cancelled write must stop, not zero the rest of a large thick
// volume behind the caller's back.
TEST(ConfigDriveWriterCancelTest, StopsWhenCancelled) {
  auto san = tests::San::Start();
  ASSERT_TRUE(san.ok()) << san.status();
  tests::LunOptions options;
  options.thin = false;
  auto lun = (*san)->CreateLun("big", uint64_t{4} << 30, options);
  ASSERT_TRUE(lun.ok()) << lun.status();
  auto volume = IscsiVolume::Open(lun->url);
  ASSERT_TRUE(volume.ok()) << volume.status();
  std::atomic<bool> cancelled{true};
  const absl::Time start = absl::Now();
  absl::Status status = WriteConfigDrive(SampleDrive(), **volume, &cancelled).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << "zeroed the volume first";
}

}  // namespace
}  // namespace storaged

namespace storaged {
namespace {

// A config-drive volume reused from another account: its whole surface holds
// that tenant's bytes. After the new drive is written nothing of them may be
// left past the ISO, on thin (unmapped by WRITE SAME/UNMAP) and thick
// (explicit zero writes) LUNs alike.
class ConfigDriveReuseTest : public ::testing::TestWithParam<bool> {};

TEST_P(ConfigDriveReuseTest, ZeroesThePreviousTenantsDataPastTheImage) {
  const bool thin = GetParam();
  auto san = tests::San::Start();
  ASSERT_TRUE(san.ok()) << san.status();
  tests::LunOptions options;
  options.thin = thin;
  constexpr uint64_t kSize = 3 << 20;
  auto lun = (*san)->CreateLun("reused", kSize, options);
  ASSERT_TRUE(lun.ok()) << lun.status();
  {
    std::fstream f(lun->backing_path, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good());
    const std::string marker(kSize, '\x5a');
    f.write(marker.data(), marker.size());
    ASSERT_TRUE(f.good());
  }
  auto volume = IscsiVolume::Open(lun->url);
  ASSERT_TRUE(volume.ok()) << volume.status();

  const ConfigDrive drive = SampleDrive();
  auto image = BuildConfigDriveImage(drive);
  ASSERT_TRUE(image.ok());
  absl::StatusOr<uint64_t> written = WriteConfigDrive(drive, **volume);
  ASSERT_TRUE(written.ok()) << written.status();
  ASSERT_LT(*written, kSize);

  const std::string bytes = Slurp(lun->backing_path);
  ASSERT_EQ(bytes.size(), kSize);
  EXPECT_EQ(bytes.substr(0, image->size()), *image);
  const size_t stale = bytes.find_first_not_of('\0', image->size());
  EXPECT_EQ(stale, std::string::npos)
      << "previous tenant's byte left at offset " << stale << " (image ends at "
      << image->size() << ")";

  std::string dir = absl::StrCat((*san)->dir(), "/extracted");
  RunShell(absl::StrCat("xorriso -osirrox on -indev ", lun->backing_path, " -extract / ", dir));
  EXPECT_EQ(Slurp(dir + "/meta-data"), drive.meta_data);
  EXPECT_EQ(Slurp(dir + "/user-data"), drive.user_data);
}

INSTANTIATE_TEST_SUITE_P(Provisioning, ConfigDriveReuseTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "thin" : "thick"; });

}  // namespace
}  // namespace storaged
