// ImageTemplateManager's calls that change a template record in place:
// edits, shares, publishing, location removal, and the deprecated, disabled
// and delete-protected flags. Each runs in one store transaction
// (ChangeTemplate) that re-checks visibility and permission.
#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/image_template_manager.h"
#include "controlplane/internal/image_template_manager_parts.h"
#include "controlplane/validation.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

constexpr int kMaxShareAccounts = 100;

}  // namespace

using template_manager_internal::AuditAccount;
using template_manager_internal::CheckDatacenter;
using template_manager_internal::CheckId;
using template_manager_internal::CheckMayChange;
using template_manager_internal::CheckName;
using template_manager_internal::CheckNote;
using template_manager_internal::CheckTags;
using template_manager_internal::RequireActive;
using template_manager_internal::RequireNotDeleting;
using template_manager_internal::TemplateRef;
using template_manager_internal::Unimplemented;
using template_manager_internal::kMaxDatacenters;

absl::StatusOr<v1::UpdateImageTemplateResponse> ImageTemplateManager::UpdateImageTemplate(
    const Caller& caller, const v1::UpdateImageTemplateRequest& request) {
  return AtomicMutation<v1::UpdateImageTemplateResponse>(
      caller, "UpdateImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::UpdateImageTemplateResponse> {
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
            ChangeTemplate(caller, request.id(), audit_account, &atomic,
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

absl::StatusOr<v1::ShareImageTemplateResponse> ImageTemplateManager::ShareImageTemplate(
    const Caller& caller, const v1::ShareImageTemplateRequest& request) {
  return AtomicMutation<v1::ShareImageTemplateResponse>(
      caller, "ShareImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::ShareImageTemplateResponse> {
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
            ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
  return AtomicMutation<v1::UnshareImageTemplateResponse>(
      caller, "UnshareImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::UnshareImageTemplateResponse> {
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
            ChangeTemplate(caller, request.id(), audit_account, &atomic,
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

absl::StatusOr<v1::PublishImageTemplateResponse> ImageTemplateManager::PublishImageTemplate(
    const Caller& caller, const v1::PublishImageTemplateRequest& request) {
  return AtomicMutation<v1::PublishImageTemplateResponse>(
      caller, "PublishImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::PublishImageTemplateResponse> {
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
            ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
  return AtomicMutation<v1::UnpublishImageTemplateResponse>(
      caller, "UnpublishImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::UnpublishImageTemplateResponse> {
        v1::UnpublishImageTemplateResponse response;
        ASSIGN_OR_RETURN(
            *response.mutable_image_template(),
            ChangeTemplate(caller, request.id(), audit_account, &atomic,
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

absl::StatusOr<v1::RemoveImageTemplateLocationsResponse>
ImageTemplateManager::RemoveImageTemplateLocations(
    const Caller& caller, const v1::RemoveImageTemplateLocationsRequest& request) {
  return AtomicMutation<v1::RemoveImageTemplateLocationsResponse>(
      caller, "RemoveImageTemplateLocations", request, request.request_id(),
      TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::RemoveImageTemplateLocationsResponse> {
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
            ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
                    // No count: it includes other accounts' deploys.
                    return absl::FailedPreconditionError(absl::StrCat(
                        "deploys of image template ", t.id(),
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
  return AtomicMutation<v1::DeprecateImageTemplateResponse>(
      caller, "DeprecateImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::DeprecateImageTemplateResponse> {
        const int64_t now = deps_.now_micros();
        v1::DeprecateImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
  return AtomicMutation<v1::UndeprecateImageTemplateResponse>(
      caller, "UndeprecateImageTemplate", request, request.request_id(),
      TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::UndeprecateImageTemplateResponse> {
        v1::UndeprecateImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
  return AtomicMutation<v1::DisableImageTemplateResponse>(
      caller, "DisableImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::DisableImageTemplateResponse> {
        v1::DisableImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
  return AtomicMutation<v1::EnableImageTemplateResponse>(
      caller, "EnableImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::EnableImageTemplateResponse> {
        v1::EnableImageTemplateResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
  return AtomicMutation<v1::SetDeleteProtectionResponse>(
      caller, "SetDeleteProtection", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account,
          AtomicRequest& atomic) -> absl::StatusOr<v1::SetDeleteProtectionResponse> {
        v1::SetDeleteProtectionResponse response;
        ASSIGN_OR_RETURN(*response.mutable_image_template(),
                         ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
