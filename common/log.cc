#include "common/log.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/base/const_init.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace common {
namespace {

absl::Mutex log_mu(absl::kConstInit);
std::string* component ABSL_GUARDED_BY(log_mu) = nullptr;

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kInfo:
      return "I";
    case LogLevel::kWarning:
      return "W";
    case LogLevel::kError:
      return "E";
  }
  return "?";
}

}  // namespace

void SetLogComponent(absl::string_view name) {
  absl::MutexLock lock(&log_mu);
  delete component;
  component = new std::string(name);
}

void LogLine(LogLevel level, absl::string_view op_id,
             absl::string_view message) {
  absl::MutexLock lock(&log_mu);
  std::string line = absl::StrFormat(
      "%s %s %s%s %s\n",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
      LevelName(level), component ? *component : "-",
      op_id.empty() ? "" : absl::StrCat(" op=", op_id), message);
  // One write(2) per line so concurrent processes sharing stderr stay readable.
  size_t written = 0;
  while (written < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
}

}  // namespace common
