#include "storaged/filesystem.h"

#include <sys/stat.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "gtest/gtest.h"
#include "storaged/filesystem_fault.h"

namespace storaged {
namespace {

// One suite for every Filesystem: the real one and the fault wrapper with no
// fault armed must behave the same.
class FilesystemTest : public ::testing::TestWithParam<bool> {
 protected:
  void SetUp() override {
    dir_ = std::string(std::getenv("TEST_TMPDIR")) + "/fs_" +
           (GetParam() ? "fault" : "posix");
    std::filesystem::remove_all(dir_);
    fs_ = GetParam() ? static_cast<Filesystem*>(&fault_) : PosixFilesystem();
    ASSERT_TRUE(fs_->CreateDir(dir_).ok());
    ASSERT_TRUE(fs_->CreateDir(dir_).ok());  // Existing is fine.
  }

  FaultInjectingFilesystem fault_{PosixFilesystem()};
  Filesystem* fs_ = nullptr;
  std::string dir_;
};

TEST_P(FilesystemTest, WriteReadRenameRemove) {
  std::string a = dir_ + "/a", b = dir_ + "/b";
  auto file = fs_->NewWritableFile(a);
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_TRUE((*file)->Append("hello ").ok());
  ASSERT_TRUE((*file)->Append("world").ok());
  EXPECT_EQ((*file)->Size(), 11u);
  ASSERT_TRUE((*file)->Sync().ok());
  ASSERT_TRUE((*file)->Close().ok());
  ASSERT_TRUE(fs_->Rename(a, b).ok());
  ASSERT_TRUE(fs_->SyncDir(dir_).ok());
  EXPECT_EQ(fs_->FileSize(a).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(*fs_->FileSize(b), 11u);
  auto reader = fs_->OpenForRead(b);
  ASSERT_TRUE(reader.ok());
  char buf[5];
  ASSERT_TRUE((*reader)->ReadAt(6, 5, buf).ok());
  EXPECT_EQ(std::string(buf, 5), "world");
  EXPECT_EQ((*reader)->ReadAt(8, 5, buf).code(), absl::StatusCode::kOutOfRange);
  auto names = fs_->ListDir(dir_);
  ASSERT_TRUE(names.ok());
  EXPECT_EQ(*names, std::vector<std::string>{"b"});
  ASSERT_TRUE(fs_->Remove(b).ok());
  EXPECT_EQ(fs_->Remove(b).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs_->OpenForRead(b).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(fs_->ListDir(dir_ + "/none").status().code(),
            absl::StatusCode::kNotFound);
  auto stats = fs_->Stats(dir_);
  ASSERT_TRUE(stats.ok());
  EXPECT_GT(stats->capacity_bytes, 0u);
}

TEST_P(FilesystemTest, WriteFileDurably) {
  std::string path = dir_ + "/m";
  ASSERT_TRUE(WriteFileDurably(fs_, dir_, path, "one").ok());
  ASSERT_TRUE(WriteFileDurably(fs_, dir_, path, "two!").ok());
  auto got = ReadWholeFile(fs_, path);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(*got, "two!");
  EXPECT_EQ(fs_->FileSize(path + ".tmp").status().code(),
            absl::StatusCode::kNotFound);
}

// The store holds every account's disks: nobody but storaged's user reads it.
TEST_P(FilesystemTest, FilesAndDirectoriesAreOwnerOnly) {
  const mode_t old_umask = ::umask(0);  // the modes asked for, not the umask's
  std::string sub = dir_ + "/sub";
  ASSERT_TRUE(fs_->CreateDir(sub).ok());
  auto file = fs_->NewWritableFile(sub + "/f");
  ASSERT_TRUE(file.ok()) << file.status();
  ::umask(old_umask);
  struct stat st;
  ASSERT_EQ(::stat(sub.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  ASSERT_EQ(::stat((sub + "/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
}

INSTANTIATE_TEST_SUITE_P(PosixAndFault, FilesystemTest, ::testing::Bool());

TEST(FaultInjectingFilesystemTest, FullDiskWritesPartiallyThenFails) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/fault_full";
  std::filesystem::remove_all(dir);
  FaultInjectingFilesystem fault(PosixFilesystem());
  ASSERT_TRUE(fault.CreateDir(dir).ok());
  fault.FailWritesAfter(8);
  auto file = fault.NewWritableFile(dir + "/f");
  ASSERT_TRUE(file.ok());
  ASSERT_TRUE((*file)->Append("12345").ok());
  EXPECT_EQ((*file)->Append("67890").code(),
            absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE((*file)->Close().ok());
  EXPECT_EQ(*PosixFilesystem()->FileSize(dir + "/f"), 8u);
  // A failed write must not leave a half-written target behind.
  EXPECT_EQ(WriteFileDurably(&fault, dir, dir + "/g", "data").code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(fault.FileSize(dir + "/g").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(fault.FileSize(dir + "/g.tmp").status().code(),
            absl::StatusCode::kNotFound);
}

TEST(FaultInjectingFilesystemTest, SyncFailureAndCrash) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/fault_crash";
  std::filesystem::remove_all(dir);
  FaultInjectingFilesystem fault(PosixFilesystem());
  ASSERT_TRUE(fault.CreateDir(dir).ok());
  fault.SetFailSync(true);
  EXPECT_EQ(WriteFileDurably(&fault, dir, dir + "/s", "x").code(),
            absl::StatusCode::kInternal);
  EXPECT_EQ(fault.FileSize(dir + "/s").status().code(),
            absl::StatusCode::kNotFound);
  fault.SetFailSync(false);

  fault.CrashAfterOps(2);  // create + append, then the sync "crashes".
  EXPECT_EQ(WriteFileDurably(&fault, dir, dir + "/c", "x").code(),
            absl::StatusCode::kAborted);
  EXPECT_TRUE(fault.crashed());
  // After the crash nothing reaches the disk, not even cleanup.
  EXPECT_TRUE(PosixFilesystem()->FileSize(dir + "/c.tmp").ok());
  EXPECT_EQ(fault.Remove(dir + "/c.tmp").code(), absl::StatusCode::kAborted);
  EXPECT_EQ(fault.FileSize(dir + "/c").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace storaged
