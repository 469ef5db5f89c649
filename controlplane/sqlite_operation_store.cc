#include "controlplane/sqlite_operation_store.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/sql_where.h"
#include "google/protobuf/util/time_util.h"

namespace controlplane {
namespace {

using imagetemplates::v1::Operation;
using imagetemplates::v1::OperationKind;
using imagetemplates::v1::OperationState;

constexpr char kColumns[] =
    "id, kind, account_id, user_id, request_id, state, step, bytes_done, bytes_total, "
    "bytes_per_second, eta_ms, error_code, error_message, result_image_template_id, "
    "result_deployed_servers, target_type, target_id, create_time_us, update_time_us, "
    "end_time_us";

// Fills everything but the steps from a row selected with kColumns.
Operation FromRow(const SqliteStatement& s) {
  Operation op;
  op.set_id(s.ColumnText(0));
  op.set_kind(static_cast<OperationKind>(s.ColumnInt(1)));
  op.set_account_id(s.ColumnText(2));
  op.set_user_id(s.ColumnText(3));
  op.set_request_id(s.ColumnText(4));
  op.set_state(static_cast<OperationState>(s.ColumnInt(5)));
  op.set_step(s.ColumnText(6));
  auto* progress = op.mutable_progress();
  progress->set_bytes_done(s.ColumnInt(7));
  progress->set_bytes_total(s.ColumnInt(8));
  progress->set_bytes_per_second(s.ColumnInt(9));
  if (!s.ColumnIsNull(10)) {
    *progress->mutable_eta() = google::protobuf::util::TimeUtil::MillisecondsToDuration(s.ColumnInt(10));
  }
  if (op.state() == imagetemplates::v1::OPERATION_STATE_SUCCEEDED) {
    progress->set_percent(100);
  } else if (progress->bytes_total() > 0) {
    progress->set_percent(100.0 * progress->bytes_done() / progress->bytes_total());
  }
  if (s.ColumnInt(11) != 0) {
    op.mutable_error()->set_code(static_cast<int32_t>(s.ColumnInt(11)));
    op.mutable_error()->set_message(s.ColumnText(12));
  }
  if (!s.ColumnIsNull(13)) {
    op.set_image_template_id(s.ColumnText(13));
  } else if (!s.ColumnIsNull(14)) {
    op.mutable_deployed_servers()->ParseFromString(s.ColumnBlob(14));
  }
  if (s.ColumnInt(15) != 0 || !s.ColumnText(16).empty()) {
    op.mutable_target()->set_type(static_cast<imagetemplates::v1::ResourceType>(s.ColumnInt(15)));
    op.mutable_target()->set_id(s.ColumnText(16));
  }
  *op.mutable_create_time() = ToTimestamp(s.ColumnInt(17));
  *op.mutable_update_time() = ToTimestamp(s.ColumnInt(18));
  if (!s.ColumnIsNull(19)) *op.mutable_end_time() = ToTimestamp(s.ColumnInt(19));
  return op;
}

absl::Status ReadSteps(SqliteConnection& conn, Operation& op) {
  ASSIGN_OR_RETURN(SqliteStatement s,
                   conn.Prepare("SELECT name, server_id, state, attempt_count, start_time_us, "
                                "end_time_us, error_code, error_message FROM operation_steps "
                                "WHERE operation_id = ? ORDER BY seq"));
  s.Bind(1, op.id());
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    auto* step = op.add_finished_steps();
    step->set_name(s.ColumnText(0));
    step->set_server_id(s.ColumnText(1));
    step->set_state(static_cast<OperationState>(s.ColumnInt(2)));
    step->set_attempt_count(static_cast<int32_t>(s.ColumnInt(3)));
    if (!s.ColumnIsNull(4)) *step->mutable_start_time() = ToTimestamp(s.ColumnInt(4));
    if (!s.ColumnIsNull(5)) *step->mutable_end_time() = ToTimestamp(s.ColumnInt(5));
    if (s.ColumnInt(6) != 0) {
      step->mutable_error()->set_code(static_cast<int32_t>(s.ColumnInt(6)));
      step->mutable_error()->set_message(s.ColumnText(7));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteSteps(SqliteConnection& conn, const Operation& op) {
  {
    ASSIGN_OR_RETURN(SqliteStatement del,
                     conn.Prepare("DELETE FROM operation_steps WHERE operation_id = ?"));
    RETURN_IF_ERROR(del.Bind(1, op.id()).Run());
  }
  for (int i = 0; i < op.finished_steps_size(); ++i) {
    const auto& step = op.finished_steps(i);
    ASSIGN_OR_RETURN(
        SqliteStatement ins,
        conn.Prepare("INSERT INTO operation_steps (operation_id, seq, name, server_id, state, "
                     "attempt_count, start_time_us, end_time_us, error_code, error_message) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"));
    ins.Bind(1, op.id()).Bind(2, i).Bind(3, step.name()).Bind(4, step.server_id());
    ins.Bind(5, static_cast<int>(step.state())).Bind(6, std::max(1, step.attempt_count()));
    if (step.has_start_time()) {
      ins.Bind(7, FromTimestamp(step.start_time()));
    } else {
      ins.BindNull(7);
    }
    if (step.has_end_time()) {
      ins.Bind(8, FromTimestamp(step.end_time()));
    } else {
      ins.BindNull(8);
    }
    ins.Bind(9, step.error().code()).Bind(10, step.error().message());
    RETURN_IF_ERROR(ins.Run());
  }
  return absl::OkStatus();
}

// Binds the mutable columns shared by INSERT and UPDATE, from parameter 2 on
// (parameter 1 is the id).
void BindMutable(SqliteStatement& s, const Operation& op, const OperationInternals& in) {
  s.Bind(2, static_cast<int>(op.kind()))
      .Bind(3, op.account_id())
      .Bind(4, op.user_id())
      .Bind(5, op.request_id())
      .Bind(6, static_cast<int>(op.state()))
      .Bind(7, op.step())
      .Bind(8, op.progress().bytes_done())
      .Bind(9, op.progress().bytes_total())
      .Bind(10, op.progress().bytes_per_second());
  if (op.progress().has_eta()) {
    s.Bind(11, op.progress().eta().seconds() * 1000 + op.progress().eta().nanos() / 1000000);
  } else {
    s.BindNull(11);
  }
  s.Bind(12, op.error().code()).Bind(13, op.error().message());
  if (op.result_case() == Operation::kImageTemplateId) {
    s.Bind(14, op.image_template_id());
  } else {
    s.BindNull(14);
  }
  if (op.result_case() == Operation::kDeployedServers) {
    s.BindBlob(15, op.deployed_servers().SerializeAsString());
  } else {
    s.BindNull(15);
  }
  s.Bind(16, static_cast<int>(op.target().type())).Bind(17, op.target().id());
  s.BindBlob(18, in.params).Bind(19, in.cancel_requested).BindBlob(23, in.checkpoint);
  s.Bind(20, FromTimestamp(op.create_time())).Bind(21, FromTimestamp(op.update_time()));
  if (op.has_end_time()) {
    s.Bind(22, FromTimestamp(op.end_time()));
  } else {
    s.BindNull(22);
  }
}

}  // namespace

absl::Status InsertOperationRow(SqliteConnection& conn, const Operation& op,
                                const OperationInternals& internals) {
  ASSIGN_OR_RETURN(
      SqliteStatement s,
      conn.Prepare("INSERT INTO operations (id, kind, account_id, user_id, request_id, state, "
                   "step, bytes_done, bytes_total, bytes_per_second, eta_ms, error_code, "
                   "error_message, result_image_template_id, result_deployed_servers, "
                   "target_type, target_id, params, cancel_requested, create_time_us, "
                   "update_time_us, end_time_us, checkpoint) VALUES (?1, ?2, ?3, ?4, ?5, ?6, "
                   "?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, "
                   "?22, ?23)"));
  s.Bind(1, op.id());
  BindMutable(s, op, internals);
  RETURN_IF_ERROR(s.Run());
  return WriteSteps(conn, op);
}

absl::StatusOr<Operation> ReadOperationRow(SqliteConnection& conn, absl::string_view id) {
  Operation op;
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare(absl::StrCat("SELECT ", kColumns,
                                               " FROM operations WHERE id = ?")));
    s.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("operation ", id, " not found"));
    op = FromRow(s);
  }
  RETURN_IF_ERROR(ReadSteps(conn, op));
  return op;
}

absl::StatusOr<int64_t> CountUnfinishedOperations(SqliteConnection& conn,
                                                  absl::string_view target_id,
                                                  const std::vector<OperationKind>& kinds) {
  ASSIGN_OR_RETURN(
      SqliteStatement s,
      conn.Prepare("SELECT COUNT(*) FROM operations WHERE target_id = ? AND state IN (1, 2, 3) "
                   "AND kind IN (SELECT value FROM json_each(?))"));
  std::vector<int> kind_values(kinds.begin(), kinds.end());
  s.Bind(1, target_id).Bind(2, JsonIntArray(kind_values));
  ASSIGN_OR_RETURN(bool row, s.Step());
  return row ? s.ColumnInt(0) : 0;
}

SqliteOperationStore::SqliteOperationStore(SqliteDatabase* db,
                                           std::function<int64_t()> now_micros)
    : db_(db), now_micros_(now_micros ? std::move(now_micros) : NowMicros) {}

absl::Status SqliteOperationStore::InsertOperation(const Operation& operation,
                                                   const OperationInternals& internals) {
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) {
    return InsertOperationRow(conn, operation, internals);
  }));
  NotifyChange();
  return absl::OkStatus();
}

absl::StatusOr<Operation> SqliteOperationStore::GetOperation(absl::string_view id) {
  Operation op;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(op, ReadOperationRow(conn, id));
    return absl::OkStatus();
  }));
  return op;
}

absl::StatusOr<OperationInternals> SqliteOperationStore::GetInternals(absl::string_view id) {
  OperationInternals internals;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT params, cancel_requested, checkpoint FROM operations WHERE id = ?"));
    s.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("operation ", id, " not found"));
    internals.params = s.ColumnBlob(0);
    internals.cancel_requested = s.ColumnInt(1) != 0;
    internals.checkpoint = s.ColumnBlob(2);
    return absl::OkStatus();
  }));
  return internals;
}

absl::StatusOr<std::vector<Operation>> SqliteOperationStore::ListOperations(
    const OperationQuery& query) {
  SqlWhere where;
  if (!query.account_id.empty()) where.Add("account_id = ?", {query.account_id});
  if (!query.states.empty()) {
    std::vector<int> v(query.states.begin(), query.states.end());
    where.Add("state IN (SELECT value FROM json_each(?))", {JsonIntArray(v)});
  }
  if (!query.kinds.empty()) {
    std::vector<int> v(query.kinds.begin(), query.kinds.end());
    where.Add("kind IN (SELECT value FROM json_each(?))", {JsonIntArray(v)});
  }
  if (!query.target_id.empty()) where.Add("target_id = ?", {query.target_id});
  if (query.after) {
    where.Add(query.oldest_first ? "(create_time_us, id) > (?, ?)" : "(create_time_us, id) < (?, ?)",
              {query.after->create_time_us, query.after->id});
  }
  std::string sql =
      absl::StrCat("SELECT ", kColumns, " FROM operations", where.Sql(),
                   query.oldest_first ? " ORDER BY create_time_us ASC, id ASC LIMIT ?"
                                      : " ORDER BY create_time_us DESC, id DESC LIMIT ?");
  std::vector<Operation> result;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    {
      ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql));
      int next = where.Bind(s);
      s.Bind(next, query.limit);
      while (true) {
        ASSIGN_OR_RETURN(bool row, s.Step());
        if (!row) break;
        result.push_back(FromRow(s));
      }
    }
    for (Operation& op : result) RETURN_IF_ERROR(ReadSteps(conn, op));
    return absl::OkStatus();
  }));
  return result;
}

absl::StatusOr<Operation> SqliteOperationStore::UpdateOperation(absl::string_view id,
                                                                const Mutator& mutate) {
  Operation op;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(op, ReadOperationRow(conn, id));
    OperationInternals internals;
    {
      ASSIGN_OR_RETURN(
          SqliteStatement s,
          conn.Prepare("SELECT params, cancel_requested, checkpoint FROM operations WHERE id = ?"));
      s.Bind(1, id);
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (row) {
        internals.params = s.ColumnBlob(0);
        internals.cancel_requested = s.ColumnInt(1) != 0;
        internals.checkpoint = s.ColumnBlob(2);
      }
    }
    const bool was_terminal = IsTerminal(op.state());
    RETURN_IF_ERROR(mutate(op, internals));
    // The id, account and creation are fixed for the operation's life.
    op.set_id(std::string(id));
    int64_t now = now_micros_();
    *op.mutable_update_time() = ToTimestamp(now);
    if (!was_terminal && IsTerminal(op.state()) && !op.has_end_time()) {
      *op.mutable_end_time() = ToTimestamp(now);
    }
    ASSIGN_OR_RETURN(
        SqliteStatement s,
        conn.Prepare("UPDATE operations SET kind = ?2, account_id = ?3, user_id = ?4, "
                     "request_id = ?5, state = ?6, step = ?7, bytes_done = ?8, "
                     "bytes_total = ?9, bytes_per_second = ?10, eta_ms = ?11, "
                     "error_code = ?12, error_message = ?13, result_image_template_id = ?14, "
                     "result_deployed_servers = ?15, target_type = ?16, target_id = ?17, "
                     "params = ?18, cancel_requested = ?19, create_time_us = ?20, "
                     "update_time_us = ?21, end_time_us = ?22, checkpoint = ?23 WHERE id = ?1"));
    s.Bind(1, id);
    BindMutable(s, op, internals);
    RETURN_IF_ERROR(s.Run());
    return WriteSteps(conn, op);
  }));
  // Read back so percent and the other derived fields match GetOperation.
  NotifyChange();
  return GetOperation(id);
}

uint64_t SqliteOperationStore::ChangeCount() {
  absl::MutexLock lock(&mu_);
  return changes_;
}

void SqliteOperationStore::WaitForChange(uint64_t seen, absl::Time deadline) {
  absl::MutexLock lock(&mu_);
  auto changed = [this, seen]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return changes_ != seen; };
  mu_.AwaitWithDeadline(absl::Condition(&changed), deadline);
}

void SqliteOperationStore::NotifyChange() {
  absl::MutexLock lock(&mu_);
  ++changes_;
}

}  // namespace controlplane
