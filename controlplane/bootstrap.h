// First start of a control plane: the platform operator account, its first
// user (every permission, every server) and that user's API key.
#ifndef CONTROLPLANE_BOOTSTRAP_H_
#define CONTROLPLANE_BOOTSTRAP_H_

#include <string>

#include "absl/status/statusor.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

struct BootstrapResult {
  bool created = false;  // false: the database already had accounts
  std::string account_id;
  std::string user_id;
  std::string api_key_id;
};

// On a database without accounts, creates account "operator" (is_operator),
// user "admin" holding every Permission with access to all servers, and an
// API key whose secret is written to `admin_key_file` (created with mode 0600;
// an existing file is never overwritten). The rows commit only if the file
// was written. A database that has accounts is left alone.
// FAILED_PRECONDITION if bootstrap is needed and `admin_key_file` is empty or
// already exists; INTERNAL on I/O errors.
absl::StatusOr<BootstrapResult> Bootstrap(SqliteDatabase* db, const std::string& admin_key_file);

}  // namespace controlplane

#endif  // CONTROLPLANE_BOOTSTRAP_H_
