// A control-plane database file as a first start leaves it: every migration,
// the platform operator and that operator's API key, for tests of
// authentication and auditing against real rows.
#ifndef CONTROLPLANE_TESTING_BOOTSTRAPPED_DATABASE_H_
#define CONTROLPLANE_TESTING_BOOTSTRAPPED_DATABASE_H_

#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/bootstrap.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

struct BootstrappedDatabase {
  std::unique_ptr<SqliteDatabase> db;
  std::string operator_header;  // "Bearer <the operator's API key>"
};

// `<TEST_TMPDIR or /tmp>/<name>_<pid>.db`, its key file beside it.
inline absl::StatusOr<BootstrappedDatabase> OpenBootstrappedDatabase(const std::string& name) {
  const char* tmp = getenv("TEST_TMPDIR");
  const std::string base = absl::StrCat(tmp ? tmp : "/tmp", "/", name, "_", getpid());
  BootstrappedDatabase out;
  ASSIGN_OR_RETURN(out.db, SqliteDatabase::Open(base + ".db", Migrations()));
  RETURN_IF_ERROR(Bootstrap(out.db.get(), base + ".key").status());
  std::ifstream key_file(base + ".key");
  std::string key;
  std::getline(key_file, key);
  if (key.empty()) return absl::InternalError(absl::StrCat("no key in ", base, ".key"));
  out.operator_header = "Bearer " + key;
  return out;
}

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_BOOTSTRAPPED_DATABASE_H_
