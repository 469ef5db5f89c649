// One process per resource: an exclusive flock on a lock file held for the
// life of the process (released by the kernel however the process ends, so
// a kill -9 leaves nothing to clean up). The file holds the owner's pid, for
// the message a second process gets.
#ifndef COMMON_PROCESS_LOCK_H_
#define COMMON_PROCESS_LOCK_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace common {

// Locks `path` (created 0600 if missing) for this process; the descriptor
// stays open until exit. FAILED_PRECONDITION ("<what> is in use by another
// <program> (pid N)") when another process holds it; UNAVAILABLE when the
// file cannot be opened or locked.
absl::Status LockForProcess(const std::string& path, absl::string_view what,
                            absl::string_view program);

}  // namespace common

#endif  // COMMON_PROCESS_LOCK_H_
