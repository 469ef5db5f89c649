#include "controlplane/bootstrap.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/api_key_authenticator.h"
#include "controlplane/ids.h"
#include "imagetemplates/v1/common.pb.h"

namespace controlplane {
namespace {

absl::Status WriteNewFile(const std::string& path, const std::string& contents) {
  // O_EXCL: an existing key file, perhaps the only copy of a key, is kept.
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (errno == EEXIST) {
      return absl::FailedPreconditionError(absl::StrCat(
          "admin key file ", path, " already exists but the database has no accounts; "
          "move the file away or pass another --admin-key-file"));
    }
    return absl::InternalError(
        absl::StrCat("cannot create admin key file ", path, ": ", std::strerror(errno)));
  }
  bool ok = write(fd, contents.data(), contents.size()) ==
                static_cast<ssize_t>(contents.size()) &&
            fsync(fd) == 0;
  int saved = errno;
  close(fd);
  if (!ok) {
    unlink(path.c_str());
    return absl::InternalError(
        absl::StrCat("cannot write admin key file ", path, ": ", std::strerror(saved)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<BootstrapResult> Bootstrap(SqliteDatabase* db, const std::string& admin_key_file) {
  BootstrapResult result;
  RETURN_IF_ERROR(db->Transaction([&](SqliteConnection& conn) -> absl::Status {
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT 1 FROM accounts LIMIT 1"));
      ASSIGN_OR_RETURN(bool any, stmt.Step());
      if (any) return absl::OkStatus();
    }
    if (admin_key_file.empty()) {
      return absl::FailedPreconditionError(
          "the database is empty: pass --admin-key-file so the operator's API key can be "
          "written");
    }
    int64_t now = NowMicros();
    result.account_id = NewUuid();
    result.user_id = NewUuid();
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "INSERT INTO accounts (id, name, is_operator, create_time) VALUES (?1, 'operator', 1, ?2)"));
      RETURN_IF_ERROR(stmt.Bind(1, result.account_id).Bind(2, now).Run());
    }
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "INSERT INTO users (id, account_id, username, all_servers, create_time) "
          "VALUES (?1, ?2, 'admin', 1, ?3)"));
      RETURN_IF_ERROR(stmt.Bind(1, result.user_id).Bind(2, result.account_id).Bind(3, now).Run());
    }
    for (int p = imagetemplates::v1::Permission_MIN; p <= imagetemplates::v1::Permission_MAX; ++p) {
      if (p == imagetemplates::v1::PERMISSION_UNSPECIFIED ||
          !imagetemplates::v1::Permission_IsValid(p)) {
        continue;
      }
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "INSERT INTO user_permissions (user_id, permission) VALUES (?1, ?2)"));
      RETURN_IF_ERROR(stmt.Bind(1, result.user_id).Bind(2, p).Run());
    }
    GeneratedApiKey key = GenerateApiKey();
    RETURN_IF_ERROR(InsertApiKey(conn, key, result.user_id, "bootstrap operator key", now));
    result.api_key_id = key.id;
    // Last: if the file cannot be written the transaction rolls back and the
    // next start tries again.
    RETURN_IF_ERROR(WriteNewFile(admin_key_file, key.secret + "\n"));
    result.created = true;
    return absl::OkStatus();
  }));
  return result;
}

}  // namespace controlplane
