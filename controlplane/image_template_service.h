// The gRPC face of ImageTemplateService: authenticates, delegates to
// ImageTemplateManager and converts the status. No business logic here.
#ifndef CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_
#define CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_

#include "controlplane/authenticator.h"
#include "controlplane/image_template_manager.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"

namespace controlplane {

// The hot reads, GetImageTemplate and ListImageTemplates, use gRPC's callback
// API: they run on gRPC's few callback threads (one per core with Debian's
// gRPC 1.51) without the sync server's hand-off to a worker thread, which
// saved ~30% CPU per Get (tools/bench/controlplane_bench). They answer at
// once, so a caller sees no difference: same authentication, checks, status
// codes. They must stay short (bounded reads, no waiting on other calls):
// while one runs, it holds one of those threads. Every other method is a sync
// handler.
using ImageTemplateServiceBase =
    imagetemplates::v1::ImageTemplateService::WithCallbackMethod_GetImageTemplate<
        imagetemplates::v1::ImageTemplateService::WithCallbackMethod_ListImageTemplates<
            imagetemplates::v1::ImageTemplateService::Service>>;

// Thread-safe. Does not own its dependencies.
class ImageTemplateServiceImpl final : public ImageTemplateServiceBase {
 public:
  ImageTemplateServiceImpl(Authenticator* authenticator, ImageTemplateManager* manager)
      : authenticator_(authenticator), manager_(manager) {}

  grpc::ServerUnaryReactor* GetImageTemplate(
      grpc::CallbackServerContext* context,
      const imagetemplates::v1::GetImageTemplateRequest* request,
      imagetemplates::v1::GetImageTemplateResponse* response) override;
  grpc::ServerUnaryReactor* ListImageTemplates(
      grpc::CallbackServerContext* context,
      const imagetemplates::v1::ListImageTemplatesRequest* request,
      imagetemplates::v1::ListImageTemplatesResponse* response) override;

#define CONTROLPLANE_TEMPLATE_RPC_(Method, Request, Response)                          \
  grpc::Status Method(grpc::ServerContext* context, const imagetemplates::v1::Request* request, \
                      imagetemplates::v1::Response* response) override;
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

 private:
  // Authenticates, runs `method` of the manager, converts the status.
  // Mutating calls refused for their key are audited too (the manager
  // audits every other outcome).
  template <typename Request, typename Response>
  grpc::Status Handle(const grpc::ServerContextBase& context, absl::string_view name,
                      const Request& request, Response* response,
                      absl::StatusOr<Response> (ImageTemplateManager::*method)(const Caller&,
                                                                               const Request&));

  Authenticator* const authenticator_;
  ImageTemplateManager* const manager_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_
