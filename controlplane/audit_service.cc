#include "controlplane/audit_service.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

grpc::Status AuditServiceImpl::ListAuditEvents(grpc::ServerContext* context,
                                               const v1::ListAuditEventsRequest* request,
                                               v1::ListAuditEventsResponse* response) {
  return runner_.Read<v1::ListAuditEventsResponse>(
      context, response, [&](const Caller& caller) { return log_->List(caller, *request); });
}

}  // namespace controlplane
