// A Filesystem wrapper for tests that forwards to a real one and flips error
// switches: a disk that fills after N bytes, fsyncs that fail, files that
// cannot be opened for reading, and a simulated
// crash after N mutating operations (after which every mutation fails and
// nothing more reaches the disk, so cleanup code cannot run either).
#ifndef STORAGED_FILESYSTEM_FAULT_H_
#define STORAGED_FILESYSTEM_FAULT_H_

#include <errno.h>

#include <cstdint>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "storaged/filesystem.h"

namespace storaged {

#define STORAGED_RETURN_IF_CRASHED_(what)                            \
  do {                                                      \
    if (absl::Status s = CountOp(what); !s.ok()) return s;  \
  } while (0)

// Thread-safe. `base` must outlive this object and every file it opened.
class FaultInjectingFilesystem final : public Filesystem {
 public:
  explicit FaultInjectingFilesystem(Filesystem* base) : base_(base) {}
  FaultInjectingFilesystem(const FaultInjectingFilesystem&) = delete;
  FaultInjectingFilesystem& operator=(const FaultInjectingFilesystem&) = delete;

  // Appends succeed for `bytes` more bytes in total, then fail with ENOSPC
  // (the last one partially written, as a real full disk does).
  void FailWritesAfter(uint64_t bytes) {
    absl::MutexLock lock(&mu_);
    write_budget_ = bytes;
  }
  // Every Sync and SyncDir fails with EIO while set.
  void SetFailSync(bool fail) {
    absl::MutexLock lock(&mu_);
    fail_sync_ = fail;
  }
  // The process "dies" after `ops` more mutating operations (create, append,
  // sync, close, rename, remove, mkdir): the op that crosses the line and all
  // later ones fail with ABORTED and do nothing.
  void CrashAfterOps(uint64_t ops) {
    absl::MutexLock lock(&mu_);
    ops_until_crash_ = ops;
  }
  // The next `count` OpenForRead calls of a path containing `path_part` fail
  // with `err` (count < 0: every one until this is called again; 0: none).
  void FailOpensForRead(std::string path_part, int count, int err) {
    absl::MutexLock lock(&mu_);
    open_fail_part_ = std::move(path_part);
    open_fails_left_ = count;
    open_fail_errno_ = err;
  }
  int failed_opens() const {
    absl::MutexLock lock(&mu_);
    return failed_opens_;
  }
  // OpenForRead calls of a path containing `path_part` wait until
  // ReleaseOpens (an operation held in the middle, for races);
  // WaitForHeldOpen returns once one waits.
  void HoldOpensForRead(std::string path_part) {
    absl::MutexLock lock(&mu_);
    hold_part_ = std::move(path_part);
  }
  void WaitForHeldOpen() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(
        +[](int* held) { return *held > 0; }, &held_opens_));
  }
  void ReleaseOpens() {
    absl::MutexLock lock(&mu_);
    hold_part_.clear();
  }
  bool crashed() const {
    absl::MutexLock lock(&mu_);
    return crashed_;
  }
  uint64_t mutating_ops() const {
    absl::MutexLock lock(&mu_);
    return mutating_ops_;
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override {
    STORAGED_RETURN_IF_CRASHED_("create " + path);
    auto file = base_->NewWritableFile(path);
    if (!file.ok()) return file.status();
    return std::unique_ptr<WritableFile>(
        new FaultFile(this, std::move(file).value(), path));
  }
  absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenForRead(
      const std::string& path) override {
    {
      absl::MutexLock lock(&mu_);
      if (open_fails_left_ != 0 && absl::StrContains(path, open_fail_part_)) {
        if (open_fails_left_ > 0) --open_fails_left_;
        ++failed_opens_;
        return ErrnoStatus(open_fail_errno_, "open " + path);
      }
      if (!hold_part_.empty() && absl::StrContains(path, hold_part_)) {
        ++held_opens_;
        auto released = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
          return hold_part_.empty();
        };
        mu_.Await(absl::Condition(&released));
        --held_opens_;
      }
    }
    return base_->OpenForRead(path);
  }
  absl::Status Rename(const std::string& from, const std::string& to) override {
    STORAGED_RETURN_IF_CRASHED_("rename " + from);
    return base_->Rename(from, to);
  }
  absl::Status Remove(const std::string& path) override {
    STORAGED_RETURN_IF_CRASHED_("remove " + path);
    return base_->Remove(path);
  }
  absl::Status SyncDir(const std::string& path) override {
    STORAGED_RETURN_IF_CRASHED_("fsync " + path);
    if (SyncFails()) return ErrnoStatus(EIO, "fsync " + path);
    return base_->SyncDir(path);
  }
  absl::Status CreateDir(const std::string& path) override {
    STORAGED_RETURN_IF_CRASHED_("mkdir " + path);
    return base_->CreateDir(path);
  }
  absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& path) override {
    return base_->ListDir(path);
  }
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    return base_->FileSize(path);
  }
  absl::StatusOr<FilesystemStats> Stats(const std::string& path) override {
    return base_->Stats(path);
  }

 private:
  class FaultFile final : public WritableFile {
   public:
    FaultFile(FaultInjectingFilesystem* fs, std::unique_ptr<WritableFile> base,
              std::string path)
        : fs_(fs), base_(std::move(base)), path_(std::move(path)) {}
    absl::Status Append(absl::string_view data) override {
      STORAGED_RETURN_IF_CRASHED_("write " + path_);
      uint64_t allowed = fs_->TakeWriteBudget(data.size());
      if (allowed < data.size()) {
        base_->Append(data.substr(0, allowed)).IgnoreError();
        return ErrnoStatus(ENOSPC, "write " + path_);
      }
      return base_->Append(data);
    }
    absl::Status Sync() override {
      STORAGED_RETURN_IF_CRASHED_("fsync " + path_);
      if (fs_->SyncFails()) return ErrnoStatus(EIO, "fsync " + path_);
      return base_->Sync();
    }
    absl::Status Close() override {
      STORAGED_RETURN_IF_CRASHED_("close " + path_);
      return base_->Close();
    }
    uint64_t Size() const override { return base_->Size(); }

   private:
    absl::Status CountOp(const std::string& what) { return fs_->CountOp(what); }
    FaultInjectingFilesystem* const fs_;
    const std::unique_ptr<WritableFile> base_;
    const std::string path_;
  };

  absl::Status CountOp(const std::string& what) {
    absl::MutexLock lock(&mu_);
    ++mutating_ops_;
    if (!crashed_ && ops_until_crash_ == 0) crashed_ = true;
    if (crashed_) return absl::AbortedError("simulated crash before " + what);
    --ops_until_crash_;
    return absl::OkStatus();
  }
  uint64_t TakeWriteBudget(uint64_t want) {
    absl::MutexLock lock(&mu_);
    uint64_t got = want < write_budget_ ? want : write_budget_;
    write_budget_ -= got;
    return got;
  }
  bool SyncFails() {
    absl::MutexLock lock(&mu_);
    return fail_sync_;
  }

  Filesystem* const base_;
  mutable absl::Mutex mu_;
  uint64_t write_budget_ ABSL_GUARDED_BY(mu_) =
      std::numeric_limits<uint64_t>::max();
  uint64_t ops_until_crash_ ABSL_GUARDED_BY(mu_) =
      std::numeric_limits<uint64_t>::max();
  uint64_t mutating_ops_ ABSL_GUARDED_BY(mu_) = 0;
  bool fail_sync_ ABSL_GUARDED_BY(mu_) = false;
  std::string open_fail_part_ ABSL_GUARDED_BY(mu_);
  int open_fails_left_ ABSL_GUARDED_BY(mu_) = 0;
  int open_fail_errno_ ABSL_GUARDED_BY(mu_) = 0;
  int failed_opens_ ABSL_GUARDED_BY(mu_) = 0;
  std::string hold_part_ ABSL_GUARDED_BY(mu_);
  int held_opens_ ABSL_GUARDED_BY(mu_) = 0;
  bool crashed_ ABSL_GUARDED_BY(mu_) = false;
};

#undef STORAGED_RETURN_IF_CRASHED_

}  // namespace storaged

#endif  // STORAGED_FILESYSTEM_FAULT_H_
