#include "controlplane/operation_service.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/grpc_status.h"
#include "common/status_macros.h"
#include "controlplane/idempotency.h"
#include "controlplane/ids.h"
#include "controlplane/page_token.h"
#include "controlplane/validation.h"
#include "google/protobuf/util/message_differencer.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

absl::Status NotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("operation ", id, " not found"));
}

// The permission that starts operations of `kind`.
v1::Permission StartingPermission(v1::OperationKind kind) {
  return kind == v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE ? v1::PERMISSION_SERVER_PROVISION
                                                          : v1::PERMISSION_IMAGE_TEMPLATE_MANAGE;
}

// What cancelling a visible operation needs: the permission that starts
// its kind and, for a capture, access to the server captured (a user may
// capture only servers granted to it, so it may not stop another's).
absl::Status MayCancel(const Caller& caller, const v1::Operation& op) {
  if (!caller.Has(StartingPermission(op.kind()))) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cancelling this operation needs ", v1::Permission_Name(StartingPermission(op.kind()))));
  }
  if (op.target().type() == v1::RESOURCE_TYPE_SERVER &&
      !caller.CanAccessServer(op.target().id())) {
    return absl::PermissionDeniedError(absl::StrCat(
        "cancelling this operation needs device access to server ", op.target().id()));
  }
  return absl::OkStatus();
}

// Equal but for progress and update time.
bool SameButProgress(const v1::Operation& a, const v1::Operation& b) {
  v1::Operation x = a, y = b;
  x.clear_progress();
  y.clear_progress();
  x.clear_update_time();
  y.clear_update_time();
  return google::protobuf::util::MessageDifferencer::Equals(x, y);
}

}  // namespace

OperationManager::OperationManager(OperationStore* operations, RequestIdStore* request_ids,
                                   AuditLog* audit, Options options)
    : operations_(operations),
      request_ids_(request_ids),
      audit_(audit),
      options_(std::move(options)) {
  if (!options_.now_micros) options_.now_micros = NowMicros;
}

absl::StatusOr<v1::Operation> OperationManager::LoadVisible(const Caller& caller,
                                                           absl::string_view id) {
  RETURN_IF_ERROR(ValidateUuid("id", id));
  absl::StatusOr<v1::Operation> op = operations_->GetOperation(id);
  if (absl::IsNotFound(op.status())) return NotFound(id);
  RETURN_IF_ERROR(op.status());
  if (!caller.is_operator && op->account_id() != caller.account_id) return NotFound(id);
  return op;
}

absl::StatusOr<v1::Operation> OperationManager::GetOperation(
    const Caller& caller, const v1::GetOperationRequest& request) {
  return LoadVisible(caller, request.id());
}

absl::StatusOr<v1::ListOperationsResponse> OperationManager::ListOperations(
    const Caller& caller, const v1::ListOperationsRequest& request) {
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  OperationQuery query;
  if (!request.account_id().empty()) {
    RETURN_IF_ERROR(ValidateUuid("account_id", request.account_id()));
    if (!caller.is_operator && request.account_id() != caller.account_id) {
      return absl::NotFoundError(absl::StrCat("account_id: account ", request.account_id(),
                                              " not found"));
    }
    query.account_id = request.account_id();
  } else if (!caller.is_operator) {
    query.account_id = caller.account_id;
  }
  for (int state : request.states()) {
    if (!v1::OperationState_IsValid(state) || state == v1::OPERATION_STATE_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat("states: unknown value ", state));
    }
    query.states.push_back(static_cast<v1::OperationState>(state));
  }
  for (int kind : request.kinds()) {
    if (!v1::OperationKind_IsValid(kind) || kind == v1::OPERATION_KIND_UNSPECIFIED) {
      return absl::InvalidArgumentError(absl::StrCat("kinds: unknown value ", kind));
    }
    query.kinds.push_back(static_cast<v1::OperationKind>(kind));
  }
  if (!request.target_id().empty()) {
    if (request.target_id().size() > 64) {
      return absl::InvalidArgumentError("target_id: at most 64 characters");
    }
    query.target_id = request.target_id();
  }
  query.limit = page_size + 1;
  std::vector<int> states(request.states().begin(), request.states().end());
  std::vector<int> kinds(request.kinds().begin(), request.kinds().end());
  const std::string filters =
      FilterKey({"operations", caller.account_id, caller.is_operator ? "op" : "",
                 query.account_id, absl::StrJoin(states, ","), absl::StrJoin(kinds, ","),
                 query.target_id});
  ASSIGN_OR_RETURN(std::vector<std::string> after,
                   DecodePageToken(request.page_token(), filters));
  if (!after.empty()) {
    OperationCursor cursor;
    if (after.size() != 2 || !absl::SimpleAtoi(after[0], &cursor.create_time_us)) {
      return absl::InvalidArgumentError("page_token: damaged; start again without it");
    }
    cursor.id = after[1];
    query.after = cursor;
  }
  ASSIGN_OR_RETURN(std::vector<v1::Operation> rows, operations_->ListOperations(query));
  v1::ListOperationsResponse response;
  const bool more = static_cast<int>(rows.size()) > page_size;
  if (more) rows.resize(page_size);
  for (v1::Operation& op : rows) *response.add_operations() = std::move(op);
  if (more) {
    const v1::Operation& last = response.operations(page_size - 1);
    response.set_next_page_token(EncodePageToken(
        {absl::StrCat(FromTimestamp(last.create_time())), last.id()}, filters));
  }
  return response;
}

absl::StatusOr<v1::Operation> OperationManager::Cancel(const Caller& caller,
                                                      const v1::CancelOperationRequest& request,
                                                      std::string& audit_account) {
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  const std::string fingerprint = RequestFingerprint("CancelOperation", request);
  ASSIGN_OR_RETURN(std::optional<std::string> prior,
                   request_ids_->Find(caller.account_id, request.request_id(), fingerprint));
  // Cancelling is idempotent: a repeat answers with the operation as it is
  // now, if the caller still holds the permission cancelling it needs.
  auto replay = [&]() -> absl::StatusOr<v1::Operation> {
    ASSIGN_OR_RETURN(v1::Operation op, LoadVisible(caller, request.id()));
    RETURN_IF_ERROR(MayCancel(caller, op));
    return op;
  };
  if (prior.has_value()) return replay();
  RETURN_IF_ERROR(LoadVisible(caller, request.id()).status());
  std::optional<std::string> replayed;
  absl::StatusOr<v1::Operation> result = operations_->UpdateOperation(
      request.id(), [&](v1::Operation& op, OperationInternals& internals) -> absl::Status {
        // The request_id is looked up and remembered in the cancel's own
        // transaction, so a crash leaves both or neither: a repeat never
        // finds the operation cancelled (and since ended) without its answer.
        ASSIGN_OR_RETURN(replayed, request_ids_->FindInTransaction(
                                       caller.account_id, request.request_id(), fingerprint));
        if (replayed.has_value()) {
          return absl::AbortedError("request_id: an identical call finished first");
        }
        if (!caller.is_operator && op.account_id() != caller.account_id) {
          return NotFound(request.id());
        }
        audit_account = op.account_id();
        RETURN_IF_ERROR(MayCancel(caller, op));
        if (IsTerminal(op.state())) {
          return absl::FailedPreconditionError(absl::StrCat(
              "operation ", op.id(), " already ended ", v1::OperationState_Name(op.state())));
        }
        if (op.kind() == v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE) {
          return absl::FailedPreconditionError(absl::StrCat(
              "operation ", op.id(),
              " deletes a template, which cannot be stopped once accepted (its shares and "
              "public listing already ended)"));
        }
        if (op.state() != v1::OPERATION_STATE_CANCELLING) {
          op.set_state(v1::OPERATION_STATE_CANCELLING);
          internals.cancel_requested = true;
        }
        return request_ids_->Remember(caller.account_id, request.request_id(), fingerprint,
                                      op.id());
      });
  if (replayed.has_value()) return replay();
  if (absl::IsNotFound(result.status())) return NotFound(request.id());
  return result;
}

absl::StatusOr<v1::Operation> OperationManager::CancelOperation(
    const Caller& caller, const v1::CancelOperationRequest& request) {
  std::string audit_account = caller.account_id;
  absl::StatusOr<v1::Operation> result = Cancel(caller, request, audit_account);
  v1::ResourceReference target;
  target.set_type(v1::RESOURCE_TYPE_OPERATION);
  target.set_id(request.id());
  audit_->Record(caller, audit_account, "/imagetemplates.v1.OperationService/CancelOperation",
                 target, result.status(),
                 request.request_id(), request.id());
  return result;
}

void OperationManager::RecordUnauthenticatedCancel(absl::string_view peer,
                                                   const v1::CancelOperationRequest& request,
                                                   const absl::Status& why) {
  Caller anonymous;
  anonymous.peer = std::string(peer);
  v1::ResourceReference target;
  target.set_type(v1::RESOURCE_TYPE_OPERATION);
  target.set_id(request.id());
  audit_->Record(anonymous, "", "/imagetemplates.v1.OperationService/CancelOperation", target,
                 why, request.request_id());
}

absl::Status OperationManager::AdmitWatch(const std::string& account_id) {
  absl::MutexLock lock(&watch_mu_);
  auto it = watches_.find(account_id);
  const int open = it == watches_.end() ? 0 : it->second;
  if (open >= options_.max_watches_per_account) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the account already has ", open, " open WatchOperation streams, the most allowed; "
        "close one, or poll GetOperation"));
  }
  if (total_watches_ >= options_.max_watches) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the control plane already serves ", total_watches_,
        " WatchOperation streams, the most it allows; retry later, or poll GetOperation"));
  }
  ++watches_[account_id];
  ++total_watches_;
  return absl::OkStatus();
}

void OperationManager::EndWatch(const std::string& account_id) {
  absl::MutexLock lock(&watch_mu_);
  auto it = watches_.find(account_id);
  if (it != watches_.end() && --it->second <= 0) watches_.erase(it);
  --total_watches_;
}

absl::Status OperationManager::WatchOperation(
    const Caller& caller, const v1::WatchOperationRequest& request,
    const std::function<bool(const v1::Operation&)>& send,
    const std::function<bool()>& cancelled,
    const std::function<absl::StatusOr<Caller>()>& reauthenticate) {
  // Each watch holds a server thread while it lasts: bounded, so that one
  // caller cannot tie up every thread the server has.
  RETURN_IF_ERROR(AdmitWatch(caller.account_id));
  absl::Cleanup end_watch = [&] { EndWatch(caller.account_id); };
  ASSIGN_OR_RETURN(v1::Operation op, LoadVisible(caller, request.id()));
  std::optional<v1::Operation> last_sent;
  absl::Time last_send_time = absl::InfinitePast();
  while (true) {
    if (reauthenticate) {
      // The key may have been revoked, or the user moved, since the last
      // message; `op` is the row just read, so this costs no extra read.
      ASSIGN_OR_RETURN(Caller now, reauthenticate());
      if (!now.is_operator && op.account_id() != now.account_id) return NotFound(request.id());
    }
    absl::Time wake = absl::Now() + options_.poll_interval;
    bool changed = !last_sent.has_value() ||
                   !google::protobuf::util::MessageDifferencer::Equals(*last_sent, op);
    if (changed) {
      const absl::Time now = absl::Now();
      // Progress alone is rate-limited; any other change goes out at once.
      bool progress_only = last_sent.has_value() && SameButProgress(*last_sent, op);
      if (progress_only && now - last_send_time < options_.progress_interval) {
        wake = std::min(wake, last_send_time + options_.progress_interval);
      } else {
        if (!send(op)) return absl::CancelledError("the watcher went away");
        last_sent = op;
        last_send_time = now;
        if (IsTerminal(op.state())) return absl::OkStatus();
      }
    }
    if (cancelled()) return absl::CancelledError("the watcher went away");
    const uint64_t seen = operations_->ChangeCount();
    // Re-read before sleeping so a change between the read and the wait is
    // not missed.
    ASSIGN_OR_RETURN(v1::Operation fresh, operations_->GetOperation(request.id()));
    if (google::protobuf::util::MessageDifferencer::Equals(fresh, op)) {
      operations_->WaitForChange(seen, wake);
      ASSIGN_OR_RETURN(fresh, operations_->GetOperation(request.id()));
    }
    op = std::move(fresh);
  }
}

grpc::Status OperationServiceImpl::GetOperation(grpc::ServerContext* context,
                                                const v1::GetOperationRequest* request,
                                                v1::Operation* response) {
  absl::StatusOr<Caller> caller = authenticator_->Authenticate(*context);
  if (!caller.ok()) return common::ToGrpcStatus(caller.status());
  absl::StatusOr<v1::Operation> result = manager_->GetOperation(*caller, *request);
  if (!result.ok()) return common::ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status OperationServiceImpl::ListOperations(grpc::ServerContext* context,
                                                  const v1::ListOperationsRequest* request,
                                                  v1::ListOperationsResponse* response) {
  absl::StatusOr<Caller> caller = authenticator_->Authenticate(*context);
  if (!caller.ok()) return common::ToGrpcStatus(caller.status());
  absl::StatusOr<v1::ListOperationsResponse> result =
      manager_->ListOperations(*caller, *request);
  if (!result.ok()) return common::ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status OperationServiceImpl::CancelOperation(grpc::ServerContext* context,
                                                   const v1::CancelOperationRequest* request,
                                                   v1::Operation* response) {
  absl::StatusOr<Caller> caller = authenticator_->Authenticate(*context);
  if (!caller.ok()) {
    manager_->RecordUnauthenticatedCancel(context->peer(), *request, caller.status());
    return common::ToGrpcStatus(caller.status());
  }
  if (caller->peer.empty()) caller->peer = context->peer();
  absl::StatusOr<v1::Operation> result = manager_->CancelOperation(*caller, *request);
  if (!result.ok()) return common::ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::Status OperationServiceImpl::WatchOperation(grpc::ServerContext* context,
                                                  const v1::WatchOperationRequest* request,
                                                  grpc::ServerWriter<v1::Operation>* writer) {
  absl::StatusOr<Caller> caller = authenticator_->Authenticate(*context);
  if (!caller.ok()) return common::ToGrpcStatus(caller.status());
  return common::ToGrpcStatus(manager_->WatchOperation(
      *caller, *request, [writer](const v1::Operation& op) { return writer->Write(op); },
      [context] { return context->IsCancelled(); },
      [this, context] { return authenticator_->Authenticate(*context); }));
}

}  // namespace controlplane
