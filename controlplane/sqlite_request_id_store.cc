#include "controlplane/sqlite_request_id_store.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "controlplane/idempotency.h"
#include "controlplane/ids.h"

namespace controlplane {

absl::StatusOr<std::optional<std::string>> SqliteRequestIdStore::Find(
    absl::string_view account_id, absl::string_view request_id, absl::string_view fingerprint) {
  std::optional<std::string> response;
  if (request_id.empty()) return response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(response, FindRequest(conn, account_id, request_id, fingerprint));
    return absl::OkStatus();
  }));
  return response;
}

SqliteRequestIdStore::SqliteRequestIdStore(SqliteDatabase* db) : db_(db), holder_(NewUuid()) {}

absl::StatusOr<std::optional<std::string>> SqliteRequestIdStore::FindInTransaction(
    absl::string_view account_id, absl::string_view request_id, absl::string_view fingerprint) {
  std::optional<std::string> response;
  if (request_id.empty()) return response;
  // Joins the caller's transaction (SqliteDatabase::Transaction nests).
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(response, FindRequestForUpdate(conn, account_id, request_id, fingerprint));
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<RequestClaim> SqliteRequestIdStore::Claim(
    absl::string_view account_id, absl::string_view request_id, absl::string_view fingerprint) {
  if (request_id.empty()) return RequestClaim();
  // The first call's body is a few statements; poll for its result briefly.
  const absl::Time deadline = absl::Now() + absl::Seconds(5);
  absl::Duration pause = absl::Milliseconds(2);
  while (true) {
    ClaimResult claim;
    RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
      ASSIGN_OR_RETURN(claim, ClaimRequest(conn, account_id, request_id, fingerprint, holder_));
      return absl::OkStatus();
    }));
    if (!claim.running) {
      RequestClaim result;
      result.response = std::move(claim.response);
      result.orphan_time_micros = claim.orphan_time_micros;
      return result;
    }
    if (absl::Now() + pause > deadline) {
      return absl::AbortedError(
          "request_id: an identical call with this request_id is still running; retry it "
          "with the same request_id to get its result");
    }
    absl::SleepFor(pause);
    pause = std::min(pause * 2, absl::Milliseconds(50));
  }
}

absl::Status SqliteRequestIdStore::Release(absl::string_view account_id,
                                           absl::string_view request_id) {
  if (request_id.empty()) return absl::OkStatus();
  return db_->Transaction([&](SqliteConnection& conn) {
    return ReleaseRequest(conn, account_id, request_id);
  });
}

absl::Status SqliteRequestIdStore::Remember(absl::string_view account_id,
                                            absl::string_view request_id,
                                            absl::string_view fingerprint,
                                            absl::string_view response) {
  if (request_id.empty()) return absl::OkStatus();
  return db_->Transaction([&](SqliteConnection& conn) {
    return RememberRequest(conn, account_id, request_id, fingerprint, response);
  });
}

}  // namespace controlplane
