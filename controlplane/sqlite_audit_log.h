// The audit log in the audit_events table: appends events and lists them
// newest first with keyset pagination.
#ifndef CONTROLPLANE_SQLITE_AUDIT_LOG_H_
#define CONTROLPLANE_SQLITE_AUDIT_LOG_H_

#include <string>

#include "absl/status/statusor.h"
#include "controlplane/audit_log.h"
#include "controlplane/sqlite_database.h"
#include "imagetemplates/v1/audit.pb.h"

namespace controlplane {

// Thread-safe; `db` must outlive it. Never call Record from inside a
// SqliteDatabase unit of work (it opens its own).
class SqliteAuditLog final : public AuditLog {
 public:
  explicit SqliteAuditLog(SqliteDatabase* db) : db_(db) {}

  // `method` should be the full gRPC method name
  // ("/imagetemplates.v1.IdentityService/CreateUser"), as AuditEvent.method
  // promises and ListAuditEvents filters on.
  void Record(const Caller& caller, absl::string_view account_id, absl::string_view method,
              const imagetemplates::v1::ResourceReference& target, const absl::Status& outcome,
              absl::string_view request_id, absl::string_view operation_id = "") override;

  // ListAuditEvents with access control: operators read any account (empty
  // account_id: all), USER_MANAGE or AUDIT_VIEW users their own.
  // PERMISSION_DENIED without either; NOT_FOUND (account_id) for another
  // account; INVALID_ARGUMENT (account_id, start_time/end_time, page_size,
  // page_token).
  absl::StatusOr<imagetemplates::v1::ListAuditEventsResponse> List(
      const Caller& caller, const imagetemplates::v1::ListAuditEventsRequest& request);

 private:
  SqliteDatabase* db_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_AUDIT_LOG_H_
