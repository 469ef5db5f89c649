// The file operations the image store needs, behind an interface so tests can
// inject faults (full disk, failed fsync, a crash at any operation) the way
// leveldb's Env does. PosixFilesystem is the real thing.
#ifndef STORAGED_FILESYSTEM_H_
#define STORAGED_FILESYSTEM_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace storaged {

// A file opened for appending. Not thread-safe: one owner at a time.
class WritableFile {
 public:
  virtual ~WritableFile() = default;

  // Appends all of `data`. RESOURCE_EXHAUSTED when the disk or quota is full.
  virtual absl::Status Append(absl::string_view data) = 0;
  // Makes everything appended so far durable (fdatasync).
  virtual absl::Status Sync() = 0;
  // Closes the file; further calls fail. The destructor closes silently.
  virtual absl::Status Close() = 0;
  // Bytes appended so far.
  virtual uint64_t Size() const = 0;
};

// A file opened for positional reads. Thread-safe (pread).
class RandomAccessFile {
 public:
  virtual ~RandomAccessFile() = default;

  // Reads exactly `n` bytes at `offset` into `out`. OUT_OF_RANGE when the
  // file ends first.
  virtual absl::Status ReadAt(uint64_t offset, size_t n, char* out) const = 0;
  virtual absl::StatusOr<uint64_t> Size() const = 0;
};

struct FilesystemStats {
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;  // Available to unprivileged users.
};

// Thread-safe. Errors map errno to codes: ENOENT -> NOT_FOUND, EEXIST ->
// ALREADY_EXISTS, ENOSPC/EDQUOT -> RESOURCE_EXHAUSTED, anything else ->
// INTERNAL; messages name the path.
class Filesystem {
 public:
  virtual ~Filesystem() = default;

  // Creates `path` (owner-only, 0600), or truncates it if it exists.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  virtual absl::StatusOr<std::unique_ptr<RandomAccessFile>> OpenForRead(
      const std::string& path) = 0;
  // Atomically replaces `to` with `from`.
  virtual absl::Status Rename(const std::string& from,
                              const std::string& to) = 0;
  virtual absl::Status Remove(const std::string& path) = 0;
  // Makes renames and removals inside directory `path` durable.
  virtual absl::Status SyncDir(const std::string& path) = 0;
  // Owner-only (0700). OK if the directory already exists.
  virtual absl::Status CreateDir(const std::string& path) = 0;
  // Names (not paths) of the entries of `path`, without "." and "..".
  virtual absl::StatusOr<std::vector<std::string>> ListDir(
      const std::string& path) = 0;
  virtual absl::StatusOr<uint64_t> FileSize(const std::string& path) = 0;
  virtual absl::StatusOr<FilesystemStats> Stats(const std::string& path) = 0;
};

// The process-wide POSIX filesystem; never deleted.
Filesystem* PosixFilesystem();

// Reads a whole file.
absl::StatusOr<std::string> ReadWholeFile(Filesystem* fs,
                                          const std::string& path);

// Writes `contents` durably under `path`: a temporary file `path`.tmp, fsync,
// rename, fsync of `dir` (the directory holding `path`). A crash leaves either
// the old state or the new file, plus possibly the temporary file.
absl::Status WriteFileDurably(Filesystem* fs, const std::string& dir,
                              const std::string& path,
                              absl::string_view contents);

// Maps an errno value to a status naming `what`.
absl::Status ErrnoStatus(int err, absl::string_view what);

}  // namespace storaged

#endif  // STORAGED_FILESYSTEM_H_
