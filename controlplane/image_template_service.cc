#include "controlplane/image_template_service.h"

#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace controlplane {
namespace {

// Appends protobuf field `field` with wire type 2 (length-delimited).
void AppendLengthDelimited(uint32_t field, absl::string_view bytes, std::string* out) {
  auto varint = [out](uint64_t v) {
    while (v >= 0x80) {
      out->push_back(static_cast<char>(v | 0x80));
      v >>= 7;
    }
    out->push_back(static_cast<char>(v));
  };
  varint(field << 3 | 2);
  varint(bytes.size());
  out->append(bytes.data(), bytes.size());
}

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

std::string EncodeGetImageTemplateResponse(const EncodedTemplate& image_template) {
  std::string out;
  out.reserve(image_template.wire.size() + 6);
  AppendLengthDelimited(1, image_template.wire, &out);  // image_template
  return out;
}

std::string EncodeListImageTemplatesResponse(const ImageTemplateManager::TemplatePage& page) {
  size_t size = page.next_page_token.size() + 6;
  for (const auto& t : page.image_templates) size += t->wire.size() + 6;
  std::string out;
  out.reserve(size);
  // Field 1 (image_templates) and 2 (next_page_token), both length-delimited.
  for (const auto& t : page.image_templates) AppendLengthDelimited(1, t->wire, &out);
  if (!page.next_page_token.empty()) AppendLengthDelimited(2, page.next_page_token, &out);
  return out;
}

template <typename Request>
grpc::Status ImageTemplateServiceImpl::RawRead(
    const grpc::CallbackServerContext& context, const grpc::ByteBuffer& request_bytes,
    grpc::ByteBuffer* response,
    const std::function<absl::StatusOr<std::string>(const Caller&, const Request&)>& run) {
  // Authenticate first, as every other method does: an unauthenticated
  // caller learns nothing about its request.
  absl::StatusOr<Caller> caller = authenticator_->Authenticate(context);
  if (!caller.ok()) return common::ToGrpcStatus(caller.status());
  Request request;
  grpc::ByteBuffer copy(request_bytes);  // shares the slices; parsing consumes it
  if (!grpc::SerializationTraits<Request>::Deserialize(&copy, &request).ok()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        absl::StrCat("request: not a ", Request::descriptor()->name()));
  }
  if (caller->peer.empty()) caller->peer = context.peer();
  absl::StatusOr<std::string> wire = run(*caller, request);
  if (!wire.ok()) return common::ToGrpcStatus(wire.status());
  auto* bytes = new std::string(*std::move(wire));
  grpc::Slice slice(
      bytes->data(), bytes->size(), [](void* p) { delete static_cast<std::string*>(p); }, bytes);
  *response = grpc::ByteBuffer(&slice, 1);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* ImageTemplateServiceImpl::GetImageTemplate(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(RawRead<imagetemplates::v1::GetImageTemplateRequest>(
      *context, *request, response,
      [this](const Caller& caller, const imagetemplates::v1::GetImageTemplateRequest& request)
          -> absl::StatusOr<std::string> {
        absl::StatusOr<std::shared_ptr<const EncodedTemplate>> t =
            manager_->GetEncodedImageTemplate(caller, request);
        if (!t.ok()) return t.status();
        return EncodeGetImageTemplateResponse(**t);
      }));
  return reactor;
}

grpc::ServerUnaryReactor* ImageTemplateServiceImpl::ListImageTemplates(
    grpc::CallbackServerContext* context, const grpc::ByteBuffer* request,
    grpc::ByteBuffer* response) {
  grpc::ServerUnaryReactor* reactor = context->DefaultReactor();
  reactor->Finish(RawRead<imagetemplates::v1::ListImageTemplatesRequest>(
      *context, *request, response,
      [this](const Caller& caller, const imagetemplates::v1::ListImageTemplatesRequest& request)
          -> absl::StatusOr<std::string> {
        absl::StatusOr<ImageTemplateManager::TemplatePage> page =
            manager_->ListImageTemplatePage(caller, request);
        if (!page.ok()) return page.status();
        return EncodeListImageTemplatesResponse(*page);
      }));
  return reactor;
}

#define CONTROLPLANE_TEMPLATE_RPC_(Method, Request, Response)                                  \
  grpc::Status ImageTemplateServiceImpl::Method(grpc::ServerContext* context,                   \
                                                const imagetemplates::v1::Request* request,     \
                                                imagetemplates::v1::Response* response) {       \
    return Handle(*context, #Method, *request, response, &ImageTemplateManager::Method);      \
  }
CONTROLPLANE_TEMPLATE_RPCS_(CONTROLPLANE_TEMPLATE_RPC_)
#undef CONTROLPLANE_TEMPLATE_RPC_

}  // namespace controlplane
