// OperationService: the business logic over operation rows (OperationManager)
// and its thin gRPC adapter (OperationServiceImpl).
#ifndef CONTROLPLANE_OPERATION_SERVICE_H_
#define CONTROLPLANE_OPERATION_SERVICE_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/audit_log.h"
#include "controlplane/authenticator.h"
#include "controlplane/caller.h"
#include "controlplane/operation_store.h"
#include "controlplane/request_id_store.h"
#include "imagetemplates/v1/operations.grpc.pb.h"

namespace controlplane {

// Thread-safe. Owns none of its dependencies; they must outlive it. Callers
// see their own account's operations (operators: every account's); others are
// NOT_FOUND.
class OperationManager {
 public:
  struct Options {
    // How often a watch re-reads its row without a local change notification
    // (changes made by other processes).
    absl::Duration poll_interval = absl::Seconds(1);
    // Progress-only changes are streamed at most this often.
    absl::Duration progress_interval = absl::Seconds(1);
    // Open WatchOperation streams, each holding a server thread until its
    // operation ends or its client goes away: at most this many per account
    // and in all; more are RESOURCE_EXHAUSTED.
    int max_watches_per_account = 32;
    int max_watches = 256;
    std::function<int64_t()> now_micros;
  };
  OperationManager(OperationStore* operations, RequestIdStore* request_ids, AuditLog* audit,
                   Options options);
  OperationManager(const OperationManager&) = delete;
  OperationManager& operator=(const OperationManager&) = delete;

  // INVALID_ARGUMENT (id); NOT_FOUND.
  absl::StatusOr<imagetemplates::v1::Operation> GetOperation(
      const Caller& caller, const imagetemplates::v1::GetOperationRequest& request);
  // Newest first. INVALID_ARGUMENT (page_size, page_token, account_id,
  // states, kinds, target_id); NOT_FOUND (account_id) for another account
  // unless an operator.
  absl::StatusOr<imagetemplates::v1::ListOperationsResponse> ListOperations(
      const Caller& caller, const imagetemplates::v1::ListOperationsRequest& request);
  // Requests cancellation: PENDING and RUNNING operations move to CANCELLING
  // (their worker undoes the work and ends them CANCELLED); CANCELLING is a
  // no-op. FAILED_PRECONDITION if terminal or a delete (deletes are past the
  // point of no return once accepted); PERMISSION_DENIED without the
  // permission that starts this kind; NOT_FOUND. Audited.
  absl::StatusOr<imagetemplates::v1::Operation> CancelOperation(
      const Caller& caller, const imagetemplates::v1::CancelOperationRequest& request);
  // Audits a CancelOperation refused before it had a caller (failed
  // authentication, `why`), as every other mutating call's refusals are.
  void RecordUnauthenticatedCancel(absl::string_view peer,
                                   const imagetemplates::v1::CancelOperationRequest& request,
                                   const absl::Status& why);
  // Sends the operation now and after every change until it is terminal
  // (then returns OK). Returns CANCELLED if `send` fails or `cancelled`
  // turns true (noticed within poll_interval). INVALID_ARGUMENT (id);
  // NOT_FOUND; RESOURCE_EXHAUSTED when the caller's account (or the server)
  // already has its maximum of open watches. `reauthenticate` (if set) is
  // asked again before every send and wake: a stream outlives neither the
  // revocation of its key (its error, UNAUTHENTICATED) nor the caller's
  // access to the operation (NOT_FOUND).
  absl::Status WatchOperation(const Caller& caller,
                              const imagetemplates::v1::WatchOperationRequest& request,
                              const std::function<bool(const imagetemplates::v1::Operation&)>& send,
                              const std::function<bool()>& cancelled,
                              const std::function<absl::StatusOr<Caller>()>& reauthenticate =
                                  nullptr);

 private:
  absl::StatusOr<imagetemplates::v1::Operation> LoadVisible(const Caller& caller,
                                                           absl::string_view id);
  absl::StatusOr<imagetemplates::v1::Operation> Cancel(
      const Caller& caller, const imagetemplates::v1::CancelOperationRequest& request,
      std::string& audit_account);
  // Counts one more open watch for `account_id`, or RESOURCE_EXHAUSTED.
  absl::Status AdmitWatch(const std::string& account_id);
  void EndWatch(const std::string& account_id);

  OperationStore* const operations_;
  RequestIdStore* const request_ids_;
  AuditLog* const audit_;
  Options options_;
  absl::Mutex watch_mu_;
  absl::flat_hash_map<std::string, int> watches_ ABSL_GUARDED_BY(watch_mu_);  // by account
  int total_watches_ ABSL_GUARDED_BY(watch_mu_) = 0;
};

// Thread-safe. Does not own its dependencies.
class OperationServiceImpl final : public imagetemplates::v1::OperationService::Service {
 public:
  OperationServiceImpl(Authenticator* authenticator, OperationManager* manager)
      : authenticator_(authenticator), manager_(manager) {}

  grpc::Status GetOperation(grpc::ServerContext* context,
                            const imagetemplates::v1::GetOperationRequest* request,
                            imagetemplates::v1::Operation* response) override;
  grpc::Status ListOperations(grpc::ServerContext* context,
                              const imagetemplates::v1::ListOperationsRequest* request,
                              imagetemplates::v1::ListOperationsResponse* response) override;
  grpc::Status CancelOperation(grpc::ServerContext* context,
                               const imagetemplates::v1::CancelOperationRequest* request,
                               imagetemplates::v1::Operation* response) override;
  grpc::Status WatchOperation(grpc::ServerContext* context,
                              const imagetemplates::v1::WatchOperationRequest* request,
                              grpc::ServerWriter<imagetemplates::v1::Operation>* writer) override;

 private:
  Authenticator* const authenticator_;
  OperationManager* const manager_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_OPERATION_SERVICE_H_
