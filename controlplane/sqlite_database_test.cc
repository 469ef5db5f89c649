#include "controlplane/sqlite_database.h"

#include <string>
#include <vector>

#include "common/status_macros.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

const std::vector<std::string> kMigrations = {
    "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
    "ALTER TABLE t ADD COLUMN note TEXT NOT NULL DEFAULT ''",
};

std::string TempPath(const std::string& name) {
  const char* dir = getenv("TEST_TMPDIR");
  return std::string(dir ? dir : "/tmp") + "/" + name;
}

TEST(SqliteDatabaseTest, AppliesMigrationsOnceAndStoresLiterally) {
  std::string path = TempPath("migrate.db");
  {
    auto db = SqliteDatabase::Open(path, {kMigrations[0]});
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_EQ((*db)->schema_version(), 1);
  }
  auto db = SqliteDatabase::Open(path, kMigrations);
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ((*db)->schema_version(), 2);
  const std::string hostile = "x'); DROP TABLE t; --";
  ASSERT_TRUE((*db)->Transaction([&](SqliteConnection& conn) -> absl::Status {
                  ASSIGN_OR_RETURN(auto stmt, conn.Prepare("INSERT INTO t (name, note) VALUES (?1, ?2)"));
                  return stmt.Bind(1, hostile).Bind(2, "n").Run();
                }).ok());
  std::string name;
  ASSERT_TRUE((*db)->Read([&](SqliteConnection& conn) -> absl::Status {
                  ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT name FROM t"));
                  ASSIGN_OR_RETURN(bool row, stmt.Step());
                  EXPECT_TRUE(row);
                  name = stmt.ColumnText(0);
                  return absl::OkStatus();
                }).ok());
  EXPECT_EQ(name, hostile);
}

TEST(SqliteDatabaseTest, FailedTransactionRollsBackAndUniqueIsAlreadyExists) {
  auto db = SqliteDatabase::Open(TempPath("rollback.db"), kMigrations);
  ASSERT_TRUE(db.ok()) << db.status();
  absl::Status status = (*db)->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto a, conn.Prepare("INSERT INTO t (name) VALUES (?1)"));
    RETURN_IF_ERROR(a.Bind(1, "one").Run());
    ASSIGN_OR_RETURN(auto b, conn.Prepare("INSERT INTO t (name) VALUES (?1)"));
    return b.Bind(1, "one").Run();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists) << status;
  int64_t count = -1;
  ASSERT_TRUE((*db)->Read([&](SqliteConnection& conn) -> absl::Status {
                  ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT COUNT(*) FROM t"));
                  ASSIGN_OR_RETURN(bool row, stmt.Step());
                  EXPECT_TRUE(row);
                  count = stmt.ColumnInt(0);
                  return absl::OkStatus();
                }).ok());
  EXPECT_EQ(count, 0);
}

TEST(SqliteDatabaseTest, BrokenMigrationLeavesNothingAndNewerSchemaIsRefused) {
  std::string path = TempPath("broken.db");
  auto bad = SqliteDatabase::Open(path, {kMigrations[0], "ALTER TABLE nope ADD x"});
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInternal);
  auto db = SqliteDatabase::Open(path, {kMigrations[0]});
  ASSERT_TRUE(db.ok()) << db.status();
  EXPECT_EQ((*db)->schema_version(), 1);
  db->reset();
  ASSERT_TRUE(SqliteDatabase::Open(path, kMigrations).ok());
  EXPECT_EQ(SqliteDatabase::Open(path, {kMigrations[0]}).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(SqliteDatabaseTest, EmptyViewsBindAsEmptyTextNotNull) {
  auto db = SqliteDatabase::Open(":memory:", kMigrations);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE((*db)->Transaction([&](SqliteConnection& conn) -> absl::Status {
                  ASSIGN_OR_RETURN(auto stmt, conn.Prepare("INSERT INTO t (name) VALUES (?1)"));
                  return stmt.Bind(1, absl::string_view()).Run();
                }).ok());
  ASSERT_TRUE((*db)->Read([&](SqliteConnection& conn) -> absl::Status {
                  ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT name IS NULL, name FROM t"));
                  ASSIGN_OR_RETURN(bool row, stmt.Step());
                  EXPECT_TRUE(row);
                  EXPECT_EQ(stmt.ColumnInt(0), 0);
                  EXPECT_EQ(stmt.ColumnText(1), "");
                  return absl::OkStatus();
                }).ok());
}

TEST(SqliteDatabaseTest, NotADatabaseIsInternal) {
  std::string path = TempPath("garbage.db");
  FILE* f = fopen(path.c_str(), "w");
  fputs("this is not an sqlite file, just text long enough to be a header....", f);
  fclose(f);
  EXPECT_EQ(SqliteDatabase::Open(path, kMigrations).status().code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace controlplane
