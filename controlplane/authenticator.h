// Resolves the `authorization: Bearer <api key>` metadata of a call.
#ifndef CONTROLPLANE_AUTHENTICATOR_H_
#define CONTROLPLANE_AUTHENTICATOR_H_

#include <optional>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/cord.h"
#include "absl/strings/string_view.h"
#include "controlplane/caller.h"
#include "grpcpp/server_context.h"

namespace controlplane {

// Thread-safe.
class Authenticator {
 public:
  virtual ~Authenticator() = default;
  // The caller behind the call's API key (a sync or a callback call).
  // UNAUTHENTICATED if the metadata is missing or malformed, or the key is
  // unknown or revoked. A refusal of an address that is being throttled for
  // failed authentications carries ThrottledAddress().
  virtual absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& context) = 0;
};

// Marks a refusal as one of a flood from `address` (an address throttled for
// failed authentications): the audit log counts such refusals into periodic
// summaries instead of writing a row per call. The mark is an absl::Status
// payload; it never reaches the client (common::ToGrpcStatus drops payloads).
inline constexpr absl::string_view kThrottledAddressPayload =
    "type.googleapis.com/controlplane.ThrottledAddress";

inline absl::Status MarkThrottled(absl::Status status, absl::string_view address) {
  status.SetPayload(kThrottledAddressPayload, absl::Cord(address));
  return status;
}

// The address MarkThrottled put on `status`, if any.
inline std::optional<std::string> ThrottledAddress(const absl::Status& status) {
  auto address = status.GetPayload(kThrottledAddressPayload);  // absl::optional<Cord>
  if (!address.has_value()) return std::nullopt;
  return std::string(*address);
}

}  // namespace controlplane

#endif  // CONTROLPLANE_AUTHENTICATOR_H_
