// Conversions between absl::Status and grpc::Status. Service adapters convert
// once at the edge; everything beneath them speaks absl::Status.
#ifndef COMMON_GRPC_STATUS_H_
#define COMMON_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace common {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace common

#endif  // COMMON_GRPC_STATUS_H_
