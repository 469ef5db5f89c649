#include "common/log.h"

#include <unistd.h>

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
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

// Text as it may appear in a log line: control characters but tab (a newline
// in an id or a name taken from a request would forge a line) as \xNN, and
// at most `limit` bytes.
std::string OneLine(absl::string_view text, size_t limit) {
  std::string out;
  for (char c : text.substr(0, limit)) {
    const unsigned char u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) {
      absl::StrAppendFormat(&out, "\\x%02x", u);
    } else {
      out.push_back(c);
    }
  }
  if (text.size() > limit) absl::StrAppend(&out, "...(", text.size(), " bytes)");
  return out;
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
      op_id.empty() ? "" : absl::StrCat(" op=", OneLine(op_id, 200)),
      OneLine(message, 16 << 10));
  // One write(2) per line so concurrent processes sharing stderr stay readable.
  size_t written = 0;
  while (written < line.size()) {
    ssize_t n = ::write(STDERR_FILENO, line.data() + written, line.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
}

}  // namespace common
