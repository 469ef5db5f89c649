// The shared shape of every RPC handler of the public API: authenticate the
// call, run the business logic with the Caller, audit mutating calls (allowed
// or refused, including failed authentication; the audit log counts the
// refusals of an address throttled for failed authentications into summaries,
// see MarkThrottled), convert the status once.
#ifndef CONTROLPLANE_RPC_RUNNER_H_
#define CONTROLPLANE_RPC_RUNNER_H_

#include <functional>
#include <string>
#include <utility>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/grpc_status.h"
#include "controlplane/audit_log.h"
#include "controlplane/authenticator.h"
#include "grpcpp/server_context.h"

namespace controlplane {

// Where an audited call's event goes and what it names.
struct AuditTarget {
  imagetemplates::v1::ResourceReference target;
  // The account whose log shows the event; defaults to the caller's.
  std::string account_id;
};

// Thread-safe; `authenticator` and `audit` must outlive it.
class RpcRunner {
 public:
  RpcRunner(Authenticator* authenticator, AuditLog* audit)
      : authenticator_(authenticator), audit_(audit) {}

  // A read: authenticate, run, convert.
  template <typename Response>
  grpc::Status Read(grpc::ServerContext* context, Response* out,
                    const std::function<absl::StatusOr<Response>(const Caller&)>& run) {
    absl::StatusOr<Caller> caller = authenticator_->Authenticate(*context);
    if (!caller.ok()) return common::ToGrpcStatus(caller.status());
    absl::StatusOr<Response> response = run(*caller);
    if (!response.ok()) return common::ToGrpcStatus(response.status());
    *out = *std::move(response);
    return grpc::Status::OK;
  }

  // An audited call. `method` is the full gRPC method name; `type`/`target_id`
  // name the resource from the request (empty for creates); `describe`, on
  // success, may fill in the created resource and the owning account.
  template <typename Response>
  grpc::Status Audited(grpc::ServerContext* context, absl::string_view method,
                       absl::string_view request_id, imagetemplates::v1::ResourceType type,
                       absl::string_view target_id, Response* out,
                       const std::function<absl::StatusOr<Response>(const Caller&)>& run,
                       const std::function<void(const Response&, AuditTarget*)>& describe =
                           nullptr) {
    AuditTarget audit_target;
    audit_target.target.set_type(type);
    audit_target.target.set_id(std::string(target_id));
    absl::StatusOr<Caller> caller = authenticator_->Authenticate(*context);
    if (!caller.ok()) {
      Caller anonymous;
      anonymous.peer = context->peer();
      audit_->Record(anonymous, "", method, audit_target.target, caller.status(), request_id);
      return common::ToGrpcStatus(caller.status());
    }
    audit_target.account_id = caller->account_id;
    absl::StatusOr<Response> response = run(*caller);
    if (response.ok() && describe) describe(*response, &audit_target);
    audit_->Record(*caller, audit_target.account_id, method, audit_target.target,
                   response.status(), request_id);
    if (!response.ok()) return common::ToGrpcStatus(response.status());
    *out = *std::move(response);
    return grpc::Status::OK;
  }

 private:
  Authenticator* authenticator_;
  AuditLog* audit_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_RPC_RUNNER_H_
