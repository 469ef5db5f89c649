// The gRPC face of ImageTemplateService: authenticates, delegates to
// ImageTemplateManager and converts the status. No business logic here.
#ifndef CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_
#define CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_

#include <functional>
#include <string>

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
//
// Both are raw methods (bytes in, bytes out): the response is written in the
// Get/ListImageTemplatesResponse wire format around each template's cached
// encoding (EncodedTemplate::wire), which a client parses exactly as the
// message (an embedded message is a length-delimited field like bytes), so a
// list page costs no proto copies, no serialization and no destruction of 50
// messages (tools/bench/controlplane_bench: about half the CPU per page).
using ImageTemplateServiceBase =
    imagetemplates::v1::ImageTemplateService::WithRawCallbackMethod_GetImageTemplate<
        imagetemplates::v1::ImageTemplateService::WithRawCallbackMethod_ListImageTemplates<
            imagetemplates::v1::ImageTemplateService::Service>>;

// The GetImageTemplateResponse wire bytes for `image_template`.
std::string EncodeGetImageTemplateResponse(const EncodedTemplate& image_template);
// The ListImageTemplatesResponse wire bytes of `page`.
std::string EncodeListImageTemplatesResponse(const ImageTemplateManager::TemplatePage& page);

// The unary RPCs that the manager's method of the same name serves:
// X(method, request, response), types in imagetemplates::v1.
#define CONTROLPLANE_TEMPLATE_RPCS_(X)                                                             \
  X(CreateImageTemplate, CreateImageTemplateRequest, Operation)                                    \
  X(UpdateImageTemplate, UpdateImageTemplateRequest, UpdateImageTemplateResponse)                  \
  X(DeleteImageTemplate, DeleteImageTemplateRequest, Operation)                                    \
  X(DeployImageTemplate, DeployImageTemplateRequest, Operation)                                    \
  X(ShareImageTemplate, ShareImageTemplateRequest, ShareImageTemplateResponse)                     \
  X(UnshareImageTemplate, UnshareImageTemplateRequest, UnshareImageTemplateResponse)               \
  X(ListImageTemplateShares, ListImageTemplateSharesRequest, ListImageTemplateSharesResponse)      \
  X(PublishImageTemplate, PublishImageTemplateRequest, PublishImageTemplateResponse)               \
  X(UnpublishImageTemplate, UnpublishImageTemplateRequest, UnpublishImageTemplateResponse)         \
  X(ListImageTemplateLocations, ListImageTemplateLocationsRequest,                                 \
    ListImageTemplateLocationsResponse)                                                            \
  X(AddImageTemplateLocations, AddImageTemplateLocationsRequest, Operation)                        \
  X(RemoveImageTemplateLocations, RemoveImageTemplateLocationsRequest,                             \
    RemoveImageTemplateLocationsResponse)                                                          \
  X(DeprecateImageTemplate, DeprecateImageTemplateRequest, DeprecateImageTemplateResponse)         \
  X(UndeprecateImageTemplate, UndeprecateImageTemplateRequest, UndeprecateImageTemplateResponse)   \
  X(DisableImageTemplate, DisableImageTemplateRequest, DisableImageTemplateResponse)               \
  X(EnableImageTemplate, EnableImageTemplateRequest, EnableImageTemplateResponse)                  \
  X(SetDeleteProtection, SetDeleteProtectionRequest, SetDeleteProtectionResponse)

// Thread-safe. Does not own its dependencies.
class ImageTemplateServiceImpl final : public ImageTemplateServiceBase {
 public:
  ImageTemplateServiceImpl(Authenticator* authenticator, ImageTemplateManager* manager)
      : authenticator_(authenticator), manager_(manager) {}

  // Request and response are Get/ListImageTemplatesRequest/Response bytes.
  grpc::ServerUnaryReactor* GetImageTemplate(grpc::CallbackServerContext* context,
                                             const grpc::ByteBuffer* request,
                                             grpc::ByteBuffer* response) override;
  grpc::ServerUnaryReactor* ListImageTemplates(grpc::CallbackServerContext* context,
                                               const grpc::ByteBuffer* request,
                                               grpc::ByteBuffer* response) override;

#define CONTROLPLANE_TEMPLATE_RPC_(Method, Request, Response)                          \
  grpc::Status Method(grpc::ServerContext* context, const imagetemplates::v1::Request* request, \
                      imagetemplates::v1::Response* response) override;
  CONTROLPLANE_TEMPLATE_RPCS_(CONTROLPLANE_TEMPLATE_RPC_)
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

  // A raw read: parses the request (INVALID_ARGUMENT if it is not one),
  // authenticates, and sends what `run` encodes.
  template <typename Request>
  grpc::Status RawRead(
      const grpc::CallbackServerContext& context, const grpc::ByteBuffer& request_bytes,
      grpc::ByteBuffer* response,
      const std::function<absl::StatusOr<std::string>(const Caller&, const Request&)>& run);

  Authenticator* const authenticator_;
  ImageTemplateManager* const manager_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_IMAGE_TEMPLATE_SERVICE_H_
