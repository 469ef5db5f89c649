// Resolves the `authorization: Bearer <api key>` metadata of a call.
#ifndef CONTROLPLANE_AUTHENTICATOR_H_
#define CONTROLPLANE_AUTHENTICATOR_H_

#include "absl/status/statusor.h"
#include "controlplane/caller.h"
#include "grpcpp/server_context.h"

namespace controlplane {

// Thread-safe.
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // The caller behind the call's API key (a sync or a callback call).
  // UNAUTHENTICATED if the metadata is missing or malformed, or the key is
  // unknown or revoked.
  virtual absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& context) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_AUTHENTICATOR_H_
