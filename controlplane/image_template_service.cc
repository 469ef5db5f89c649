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

template <typename Request, typename Response>
grpc::Status ImageTemplateServiceImpl::Handle(
    const grpc::ServerContextBase& context, absl::string_view name, const Request& request,
    Response* response,
    absl::StatusOr<Response> (ImageTemplateManager::*method)(const Caller&, const Request&)) {
  absl::StatusOr<Caller> caller = authenticator_->Authenticate(context);
  if (!caller.ok()) {
    if (IsMutating(name)) {
      manager_->AuditUnauthenticated(context.peer(), name, request, caller.status());
    }
    return common::ToGrpcStatus(caller.status());
  }
  if (caller->peer.empty()) caller->peer = context.peer();
  absl::StatusOr<Response> result = (manager_->*method)(*caller, request);
  if (!result.ok()) return common::ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* ImageTemplateServiceImpl::GetImageTemplate(
    grpc::CallbackServerContext* context,
    const imagetemplates::v1::GetImageTemplateRequest* request,
    imagetemplates::v1::GetImageTemplateResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Handle(*context, "GetImageTemplate", *request, response,
                         &ImageTemplateManager::GetImageTemplate));
  return reactor;
}

grpc::ServerUnaryReactor* ImageTemplateServiceImpl::ListImageTemplates(
    grpc::CallbackServerContext* context,
    const imagetemplates::v1::ListImageTemplatesRequest* request,
    imagetemplates::v1::ListImageTemplatesResponse* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(Handle(*context, "ListImageTemplates", *request, response,
                         &ImageTemplateManager::ListImageTemplates));
  return reactor;
}

#define CONTROLPLANE_TEMPLATE_RPC_(Method, Request, Response)                                  \
  grpc::Status ImageTemplateServiceImpl::Method(grpc::ServerContext* context,                   \
                                                const imagetemplates::v1::Request* request,     \
                                                imagetemplates::v1::Response* response) {       \
    return Handle(*context, #Method, *request, response, &ImageTemplateManager::Method);      \
  }
CONTROLPLANE_TEMPLATE_RPC_(CreateImageTemplate, CreateImageTemplateRequest, Operation)
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
