// The gRPC face of ImageTemplateService: authenticates, delegates to
// ImageTemplateManager and converts the status. No business logic here.
#ifndef CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_
#define CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_

#include "controlplane/authenticator.h"
#include "controlplane/image_template_manager.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"

namespace controlplane {

// Thread-safe. Does not own its dependencies.
class ImageTemplateServiceImpl final : public imagetemplates::v1::ImageTemplateService::Service {
 public:
  ImageTemplateServiceImpl(Authenticator* authenticator, ImageTemplateManager* manager)
      : authenticator_(authenticator), manager_(manager) {}

#define CONTROLPLANE_TEMPLATE_RPC_(Method, Request, Response)                          \
  grpc::Status Method(grpc::ServerContext* context, const imagetemplates::v1::Request* request, \
                      imagetemplates::v1::Response* response) override;
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

 private:
  Authenticator* const authenticator_;
  ImageTemplateManager* const manager_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_
