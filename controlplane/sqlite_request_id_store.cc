#include "controlplane/sqlite_request_id_store.h"

#include "common/status_macros.h"
#include "controlplane/idempotency.h"

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
