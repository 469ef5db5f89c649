// A thin RAII layer over SQLite in WAL mode: one writer connection and a pool
// of read-only connections, statements with bound parameters only (cached per
// SQL text and connection), numbered migrations applied in a transaction at
// open. SQLITE_BUSY surfaces as ABORTED (retry the transaction).
#ifndef CONTROLPLANE_SQLITE_DATABASE_H_
#define CONTROLPLANE_SQLITE_DATABASE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

struct sqlite3;
struct sqlite3_stmt;

namespace controlplane {

// One prepared statement, reset for reuse when it goes out of scope. Obtained
// from SqliteConnection::Prepare; valid only inside the unit of work that
// prepared it. Parameters are 1-based, as in SQLite.
class SqliteStatement {
 public:
  SqliteStatement(SqliteStatement&& other) noexcept;
  SqliteStatement& operator=(SqliteStatement&&) = delete;
  SqliteStatement(const SqliteStatement&) = delete;
  ~SqliteStatement();

  SqliteStatement& Bind(int index, int64_t value);
  SqliteStatement& Bind(int index, absl::string_view text);
  SqliteStatement& Bind(int index, const char* text) {
    return Bind(index, absl::string_view(text));
  }
  SqliteStatement& BindBlob(int index, absl::string_view bytes);
  SqliteStatement& BindNull(int index);
  SqliteStatement& Bind(int index, bool value) {
    return Bind(index, static_cast<int64_t>(value));
  }
  SqliteStatement& Bind(int index, int value) {
    return Bind(index, static_cast<int64_t>(value));
  }

  // Advances to the next row: true if there is one, false when done. ABORTED
  // when the database is busy, ALREADY_EXISTS on a UNIQUE/PRIMARY KEY
  // violation, INTERNAL otherwise.
  absl::StatusOr<bool> Step();
  // Runs a statement that returns no rows.
  absl::Status Run();
  // Number of rows changed by the last Run().
  int64_t Changes() const;

  int64_t ColumnInt(int column) const;
  std::string ColumnText(int column) const;
  std::string ColumnBlob(int column) const;
  bool ColumnIsNull(int column) const;

 private:
  friend class SqliteConnection;
  // `in_use` is the cache's flag for this statement, or null if uncached.
  SqliteStatement(sqlite3* db, sqlite3_stmt* stmt, bool* in_use)
      : db_(db), stmt_(stmt), in_use_(in_use) {}

  sqlite3* db_;
  sqlite3_stmt* stmt_;
  bool* in_use_;  // Cached statements are reset on destruction, others finalized.
  absl::Status bind_status_;
};

// The connection handed to a unit of work. Not thread-safe on its own; the
// SqliteDatabase hands each connection to one unit of work at a time.
class SqliteConnection {
 public:
  // Prepares (or reuses) a statement. `sql` is constant text: values go
  // through Bind, never into the text. INTERNAL on a syntax error.
  absl::StatusOr<SqliteStatement> Prepare(absl::string_view sql);
  int64_t LastInsertRowId() const;

 private:
  friend class SqliteDatabase;
  explicit SqliteConnection(sqlite3* db) : db_(db) {}
  void FinalizeAll();
  sqlite3* db_;
  struct Cached {
    sqlite3_stmt* stmt;
    bool in_use;
  };
  // unordered_map: SqliteStatement keeps a pointer to its entry's in_use.
  std::unordered_map<std::string, Cached> cache_;
};

// Thread-safe. Transactions run one at a time on the writer connection;
// reads run in parallel on a pool of read-only connections (WAL lets readers
// proceed beside the writer, each on its own snapshot), so reads are not
// serialized on one core. An in-memory database has no pool: every unit of
// work runs on the writer connection.
class SqliteDatabase {
 public:
  struct Options {
    // Read-only connections of a file database; 0 runs reads on the writer.
    int read_connections = 4;
  };

  // Opens (creating if missing) the database at `path` (":memory:" for tests),
  // sets WAL mode, foreign keys and a busy timeout, then applies every
  // migration whose number is above the stored user_version, each in its own
  // transaction. INTERNAL if the file is not a database or a migration fails
  // (nothing of that migration is applied); FAILED_PRECONDITION if the file
  // was written by a newer schema than `migrations` knows.
  static absl::StatusOr<std::unique_ptr<SqliteDatabase>> Open(
      const std::string& path, const std::vector<std::string>& migrations);
  static absl::StatusOr<std::unique_ptr<SqliteDatabase>> Open(
      const std::string& path, const std::vector<std::string>& migrations,
      const Options& options);
  ~SqliteDatabase();
  SqliteDatabase(const SqliteDatabase&) = delete;
  SqliteDatabase& operator=(const SqliteDatabase&) = delete;

  // Runs `work` inside BEGIN IMMEDIATE ... COMMIT; an error from `work` or the
  // commit rolls everything back and is returned. Called from inside another
  // Transaction of this database on the same thread, `work` joins it as a
  // savepoint: its error rolls back only its own writes (and is returned),
  // and what it wrote commits with the outer transaction. That is how two
  // stores over one database (a template change and its request_id's
  // response) commit atomically.
  absl::Status Transaction(const std::function<absl::Status(SqliteConnection&)>& work);
  // Runs `work` in a read transaction (BEGIN DEFERRED) on a read-only
  // connection: every statement sees one snapshot, which includes every
  // transaction committed before Read was called. Writes fail there; they
  // belong in Transaction. Must not be called from inside another unit of
  // work.
  absl::Status Read(const std::function<absl::Status(SqliteConnection&)>& work);

  // Counts committed transactions that inserted, updated or deleted rows of
  // the watched tables (for caches of what those tables hold). Every call
  // adds `tables` to the watched set. INTERNAL if a table does not exist.
  absl::Status WatchTables(const std::vector<std::string>& tables);
  // Read it before reading the watched tables; whatever was read stays valid
  // while the value is unchanged. Bumped after the commit, so a reader that
  // saw the old data also saw the old value. Counts only this object's
  // writes: the database must have no other writer.
  uint64_t watched_generation() const {
    return watched_generation_.load(std::memory_order_acquire);
  }

  int schema_version() const { return schema_version_; }

 private:
  explicit SqliteDatabase(sqlite3* db) : db_(db), connection_(db) {}
  absl::Status ExecConstant(const char* sql);
  static void WatchedTableChanged(void* context);

  absl::Mutex mu_;
  sqlite3* db_;
  SqliteConnection connection_ ABSL_GUARDED_BY(mu_);
  // Set by the watch triggers inside the current transaction.
  bool watched_changed_ ABSL_GUARDED_BY(mu_) = false;
  std::atomic<uint64_t> watched_generation_{0};

  // The read-only pool; empty for an in-memory database.
  struct Reader {
    sqlite3* db;
    std::unique_ptr<SqliteConnection> connection;
  };
  std::vector<Reader> readers_;
  absl::Mutex pool_mu_;
  std::vector<SqliteConnection*> idle_readers_ ABSL_GUARDED_BY(pool_mu_);

  int schema_version_ = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_DATABASE_H_
