// ImageTemplateManager's calls that start operations: create, delete, deploy
// and copy to more datacenters. Each checks what it can at once and leaves
// the work to its workflow.
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/image_template_manager.h"
#include "controlplane/internal/image_template_manager_parts.h"
#include "controlplane/internal/ipv4.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

constexpr int kMaxQuantity = 20;
constexpr size_t kMaxUserDataBytes = 64 * 1024;

bool IsDnsLabel(absl::string_view label, size_t max_len) {
  if (label.empty() || label.size() > max_len) return false;
  if (label.front() == '-' || label.back() == '-') return false;
  for (char c : label) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

bool IsIpLiteral(absl::string_view text) {
  in6_addr parsed;
  return internal::ParseIpv4(text).has_value() ||
         inet_pton(AF_INET6, std::string(text).c_str(), &parsed) == 1;
}

// IP literals only: they go into the server's network-config YAML as they
// are. Parsed as the inventory parses them (ipv4.h), which then checks the
// address against the datacenter's IP pools.
absl::Status CheckStaticAddress(const v1::StaticNetworkAddress& a) {
  if (!internal::ParseCidr(a.address())) {
    return absl::InvalidArgumentError(
        "networks.static_address.address: an IPv4 address with prefix length, like "
        "10.0.0.5/24");
  }
  if (!a.gateway().empty() && !internal::ParseIpv4(a.gateway())) {
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

absl::StatusOr<v1::Operation> ImageTemplateManager::DeleteImageTemplate(
    const Caller& caller, const v1::DeleteImageTemplateRequest& request) {
  return AtomicMutation<v1::Operation>(
      caller, "DeleteImageTemplate", request, request.request_id(), TemplateRef(request.id()),
      [&](std::string& audit_account, AtomicRequest& atomic) -> absl::StatusOr<v1::Operation> {
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
        // Remembered with the operation row it inserts, in one transaction.
        atomic.encode = [&op](const v1::ImageTemplate&) { return op.SerializeAsString(); };
        RETURN_IF_ERROR(
            ChangeTemplate(caller, request.id(), audit_account, &atomic,
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
                               // No count: it includes other accounts' deploys.
                               return absl::FailedPreconditionError(absl::StrCat(
                                   "deploy or copy operations from image template ", t.id(),
                                   " are running; wait for them or cancel them"));
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

}  // namespace controlplane
