// ImageTemplateManager: construction, visibility, the read calls, and the
// helpers its other source files share (internal/image_template_manager_parts.h).
#include "controlplane/image_template_manager.h"

#include <algorithm>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/internal/image_template_manager_parts.h"
#include "controlplane/page_token.h"
#include "controlplane/validation.h"

namespace controlplane {
namespace {

constexpr int kMaxNameChars = 100;
constexpr int kMaxNoteChars = 1000;
constexpr int kMaxTags = 50;
constexpr int kMaxTagChars = 64;

}  // namespace

namespace template_manager_internal {

absl::Status CheckText(absl::string_view field, absl::string_view text, int max_chars) {
  // A single-line filter value: no newlines either.
  RETURN_IF_ERROR(ValidateText(field, text, max_chars));
  if (text.find_first_of("\n\r\t") != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat(field, ": must not contain control characters"));
  }
  return absl::OkStatus();
}

// The trimmed name, 1..100 printable characters.
absl::StatusOr<std::string> CheckName(absl::string_view name) {
  return ValidateName("name", name, kMaxNameChars);
}

absl::Status CheckNote(absl::string_view note) { return ValidateText("note", note, kMaxNoteChars); }

absl::StatusOr<std::vector<std::string>> CheckTags(
    const google::protobuf::RepeatedPtrField<std::string>& tags) {
  if (tags.size() > kMaxTags) {
    return absl::InvalidArgumentError(
        absl::StrCat("tags: at most ", kMaxTags, " tags (got ", tags.size(), ")"));
  }
  std::vector<std::string> result;
  absl::flat_hash_set<std::string> seen;
  for (const std::string& tag : tags) {
    ASSIGN_OR_RETURN(std::string trimmed, ValidateName("tags", tag, kMaxTagChars));
    if (!seen.insert(std::string(trimmed)).second) {
      return absl::InvalidArgumentError(absl::StrCat("tags: \"", trimmed, "\" is repeated"));
    }
    result.emplace_back(trimmed);
  }
  return result;
}

absl::Status CheckId(absl::string_view field, absl::string_view id) {
  return ValidateUuid(field, id);
}

absl::Status CheckDatacenter(absl::string_view field, absl::string_view name) {
  bool ok = !name.empty() && name.size() <= 32;
  for (char c : name) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrCat(field, ": a datacenter name is 1..32 characters of [a-z0-9-], like dal10"));
}

absl::Status NotFound(absl::string_view id) {
  return absl::NotFoundError(absl::StrCat("image template ", id, " not found"));
}

bool IsDeletingOrDeleted(const v1::ImageTemplate& t) {
  return t.status() == v1::IMAGE_TEMPLATE_STATUS_DELETING ||
         t.status() == v1::IMAGE_TEMPLATE_STATUS_DELETED;
}

absl::Status RequireActive(const v1::ImageTemplate& t, absl::string_view action) {
  if (t.status() == v1::IMAGE_TEMPLATE_STATUS_ACTIVE) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "image template ", t.id(), " is ", v1::ImageTemplateStatus_Name(t.status()),
      "; only ACTIVE templates can be ", action));
}

absl::Status RequireNotDeleting(const v1::ImageTemplate& t) {
  if (!IsDeletingOrDeleted(t)) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat(
      "image template ", t.id(), " is ", v1::ImageTemplateStatus_Name(t.status())));
}

// Whether the caller's account sees `t`; `shared` says whether `t` is shared
// with it.
bool Visible(const Caller& caller, const v1::ImageTemplate& t, bool shared) {
  if (caller.is_operator || t.owner_account_id() == caller.account_id) return true;
  if (t.disabled() || IsDeletingOrDeleted(t)) return false;
  return t.visibility() == v1::VISIBILITY_PUBLIC || shared;
}

// Owners with `permission`, or operators, may change a visible template.
absl::Status CheckMayChange(const Caller& caller, const v1::ImageTemplate& t,
                            v1::Permission permission) {
  if (caller.is_operator) return absl::OkStatus();
  if (t.owner_account_id() != caller.account_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "image template ", t.id(), " belongs to another account; only its owner can change it"));
  }
  if (!caller.Has(permission)) {
    return absl::PermissionDeniedError(
        absl::StrCat("this needs ", v1::Permission_Name(permission),
                     "; ask a user manager of your account to grant it"));
  }
  return absl::OkStatus();
}

v1::ResourceReference TemplateRef(absl::string_view id) {
  v1::ResourceReference ref;
  ref.set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
  ref.set_id(std::string(id));
  return ref;
}

absl::Status Unimplemented(absl::string_view what) {
  return absl::UnimplementedError(absl::StrCat(
      what, " is not available yet: this control plane has no storage orchestration "
            "(it comes with the create/deploy issue); every check before it passed"));
}

// The account whose audit log records a call on `t`: the caller's, except
// that an operator's change is recorded for the template's owner. A refused
// attempt by another account (a share or a public template) stays in that
// account's log, so the owner never sees its users, keys or addresses.
std::string AuditAccount(const Caller& caller, const v1::ImageTemplate& t) {
  return caller.is_operator ? t.owner_account_id() : caller.account_id;
}

// Audit events name the full gRPC method, as every other service's do.
std::string FullMethodName(absl::string_view method) {
  return absl::StrCat("/imagetemplates.v1.ImageTemplateService/", method);
}

namespace {

// The permissions a call of `method` needs whatever its target (operators
// hold them all); a repeated call is checked against them again, since its
// stored response is returned without running the call's own checks.
std::vector<v1::Permission> PermissionsOf(absl::string_view method) {
  if (method == "CreateImageTemplate") {
    return {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_VIEW};
  }
  if (method == "DeployImageTemplate") return {v1::PERMISSION_SERVER_PROVISION};
  if (method == "PublishImageTemplate" || method == "UnpublishImageTemplate") {
    return {v1::PERMISSION_PUBLIC_IMAGE_MANAGE};
  }
  return {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE};
}

}  // namespace

// For a repeated call: what the call's own checks would refuse for this
// caller now (a permission or the source server's device access lost since
// the first call), or OK.
absl::Status RecheckReplay(const Caller& caller, absl::string_view method,
                           const v1::ResourceReference& target) {
  if (target.type() == v1::RESOURCE_TYPE_SERVER && !caller.CanAccessServer(target.id())) {
    return absl::NotFoundError(absl::StrCat("server ", target.id(), " not found"));
  }
  for (v1::Permission p : PermissionsOf(method)) {
    if (!caller.Has(p)) {
      return absl::PermissionDeniedError(
          absl::StrCat("this needs ", v1::Permission_Name(p),
                       "; ask a user manager of your account to grant it"));
    }
  }
  return absl::OkStatus();
}

}  // namespace template_manager_internal

namespace v1 = imagetemplates::v1;
using template_manager_internal::AuditAccount;
using template_manager_internal::CheckId;
using template_manager_internal::CheckMayChange;
using template_manager_internal::CheckText;
using template_manager_internal::FullMethodName;
using template_manager_internal::NotFound;
using template_manager_internal::Visible;

ImageTemplateManager::ImageTemplateManager(Dependencies deps) : deps_(std::move(deps)) {
  if (!deps_.now_micros) deps_.now_micros = NowMicros;
  // The create path enforces the same quotas when it inserts and records.
  if (deps_.create != nullptr) deps_.create->UseQuotas(deps_.quotas);
}

void ImageTemplateManager::AuditUnauthenticated(absl::string_view peer,
                                                absl::string_view method,
                                                const google::protobuf::Message& request,
                                                const absl::Status& status) {
  const auto* descriptor = request.GetDescriptor();
  const auto* reflection = request.GetReflection();
  auto text = [&](const char* name) -> std::string {
    const auto* field = descriptor->FindFieldByName(name);
    if (field == nullptr || field->type() != google::protobuf::FieldDescriptor::TYPE_STRING ||
        field->is_repeated()) {
      return "";
    }
    return reflection->GetString(request, field);
  };
  v1::ResourceReference target;
  if (descriptor->FindFieldByName("server_id") != nullptr) {
    target.set_type(v1::RESOURCE_TYPE_SERVER);
    target.set_id(text("server_id"));
  } else {
    target.set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
    target.set_id(descriptor->FindFieldByName("image_template_id") != nullptr
                      ? text("image_template_id")
                      : text("id"));
  }
  Caller anonymous;
  anonymous.peer = std::string(peer);
  deps_.audit->Record(anonymous, "", FullMethodName(method), target, status, text("request_id"));
}

absl::StatusOr<v1::ImageTemplate> ImageTemplateManager::LoadVisible(const Caller& caller,
                                                                    absl::string_view id,
                                                                    absl::string_view field) {
  ASSIGN_OR_RETURN(std::shared_ptr<const EncodedTemplate> t,
                   LoadVisibleEncoded(caller, id, field));
  return t->image_template;
}

absl::StatusOr<std::shared_ptr<const EncodedTemplate>> ImageTemplateManager::LoadVisibleEncoded(
    const Caller& caller, absl::string_view id, absl::string_view field) {
  RETURN_IF_ERROR(CheckId(field, id));
  absl::StatusOr<std::shared_ptr<const EncodedTemplate>> encoded =
      deps_.templates->GetEncodedTemplate(id);
  if (absl::IsNotFound(encoded.status())) return NotFound(id);
  RETURN_IF_ERROR(encoded.status());
  const v1::ImageTemplate& t = (*encoded)->image_template;
  bool shared = false;
  if (!caller.is_operator && t.owner_account_id() != caller.account_id &&
      t.visibility() != v1::VISIBILITY_PUBLIC) {
    ASSIGN_OR_RETURN(shared, deps_.templates->IsSharedWith(id, caller.account_id));
  }
  if (!Visible(caller, t, shared)) return NotFound(id);
  return encoded;
}

absl::StatusOr<v1::ImageTemplate> ImageTemplateManager::ChangeTemplate(
    const Caller& caller, absl::string_view id, std::string& audit_account,
    AtomicRequest* atomic, const Change& change, v1::Permission permission) {
  RETURN_IF_ERROR(CheckId("id", id));
  const int64_t now = deps_.now_micros();
  const bool idempotent = atomic != nullptr && !atomic->request_id.empty();
  absl::StatusOr<v1::ImageTemplate> result =
      deps_.templates->MutateTemplate(id, [&](TemplateTransaction& txn) -> absl::Status {
        if (idempotent) {
          // Inside the transaction: of identical calls racing, the first to
          // commit acts and the others get its response.
          ASSIGN_OR_RETURN(std::optional<std::string> prior,
                           deps_.request_ids->FindInTransaction(
                               atomic->account_id, atomic->request_id, atomic->fingerprint));
          if (prior.has_value()) {
            atomic->replayed = std::move(prior);
            return absl::AbortedError("request_id: an identical call finished first");
          }
        }
        v1::ImageTemplate& t = txn.image_template();
        bool shared = false;
        if (!caller.is_operator && t.owner_account_id() != caller.account_id) {
          ASSIGN_OR_RETURN(shared, txn.IsSharedWith(caller.account_id));
        }
        if (!Visible(caller, t, shared)) return NotFound(id);
        audit_account = AuditAccount(caller, t);
        RETURN_IF_ERROR(CheckMayChange(caller, t, permission));
        ASSIGN_OR_RETURN(bool changed, change(txn));
        if (changed) *t.mutable_update_time() = ToTimestamp(now);
        if (idempotent) {
          // The store writes `t` back as it is (identity fields never
          // change), so this is the response the call returns.
          RETURN_IF_ERROR(deps_.request_ids->Remember(atomic->account_id, atomic->request_id,
                                                      atomic->fingerprint, atomic->encode(t)));
        }
        return absl::OkStatus();
      });
  if (absl::IsNotFound(result.status())) return NotFound(id);
  if (result.ok() && idempotent) atomic->remembered = true;
  return result;
}

absl::StatusOr<std::optional<v1::Operation>> ImageTemplateManager::FindStartedOperation(
    const Caller& caller, absl::string_view method, absl::string_view request_id,
    const v1::ResourceReference& target, int64_t since_micros) {
  OperationQuery query;
  query.target_id = target.id();
  if (method == "CreateImageTemplate") {
    query.kinds = {v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE};
  } else if (method == "DeployImageTemplate") {
    query.kinds = {v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE};
  } else if (method == "AddImageTemplateLocations") {
    query.kinds = {v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE};
  } else {
    return std::nullopt;
  }
  query.limit = 100;
  // Newest first; the call that died started at most one, after its claim.
  while (true) {
    ASSIGN_OR_RETURN(std::vector<v1::Operation> page, deps_.operations->ListOperations(query));
    for (v1::Operation& op : page) {
      if (FromTimestamp(op.create_time()) < since_micros) return std::nullopt;
      // Any user of the account, as a replay answers: the request_id is the
      // account's, and the fingerprint does not name the user.
      if (op.request_id() == request_id && op.account_id() == caller.account_id) {
        return std::move(op);
      }
    }
    if (static_cast<int>(page.size()) < query.limit) return std::nullopt;
    OperationCursor after;
    after.create_time_us = FromTimestamp(page.back().create_time());
    after.id = page.back().id();
    query.after = after;
  }
}

absl::StatusOr<v1::GetImageTemplateResponse> ImageTemplateManager::GetImageTemplate(
    const Caller& caller, const v1::GetImageTemplateRequest& request) {
  v1::GetImageTemplateResponse response;
  ASSIGN_OR_RETURN(*response.mutable_image_template(), LoadVisible(caller, request.id(), "id"));
  return response;
}

absl::StatusOr<std::shared_ptr<const EncodedTemplate>>
ImageTemplateManager::GetEncodedImageTemplate(const Caller& caller,
                                              const v1::GetImageTemplateRequest& request) {
  return LoadVisibleEncoded(caller, request.id(), "id");
}

absl::StatusOr<v1::ListImageTemplatesResponse> ImageTemplateManager::ListImageTemplates(
    const Caller& caller, const v1::ListImageTemplatesRequest& request) {
  ASSIGN_OR_RETURN(TemplatePage page, ListImageTemplatePage(caller, request));
  v1::ListImageTemplatesResponse response;
  for (const auto& t : page.image_templates) *response.add_image_templates() = t->image_template;
  response.set_next_page_token(std::move(page.next_page_token));
  return response;
}

absl::StatusOr<ImageTemplateManager::TemplatePage> ImageTemplateManager::ListImageTemplatePage(
    const Caller& caller, const v1::ListImageTemplatesRequest& request) {
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  if (request.name_contains().empty()) {
    // Any name.
  } else {
    RETURN_IF_ERROR(CheckText("name_contains", request.name_contains(), kMaxNameChars));
  }
  if (!request.owner_account_id().empty()) {
    RETURN_IF_ERROR(CheckId("owner_account_id", request.owner_account_id()));
  }
  if (!v1::Visibility_IsValid(request.visibility())) {
    return absl::InvalidArgumentError(
        absl::StrCat("visibility: unknown value ", request.visibility()));
  }
  if (!v1::ImageTemplateStatus_IsValid(request.status())) {
    return absl::InvalidArgumentError(absl::StrCat("status: unknown value ", request.status()));
  }
  if (!v1::ImageTemplateOrderBy_IsValid(request.order_by())) {
    return absl::InvalidArgumentError(
        absl::StrCat("order_by: unknown value ", request.order_by()));
  }
  if (!request.tag().empty()) {
    RETURN_IF_ERROR(CheckText("tag", request.tag(), kMaxTagChars));
  }

  TemplateQuery query;
  query.viewer_account_id = caller.account_id;
  query.all_accounts = caller.is_operator;
  query.name_contains = request.name_contains();
  query.owner_account_id = request.owner_account_id();
  query.visibility = request.visibility();
  query.status = request.status();
  query.tag = request.tag();
  query.include_deprecated = request.include_deprecated();
  query.order = request.order_by() == v1::IMAGE_TEMPLATE_ORDER_BY_NAME ? TemplateOrder::kName
                                                                      : TemplateOrder::kCreateTime;
  query.descending = request.descending();
  query.limit = page_size + 1;

  const std::string filters = FilterKey(
      {"templates", caller.account_id, caller.is_operator ? "op" : "", request.name_contains(),
       request.owner_account_id(), absl::StrCat(request.visibility()),
       absl::StrCat(request.status()), request.tag(), request.include_deprecated() ? "1" : "0",
       query.order == TemplateOrder::kName ? "name" : "time", request.descending() ? "1" : "0"});
  ASSIGN_OR_RETURN(std::vector<std::string> after,
                   DecodePageToken(request.page_token(), filters));
  if (!after.empty()) {
    TemplateCursor cursor;
    bool ok = after.size() == 2;
    if (ok && query.order == TemplateOrder::kName) {
      cursor.name = after[0];
    } else if (ok) {
      ok = absl::SimpleAtoi(after[0], &cursor.create_time_us);
    }
    if (!ok) return absl::InvalidArgumentError("page_token: damaged; start again without it");
    cursor.id = after[1];
    query.after = cursor;
  }

  TemplatePage page;
  ASSIGN_OR_RETURN(page.image_templates, deps_.templates->ListEncodedTemplates(query));
  const bool more = static_cast<int>(page.image_templates.size()) > page_size;
  if (more) page.image_templates.resize(page_size);
  if (more) {
    const v1::ImageTemplate& last = page.image_templates.back()->image_template;
    std::string key = query.order == TemplateOrder::kName
                          ? last.name()
                          : absl::StrCat(FromTimestamp(last.create_time()));
    page.next_page_token = EncodePageToken({key, last.id()}, filters);
  }
  return page;
}

absl::StatusOr<v1::ListImageTemplateSharesResponse>
ImageTemplateManager::ListImageTemplateShares(const Caller& caller,
                                              const v1::ListImageTemplateSharesRequest& request) {
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  ASSIGN_OR_RETURN(v1::ImageTemplate t, LoadVisible(caller, request.id(), "id"));
  if (!caller.is_operator && t.owner_account_id() != caller.account_id) {
    return absl::PermissionDeniedError(absl::StrCat(
        "only the owner of image template ", t.id(), " can list its shares"));
  }
  const std::string filters = FilterKey({"shares", request.id()});
  ASSIGN_OR_RETURN(std::vector<std::string> after,
                   DecodePageToken(request.page_token(), filters));
  ASSIGN_OR_RETURN(std::vector<v1::ImageTemplateShare> shares,
                   deps_.templates->ListShares(request.id(), after.empty() ? "" : after[0],
                                               page_size + 1));
  v1::ListImageTemplateSharesResponse response;
  const bool more = static_cast<int>(shares.size()) > page_size;
  if (more) shares.resize(page_size);
  for (auto& share : shares) *response.add_shares() = std::move(share);
  if (more) {
    response.set_next_page_token(
        EncodePageToken({response.shares(page_size - 1).account_id()}, filters));
  }
  return response;
}

absl::StatusOr<v1::ListImageTemplateLocationsResponse>
ImageTemplateManager::ListImageTemplateLocations(
    const Caller& caller, const v1::ListImageTemplateLocationsRequest& request) {
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  ASSIGN_OR_RETURN(v1::ImageTemplate t, LoadVisible(caller, request.id(), "id"));
  const std::string filters = FilterKey({"locations", request.id()});
  ASSIGN_OR_RETURN(std::vector<std::string> after,
                   DecodePageToken(request.page_token(), filters));
  // A template has few locations; page over them by datacenter name.
  std::vector<v1::ImageTemplateLocation> locations(t.locations().begin(), t.locations().end());
  std::sort(locations.begin(), locations.end(),
            [](const auto& a, const auto& b) { return a.datacenter() < b.datacenter(); });
  v1::ListImageTemplateLocationsResponse response;
  for (const auto& location : locations) {
    if (!after.empty() && location.datacenter() <= after[0]) continue;
    if (response.locations_size() == page_size) {
      response.set_next_page_token(EncodePageToken(
          {response.locations(page_size - 1).datacenter()}, filters));
      break;
    }
    *response.add_locations() = location;
  }
  return response;
}

}  // namespace controlplane
