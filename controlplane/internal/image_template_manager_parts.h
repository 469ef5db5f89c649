// What the source files of ImageTemplateManager share, one file a concern:
// image_template_manager.cc             construction, visibility, reads, and
//                                       the helpers below
// image_template_manager_operations.cc  calls that start operations: create,
//                                       delete, deploy, copy to a datacenter
// image_template_manager_changes.cc     calls that change a template in place
// The helpers are defined in image_template_manager.cc; Mutation, a member
// template, here.
#ifndef CONTROLPLANE_INTERNAL_IMAGE_TEMPLATE_MANAGER_PARTS_H_
#define CONTROLPLANE_INTERNAL_IMAGE_TEMPLATE_MANAGER_PARTS_H_

#include <functional>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "common/status_macros.h"
#include "controlplane/audit_log.h"
#include "controlplane/caller.h"
#include "controlplane/idempotency.h"
#include "controlplane/image_template_manager.h"
#include "controlplane/validation.h"
#include "google/protobuf/repeated_field.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {
namespace template_manager_internal {

namespace v1 = imagetemplates::v1;

constexpr int kMaxDatacenters = 20;

absl::Status CheckText(absl::string_view field, absl::string_view text, int max_chars);
// The trimmed name, 1..100 printable characters.
absl::StatusOr<std::string> CheckName(absl::string_view name);
absl::Status CheckNote(absl::string_view note);
absl::StatusOr<std::vector<std::string>> CheckTags(
    const google::protobuf::RepeatedPtrField<std::string>& tags);
absl::Status CheckId(absl::string_view field, absl::string_view id);
absl::Status CheckDatacenter(absl::string_view field, absl::string_view name);
absl::Status NotFound(absl::string_view id);
bool IsDeletingOrDeleted(const v1::ImageTemplate& t);
absl::Status RequireActive(const v1::ImageTemplate& t, absl::string_view action);
absl::Status RequireNotDeleting(const v1::ImageTemplate& t);
// Whether the caller's account sees `t`; `shared` says whether `t` is shared
// with it.
bool Visible(const Caller& caller, const v1::ImageTemplate& t, bool shared);
// Owners with `permission`, or operators, may change a visible template.
absl::Status CheckMayChange(const Caller& caller, const v1::ImageTemplate& t,
                            v1::Permission permission);
v1::ResourceReference TemplateRef(absl::string_view id);
absl::Status Unimplemented(absl::string_view what);
// The account whose audit log records a call on `t`: the caller's, except
// that an operator's change is recorded for the template's owner. A refused
// attempt by another account (a share or a public template) stays in that
// account's log, so the owner never sees its users, keys or addresses.
std::string AuditAccount(const Caller& caller, const v1::ImageTemplate& t);
// Audit events name the full gRPC method, as every other service's do.
std::string FullMethodName(absl::string_view method);
// For a repeated call: what the call's own checks would refuse for this
// caller now (a permission or the source server's device access lost since
// the first call), or OK.
absl::Status RecheckReplay(const Caller& caller, absl::string_view method,
                           const v1::ResourceReference& target);

// Records a mutating call's outcome in `audit_account`'s log (an operation's
// id when it started one) and passes the result through.
template <typename Response>
absl::StatusOr<Response> Audited(AuditLog& audit, const Caller& caller,
                                 absl::string_view audit_account, absl::string_view method,
                                 const v1::ResourceReference& target,
                                 absl::string_view request_id, absl::StatusOr<Response> result) {
  std::string operation_id;
  if constexpr (std::is_same_v<Response, v1::Operation>) {
    if (result.ok()) operation_id = result->id();
  }
  audit.Record(caller, audit_account, FullMethodName(method), target, result.status(),
               request_id, operation_id);
  return result;
}

}  // namespace template_manager_internal

template <typename Response>
absl::StatusOr<Response> ImageTemplateManager::Replay(
    const Caller& caller, absl::string_view method,
    const imagetemplates::v1::ResourceReference& target, const std::string& stored) {
  RETURN_IF_ERROR(template_manager_internal::RecheckReplay(caller, method, target));
  Response response;
  if (!response.ParseFromString(stored)) {
    return absl::InternalError("stored response of request_id does not parse");
  }
  if constexpr (std::is_same_v<Response, imagetemplates::v1::Operation>) {
    // A repeated call returns the operation as it is now.
    return deps_.operations->GetOperation(response.id());
  }
  return response;
}

template <typename Response>
absl::StatusOr<Response> ImageTemplateManager::Mutation(
    const Caller& caller, absl::string_view method, const google::protobuf::Message& request,
    absl::string_view request_id, const imagetemplates::v1::ResourceReference& target,
    const std::function<absl::StatusOr<Response>(std::string& audit_account)>& body) {
  std::string audit_account = caller.account_id;
  auto finish = [&](absl::StatusOr<Response> result) -> absl::StatusOr<Response> {
    return template_manager_internal::Audited(*deps_.audit, caller, audit_account, method,
                                              target, request_id, std::move(result));
  };
  absl::Status valid = ValidateRequestId(request_id);
  if (!valid.ok()) return finish(valid);

  // Claimed before acting: of identical calls racing, one acts and the others
  // get its response. The request_id is the account's: any of its users
  // repeating the identical call gets the response (access is checked
  // again in Replay).
  const std::string fingerprint = RequestFingerprint(method, request);
  absl::StatusOr<RequestClaim> claim =
      deps_.request_ids->Claim(caller.account_id, request_id, fingerprint);
  if (!claim.ok()) return finish(claim.status());
  if (claim->response.has_value()) {
    return finish(Replay<Response>(caller, method, target, *claim->response));
  }
  if constexpr (std::is_same_v<Response, imagetemplates::v1::Operation>) {
    if (claim->orphan_time_micros.has_value()) {
      // An identical call died after its claim: if it started its operation
      // (the operation's own transaction), that is this call's result.
      absl::StatusOr<std::optional<imagetemplates::v1::Operation>> started =
          FindStartedOperation(caller, method, request_id, target, *claim->orphan_time_micros);
      if (!started.ok()) {
        // The claim stays: released, a retry would claim afresh and no
        // longer look for what the dead call started. It goes stale in a
        // minute and is taken over then, its first claim time kept.
        return finish(started.status());
      }
      if (started->has_value()) {
        absl::Status remembered = deps_.request_ids->Remember(
            caller.account_id, request_id, fingerprint, (*started)->SerializeAsString());
        if (!remembered.ok()) return finish(remembered);
        return finish(Replay<Response>(caller, method, target, (*started)->SerializeAsString()));
      }
    }
  }

  absl::StatusOr<Response> result = body(audit_account);
  if (result.ok()) {
    absl::Status remembered = deps_.request_ids->Remember(caller.account_id, request_id,
                                                          fingerprint, result->SerializeAsString());
    if (!remembered.ok()) return finish(remembered);
  } else {
    // A failed call is not remembered: a retry may act. If this fails the
    // claim is taken over after a minute (at once by the next process).
    deps_.request_ids->Release(caller.account_id, request_id).IgnoreError();
  }
  return finish(std::move(result));
}

template <typename Response>
absl::StatusOr<Response> ImageTemplateManager::AtomicMutation(
    const Caller& caller, absl::string_view method, const google::protobuf::Message& request,
    absl::string_view request_id, const imagetemplates::v1::ResourceReference& target,
    const std::function<absl::StatusOr<Response>(std::string& audit_account,
                                                 AtomicRequest& atomic)>& body) {
  std::string audit_account = caller.account_id;
  auto finish = [&](absl::StatusOr<Response> result) -> absl::StatusOr<Response> {
    return template_manager_internal::Audited(*deps_.audit, caller, audit_account, method,
                                              target, request_id, std::move(result));
  };
  absl::Status valid = ValidateRequestId(request_id);
  if (!valid.ok()) return finish(valid);

  AtomicRequest atomic;
  atomic.account_id = caller.account_id;
  atomic.request_id = std::string(request_id);
  atomic.fingerprint = RequestFingerprint(method, request);
  // A repeat of a finished call is answered before the call's own checks,
  // which may refuse now what they allowed then.
  absl::StatusOr<std::optional<std::string>> prior =
      deps_.request_ids->Find(atomic.account_id, request_id, atomic.fingerprint);
  if (!prior.ok()) return finish(prior.status());
  if (prior->has_value()) return finish(Replay<Response>(caller, method, target, **prior));

  if constexpr (!std::is_same_v<Response, imagetemplates::v1::Operation>) {
    // Every in-place change answers with the template as stored.
    atomic.encode = [](const imagetemplates::v1::ImageTemplate& t) {
      Response response;
      *response.mutable_image_template() = t;
      return response.SerializeAsString();
    };
  }
  absl::StatusOr<Response> result = body(audit_account, atomic);
  if (atomic.replayed.has_value()) {
    // An identical call committed first; this one changed nothing.
    return finish(Replay<Response>(caller, method, target, *atomic.replayed));
  }
  if (result.ok() && !atomic.remembered && !request_id.empty()) {
    // The body succeeded without changing the template (nothing to make
    // atomic with): remember on its own.
    absl::Status remembered = deps_.request_ids->Remember(
        atomic.account_id, request_id, atomic.fingerprint, result->SerializeAsString());
    if (!remembered.ok()) return finish(remembered);
  }
  return finish(std::move(result));
}

}  // namespace controlplane

#endif  // CONTROLPLANE_INTERNAL_IMAGE_TEMPLATE_MANAGER_PARTS_H_
