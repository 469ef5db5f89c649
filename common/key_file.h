// Reading files that hold secrets (the internal token, TLS private keys) and
// public PEM files, with errors that name the file and say what to do.
#ifndef COMMON_KEY_FILE_H_
#define COMMON_KEY_FILE_H_

#include <cstddef>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace common {

// The regular file `path`, which only its owner may access (checked on the
// open file). NOT_FOUND or PERMISSION_DENIED if it cannot be opened;
// FAILED_PRECONDITION if it is not a regular file, group or others may
// access it, or it is larger than `max_bytes`. Messages start with `what`.
absl::StatusOr<std::string> ReadSecretFile(const std::string& path, absl::string_view what,
                                           size_t max_bytes);

// As ReadSecretFile, for files anyone may read (certificates).
absl::StatusOr<std::string> ReadSmallFile(const std::string& path, absl::string_view what,
                                          size_t max_bytes);

}  // namespace common

#endif  // COMMON_KEY_FILE_H_
