#include "controlplane/image_template_service.h"

#include <utility>

#include "absl/strings/match.h"
#include "common/grpc_status.h"

namespace controlplane {
namespace {

// Reads are not audited.
bool IsMutating(absl::string_view method) {
  return !absl::StartsWith(method, "Get") && !absl::StartsWith(method, "List");
}

}  // namespace

// Each handler: authenticate, run the manager method, convert the status.
// Mutating calls refused for their key are audited too (the manager audits
// every other outcome).
#define CONTROLPLANE_TEMPLATE_RPC_(Method, Request, Response)                              \
  grpc::Status ImageTemplateServiceImpl::Method(grpc::ServerContext* context,             \
                                                const imagetemplates::v1::Request* request, \
                                                imagetemplates::v1::Response* response) {   \
    absl::StatusOr<Caller> caller = authenticator_->Authenticate(*context);               \
    if (!caller.ok()) {                                                                    \
      if (IsMutating(#Method)) {                                                           \
        manager_->AuditUnauthenticated(context->peer(), #Method, *request, caller.status()); \
      }                                                                                    \
      return common::ToGrpcStatus(caller.status());                                        \
    }                                                                                      \
    if (caller->peer.empty()) caller->peer = context->peer();                             \
    absl::StatusOr<imagetemplates::v1::Response> result = manager_->Method(*caller, *request); \
    if (!result.ok()) return common::ToGrpcStatus(result.status());                       \
    *response = std::move(*result);                                                        \
    return grpc::Status::OK;                                                               \
  }
CONTROLPLANE_TEMPLATE_RPC_(CreateImageTemplate, CreateImageTemplateRequest, Operation)
CONTROLPLANE_TEMPLATE_RPC_(GetImageTemplate, GetImageTemplateRequest, GetImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(ListImageTemplates, ListImageTemplatesRequest,
                           ListImageTemplatesResponse)
CONTROLPLANE_TEMPLATE_RPC_(UpdateImageTemplate, UpdateImageTemplateRequest,
                           UpdateImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(DeleteImageTemplate, DeleteImageTemplateRequest, Operation)
CONTROLPLANE_TEMPLATE_RPC_(DeployImageTemplate, DeployImageTemplateRequest, Operation)
CONTROLPLANE_TEMPLATE_RPC_(ShareImageTemplate, ShareImageTemplateRequest,
                           ShareImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(UnshareImageTemplate, UnshareImageTemplateRequest,
                           UnshareImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(ListImageTemplateShares, ListImageTemplateSharesRequest,
                           ListImageTemplateSharesResponse)
CONTROLPLANE_TEMPLATE_RPC_(PublishImageTemplate, PublishImageTemplateRequest,
                           PublishImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(UnpublishImageTemplate, UnpublishImageTemplateRequest,
                           UnpublishImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(ListImageTemplateLocations, ListImageTemplateLocationsRequest,
                           ListImageTemplateLocationsResponse)
CONTROLPLANE_TEMPLATE_RPC_(AddImageTemplateLocations, AddImageTemplateLocationsRequest,
                           Operation)
CONTROLPLANE_TEMPLATE_RPC_(RemoveImageTemplateLocations, RemoveImageTemplateLocationsRequest,
                           RemoveImageTemplateLocationsResponse)
CONTROLPLANE_TEMPLATE_RPC_(DeprecateImageTemplate, DeprecateImageTemplateRequest,
                           DeprecateImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(UndeprecateImageTemplate, UndeprecateImageTemplateRequest,
                           UndeprecateImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(DisableImageTemplate, DisableImageTemplateRequest,
                           DisableImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(EnableImageTemplate, EnableImageTemplateRequest,
                           EnableImageTemplateResponse)
CONTROLPLANE_TEMPLATE_RPC_(SetDeleteProtection, SetDeleteProtectionRequest,
                           SetDeleteProtectionResponse)
#undef CONTROLPLANE_TEMPLATE_RPC_

}  // namespace controlplane
