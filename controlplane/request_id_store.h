// Remembers the client request_id of mutating calls so a retried call returns
// the first call's result instead of acting twice (common.proto, request_id).
// Fingerprints come from RequestFingerprint (idempotency.h).
#ifndef CONTROLPLANE_REQUEST_ID_STORE_H_
#define CONTROLPLANE_REQUEST_ID_STORE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace controlplane {

// Thread-safe. Unlike IdempotentTransaction, the lookup and the effect are
// not one transaction: two concurrent first calls with the same id may both
// act (the later record wins). Callers keep their effects idempotent.
class RequestIdStore {
 public:
  virtual ~RequestIdStore() = default;
  // The serialized response of an earlier successful call with this
  // request_id from `account_id` within 24 hours, or nullopt (always for an
  // empty request_id). INVALID_ARGUMENT (request_id) if that call was a
  // different request.
  virtual absl::StatusOr<std::optional<std::string>> Find(absl::string_view account_id,
                                                          absl::string_view request_id,
                                                          absl::string_view fingerprint) = 0;
  // Remembers `response`. No-op for an empty request_id.
  virtual absl::Status Remember(absl::string_view account_id, absl::string_view request_id,
                                absl::string_view fingerprint, absl::string_view response) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_REQUEST_ID_STORE_H_
