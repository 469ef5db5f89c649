#include "controlplane/sqlite_database.h"

#include <sys/stat.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
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

TEST(SqliteDatabaseTest, NewDatabaseFilesAreOwnerOnlyWhateverTheUmask) {
  const std::string path = TempPath("modes.db");
  const mode_t old_umask = umask(022);
  {
    auto db = SqliteDatabase::Open(path, kMigrations);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Transaction([&](SqliteConnection& conn) -> absl::Status {
                    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("INSERT INTO t (name) VALUES ('a')"));
                    return stmt.Run();
                  }).ok());
    for (const std::string& file : {path, path + "-wal", path + "-shm"}) {
      struct stat st;
      ASSERT_EQ(stat(file.c_str(), &st), 0) << file;
      EXPECT_EQ(st.st_mode & 0777, 0600u) << file;
    }
  }
  umask(old_umask);
  // An existing database keeps the mode its operator gave it.
  ASSERT_EQ(chmod(path.c_str(), 0640), 0);
  ASSERT_TRUE(SqliteDatabase::Open(path, kMigrations).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640u);
}

TEST(SqliteDatabaseTest, NotADatabaseIsInternal) {
  std::string path = TempPath("garbage.db");
  FILE* f = fopen(path.c_str(), "w");
  fputs("this is not an sqlite file, just text long enough to be a header....", f);
  fclose(f);
  EXPECT_EQ(SqliteDatabase::Open(path, kMigrations).status().code(),
            absl::StatusCode::kInternal);
}

absl::Status Insert(SqliteDatabase& db, const std::string& name) {
  return db.Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("INSERT INTO t (name) VALUES (?1)"));
    return stmt.Bind(1, name).Run();
  });
}

absl::StatusOr<int64_t> Count(SqliteDatabase& db) {
  int64_t count = -1;
  RETURN_IF_ERROR(db.Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT COUNT(*) FROM t"));
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) count = stmt.ColumnInt(0);
    return absl::OkStatus();
  }));
  return count;
}

TEST(SqliteDatabaseTest, ReadPoolSeesEveryCommitAndCannotWrite) {
  auto db = SqliteDatabase::Open(TempPath("pool.db"), kMigrations);
  ASSERT_TRUE(db.ok()) << db.status();
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(Insert(**db, "n" + std::to_string(i)).ok());
    // Each read may land on another pooled connection; all see the commit.
    EXPECT_EQ(*Count(**db), i + 1);
  }
  absl::Status write = (*db)->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("INSERT INTO t (name) VALUES ('x')"));
    return stmt.Run();
  });
  EXPECT_FALSE(write.ok());
  EXPECT_EQ(*Count(**db), 20);
}

TEST(SqliteDatabaseTest, ReadsRunInParallelBesideATransaction) {
  auto db = SqliteDatabase::Open(TempPath("parallel.db"), kMigrations);
  ASSERT_TRUE(db.ok()) << db.status();
  ASSERT_TRUE(Insert(**db, "a").ok());
  // The first read waits inside its unit of work until a second read and a
  // write have both finished: with one serialized connection it would hang.
  absl::Notification inside, others_done;
  std::thread first([&] {
    EXPECT_TRUE((*db)->Read([&](SqliteConnection& conn) -> absl::Status {
                      ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT COUNT(*) FROM t"));
                      ASSIGN_OR_RETURN(bool row, stmt.Step());
                      EXPECT_TRUE(row);
                      EXPECT_EQ(stmt.ColumnInt(0), 1);
                      inside.Notify();
                      EXPECT_TRUE(others_done.WaitForNotificationWithTimeout(absl::Seconds(10)));
                      return absl::OkStatus();
                    }).ok());
  });
  inside.WaitForNotification();
  EXPECT_EQ(*Count(**db), 1);
  EXPECT_TRUE(Insert(**db, "b").ok());
  EXPECT_EQ(*Count(**db), 2);
  others_done.Notify();
  first.join();
}

TEST(SqliteDatabaseTest, WatchedGenerationCountsCommittedChangesOfWatchedTables) {
  for (const std::string& path : {std::string(":memory:"), TempPath("watch.db")}) {
    auto db = SqliteDatabase::Open(path, {kMigrations[0], "CREATE TABLE other (x INTEGER)"});
    ASSERT_TRUE(db.ok()) << db.status();
    EXPECT_EQ((*db)->WatchTables({"nope"}).code(), absl::StatusCode::kInternal);
    ASSERT_TRUE((*db)->WatchTables({"t"}).ok());
    const uint64_t start = (*db)->watched_generation();
    ASSERT_TRUE(Insert(**db, "a").ok());
    EXPECT_EQ((*db)->watched_generation(), start + 1) << path;
    // Another table: unchanged.
    ASSERT_TRUE((*db)->Transaction([](SqliteConnection& conn) -> absl::Status {
                      ASSIGN_OR_RETURN(auto stmt, conn.Prepare("INSERT INTO other VALUES (1)"));
                      return stmt.Run();
                    }).ok());
    EXPECT_EQ((*db)->watched_generation(), start + 1);
    // A rolled-back change: unchanged (nothing committed).
    EXPECT_FALSE((*db)->Transaction([](SqliteConnection& conn) -> absl::Status {
                       ASSIGN_OR_RETURN(auto stmt, conn.Prepare("UPDATE t SET name = 'z'"));
                       RETURN_IF_ERROR(stmt.Run());
                       return absl::AbortedError("undo");
                     }).ok());
    EXPECT_EQ((*db)->watched_generation(), start + 1);
    // Updates and deletes count too.
    ASSERT_TRUE((*db)->Transaction([](SqliteConnection& conn) -> absl::Status {
                      ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM t WHERE name = 'a'"));
                      return stmt.Run();
                    }).ok());
    EXPECT_EQ((*db)->watched_generation(), start + 2);
  }
}

}  // namespace
}  // namespace controlplane
