#include "storaged/filesystem.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace storaged {

absl::Status ErrnoStatus(int err, absl::string_view what) {
  std::string message = absl::StrCat(what, ": ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case EEXIST:
      return absl::AlreadyExistsError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(
          absl::StrCat(message, "; free space in the image store or delete "
                                "images and collect garbage"));
    default:
      return absl::InternalError(message);
  }
}

namespace {

class PosixWritableFile final : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd)
      : path_(std::move(path)), fd_(fd) {}
  ~PosixWritableFile() override {
    if (fd_ >= 0) ::close(fd_);
  }
  PosixWritableFile(const PosixWritableFile&) = delete;
  PosixWritableFile& operator=(const PosixWritableFile&) = delete;

  absl::Status Append(absl::string_view data) override {
    if (fd_ < 0) return absl::FailedPreconditionError("file closed");
    while (!data.empty()) {
      ssize_t n = ::write(fd_, data.data(), data.size());
      if (n < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, absl::StrCat("write ", path_));
      }
      if (n == 0) return ErrnoStatus(ENOSPC, absl::StrCat("write ", path_));
      data.remove_prefix(static_cast<size_t>(n));
      size_ += static_cast<uint64_t>(n);
    }
    // Start writeback of each full 8 MiB behind us, so the final fsync of a
    // large pack has little left to wait for. Advisory: errors surface there.
    if (size_ - written_back_ >= kWritebackUnit) {
      uint64_t len = (size_ - written_back_) / kWritebackUnit * kWritebackUnit;
      ::sync_file_range(fd_, static_cast<off_t>(written_back_),
                        static_cast<off_t>(len), SYNC_FILE_RANGE_WRITE);
      written_back_ += len;
    }
    return absl::OkStatus();
  }

  absl::Status Sync() override {
    if (fd_ < 0) return absl::FailedPreconditionError("file closed");
    if (::fdatasync(fd_) != 0) {
      return ErrnoStatus(errno, absl::StrCat("fsync ", path_));
    }
    return absl::OkStatus();
  }

  absl::Status Close() override {
    if (fd_ < 0) return absl::OkStatus();
    int rc = ::close(fd_);
    fd_ = -1;
    if (rc != 0) return ErrnoStatus(errno, absl::StrCat("close ", path_));
    return absl::OkStatus();
  }

  uint64_t Size() const override { return size_; }

 private:
  static constexpr uint64_t kWritebackUnit = 8 << 20;
  const std::string path_;
  int fd_;
  uint64_t size_ = 0;
  uint64_t written_back_ = 0;
};

class PosixRandomAccessFile final : public RandomAccessFile {
 public:
  PosixRandomAccessFile(std::string path, int fd)
      : path_(std::move(path)), fd_(fd) {}
  ~PosixRandomAccessFile() override { ::close(fd_); }
  PosixRandomAccessFile(const PosixRandomAccessFile&) = delete;
  PosixRandomAccessFile& operator=(const PosixRandomAccessFile&) = delete;

  absl::Status ReadAt(uint64_t offset, size_t n, char* out) const override {
    while (n > 0) {
      ssize_t got = ::pread(fd_, out, n, static_cast<off_t>(offset));
      if (got < 0) {
        if (errno == EINTR) continue;
        return ErrnoStatus(errno, absl::StrCat("read ", path_));
      }
      if (got == 0) {
        return absl::OutOfRangeError(
            absl::StrCat("read ", path_, ": file ends before offset ",
                         offset + n));
      }
      out += got;
      n -= static_cast<size_t>(got);
      offset += static_cast<uint64_t>(got);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<uint64_t> Size() const override {
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      return ErrnoStatus(errno, absl::StrCat("stat ", path_));
    }
    return static_cast<uint64_t>(st.st_size);
  }

 private:
  const std::string path_;
  const int fd_;
};

class PosixFs final : public Filesystem {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) override {
    // Owner only: packs and manifests are other accounts' disks.
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                    0600);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("create ", path));
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenForRead(
      const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
    return std::unique_ptr<RandomAccessFile>(
        new PosixRandomAccessFile(path, fd));
  }

  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoStatus(errno, absl::StrCat("rename ", from, " to ", to));
    }
    return absl::OkStatus();
  }

  absl::Status Remove(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) {
      return ErrnoStatus(errno, absl::StrCat("remove ", path));
    }
    return absl::OkStatus();
  }

  absl::Status SyncDir(const std::string& path) override {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoStatus(errno, absl::StrCat("open ", path));
    int rc = ::fsync(fd);
    int err = errno;
    ::close(fd);
    if (rc != 0) return ErrnoStatus(err, absl::StrCat("fsync ", path));
    return absl::OkStatus();
  }

  absl::Status CreateDir(const std::string& path) override {
    if (::mkdir(path.c_str(), 0700) != 0 && errno != EEXIST) {
      return ErrnoStatus(errno, absl::StrCat("mkdir ", path));
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoStatus(errno, absl::StrCat("list ", path));
    std::vector<std::string> names;
    while (struct dirent* entry = ::readdir(dir)) {
      absl::string_view name = entry->d_name;
      if (name == "." || name == "..") continue;
      names.emplace_back(name);
    }
    ::closedir(dir);
    return names;
  }

  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) {
      return ErrnoStatus(errno, absl::StrCat("stat ", path));
    }
    return static_cast<uint64_t>(st.st_size);
  }

  absl::StatusOr<FilesystemStats> Stats(const std::string& path) override {
    struct statvfs st;
    if (::statvfs(path.c_str(), &st) != 0) {
      return ErrnoStatus(errno, absl::StrCat("statvfs ", path));
    }
    FilesystemStats stats;
    stats.capacity_bytes = static_cast<uint64_t>(st.f_blocks) * st.f_frsize;
    stats.free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
    return stats;
  }
};

}  // namespace

Filesystem* PosixFilesystem() {
  static Filesystem* const fs = new PosixFs();
  return fs;
}

absl::StatusOr<std::string> ReadWholeFile(Filesystem* fs,
                                          const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<RandomAccessFile> file,
                   fs->OpenForRead(path));
  ASSIGN_OR_RETURN(uint64_t size, file->Size());
  std::string contents(size, '\0');
  RETURN_IF_ERROR(file->ReadAt(0, size, contents.data()));
  return contents;
}

absl::Status WriteFileDurably(Filesystem* fs, const std::string& dir,
                              const std::string& path,
                              absl::string_view contents) {
  const std::string tmp = absl::StrCat(path, ".tmp");
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                     fs->NewWritableFile(tmp));
    RETURN_IF_ERROR(file->Append(contents));
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
    return fs->Rename(tmp, path);
  }();
  if (!status.ok()) {
    fs->Remove(tmp).IgnoreError();
    return status;
  }
  if (absl::Status synced = fs->SyncDir(dir); !synced.ok()) {
    // The rename may not survive a crash; do not leave a file the caller will
    // report as failed.
    fs->Remove(path).IgnoreError();
    return synced;
  }
  return absl::OkStatus();
}

}  // namespace storaged
