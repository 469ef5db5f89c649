#include "controlplane/image_template_manager.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <optional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "controlplane/idempotency.h"
#include "controlplane/ids.h"
#include "controlplane/page_token.h"
#include "controlplane/validation.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

constexpr int kMaxNameChars = 100;
constexpr int kMaxNoteChars = 1000;
constexpr int kMaxTags = 50;
constexpr int kMaxTagChars = 64;
constexpr int kMaxShareAccounts = 100;
constexpr int kMaxQuantity = 20;
constexpr int kMaxDatacenters = 20;
constexpr size_t kMaxUserDataBytes = 64 * 1024;

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

bool IsDnsLabel(absl::string_view label, size_t max_len) {
  if (label.empty() || label.size() > max_len) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  for (char c : label) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
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

bool IsIpv4(absl::string_view text) {
  in_addr parsed;
  return inet_pton(AF_INET, std::string(text).c_str(), &parsed) == 1;
}

bool IsIpLiteral(absl::string_view text) {
  in6_addr parsed;
  return IsIpv4(text) || inet_pton(AF_INET6, std::string(text).c_str(), &parsed) == 1;
}

// IP literals only: they go into the server's network-config YAML as they
// are.
absl::Status CheckStaticAddress(const v1::StaticNetworkAddress& a) {
  const std::vector<absl::string_view> parts = absl::StrSplit(a.address(), '/');
  int prefix = -1;
  if (parts.size() != 2 || !IsIpv4(parts[0]) || parts[1].empty() || parts[1].size() > 2 ||
      !std::all_of(parts[1].begin(), parts[1].end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(parts[1], &prefix) || prefix > 32) {
    return absl::InvalidArgumentError(
        "networks.static_address.address: an IPv4 address with prefix length, like "
        "10.0.0.5/24");
  }
  if (!a.gateway().empty() && !IsIpv4(a.gateway())) {
    return absl::InvalidArgumentError(
        "networks.static_address.gateway: an IPv4 address, like 10.0.0.1, or empty for the "
        "pool's");
  }
  if (a.dns_servers_size() > 4) {
    return absl::InvalidArgumentError("networks.static_address.dns_servers: at most 4");
  }
  for (const std::string& dns : a.dns_servers()) {
    if (!IsIpLiteral(dns)) {
      return absl::InvalidArgumentError(
          "networks.static_address.dns_servers: each an IPv4 or IPv6 address, like 10.0.0.2");
    }
  }
  return absl::OkStatus();
}

// Audit events name the full gRPC method, as every other service's do.
std::string FullMethodName(absl::string_view method) {
  return absl::StrCat("/imagetemplates.v1.ImageTemplateService/", method);
}

}  // namespace

ImageTemplateManager::ImageTemplateManager(Dependencies deps) : deps_(std::move(deps)) {
  if (!deps_.now_micros) deps_.now_micros = NowMicros;
  // The create path enforces the same quotas when it inserts and records.
  if (deps_.create != nullptr) deps_.create->UseQuotas(deps_.quotas);
}

template <typename Response>
absl::StatusOr<Response> ImageTemplateManager::Mutation(
    const Caller& caller, absl::string_view method, const google::protobuf::Message& request,
    absl::string_view request_id, const v1::ResourceReference& target,
    const std::function<absl::StatusOr<Response>(std::string& audit_account)>& body) {
  std::string audit_account = caller.account_id;
  auto finish = [&](absl::StatusOr<Response> result) -> absl::StatusOr<Response> {
    std::string operation_id;
    if constexpr (std::is_same_v<Response, v1::Operation>) {
      if (result.ok()) operation_id = result->id();
    }
    deps_.audit->Record(caller, audit_account, FullMethodName(method), target, result.status(),
                        request_id, operation_id);
    return result;
  };
  absl::Status valid = ValidateRequestId(request_id);
  if (!valid.ok()) return finish(valid);

  // Claimed before acting: of identical calls racing, one acts and the others
  // get its response.
  const std::string fingerprint = RequestFingerprint(method, request);
  absl::StatusOr<std::optional<std::string>> prior =
      deps_.request_ids->Claim(caller.account_id, request_id, fingerprint);
  if (!prior.ok()) return finish(prior.status());
  if (prior->has_value()) {
    Response response;
    if (!response.ParseFromString(**prior)) {
      return finish(absl::InternalError("stored response of request_id does not parse"));
    }
    if constexpr (std::is_same_v<Response, v1::Operation>) {
      // A repeated call returns the operation as it is now.
      return finish(deps_.operations->GetOperation(response.id()));
    }
    return finish(response);
  }

  absl::StatusOr<Response> result = body(audit_account);
  if (result.ok()) {
    absl::Status remembered = deps_.request_ids->Remember(caller.account_id, request_id,
                                                          fingerprint, result->SerializeAsString());
    if (!remembered.ok()) return finish(remembered);
  } else {
    // A failed call is not remembered: a retry may act. If this fails the
    // claim goes stale and is taken over after a minute.
    deps_.request_ids->Release(caller.account_id, request_id).IgnoreError();
  }
  return finish(std::move(result));
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
    const Change& change, v1::Permission permission) {
  RETURN_IF_ERROR(CheckId("id", id));
  const int64_t now = deps_.now_micros();
  absl::StatusOr<v1::ImageTemplate> result =
      deps_.templates->MutateTemplate(id, [&](TemplateTransaction& txn) -> absl::Status {
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
        return absl::OkStatus();
      });
  if (absl::IsNotFound(result.status())) return NotFound(id);
  return result;
}

absl::StatusOr<v1::Operation> ImageTemplateManager::CreateImageTemplate(
    const Caller& caller, const v1::CreateImageTemplateRequest& request) {
  v1::ResourceReference target;
  target.set_type(v1::RESOURCE_TYPE_SERVER);
  target.set_id(request.server_id());
  return Mutation<v1::Operation>(
      caller, "CreateImageTemplate", request, request.request_id(), target,
      [&](std::string&) -> absl::StatusOr<v1::Operation> {
        RETURN_IF_ERROR(CheckId("server_id", request.server_id()));
        ASSIGN_OR_RETURN(std::string name, CheckName(request.name()));
        RETURN_IF_ERROR(CheckNote(request.note()));
        ASSIGN_OR_RETURN(std::vector<std::string> tags, CheckTags(request.tags()));
        absl::flat_hash_set<int> indexes;
        for (int index : request.data_disk_indexes()) {
          if (index < 0 || index > 15) {
            return absl::InvalidArgumentError(absl::StrCat(
                "data_disk_indexes: ", index, " is not a device index (0..15)"));
          }
          if (!indexes.insert(index).second) {
            return absl::InvalidArgumentError(
                absl::StrCat("data_disk_indexes: ", index, " is repeated"));
          }
        }
        for (v1::Permission p :
             {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_VIEW}) {
          if (!caller.Has(p)) {
            return absl::PermissionDeniedError(absl::StrCat(
                "creating an image template needs ", v1::Permission_Name(p),
                "; ask a user manager of your account to grant it"));
          }
        }
        // Servers outside the user's device access are invisible to it.
        if (!caller.CanAccessServer(request.server_id())) {
          return absl::NotFoundError(absl::StrCat("server ", request.server_id(), " not found"));
        }
        ASSIGN_OR_RETURN(bool taken, deps_.templates->NameInUse(caller.account_id, name));
        if (taken) {
          return absl::AlreadyExistsError(absl::StrCat(
              "name: the account already has an image template named \"", name,
              "\"; choose another name"));
        }
        // A quick answer for the caller's own servers; CreateWorkflow::Begin
        // checks the owner's (the server's account, also for an operator)
        // again under the lock it inserts under.
        if (!caller.is_operator) {
          RETURN_IF_ERROR(
              CheckTemplateQuota(deps_.quotas, *deps_.templates, caller.account_id, 1, 0));
        }
        if (deps_.create == nullptr) return Unimplemented("capturing a server");
        ASSIGN_OR_RETURN(v1::Operation op, deps_.create->Begin(caller, request, name, tags,
                                                               deps_.now_micros()));
        deps_.operations->NotifyChange();
        return deps_.operations->GetOperation(op.id());
      });
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

absl::StatusOr<v1::UpdateImageTemplateResponse> ImageTemplateManager::UpdateImageTemplate(
    const Caller& caller, const v1::UpdateImageTemplateRequest& request) {
  return Mutation<v1::UpdateImageTemplateResponse>(
      caller, "UpdateImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::UpdateImageTemplateResponse> {
        RETURN_IF_ERROR(CheckId("id", request.id()));
        ASSIGN_OR_RETURN(auto paths,
                         ValidateUpdateMask(request.update_mask(), {"name", "note", "tags"}));
        const bool set_name = paths.contains("name");
        const bool set_note = paths.contains("note");
        const bool set_tags = paths.contains("tags");
        std::string name;
        std::vector<std::string> tags;
        if (set_name) {
          ASSIGN_OR_RETURN(name, CheckName(request.name()));
        }
        if (set_note) RETURN_IF_ERROR(CheckNote(request.note()));
        if (set_tags) {
          ASSIGN_OR_RETURN(tags, CheckTags(request.tags()));
        }
        v1::UpdateImageTemplateResponse response;
        ASSIGN_OR_RETURN(
            *response.mutable_image_template(),
            ChangeTemplate(caller, request.id(), audit_account,
                           [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                             v1::ImageTemplate& t = txn.image_template();
                             RETURN_IF_ERROR(RequireNotDeleting(t));
                             if (set_name) t.set_name(name);
                             if (set_note) t.set_note(request.note());
                             if (set_tags) {
                               t.clear_tags();
                               for (const std::string& tag : tags) t.add_tags(tag);
                             }
                             return true;
                           }));
        return response;
      });
}

absl::StatusOr<v1::Operation> ImageTemplateManager::DeleteImageTemplate(
    const Caller& caller, const v1::DeleteImageTemplateRequest& request) {
  return Mutation<v1::Operation>(
      caller, "DeleteImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::Operation> {
        const int64_t now = deps_.now_micros();
        v1::Operation op;
        op.set_id(NewUuid());
        op.set_kind(v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE);
        op.set_user_id(caller.user_id);
        op.set_request_id(request.request_id());
        op.set_state(v1::OPERATION_STATE_PENDING);
        op.set_image_template_id(request.id());
        *op.mutable_target() = TemplateRef(request.id());
        *op.mutable_create_time() = ToTimestamp(now);
        *op.mutable_update_time() = ToTimestamp(now);
        RETURN_IF_ERROR(
            ChangeTemplate(caller, request.id(), audit_account,
                           [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                             v1::ImageTemplate& t = txn.image_template();
                             if (t.delete_protected()) {
                               return absl::FailedPreconditionError(absl::StrCat(
                                   "image template ", t.id(),
                                   " is delete protected; clear it with SetDeleteProtection "
                                   "first"));
                             }
                             if (t.status() == v1::IMAGE_TEMPLATE_STATUS_CREATING) {
                               return absl::FailedPreconditionError(absl::StrCat(
                                   "image template ", t.id(),
                                   " is being created; cancel its create operation ",
                                   t.create_operation_id(), " instead"));
                             }
                             // A DELETING template whose delete failed (a
                             // storage node was down) may be deleted again.
                             if (t.status() == v1::IMAGE_TEMPLATE_STATUS_DELETING) {
                               ASSIGN_OR_RETURN(int64_t deleting,
                                                txn.CountUnfinishedOperations(
                                                    {v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE}));
                               if (deleting > 0) RETURN_IF_ERROR(RequireNotDeleting(t));
                             } else {
                               RETURN_IF_ERROR(RequireNotDeleting(t));
                             }
                             ASSIGN_OR_RETURN(
                                 int64_t running,
                                 txn.CountUnfinishedOperations(
                                     {v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE,
                                      v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE}));
                             if (running > 0) {
                               return absl::FailedPreconditionError(absl::StrCat(
                                   running, " deploy or copy operations from image template ",
                                   t.id(), " are running; wait for them or cancel them"));
                             }
                             // Shares and the public listing end at once.
                             RETURN_IF_ERROR(txn.RemoveAllShares());
                             t.set_visibility(v1::VISIBILITY_PRIVATE);
                             t.set_status(v1::IMAGE_TEMPLATE_STATUS_DELETING);
                             op.set_account_id(t.owner_account_id());
                             OperationInternals internals;
                             internals.params = request.SerializeAsString();
                             RETURN_IF_ERROR(txn.InsertOperation(op, internals));
                             return true;
                           })
                .status());
        deps_.operations->NotifyChange();
        // As GetOperation shows it.
        return deps_.operations->GetOperation(op.id());
      });
}

absl::StatusOr<v1::Operation> ImageTemplateManager::DeployImageTemplate(
    const Caller& caller, const v1::DeployImageTemplateRequest& request) {
  return Mutation<v1::Operation>(
      caller, "DeployImageTemplate", request, request.request_id(),
      TemplateRef(request.image_template_id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::Operation> {
        RETURN_IF_ERROR(CheckId("image_template_id", request.image_template_id()));
        RETURN_IF_ERROR(CheckDatacenter("datacenter", request.datacenter()));
        if (request.quantity() < 1 || request.quantity() > kMaxQuantity) {
          return absl::InvalidArgumentError(absl::StrCat(
              "quantity: must be 1..", kMaxQuantity, " (got ", request.quantity(), ")"));
        }
        const bool has_names = request.hostnames_size() > 0;
        const bool has_prefix = !request.hostname_prefix().empty();
        if (has_names == has_prefix) {
          return absl::InvalidArgumentError(
              "hostnames: set exactly one of hostnames and hostname_prefix");
        }
        if (has_names) {
          if (request.hostnames_size() != request.quantity()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "hostnames: ", request.hostnames_size(), " given for quantity ",
                request.quantity(), "; give one per instance"));
          }
          absl::flat_hash_set<std::string> seen;
          for (const std::string& hostname : request.hostnames()) {
            if (!IsDnsLabel(hostname, 63)) {
              return absl::InvalidArgumentError(absl::StrCat(
                  "hostnames: \"", hostname,
                  "\" is not a hostname (1..63 letters, digits and inner hyphens)"));
            }
            if (!seen.insert(absl::AsciiStrToLower(hostname)).second) {
              return absl::InvalidArgumentError(
                  absl::StrCat("hostnames: \"", hostname, "\" is repeated"));
            }
          }
        } else if (!IsDnsLabel(request.hostname_prefix(), 60)) {
          return absl::InvalidArgumentError(
              "hostname_prefix: 1..60 letters, digits and inner hyphens");
        }
        if (!request.domain().empty()) {
          bool ok = request.domain().size() <= 189;
          for (absl::string_view label : absl::StrSplit(request.domain(), '.')) {
            ok = ok && IsDnsLabel(label, 63);
          }
          if (!ok) {
            return absl::InvalidArgumentError(
                "domain: a DNS domain of up to 189 characters, like example.com");
          }
        }
        if (request.networks_size() > 0 && request.networks_size() != request.quantity()) {
          return absl::InvalidArgumentError(absl::StrCat(
              "networks: ", request.networks_size(), " given for quantity ", request.quantity(),
              "; give none or one per instance"));
        }
        for (const v1::InstanceNetwork& network : request.networks()) {
          if (network.address_case() == v1::InstanceNetwork::ADDRESS_NOT_SET) {
            return absl::InvalidArgumentError(
                "networks: each entry needs ip_pool_id, static_address or dhcp");
          }
          if (network.address_case() == v1::InstanceNetwork::kIpPoolId) {
            RETURN_IF_ERROR(CheckId("networks.ip_pool_id", network.ip_pool_id()));
          }
          if (network.address_case() == v1::InstanceNetwork::kStaticAddress) {
            RETURN_IF_ERROR(CheckStaticAddress(network.static_address()));
          }
        }
        if (request.user_data().size() > kMaxUserDataBytes) {
          return absl::InvalidArgumentError("user_data: at most 64 KiB");
        }
        // Audited in the caller's account (the default), which the new
        // servers join: a deploy of a shared or public template tells its
        // owner nothing about the deployer.
        ASSIGN_OR_RETURN(v1::ImageTemplate t,
                         LoadVisible(caller, request.image_template_id(), "image_template_id"));
        if (!caller.Has(v1::PERMISSION_SERVER_PROVISION)) {
          return absl::PermissionDeniedError(
              "deploying needs PERMISSION_SERVER_PROVISION; ask a user manager of your account "
              "to grant it");
        }
        if (t.disabled()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "image template ", t.id(), " is disabled; its owner must enable it first"));
        }
        RETURN_IF_ERROR(RequireActive(t, "deployed"));
        absl::flat_hash_set<int> sized;
        for (const v1::DeployDiskSize& size : request.disk_sizes()) {
          auto disk = std::find_if(t.disks().begin(), t.disks().end(), [&](const auto& d) {
            return d.device_index() == size.device_index();
          });
          if (disk == t.disks().end()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "disk_sizes: the template has no disk ", size.device_index()));
          }
          if (!sized.insert(size.device_index()).second) {
            return absl::InvalidArgumentError(
                absl::StrCat("disk_sizes: disk ", size.device_index(), " is repeated"));
          }
          if (size.size_bytes() < disk->logical_size_bytes() || size.size_bytes() % 512 != 0) {
            return absl::InvalidArgumentError(absl::StrCat(
                "disk_sizes: disk ", size.device_index(), " needs a multiple of 512 of at least ",
                disk->logical_size_bytes(), " bytes"));
          }
        }
        bool available = false;
        for (const auto& location : t.locations()) {
          available = available ||
                      (location.datacenter() == request.datacenter() &&
                       location.status() == v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
        }
        if (!available) {
          std::vector<std::string> where;
          for (const auto& location : t.locations()) {
            if (location.status() == v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE) {
              where.push_back(location.datacenter());
            }
          }
          return absl::FailedPreconditionError(absl::StrCat(
              "image template ", t.id(), " has no AVAILABLE location in ", request.datacenter(),
              "; it is available in ", where.empty() ? "no datacenter" : absl::StrJoin(where, ", "),
              ": deploy there or copy it with AddImageTemplateLocations first"));
        }
        if (deps_.deploy == nullptr) return Unimplemented("deploying");
        ASSIGN_OR_RETURN(v1::Operation op,
                         deps_.deploy->Begin(caller, request, t, deps_.now_micros()));
        deps_.operations->NotifyChange();
        return deps_.operations->GetOperation(op.id());
      });
}

absl::StatusOr<v1::ShareImageTemplateResponse> ImageTemplateManager::ShareImageTemplate(
    const Caller& caller, const v1::ShareImageTemplateRequest& request) {
  return Mutation<v1::ShareImageTemplateResponse>(
      caller, "ShareImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::ShareImageTemplateResponse> {
        RETURN_IF_ERROR(CheckId("id", request.id()));
        if (request.account_ids().empty() || request.account_ids_size() > kMaxShareAccounts) {
          return absl::InvalidArgumentError(
              absl::StrCat("account_ids: give 1..", kMaxShareAccounts, " account ids"));
        }
        std::vector<std::string> accounts;
        for (const std::string& account : request.account_ids()) {
          RETURN_IF_ERROR(CheckId("account_ids", account));
          if (std::find(accounts.begin(), accounts.end(), account) == accounts.end()) {
            accounts.push_back(account);
          }
        }
        // Checked before the accounts are looked up, so the answer about an
        // invisible template never depends on them.
        ASSIGN_OR_RETURN(v1::ImageTemplate current, LoadVisible(caller, request.id(), "id"));
        audit_account = AuditAccount(caller, current);
        RETURN_IF_ERROR(
            CheckMayChange(caller, current, v1::PERMISSION_IMAGE_TEMPLATE_MANAGE));
        for (const std::string& account : accounts) {
          if (account == current.owner_account_id()) {
            return absl::InvalidArgumentError(absl::StrCat(
                "account_ids: ", account, " owns the template; share with other accounts"));
          }
          absl::StatusOr<AccountPolicy> policy = deps_.accounts->GetAccountPolicy(account);
          if (absl::IsNotFound(policy.status())) {
            return absl::NotFoundError(absl::StrCat("account_ids: account ", account,
                                                    " not found"));
          }
          RETURN_IF_ERROR(policy.status());
        }
        const int64_t now = deps_.now_micros();
        v1::ShareImageTemplateResponse response;
        ASSIGN_OR_RETURN(
            *response.mutable_image_template(),
            ChangeTemplate(caller, request.id(), audit_account,
                           [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                             v1::ImageTemplate& t = txn.image_template();
                             RETURN_IF_ERROR(RequireActive(t, "shared"));
                             for (const std::string& account : accounts) {
                               RETURN_IF_ERROR(txn.AddShare(account, now));
                             }
                             if (t.visibility() == v1::VISIBILITY_PRIVATE) {
                               t.set_visibility(v1::VISIBILITY_SHARED);
                             }
                             return true;
                           }));
        return response;
      });
}

absl::StatusOr<v1::UnshareImageTemplateResponse> ImageTemplateManager::UnshareImageTemplate(
    const Caller& caller, const v1::UnshareImageTemplateRequest& request) {
  return Mutation<v1::UnshareImageTemplateResponse>(
      caller, "UnshareImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::UnshareImageTemplateResponse> {
        RETURN_IF_ERROR(CheckId("id", request.id()));
        if (request.account_ids().empty() || request.account_ids_size() > kMaxShareAccounts) {
          return absl::InvalidArgumentError(
              absl::StrCat("account_ids: give 1..", kMaxShareAccounts, " account ids"));
        }
        for (const std::string& account : request.account_ids()) {
          RETURN_IF_ERROR(CheckId("account_ids", account));
        }
        v1::UnshareImageTemplateResponse response;
        ASSIGN_OR_RETURN(
            *response.mutable_image_template(),
            ChangeTemplate(caller, request.id(), audit_account,
                           [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                             v1::ImageTemplate& t = txn.image_template();
                             for (const std::string& account : request.account_ids()) {
                               RETURN_IF_ERROR(txn.RemoveShare(account));
                             }
                             ASSIGN_OR_RETURN(int64_t left, txn.ShareCount());
                             if (t.visibility() == v1::VISIBILITY_SHARED && left == 0) {
                               t.set_visibility(v1::VISIBILITY_PRIVATE);
                             }
                             return true;
                           }));
        return response;
      });
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

absl::StatusOr<v1::PublishImageTemplateResponse> ImageTemplateManager::PublishImageTemplate(
    const Caller& caller, const v1::PublishImageTemplateRequest& request) {
  return Mutation<v1::PublishImageTemplateResponse>(
      caller, "PublishImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::PublishImageTemplateResponse> {
        ASSIGN_OR_RETURN(v1::ImageTemplate current, LoadVisible(caller, request.id(), "id"));
        audit_account = AuditAccount(caller, current);
        RETURN_IF_ERROR(CheckMayChange(caller, current, v1::PERMISSION_PUBLIC_IMAGE_MANAGE));
        ASSIGN_OR_RETURN(AccountPolicy policy,
                         deps_.accounts->GetAccountPolicy(current.owner_account_id()));
        if (policy.block_public_sharing) {
          return absl::FailedPreconditionError(absl::StrCat(
              "account ", current.owner_account_id(),
              " blocks public sharing; a user manager can turn block_public_sharing off"));
        }
        v1::PublishImageTemplateResponse response;
        ASSIGN_OR_RETURN(
            *response.mutable_image_template(),
            ChangeTemplate(
                caller, request.id(), audit_account,
                [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                  v1::ImageTemplate& t = txn.image_template();
                  RETURN_IF_ERROR(RequireActive(t, "published"));
                  if (t.disabled()) {
                    return absl::FailedPreconditionError(absl::StrCat(
                        "image template ", t.id(), " is disabled; enable it before publishing"));
                  }
                  if (t.visibility() == v1::VISIBILITY_PUBLIC) return false;
                  t.set_visibility(v1::VISIBILITY_PUBLIC);
                  return true;
                },
                v1::PERMISSION_PUBLIC_IMAGE_MANAGE));
        return response;
      });
}

absl::StatusOr<v1::UnpublishImageTemplateResponse> ImageTemplateManager::UnpublishImageTemplate(
    const Caller& caller, const v1::UnpublishImageTemplateRequest& request) {
  return Mutation<v1::UnpublishImageTemplateResponse>(
      caller, "UnpublishImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::UnpublishImageTemplateResponse> {
        v1::UnpublishImageTemplateResponse response;
        ASSIGN_OR_RETURN(
            *response.mutable_image_template(),
            ChangeTemplate(
                caller, request.id(), audit_account,
                [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                  v1::ImageTemplate& t = txn.image_template();
                  if (t.visibility() != v1::VISIBILITY_PUBLIC) {
                    return absl::FailedPreconditionError(
                        absl::StrCat("image template ", t.id(), " is not public"));
                  }
                  ASSIGN_OR_RETURN(int64_t shares, txn.ShareCount());
                  t.set_visibility(shares > 0 ? v1::VISIBILITY_SHARED : v1::VISIBILITY_PRIVATE);
                  return true;
                },
                v1::PERMISSION_PUBLIC_IMAGE_MANAGE));
        return response;
      });
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

absl::StatusOr<v1::Operation> ImageTemplateManager::AddImageTemplateLocations(
    const Caller& caller, const v1::AddImageTemplateLocationsRequest& request) {
  return Mutation<v1::Operation>(
      caller, "AddImageTemplateLocations", request, request.request_id(),
      TemplateRef(request.id()), [&](std::string& audit_account) -> absl::StatusOr<v1::Operation> {
        RETURN_IF_ERROR(CheckId("id", request.id()));
        if (request.datacenters().empty() || request.datacenters_size() > kMaxDatacenters) {
          return absl::InvalidArgumentError(
              absl::StrCat("datacenters: give 1..", kMaxDatacenters, " datacenter names"));
        }
        absl::flat_hash_set<std::string> seen;
        for (const std::string& dc : request.datacenters()) {
          RETURN_IF_ERROR(CheckDatacenter("datacenters", dc));
          if (!seen.insert(dc).second) {
            return absl::InvalidArgumentError(absl::StrCat("datacenters: ", dc, " is repeated"));
          }
        }
        ASSIGN_OR_RETURN(v1::ImageTemplate t, LoadVisible(caller, request.id(), "id"));
        audit_account = AuditAccount(caller, t);
        RETURN_IF_ERROR(CheckMayChange(caller, t, v1::PERMISSION_IMAGE_TEMPLATE_MANAGE));
        RETURN_IF_ERROR(RequireActive(t, "copied"));
        for (const auto& location : t.locations()) {
          if (seen.contains(location.datacenter()) &&
              location.status() != v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED) {
            return absl::AlreadyExistsError(absl::StrCat(
                "image template ", t.id(), " already has a location in ", location.datacenter()));
          }
        }
        if (deps_.copy == nullptr) return Unimplemented("copying to another datacenter");
        ASSIGN_OR_RETURN(v1::Operation op,
                         deps_.copy->Begin(caller, request, t, deps_.now_micros()));
        deps_.operations->NotifyChange();
        return deps_.operations->GetOperation(op.id());
      });
}

absl::StatusOr<v1::RemoveImageTemplateLocationsResponse>
ImageTemplateManager::RemoveImageTemplateLocations(
    const Caller& caller, const v1::RemoveImageTemplateLocationsRequest& request) {
  return Mutation<v1::RemoveImageTemplateLocationsResponse>(
      caller, "RemoveImageTemplateLocations", request, request.request_id(),
      TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::RemoveImageTemplateLocationsResponse> {
        RETURN_IF_ERROR(CheckId("id", request.id()));
        if (request.datacenters().empty() || request.datacenters_size() > kMaxDatacenters) {
          return absl::InvalidArgumentError(
              absl::StrCat("datacenters: give 1..", kMaxDatacenters, " datacenter names"));
        }
        absl::flat_hash_set<std::string> removing;
        for (const std::string& dc : request.datacenters()) {
          RETURN_IF_ERROR(CheckDatacenter("datacenters", dc));
          removing.insert(dc);
        }
        std::vector<std::string> removed;
        v1::RemoveImageTemplateLocationsResponse response;
        ASSIGN_OR_RETURN(
            *response.mutable_image_template(),
            ChangeTemplate(
                caller, request.id(), audit_account,
                [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                  removed.clear();
                  v1::ImageTemplate& t = txn.image_template();
                  RETURN_IF_ERROR(RequireNotDeleting(t));
                  int available_left = 0;
                  for (const auto& location : t.locations()) {
                    if (!removing.contains(location.datacenter())) {
                      if (location.status() == v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE) {
                        ++available_left;
                      }
                    } else if (location.status() == v1::IMAGE_TEMPLATE_LOCATION_STATUS_COPYING) {
                      return absl::FailedPreconditionError(absl::StrCat(
                          "image template ", t.id(), " is being copied to ",
                          location.datacenter(), " by operation ", location.operation_id(),
                          "; cancel it or wait for it first"));
                    }
                  }
                  if (available_left == 0) {
                    return absl::FailedPreconditionError(absl::StrCat(
                        "removing these would leave image template ", t.id(),
                        " without an AVAILABLE location; delete the template instead"));
                  }
                  ASSIGN_OR_RETURN(int64_t deploying,
                                   txn.CountUnfinishedOperations(
                                       {v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE}));
                  if (deploying > 0) {
                    return absl::FailedPreconditionError(absl::StrCat(
                        deploying, " deploys of image template ", t.id(),
                        " are running; wait for them first"));
                  }
                  if (deps_.copy == nullptr) return Unimplemented("removing a location's data");
                  auto* locations = t.mutable_locations();
                  for (int i = locations->size() - 1; i >= 0; --i) {
                    if (removing.contains((*locations)[i].datacenter())) {
                      removed.push_back((*locations)[i].datacenter());
                      locations->DeleteSubrange(i, 1);
                    }
                  }
                  return !removed.empty();
                }));
        if (!removed.empty()) {
          // The locations are gone, so nothing deploys from this data now.
          (void)deps_.copy->RemoveLocationData(request.id(), removed);
        }
        return response;
      });
}

absl::StatusOr<v1::DeprecateImageTemplateResponse> ImageTemplateManager::DeprecateImageTemplate(
    const Caller& caller, const v1::DeprecateImageTemplateRequest& request) {
  return Mutation<v1::DeprecateImageTemplateResponse>(
      caller, "DeprecateImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::DeprecateImageTemplateResponse> {
        const int64_t now = deps_.now_micros();
        v1::DeprecateImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account,
                                        [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                                          v1::ImageTemplate& t = txn.image_template();
                                          RETURN_IF_ERROR(RequireActive(t, "deprecated"));
                                          if (t.deprecated()) return false;
                                          t.set_deprecated(true);
                                          *t.mutable_deprecate_time() = ToTimestamp(now);
                                          return true;
                                        }));
        return response;
      });
}

absl::StatusOr<v1::UndeprecateImageTemplateResponse>
ImageTemplateManager::UndeprecateImageTemplate(
    const Caller& caller, const v1::UndeprecateImageTemplateRequest& request) {
  return Mutation<v1::UndeprecateImageTemplateResponse>(
      caller, "UndeprecateImageTemplate", request, request.request_id(),
      TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::UndeprecateImageTemplateResponse> {
        v1::UndeprecateImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account,
                                        [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                                          v1::ImageTemplate& t = txn.image_template();
                                          if (!t.deprecated()) return false;
                                          t.set_deprecated(false);
                                          t.clear_deprecate_time();
                                          return true;
                                        }));
        return response;
      });
}

absl::StatusOr<v1::DisableImageTemplateResponse> ImageTemplateManager::DisableImageTemplate(
    const Caller& caller, const v1::DisableImageTemplateRequest& request) {
  return Mutation<v1::DisableImageTemplateResponse>(
      caller, "DisableImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::DisableImageTemplateResponse> {
        v1::DisableImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account,
                                        [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                                          v1::ImageTemplate& t = txn.image_template();
                                          RETURN_IF_ERROR(RequireNotDeleting(t));
                                          if (t.disabled()) return false;
                                          t.set_disabled(true);
                                          return true;
                                        }));
        return response;
      });
}

absl::StatusOr<v1::EnableImageTemplateResponse> ImageTemplateManager::EnableImageTemplate(
    const Caller& caller, const v1::EnableImageTemplateRequest& request) {
  return Mutation<v1::EnableImageTemplateResponse>(
      caller, "EnableImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::EnableImageTemplateResponse> {
        v1::EnableImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account,
                                        [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                                          v1::ImageTemplate& t = txn.image_template();
                                          RETURN_IF_ERROR(RequireNotDeleting(t));
                                          if (!t.disabled()) return false;
                                          t.set_disabled(false);
                                          return true;
                                        }));
        return response;
      });
}

absl::StatusOr<v1::SetDeleteProtectionResponse> ImageTemplateManager::SetDeleteProtection(
    const Caller& caller, const v1::SetDeleteProtectionRequest& request) {
  return Mutation<v1::SetDeleteProtectionResponse>(
      caller, "SetDeleteProtection", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account) -> absl::StatusOr<v1::SetDeleteProtectionResponse> {
        v1::SetDeleteProtectionResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account,
                                        [&](TemplateTransaction& txn) -> absl::StatusOr<bool> {
                                          v1::ImageTemplate& t = txn.image_template();
                                          RETURN_IF_ERROR(RequireNotDeleting(t));
                                          if (t.delete_protected() == request.delete_protected()) {
                                            return false;
                                          }
                                          t.set_delete_protected(request.delete_protected());
                                          return true;
                                        }));
        return response;
      });
}

}  // namespace controlplane
