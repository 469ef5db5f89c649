// Storage of operations: the rows behind every long-running job.
#ifndef CONTROLPLANE_OPERATION_STORE_H_
#define CONTROLPLANE_OPERATION_STORE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "imagetemplates/v1/operations.pb.h"

namespace controlplane {

// Where a list of operations resumes: strictly after this row in list order.
struct OperationCursor {
  int64_t create_time_us = 0;
  std::string id;
};

// Operations newest first (create time, then id, both descending).
struct OperationQuery {
  // Empty: every account.
  std::string account_id;
  // Empty: any.
  std::vector<imagetemplates::v1::OperationState> states;
  std::vector<imagetemplates::v1::OperationKind> kinds;
  std::string target_id;
  // Newest first, `after` a cursor going back in time; oldest first, it
  // goes forward.
  bool oldest_first = false;
  std::optional<OperationCursor> after;
  int limit = 50;
};

// Fields of an operation row that the public Operation message does not show.
struct OperationInternals {
  // The serialized request that started the operation.
  std::string params;
  bool cancel_requested = false;
  // The workflow's resumable state (operation_runner.h); empty until the
  // workflow first records a step.
  std::string checkpoint;
};

// Thread-safe. Implementations notify waiters of every change made through
// them; changes made by other processes are seen by polling.
class OperationStore {
 public:
  virtual ~OperationStore() = default;

  // Stores a new operation as given (id, times and all). ALREADY_EXISTS if
  // the id is taken; FAILED_PRECONDITION if the account does not exist.
  virtual absl::Status InsertOperation(const imagetemplates::v1::Operation& operation,
                                       const OperationInternals& internals) = 0;

  // NOT_FOUND if no operation has this id.
  virtual absl::StatusOr<imagetemplates::v1::Operation> GetOperation(
      absl::string_view id) = 0;
  virtual absl::StatusOr<OperationInternals> GetInternals(absl::string_view id) = 0;

  // Up to query.limit operations matching the query.
  virtual absl::StatusOr<std::vector<imagetemplates::v1::Operation>> ListOperations(
      const OperationQuery& query) = 0;

  // Reads the operation, lets `mutate` change it and writes it back, in one
  // transaction; update_time is set to now, and end_time when the state turns
  // terminal. An error from `mutate` aborts with nothing written and is
  // returned. Returns the operation as stored. NOT_FOUND if absent.
  using Mutator = std::function<absl::Status(imagetemplates::v1::Operation& operation,
                                             OperationInternals& internals)>;
  virtual absl::StatusOr<imagetemplates::v1::Operation> UpdateOperation(
      absl::string_view id, const Mutator& mutate) = 0;

  // A counter that grows with every change made through this store, and
  // with every NotifyChange.
  virtual uint64_t ChangeCount() = 0;
  // Tells waiters that an operation was written some other way (another
  // store inserting it in its own transaction), so the runner starts it at
  // once rather than at its next poll.
  virtual void NotifyChange() = 0;
  // Blocks until ChangeCount() differs from `seen` or `deadline` passes.
  virtual void WaitForChange(uint64_t seen, absl::Time deadline) = 0;
};

// True for SUCCEEDED, FAILED and CANCELLED.
inline bool IsTerminal(imagetemplates::v1::OperationState state) {
  return state == imagetemplates::v1::OPERATION_STATE_SUCCEEDED ||
         state == imagetemplates::v1::OPERATION_STATE_FAILED ||
         state == imagetemplates::v1::OPERATION_STATE_CANCELLED;
}

}  // namespace controlplane

#endif  // CONTROLPLANE_OPERATION_STORE_H_
