#include "common/process_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"

namespace common {

absl::Status LockForProcess(const std::string& path, absl::string_view what,
                            absl::string_view program) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::UnavailableError(absl::StrCat("open ", path, ": ", std::strerror(errno)));
  }
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char owner[32] = {};
    const ssize_t n = ::pread(fd, owner, sizeof owner - 1, 0);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      const std::string pid(absl::StripAsciiWhitespace(
          absl::string_view(owner, n > 0 ? static_cast<size_t>(n) : 0)));
      return absl::FailedPreconditionError(absl::StrCat(
          what, " is in use by another ", program,
          pid.empty() ? "" : absl::StrCat(" (pid ", pid, ")"), "; it belongs to one ", program,
          " at a time (lock file ", path, ")"));
    }
    return absl::UnavailableError(absl::StrCat("flock ", path, ": ", std::strerror(err)));
  }
  const std::string pid = absl::StrCat(::getpid(), "\n");
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    LogWarning("cannot record pid in %s: %s", path, std::strerror(errno));
  }
  return absl::OkStatus();  // fd stays open, and locked, until exit
}

}  // namespace common
