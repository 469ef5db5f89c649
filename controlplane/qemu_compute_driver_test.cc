// Real qemu-system-x86_64 processes under TCG with only the firmware: power
// on and off (SeaBIOS ignores the ACPI request, so power off must kill), a
// boot that never shows the marker, a guest that dies before booting, and
// QEMU that cannot start. The guest-image boots are in tests/qemu_e2e_test.
#include "controlplane/qemu_compute_driver.h"

#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <optional>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/san.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr char kServer[] = "0b6a3c1e-2f4d-4e5a-9b8c-7d6e5f4a3b2c";

// A boot sector that prints a kernel-like panic on COM1 and triple-faults
// (an empty IDT, then int3): with -no-reboot QEMU exits, as a guest with
// panic=-1 does.
std::string PanickingBootSector() {
  std::string sector(512, '\0');
  const unsigned char code[] = {
      0x31, 0xc0, 0x8e, 0xd8,              // xor ax,ax; mov ds,ax
      0xbe, 0x40, 0x7c,                    // mov si,0x7c40
      0xba, 0xf8, 0x03,                    // mov dx,0x3f8
      0xac, 0x84, 0xc0, 0x74, 0x03,        // lodsb; test al,al; jz +3
      0xee, 0xeb, 0xf8,                    // out dx,al; jmp -8
      0x0f, 0x01, 0x1e, 0x30, 0x7c,        // lidt [0x7c30] (limit 0)
      0xcc};                               // int3: triple fault
  sector.replace(0, sizeof(code), reinterpret_cast<const char*>(code),
                 sizeof(code));
  const std::string message =
      "Kernel panic - not syncing: VFS: Unable to mount root fs\r\n";
  sector.replace(0x40, message.size(), message);
  sector[510] = static_cast<char>(0x55);
  sector[511] = static_cast<char>(0xaa);
  return sector;
}

class QemuComputeDriverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Short: QMP socket paths are limited to 107 bytes.
    char dir_template[] = "/tmp/qemu-driver-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
  }
  void TearDown() override {
    if (driver_ != nullptr) {
      if (int pid = driver_->LivePid(kServer); pid != 0) kill(pid, SIGKILL);
    }
    std::string rm = "rm -rf '" + dir_ + "'";
    ASSERT_EQ(system(rm.c_str()), 0);
  }

  // A driver whose one server boots from the local file `disk` (none if
  // empty).
  void MakeDriver(QemuOptions options, const std::string& disk) {
    std::optional<QemuDrive> drive;
    if (!disk.empty()) {
      drive.emplace();
      drive->path = disk;
    }
    MakeDriver(std::move(options), drive);
  }
  void MakeDriver(QemuOptions options, std::optional<QemuDrive> disk) {
    options.state_dir = dir_ + "/state";
    options.memory_mib = 128;
    options.smp = 1;
    options.power_off_timeout = absl::Seconds(3);
    auto driver = QemuComputeDriver::Create(
        options,
        [disk](const std::string& id) -> absl::StatusOr<QemuMachineSpec> {
          if (id != kServer) return absl::NotFoundError("server_id: unknown");
          QemuMachineSpec spec;
          spec.server_id = id;
          if (disk.has_value()) spec.disks.push_back(*disk);
          spec.mac = "52:54:00:12:34:56";
          return spec;
        },
        nullptr);
    ASSERT_TRUE(driver.ok()) << driver.status();
    driver_ = std::move(*driver);
  }

  std::string Console() {
    auto lines = driver_->ReadConsole(kServer, 100);
    EXPECT_TRUE(lines.ok()) << lines.status();
    return lines.ok() ? absl::StrJoin(*lines, "\n") : "";
  }

  std::string dir_;
  std::unique_ptr<QemuComputeDriver> driver_;
};

TEST_F(QemuComputeDriverTest, PowerStateComesFromTheProcessAndQmp) {
  QemuOptions options;
  options.boot_marker = "";  // running is enough: the firmware prints nothing
  MakeDriver(options, "");
  auto state = driver_->GetPowerState(kServer, absl::Seconds(10));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, v1::POWER_STATE_STOPPED);

  ASSERT_TRUE(driver_->PowerOn(kServer, absl::Seconds(60), nullptr).ok());
  int pid = driver_->LivePid(kServer);
  ASSERT_NE(pid, 0);
  state = driver_->GetPowerState(kServer, absl::Seconds(10));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, v1::POWER_STATE_RUNNING);
  // Already running: the same process.
  ASSERT_TRUE(driver_->PowerOn(kServer, absl::Seconds(60), nullptr).ok());
  EXPECT_EQ(driver_->LivePid(kServer), pid);

  // The firmware ignores ACPI: after power_off_timeout the process is killed,
  // and the driver says so.
  absl::Time start = absl::Now();
  auto forced = driver_->PowerOffReportingForce(kServer, absl::Seconds(60));
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_TRUE(*forced);
  EXPECT_GE(absl::Now() - start, absl::Seconds(3));
  EXPECT_EQ(driver_->LivePid(kServer), 0);
  state = driver_->GetPowerState(kServer, absl::Seconds(10));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, v1::POWER_STATE_STOPPED);
  EXPECT_THAT(Console(), HasSubstr("powered off hard"));
  // Stopped already: a no-op that reports no force.
  forced = driver_->PowerOffReportingForce(kServer, absl::Seconds(60));
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_FALSE(*forced);
}

TEST_F(QemuComputeDriverTest, UnknownServerIsNotFound) {
  MakeDriver(QemuOptions(), "");
  const std::string other = "ffffffff-2f4d-4e5a-9b8c-7d6e5f4a3b2c";
  EXPECT_EQ(driver_->GetPowerState(other, absl::Seconds(5)).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(driver_->PowerOn(other, absl::Seconds(5), nullptr).code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(driver_->PowerOff(other, absl::Seconds(5)).code(),
            absl::StatusCode::kNotFound);
}

TEST_F(QemuComputeDriverTest, NoBootMarkerInTimeStopsTheServer) {
  QemuOptions options;
  options.boot_marker = "login:";
  options.boot_timeout = absl::Seconds(3);
  MakeDriver(options, "");
  absl::Status status = driver_->PowerOn(kServer, absl::Seconds(60), nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("did not boot within"));
  EXPECT_EQ(driver_->LivePid(kServer), 0);
}

// A cancel stops the wait for the boot marker at once; the server keeps
// running (the deploy's undo powers it off) and reports so.
TEST_F(QemuComputeDriverTest, ACancelStopsTheWaitForTheBoot) {
  QemuOptions options;
  options.boot_marker = "login:";  // never comes: the firmware alone
  options.boot_timeout = absl::Seconds(120);
  MakeDriver(options, "");
  std::atomic<bool> cancelled{false};
  std::thread canceller([&] {
    absl::SleepFor(absl::Seconds(2));
    cancelled = true;
  });
  const absl::Time start = absl::Now();
  absl::Status status = driver_->PowerOn(kServer, absl::Seconds(120), &cancelled);
  canceller.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(30));
  EXPECT_NE(driver_->LivePid(kServer), 0);
  auto state = driver_->GetPowerState(kServer, absl::Seconds(10));
  ASSERT_TRUE(state.ok()) << state.status();
  EXPECT_EQ(*state, v1::POWER_STATE_RUNNING);
  EXPECT_TRUE(driver_->PowerOff(kServer, absl::Seconds(10)).ok());
  EXPECT_EQ(driver_->LivePid(kServer), 0);
}

TEST_F(QemuComputeDriverTest, GuestThatDiesBeforeBootingIsReportedFromTheConsole) {
  const std::string disk = dir_ + "/panic.img";
  {
    std::ofstream out(disk, std::ios::binary);
    std::string image = PanickingBootSector();
    image.resize(1 << 20, '\0');
    out << image;
  }
  QemuOptions options;
  options.boot_timeout = absl::Seconds(60);
  MakeDriver(options, disk);
  absl::Status status = driver_->PowerOn(kServer, absl::Seconds(90), nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("did not boot"));
  EXPECT_THAT(std::string(status.message()),
              HasSubstr("VFS: Unable to mount root fs"));
  EXPECT_EQ(driver_->LivePid(kServer), 0);
  std::string console = Console();
  EXPECT_THAT(console, HasSubstr("power on"));
  EXPECT_THAT(console, HasSubstr("Kernel panic - not syncing"));
  auto last = driver_->ReadConsole(kServer, 1);
  ASSERT_TRUE(last.ok());
  ASSERT_EQ(last->size(), 1u);
  EXPECT_THAT((*last)[0], HasSubstr("QEMU exited before the guest booted"));
}

TEST_F(QemuComputeDriverTest, QemuThatCannotStartSaysWhy) {
  MakeDriver(QemuOptions(), dir_ + "/missing.img");
  absl::Status status = driver_->PowerOn(kServer, absl::Seconds(30), nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("QEMU did not start"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("missing.img"));
}

// A LUN behind CHAP: QEMU logs in with the secret, which never shows on its
// command line and does not stay on disk; a refused secret is not retried.
TEST_F(QemuComputeDriverTest, ChapSecretStaysOffTheCommandLine) {
  auto san = tests::San::Start();
  ASSERT_TRUE(san.ok()) << san.status();
  auto lun = (*san)->CreateLun("chap", 16 << 20);
  ASSERT_TRUE(lun.ok()) << lun.status();
  ASSERT_TRUE((*san)->SetChap("chap", "alice", "s3cret-passw0rd").ok());
  QemuDrive drive;
  drive.portal = absl::StrCat("127.0.0.1:", (*san)->port());
  drive.iqn = lun->iqn;
  drive.lun = 1;
  drive.chap_user = "alice";
  drive.chap_secret = "s3cret-passw0rd";
  QemuOptions options;
  options.boot_marker = "";
  MakeDriver(options, drive);

  ASSERT_TRUE(driver_->PowerOn(kServer, absl::Seconds(60), nullptr).ok());
  int pid = driver_->LivePid(kServer);
  ASSERT_NE(pid, 0);
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline", std::ios::binary);
  std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(cmdline, HasSubstr("password-secret=chap0"));
  EXPECT_THAT(cmdline, HasSubstr(lun->iqn));
  EXPECT_THAT(cmdline, Not(HasSubstr("s3cret-passw0rd")));
  std::string listing;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/state/" + kServer)) {
    listing += e.path().filename().string() + " ";
  }
  EXPECT_THAT(listing, Not(HasSubstr(".secret"))) << listing;
  auto forced = driver_->PowerOffReportingForce(kServer, absl::Seconds(60));
  ASSERT_TRUE(forced.ok()) << forced.status();

  // The target refuses a wrong secret: a clear error, not UNAVAILABLE (that
  // would be retried as if the SAN were down).
  drive.chap_secret = "wrong-password";
  MakeDriver(options, drive);
  absl::Status status = driver_->PowerOn(kServer, absl::Seconds(60), nullptr);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("Authentication failure"));
  EXPECT_THAT(std::string(status.message()), Not(HasSubstr("wrong-password")));
}

TEST_F(QemuComputeDriverTest, ConsoleLinesAreCleanUtf8) {
  MakeDriver(QemuOptions(), "");
  auto empty = driver_->ReadConsole(kServer, 10);
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_TRUE(empty->empty());
  const std::string dir = driver_->ServerDir(kServer);
  ASSERT_EQ(system(("mkdir -p '" + dir + "'").c_str()), 0);
  std::ofstream(dir + "/console.log", std::ios::binary)
      << "first\r\n\x1b[0;32m  OK  \x1b[0m] Started \xe2\x80\xa6 ssh\r\n"
      << "bad \xff\xc3 bytes\x07\n"
      << "partial";
  auto lines = driver_->ReadConsole(kServer, 3);
  ASSERT_TRUE(lines.ok()) << lines.status();
  ASSERT_EQ(lines->size(), 3u);
  EXPECT_EQ((*lines)[0], "  OK  ] Started \xe2\x80\xa6 ssh");
  EXPECT_EQ((*lines)[1], "bad ?? bytes");
  EXPECT_EQ((*lines)[2], "partial");
}

TEST(QemuComputeDriverCreateTest, RejectsStateDirectoriesTooLongForSockets) {
  QemuOptions options;
  options.state_dir = "/tmp/" + std::string(80, 'x');
  auto driver = QemuComputeDriver::Create(options, nullptr, nullptr);
  EXPECT_EQ(driver.status().code(), absl::StatusCode::kInvalidArgument);
  options.state_dir = "";
  EXPECT_EQ(QemuComputeDriver::Create(options, nullptr, nullptr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace controlplane
