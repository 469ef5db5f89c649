// The audit log in the audit_events table: appends events and lists them
// newest first with keyset pagination.
#ifndef CONTROLPLANE_SQLITE_AUDIT_LOG_H_
#define CONTROLPLANE_SQLITE_AUDIT_LOG_H_

#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controlplane/audit_log.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/throttled_refusals.h"
#include "imagetemplates/v1/audit.pb.h"

namespace controlplane {

// Thread-safe; `db` must outlive it. Never call Record from inside a
// SqliteDatabase unit of work (it opens its own).
//
// Refusals marked by MarkThrottled (a flood from an address throttled for
// failed authentications) are not written one by one: they are counted per
// (address, method) and written as one summary event per interval, with
// peer = the address, the method, UNAUTHENTICATED and a message saying how
// many calls it stands for and between which times
// (ThrottledRefusals::Message). A window is written once it spans the
// interval, by the next such refusal or by a background thread, and every
// open window at destruction; a crash loses at most one interval of counts.
class SqliteAuditLog final : public AuditLog {
 public:
  struct Options {
    ThrottledRefusals::Options summaries;
    // The clock of the summaries; tests pass a fake one.
    std::function<absl::Time()> now = [] { return absl::Now(); };
    // How often the background thread writes the summaries that are due;
    // zero: no thread (tests call FlushDueSummaries).
    absl::Duration flush_every = absl::Seconds(1);
  };

  explicit SqliteAuditLog(SqliteDatabase* db) : SqliteAuditLog(db, Options()) {}
  SqliteAuditLog(SqliteDatabase* db, Options options);
  SqliteAuditLog(const SqliteAuditLog&) = delete;
  SqliteAuditLog& operator=(const SqliteAuditLog&) = delete;
  // Writes every open summary.
  ~SqliteAuditLog() override;

  // `method` should be the full gRPC method name
  // ("/imagetemplates.v1.IdentityService/CreateUser"), as AuditEvent.method
  // promises and ListAuditEvents filters on.
  void Record(const Caller& caller, absl::string_view account_id, absl::string_view method,
              const imagetemplates::v1::ResourceReference& target, const absl::Status& outcome,
              absl::string_view request_id, absl::string_view operation_id = "") override;

  // Writes the summaries whose window spans the interval now.
  void FlushDueSummaries();

  // ListAuditEvents with access control: operators read any account (empty
  // account_id: all), USER_MANAGE or AUDIT_VIEW users their own.
  // PERMISSION_DENIED without either; NOT_FOUND (account_id) for another
  // account; INVALID_ARGUMENT (account_id, start_time/end_time, page_size,
  // page_token).
  absl::StatusOr<imagetemplates::v1::ListAuditEventsResponse> List(
      const Caller& caller, const imagetemplates::v1::ListAuditEventsRequest& request);

 private:
  // Writes `summaries` in one transaction, one event each.
  void WriteSummaries(const std::vector<ThrottledRefusals::Summary>& summaries);
  void FlushLoop();

  SqliteDatabase* db_;
  const Options options_;
  ThrottledRefusals refusals_;
  absl::Mutex stop_mu_;
  bool stop_ ABSL_GUARDED_BY(stop_mu_) = false;
  std::thread flusher_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_AUDIT_LOG_H_
