// OperationStore over the control plane's SQLite database (migration 2).
#ifndef CONTROLPLANE_SQLITE_OPERATION_STORE_H_
#define CONTROLPLANE_SQLITE_OPERATION_STORE_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/operation_store.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

// Thread-safe. Does not own the database, which must outlive it.
class SqliteOperationStore final : public OperationStore {
 public:
  // `now_micros` is the clock for update and end times.
  explicit SqliteOperationStore(SqliteDatabase* db,
                                std::function<int64_t()> now_micros = nullptr);
  SqliteOperationStore(const SqliteOperationStore&) = delete;
  SqliteOperationStore& operator=(const SqliteOperationStore&) = delete;

  absl::Status InsertOperation(const imagetemplates::v1::Operation& operation,
                               const OperationInternals& internals) override;
  absl::StatusOr<imagetemplates::v1::Operation> GetOperation(absl::string_view id) override;
  absl::StatusOr<OperationInternals> GetInternals(absl::string_view id) override;
  absl::StatusOr<std::vector<imagetemplates::v1::Operation>> ListOperations(
      const OperationQuery& query) override;
  absl::StatusOr<imagetemplates::v1::Operation> UpdateOperation(
      absl::string_view id, const Mutator& mutate) override;
  uint64_t ChangeCount() override;
  void WaitForChange(uint64_t seen, absl::Time deadline) override;
  void NotifyChange() override;

 private:

  SqliteDatabase* const db_;
  const std::function<int64_t()> now_micros_;
  absl::Mutex mu_;
  uint64_t changes_ ABSL_GUARDED_BY(mu_) = 0;
};

// Row helpers for other stores that write operations inside their own
// transactions (DeleteImageTemplate inserts its operation atomically with
// the template's status change).
absl::Status InsertOperationRow(SqliteConnection& conn,
                                const imagetemplates::v1::Operation& operation,
                                const OperationInternals& internals);
absl::StatusOr<imagetemplates::v1::Operation> ReadOperationRow(SqliteConnection& conn,
                                                               absl::string_view id);
// Operations acting on `target_id` of one of `kinds` that are not terminal.
absl::StatusOr<int64_t> CountUnfinishedOperations(
    SqliteConnection& conn, absl::string_view target_id,
    const std::vector<imagetemplates::v1::OperationKind>& kinds);

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_OPERATION_STORE_H_
