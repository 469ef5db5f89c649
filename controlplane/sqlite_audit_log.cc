#include "controlplane/sqlite_audit_log.h"

#include <limits>
#include <optional>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/authenticator.h"
#include "controlplane/ids.h"
#include "controlplane/page_token.h"
#include "controlplane/validation.h"

namespace controlplane {

using imagetemplates::v1::AuditEvent;
using imagetemplates::v1::ListAuditEventsRequest;
using imagetemplates::v1::ListAuditEventsResponse;

namespace {

// One audit_events row.
struct EventRow {
  int64_t time = 0;
  absl::string_view account_id, user_id, api_key_id, method;
  const imagetemplates::v1::ResourceReference* target = nullptr;
  absl::StatusCode code = absl::StatusCode::kOk;
  absl::string_view message, request_id, operation_id, peer;
};

// Field limits of a row: requests echo ids and text of any size (up to the
// 64 MiB message limit), and a refused call is audited before its input is
// validated, so unbounded fields would let any caller fill the disk.
constexpr size_t kMaxIdBytes = 256;
constexpr size_t kMaxMessageBytes = 2048;

// `value`, or its first bytes (cut on a UTF-8 boundary) and how long it was.
std::string Clip(absl::string_view value, size_t max_bytes) {
  if (value.size() <= max_bytes) return std::string(value);
  size_t cut = max_bytes;
  while (cut > 0 && (static_cast<unsigned char>(value[cut]) & 0xC0) == 0x80) --cut;
  return absl::StrCat(value.substr(0, cut), "... (", value.size(), " bytes)");
}

absl::Status InsertEvent(SqliteConnection& conn, const EventRow& row) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "INSERT INTO audit_events (id, time, account_id, user_id, api_key_id, method, "
      "target_type, target_id, outcome_code, outcome_message, request_id, operation_id, "
      "peer) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)"));
  // std::string (Clip): a default string_view has no data and would bind NULL.
  stmt.Bind(1, NewUuid()).Bind(2, row.time).Bind(3, Clip(row.account_id, kMaxIdBytes));
  stmt.Bind(4, Clip(row.user_id, kMaxIdBytes)).Bind(5, Clip(row.api_key_id, kMaxIdBytes));
  stmt.Bind(6, Clip(row.method, kMaxIdBytes)).Bind(7, static_cast<int>(row.target->type()));
  stmt.Bind(8, Clip(row.target->id(), kMaxIdBytes)).Bind(9, static_cast<int>(row.code));
  stmt.Bind(10, Clip(row.message, kMaxMessageBytes));
  stmt.Bind(11, Clip(row.request_id, kMaxIdBytes));
  stmt.Bind(12, Clip(row.operation_id, kMaxIdBytes)).Bind(13, Clip(row.peer, kMaxIdBytes));
  return stmt.Run();
}

}  // namespace

SqliteAuditLog::SqliteAuditLog(SqliteDatabase* db, Options options)
    : db_(db), options_(std::move(options)), refusals_(options_.summaries) {
  if (options_.flush_every > absl::ZeroDuration()) flusher_ = std::thread([this] { FlushLoop(); });
}

SqliteAuditLog::~SqliteAuditLog() {
  if (flusher_.joinable()) {
    {
      absl::MutexLock lock(&stop_mu_);
      stop_ = true;
    }
    flusher_.join();
  }
  WriteSummaries(refusals_.TakeAll());
}

void SqliteAuditLog::FlushLoop() {
  while (true) {
    {
      absl::MutexLock lock(&stop_mu_);
      stop_mu_.AwaitWithTimeout(absl::Condition(&stop_), options_.flush_every);
      if (stop_) return;
    }
    FlushDueSummaries();
  }
}

void SqliteAuditLog::FlushDueSummaries() { WriteSummaries(refusals_.TakeDue(options_.now())); }

void SqliteAuditLog::Record(const Caller& caller, absl::string_view account_id,
                            absl::string_view method,
                            const imagetemplates::v1::ResourceReference& target,
                            const absl::Status& outcome, absl::string_view request_id,
                            absl::string_view operation_id) {
  if (std::optional<std::string> address = ThrottledAddress(outcome);
      address.has_value() && !outcome.ok()) {
    // Counted, no write: a flood must not cost a row per call.
    WriteSummaries(refusals_.Add(*address, method, target, outcome, options_.now()));
    return;
  }
  const std::string message(outcome.message());
  EventRow row;
  row.time = NowMicros();
  row.account_id = account_id;
  row.user_id = caller.user_id;
  row.api_key_id = caller.api_key_id;
  row.method = method;
  row.target = &target;
  row.code = outcome.code();
  row.message = message;
  row.request_id = request_id;
  row.operation_id = operation_id;
  row.peer = caller.peer;
  absl::Status status =
      db_->Transaction([&](SqliteConnection& conn) { return InsertEvent(conn, row); });
  if (!status.ok()) {
    common::LogError("audit: cannot record %s by user %s: %s", method, caller.user_id,
                     status.ToString());
  }
}

void SqliteAuditLog::WriteSummaries(const std::vector<ThrottledRefusals::Summary>& summaries) {
  if (summaries.empty()) return;
  // When written, not when its last call was answered (up to an interval
  // earlier): a reader polling by time window must not miss it. The window
  // is in the message.
  const int64_t written = absl::ToUnixMicros(options_.now());
  absl::Status status = db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    for (const ThrottledRefusals::Summary& summary : summaries) {
      const std::string message = ThrottledRefusals::Message(summary);
      EventRow row;
      row.time = written;
      row.method = summary.method;
      row.target = &summary.target;
      row.code = summary.last_outcome.code();
      row.message = message;
      row.peer = summary.address;
      RETURN_IF_ERROR(InsertEvent(conn, row));
    }
    return absl::OkStatus();
  });
  for (const ThrottledRefusals::Summary& summary : summaries) {
    if (status.ok()) {
      common::LogInfo("audit: %d refused calls to %s from throttled %s recorded as one event",
                      summary.count, summary.method, summary.address);
    } else {
      common::LogError("audit: cannot record %d refused calls to %s from throttled %s: %s",
                       summary.count, summary.method, summary.address, status.ToString());
    }
  }
}

absl::StatusOr<ListAuditEventsResponse> SqliteAuditLog::List(
    const Caller& caller, const ListAuditEventsRequest& request) {
  using imagetemplates::v1::PERMISSION_AUDIT_VIEW;
  using imagetemplates::v1::PERMISSION_USER_MANAGE;
  std::string account_id = request.account_id();
  if (!caller.is_operator) {
    if (!caller.Has(PERMISSION_USER_MANAGE) && !caller.Has(PERMISSION_AUDIT_VIEW)) {
      return absl::PermissionDeniedError(
          "reading the audit log needs PERMISSION_USER_MANAGE or PERMISSION_AUDIT_VIEW");
    }
    if (account_id.empty()) account_id = caller.account_id;
  }
  if (!account_id.empty()) RETURN_IF_ERROR(ValidateUuid("account_id", account_id));
  if (!caller.is_operator && account_id != caller.account_id) {
    return absl::NotFoundError("account_id: no such account");
  }
  int64_t start = std::numeric_limits<int64_t>::min();
  int64_t end = std::numeric_limits<int64_t>::max();
  if (request.has_start_time()) {
    ASSIGN_OR_RETURN(start, ValidateTimestamp("start_time", request.start_time()));
  }
  if (request.has_end_time()) {
    ASSIGN_OR_RETURN(end, ValidateTimestamp("end_time", request.end_time()));
  }
  if (start > end) {
    return absl::InvalidArgumentError("start_time: must not be after end_time");
  }
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters = FilterKey({account_id, request.target_id(), request.method(),
                                   absl::StrCat(start), absl::StrCat(end)});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  int64_t before_seq = std::numeric_limits<int64_t>::max();
  if (!after.empty() && (after.size() != 1 || !absl::SimpleAtoi(after[0], &before_seq))) {
    return absl::InvalidArgumentError("page_token: malformed");
  }

  ListAuditEventsResponse response;
  int64_t last_seq = 0;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT seq, id, time, account_id, user_id, api_key_id, method, target_type, "
        "target_id, outcome_code, outcome_message, request_id, operation_id, peer "
        "FROM audit_events WHERE seq < ?1 AND (?2 = '' OR account_id = ?2) "
        "AND (?3 = '' OR target_id = ?3) AND (?4 = '' OR method = ?4) "
        "AND time >= ?5 AND time < ?6 ORDER BY seq DESC LIMIT ?7"));
    stmt.Bind(1, before_seq).Bind(2, account_id).Bind(3, request.target_id());
    stmt.Bind(4, request.method()).Bind(5, start).Bind(6, end).Bind(7, page_size + 1);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      if (response.audit_events_size() == page_size) {
        response.set_next_page_token(EncodePageToken({absl::StrCat(last_seq)}, filters));
        break;
      }
      last_seq = stmt.ColumnInt(0);
      AuditEvent* event = response.add_audit_events();
      event->set_id(stmt.ColumnText(1));
      *event->mutable_time() = ToTimestamp(stmt.ColumnInt(2));
      event->set_account_id(stmt.ColumnText(3));
      event->set_user_id(stmt.ColumnText(4));
      event->set_api_key_id(stmt.ColumnText(5));
      event->set_method(stmt.ColumnText(6));
      event->mutable_target()->set_type(
          static_cast<imagetemplates::v1::ResourceType>(stmt.ColumnInt(7)));
      event->mutable_target()->set_id(stmt.ColumnText(8));
      event->mutable_outcome()->set_code(static_cast<int32_t>(stmt.ColumnInt(9)));
      event->mutable_outcome()->set_message(stmt.ColumnText(10));
      event->set_request_id(stmt.ColumnText(11));
      event->set_operation_id(stmt.ColumnText(12));
      event->set_peer(stmt.ColumnText(13));
    }
    return absl::OkStatus();
  }));
  return response;
}

}  // namespace controlplane
