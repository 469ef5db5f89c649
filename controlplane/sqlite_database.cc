#include "controlplane/sqlite_database.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace controlplane {
namespace {

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what) {
  std::string message = absl::StrCat(what, ": ", sqlite3_errmsg(db));
  switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
      return absl::AbortedError(absl::StrCat(message, " (database busy; retry)"));
    case SQLITE_CONSTRAINT:
      if (rc == SQLITE_CONSTRAINT_UNIQUE || rc == SQLITE_CONSTRAINT_PRIMARYKEY) {
        return absl::AlreadyExistsError(message);
      }
      return absl::FailedPreconditionError(message);
    case SQLITE_FULL:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace

SqliteStatement::SqliteStatement(SqliteStatement&& other) noexcept
    : db_(other.db_),
      stmt_(other.stmt_),
      in_use_(other.in_use_),
      bind_status_(std::move(other.bind_status_)) {
  other.stmt_ = nullptr;
}

SqliteStatement::~SqliteStatement() {
  if (stmt_ == nullptr) return;
  if (in_use_ != nullptr) {
    sqlite3_reset(stmt_);
    sqlite3_clear_bindings(stmt_);
    *in_use_ = false;
  } else {
    sqlite3_finalize(stmt_);
  }
}

SqliteStatement& SqliteStatement::Bind(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = SqliteError(db_, rc, "bind");
  return *this;
}

SqliteStatement& SqliteStatement::Bind(int index, absl::string_view text) {
  // A view with no storage (a default or OK status message) has a null data
  // pointer, which SQLite would store as NULL rather than "".
  int rc = sqlite3_bind_text64(stmt_, index, text.data() ? text.data() : "", text.size(),
                               SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = SqliteError(db_, rc, "bind");
  return *this;
}

SqliteStatement& SqliteStatement::BindBlob(int index, absl::string_view bytes) {
  int rc = sqlite3_bind_blob64(stmt_, index, bytes.data() ? bytes.data() : "", bytes.size(),
                               SQLITE_TRANSIENT);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = SqliteError(db_, rc, "bind");
  return *this;
}

SqliteStatement& SqliteStatement::BindNull(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_status_.ok()) bind_status_ = SqliteError(db_, rc, "bind");
  return *this;
}

absl::StatusOr<bool> SqliteStatement::Step() {
  RETURN_IF_ERROR(bind_status_);
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, sqlite3_extended_errcode(db_), sqlite3_sql(stmt_));
}

absl::Status SqliteStatement::Run() {
  ASSIGN_OR_RETURN(bool row, Step());
  (void)row;
  return absl::OkStatus();
}

int64_t SqliteStatement::Changes() const { return sqlite3_changes64(db_); }

int64_t SqliteStatement::ColumnInt(int column) const {
  return sqlite3_column_int64(stmt_, column);
}

std::string SqliteStatement::ColumnText(int column) const {
  const unsigned char* text = sqlite3_column_text(stmt_, column);
  if (text == nullptr) return std::string();
  return std::string(reinterpret_cast<const char*>(text),
                     sqlite3_column_bytes(stmt_, column));
}

std::string SqliteStatement::ColumnBlob(int column) const {
  const void* blob = sqlite3_column_blob(stmt_, column);
  if (blob == nullptr) return std::string();
  return std::string(static_cast<const char*>(blob), sqlite3_column_bytes(stmt_, column));
}

bool SqliteStatement::ColumnIsNull(int column) const {
  return sqlite3_column_type(stmt_, column) == SQLITE_NULL;
}

absl::StatusOr<SqliteStatement> SqliteConnection::Prepare(absl::string_view sql) {
  std::string key(sql);
  auto it = cache_.find(key);
  if (it != cache_.end() && !it->second.in_use) {
    it->second.in_use = true;
    return SqliteStatement(db_, it->second.stmt, &it->second.in_use);
  }
  // The same SQL twice at once (nested use) gets a second, uncached statement.
  bool cache = it == cache_.end();
  sqlite3_stmt* stmt = nullptr;
  int rc = sqlite3_prepare_v3(db_, sql.data(), static_cast<int>(sql.size()),
                              cache ? SQLITE_PREPARE_PERSISTENT : 0, &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, absl::StrCat("prepare ", sql));
  if (!cache) return SqliteStatement(db_, stmt, nullptr);
  Cached& entry = cache_.emplace(std::move(key), Cached{stmt, true}).first->second;
  return SqliteStatement(db_, stmt, &entry.in_use);
}

int64_t SqliteConnection::LastInsertRowId() const { return sqlite3_last_insert_rowid(db_); }

void SqliteConnection::FinalizeAll() {
  for (auto& [sql, entry] : cache_) sqlite3_finalize(entry.stmt);
  cache_.clear();
}

absl::StatusOr<std::unique_ptr<SqliteDatabase>> SqliteDatabase::Open(
    const std::string& path, const std::vector<std::string>& migrations) {
  return Open(path, migrations, Options());
}

absl::StatusOr<std::unique_ptr<SqliteDatabase>> SqliteDatabase::Open(
    const std::string& path, const std::vector<std::string>& migrations,
    const Options& options) {
  // The database holds key hashes and encrypted credentials: owner-only
  // whatever the umask. SQLite gives the -wal and -shm files the database
  // file's mode; an existing file keeps the mode it has.
  if (!path.empty() && path != ":memory:" && !absl::StartsWith(path, "file:")) {
    int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd >= 0) close(fd);  // on failure sqlite3_open_v2 says why
  }
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                           nullptr);
  if (rc != SQLITE_OK) {
    absl::Status status = absl::InternalError(
        absl::StrCat("cannot open database ", path, ": ",
                     db ? sqlite3_errmsg(db) : sqlite3_errstr(rc)));
    sqlite3_close(db);
    return status;
  }
  std::unique_ptr<SqliteDatabase> database(new SqliteDatabase(db));
  sqlite3_busy_timeout(db, 5000);
  RETURN_IF_ERROR(database->ExecConstant("PRAGMA journal_mode=WAL"));
  RETURN_IF_ERROR(database->ExecConstant("PRAGMA synchronous=NORMAL"));
  RETURN_IF_ERROR(database->ExecConstant("PRAGMA foreign_keys=ON"));
  // The default 2 MB page cache made reads of a 100k-template database go to
  // the OS for every page (tools/bench/controlplane_bench: 46% of list time).
  RETURN_IF_ERROR(database->ExecConstant("PRAGMA cache_size=-131072"));

  int64_t version = 0;
  RETURN_IF_ERROR(database->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement stmt, conn.Prepare("PRAGMA user_version"));
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) version = stmt.ColumnInt(0);
    return absl::OkStatus();
  }));
  if (version > static_cast<int64_t>(migrations.size())) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database ", path, " has schema version ", version, " but this binary knows only ",
        migrations.size(), "; run a newer controlplane"));
  }
  for (size_t i = static_cast<size_t>(version); i < migrations.size(); ++i) {
    absl::Status status = database->Transaction([&](SqliteConnection&) -> absl::Status {
      char* error = nullptr;
      if (sqlite3_exec(db, migrations[i].c_str(), nullptr, nullptr, &error) != SQLITE_OK) {
        absl::Status s = absl::InternalError(
            absl::StrCat("migration ", i + 1, " failed: ", error ? error : "?"));
        sqlite3_free(error);
        return s;
      }
      // PRAGMA takes no bound parameters; the value is our own integer.
      std::string pragma = absl::StrCat("PRAGMA user_version=", i + 1);
      return database->ExecConstant(pragma.c_str());
    });
    RETURN_IF_ERROR(status);
  }
  database->schema_version_ = static_cast<int>(migrations.size());

  // The read pool, opened after the migrations so that every reader sees the
  // final schema. Each ":memory:" connection would be a database of its own.
  const bool in_memory = path.empty() || path == ":memory:" ||
                         absl::StartsWith(path, "file::memory:");
  for (int i = 0; !in_memory && i < options.read_connections; ++i) {
    sqlite3* reader = nullptr;
    rc = sqlite3_open_v2(path.c_str(), &reader, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX,
                         nullptr);
    if (rc != SQLITE_OK) {
      absl::Status status = absl::InternalError(
          absl::StrCat("cannot open a read connection to ", path, ": ",
                       reader ? sqlite3_errmsg(reader) : sqlite3_errstr(rc)));
      sqlite3_close(reader);
      return status;
    }
    database->readers_.push_back(
        {reader, std::unique_ptr<SqliteConnection>(new SqliteConnection(reader))});
    sqlite3_busy_timeout(reader, 5000);
    // Readers share the OS page cache; a smaller private cache each.
    for (const char* pragma : {"PRAGMA cache_size=-32768", "PRAGMA mmap_size=1073741824"}) {
      char* error = nullptr;
      rc = sqlite3_exec(reader, pragma, nullptr, nullptr, &error);
      if (rc != SQLITE_OK) {
        absl::Status status =
            SqliteError(reader, rc, absl::StrCat(pragma, ": ", error ? error : ""));
        sqlite3_free(error);
        return status;
      }
    }
  }
  {
    absl::MutexLock lock(&database->pool_mu_);
    for (Reader& reader : database->readers_) {
      database->idle_readers_.push_back(reader.connection.get());
    }
  }
  return database;
}

SqliteDatabase::~SqliteDatabase() {
  {
    absl::MutexLock lock(&mu_);
    connection_.FinalizeAll();
  }
  for (Reader& reader : readers_) {
    reader.connection->FinalizeAll();
    sqlite3_close(reader.db);
  }
  sqlite3_close(db_);
}

void SqliteDatabase::WatchedTableChanged(void* context) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  // Runs inside a statement of Transaction, which holds mu_.
  static_cast<SqliteDatabase*>(context)->watched_changed_ = true;
}

absl::Status SqliteDatabase::WatchTables(const std::vector<std::string>& tables) {
  absl::MutexLock lock(&mu_);
  int rc = sqlite3_create_function_v2(
      db_, "cp_watched_table_changed", 0, SQLITE_UTF8, this,
      [](sqlite3_context* context, int, sqlite3_value**) {
        WatchedTableChanged(sqlite3_user_data(context));
        sqlite3_result_null(context);
      },
      nullptr, nullptr, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db_, rc, "create function");
  for (const std::string& table : tables) {
    // Identifiers cannot be bound; these are the caller's constants.
    for (char c : table) {
      if (!absl::ascii_isalnum(c) && c != '_') {
        return absl::InvalidArgumentError(absl::StrCat("bad table name ", table));
      }
    }
    for (const char* event : {"INSERT", "UPDATE", "DELETE"}) {
      // TEMP triggers belong to this connection only: no schema change, and
      // the readers never see the function they call.
      std::string sql = absl::StrCat("CREATE TEMP TRIGGER IF NOT EXISTS cp_watch_", table, "_",
                                     event, " AFTER ", event, " ON main.", table,
                                     " BEGIN SELECT cp_watched_table_changed(); END");
      RETURN_IF_ERROR(ExecConstant(sql.c_str()));
    }
  }
  return absl::OkStatus();
}

absl::Status SqliteDatabase::ExecConstant(const char* sql) {
  char* error = nullptr;
  int rc = sqlite3_exec(db_, sql, nullptr, nullptr, &error);
  if (rc != SQLITE_OK) {
    absl::Status status = SqliteError(db_, rc, absl::StrCat(sql, ": ", error ? error : ""));
    sqlite3_free(error);
    return status;
  }
  return absl::OkStatus();
}

namespace {
// The databases whose Transaction this thread is inside, innermost last.
thread_local std::vector<const SqliteDatabase*> open_transactions;
}  // namespace

absl::Status SqliteDatabase::Transaction(
    const std::function<absl::Status(SqliteConnection&)>& work) {
  if (std::find(open_transactions.begin(), open_transactions.end(), this) !=
      open_transactions.end()) {
    // Nested on this thread, which holds mu_: a savepoint of the open
    // transaction, so both stores' writes commit together (or not at all).
    mu_.AssertHeld();
    RETURN_IF_ERROR(ExecConstant("SAVEPOINT nested"));
    absl::Status status = work(connection_);
    if (!status.ok()) ExecConstant("ROLLBACK TO nested").IgnoreError();
    absl::Status released = ExecConstant("RELEASE nested");
    return status.ok() ? released : status;
  }
  absl::MutexLock lock(&mu_);
  RETURN_IF_ERROR(ExecConstant("BEGIN IMMEDIATE"));
  open_transactions.push_back(this);
  watched_changed_ = false;
  absl::Status status = work(connection_);
  open_transactions.pop_back();
  if (status.ok()) status = ExecConstant("COMMIT");
  if (!status.ok()) ExecConstant("ROLLBACK").IgnoreError();
  // After the commit: a reader that loaded the old rows read the old
  // generation first, so it cannot keep them past this bump.
  if (status.ok() && watched_changed_) {
    watched_generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  watched_changed_ = false;
  return status;
}

absl::Status SqliteDatabase::Read(
    const std::function<absl::Status(SqliteConnection&)>& work) {
  if (readers_.empty()) {
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(ExecConstant("BEGIN"));
    absl::Status status = work(connection_);
    absl::Status ended = ExecConstant(status.ok() ? "COMMIT" : "ROLLBACK");
    return status.ok() ? ended : status;
  }
  SqliteConnection* conn;
  {
    absl::MutexLock lock(&pool_mu_);
    pool_mu_.Await(absl::Condition(
        +[](std::vector<SqliteConnection*>* idle) { return !idle->empty(); }, &idle_readers_));
    conn = idle_readers_.back();
    idle_readers_.pop_back();
  }
  // One read transaction for the whole unit: one snapshot, and one shared
  // lock instead of a lock/unlock (and fstat) per statement. BEGIN and
  // COMMIT are cached statements: sqlite3_exec would parse them every call.
  auto exec = [conn](const char* sql) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement stmt, conn->Prepare(sql));
    return stmt.Run();
  };
  absl::Status status = exec("BEGIN");
  if (status.ok()) {
    status = work(*conn);
    absl::Status ended = exec(status.ok() ? "COMMIT" : "ROLLBACK");
    if (status.ok()) status = ended;
  }
  absl::MutexLock lock(&pool_mu_);
  idle_readers_.push_back(conn);
  return status;
}

}  // namespace controlplane
