// RequestIdStore over the idempotent_requests table (migration 1; its
// `pending` column, migration 5, marks claims), shared with the identity
// services' IdempotentTransaction.
#ifndef CONTROLPLANE_SQLITE_REQUEST_ID_STORE_H_
#define CONTROLPLANE_SQLITE_REQUEST_ID_STORE_H_

#include <string>

#include "controlplane/request_id_store.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

// Thread-safe. Does not own the database, which must outlive it.
class SqliteRequestIdStore final : public RequestIdStore {
 public:
  // Claims name this object (a fresh id), so one left by an earlier
  // process is known to be orphaned. FindInTransaction and Remember join the
  // calling thread's transaction of `db` when there is one.
  explicit SqliteRequestIdStore(SqliteDatabase* db);
  SqliteRequestIdStore(const SqliteRequestIdStore&) = delete;
  SqliteRequestIdStore& operator=(const SqliteRequestIdStore&) = delete;

  absl::StatusOr<std::optional<std::string>> Find(absl::string_view account_id,
                                                  absl::string_view request_id,
                                                  absl::string_view fingerprint) override;
  absl::StatusOr<RequestClaim> Claim(absl::string_view account_id,
                                     absl::string_view request_id,
                                     absl::string_view fingerprint) override;
  absl::StatusOr<std::optional<std::string>> FindInTransaction(
      absl::string_view account_id, absl::string_view request_id,
      absl::string_view fingerprint) override;
  absl::Status Release(absl::string_view account_id, absl::string_view request_id) override;
  absl::Status Remember(absl::string_view account_id, absl::string_view request_id,
                        absl::string_view fingerprint, absl::string_view response) override;

 private:
  SqliteDatabase* const db_;
  const std::string holder_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_REQUEST_ID_STORE_H_
