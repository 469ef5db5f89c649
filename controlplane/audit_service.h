// AuditService over gRPC.
#ifndef CONTROLPLANE_AUDIT_SERVICE_H_
#define CONTROLPLANE_AUDIT_SERVICE_H_

#include "controlplane/rpc_runner.h"
#include "controlplane/sqlite_audit_log.h"
#include "imagetemplates/v1/audit.grpc.pb.h"

namespace controlplane {

// Reads the audit log through SqliteAuditLog::List, which applies the access
// rules. Thread-safe; the pointers must outlive it.
class AuditServiceImpl final : public imagetemplates::v1::AuditService::Service {
 public:
  AuditServiceImpl(SqliteAuditLog* log, Authenticator* authenticator)
      : log_(log), runner_(authenticator, log) {}

  grpc::Status ListAuditEvents(grpc::ServerContext* context,
                               const imagetemplates::v1::ListAuditEventsRequest* request,
                               imagetemplates::v1::ListAuditEventsResponse* response) override;

 private:
  SqliteAuditLog* log_;
  RpcRunner runner_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_AUDIT_SERVICE_H_
