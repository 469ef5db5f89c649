// An in-memory control-plane database with every migration, plus a helper to
// add bare accounts, for template and operation tests.
#ifndef CONTROLPLANE_TESTING_TEMPLATE_TEST_DATABASE_H_
#define CONTROLPLANE_TESTING_TEMPLATE_TEST_DATABASE_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/status_macros.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

inline absl::StatusOr<std::unique_ptr<SqliteDatabase>> OpenTemplateTestDatabase() {
  return SqliteDatabase::Open(":memory:", Migrations());
}

// An ordinary account named after its id.
inline absl::Status AddTestAccount(SqliteDatabase& db, const std::string& id) {
  return db.Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("INSERT INTO accounts (id, name, is_operator, create_time) "
                                  "VALUES (?1, ?1, 0, 0)"));
    return s.Bind(1, id).Run();
  });
}

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_TEMPLATE_TEST_DATABASE_H_
