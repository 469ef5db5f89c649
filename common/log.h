// One line per event on stderr: time, level, component, optional operation id,
// message. Safe to call from any thread; lines never interleave. Control
// characters in the id and message are written as \xNN, so whatever a
// request put in them stays one line; ids are cut at 200 bytes and messages
// at 16 KiB.
#ifndef COMMON_LOG_H_
#define COMMON_LOG_H_

#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"

namespace common {

enum class LogLevel { kInfo, kWarning, kError };

// Sets the component name printed on every line ("controlplane", "storaged").
void SetLogComponent(absl::string_view component);

void LogLine(LogLevel level, absl::string_view op_id, absl::string_view message);

template <typename... Args>
void LogInfo(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogLevel::kInfo, "", absl::StrFormat(format, args...));
}

template <typename... Args>
void LogWarning(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogLevel::kWarning, "", absl::StrFormat(format, args...));
}

template <typename... Args>
void LogError(const absl::FormatSpec<Args...>& format, const Args&... args) {
  LogLine(LogLevel::kError, "", absl::StrFormat(format, args...));
}

// For work that belongs to an operation: the id goes in its own column.
template <typename... Args>
void LogOp(absl::string_view op_id, const absl::FormatSpec<Args...>& format,
           const Args&... args) {
  LogLine(LogLevel::kInfo, op_id, absl::StrFormat(format, args...));
}

}  // namespace common

#endif  // COMMON_LOG_H_
