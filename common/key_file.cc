#include "common/key_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace common {
namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view what,
                                     size_t max_bytes, bool secret) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int err = errno;
    std::string message = absl::StrCat(what, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(message);
    if (err == EACCES) return absl::PermissionDeniedError(message);
    return absl::UnavailableError(message);
  }
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return absl::FailedPreconditionError(absl::StrCat(what, ": not a regular file"));
  }
  // Checked on the open file, so a chmod after the check cannot matter.
  if (secret && (st.st_mode & 077) != 0) {
    ::close(fd);
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: mode %04o lets group or others read it; it holds a secret: "
                        "chmod 600 %s",
                        what, st.st_mode & 07777, path));
  }
  std::string contents;
  char buffer[4096];
  while (contents.size() <= max_bytes) {
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int err = errno;
      ::close(fd);
      return absl::UnavailableError(absl::StrCat(what, ": ", std::strerror(err)));
    }
    if (n == 0) break;
    contents.append(buffer, static_cast<size_t>(n));
  }
  ::close(fd);
  if (contents.size() > max_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(what, ": larger than ", max_bytes, " bytes"));
  }
  return contents;
}

}  // namespace

absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what,
                                           size_t max_bytes) {
  return ReadFile(path, what, max_bytes, /*secret=*/true);
}

absl::StatusOr<std::string> ReadSmallFile(const std::string& path, absl::string_view what,
                                          size_t max_bytes) {
  return ReadFile(path, what, max_bytes, /*secret=*/false);
}

}  // namespace common
