// Remembers the client request_id of mutating calls so a retried call returns
// the first call's result instead of acting twice (common.proto, request_id).
// Fingerprints come from RequestFingerprint (idempotency.h).
#ifndef CONTROLPLANE_REQUEST_ID_STORE_H_
#define CONTROLPLANE_REQUEST_ID_STORE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace controlplane {

// What Claim found.
struct RequestClaim {
  // The earlier identical call's response; nullopt: this call now holds the
  // request_id and must act.
  std::optional<std::string> response;
  // Set when this call took over the claim of an identical call that died
  // mid-way (its process ended): when that call claimed it. Whatever it did
  // is not older; a call whose effect leaves a trace (an operation row with
  // the request_id) looks for it before acting again.
  std::optional<int64_t> orphan_time_micros;
};

// Thread-safe. A call whose effect spans more than one transaction claims
// its request_id before it acts (Claim), so of two identical calls racing
// only one acts; the other waits for its result. A call whose whole effect
// is one transaction of the same database checks and remembers inside that
// transaction instead (FindInTransaction, Remember), so a crash leaves
// either both its effect and its response or neither.
class RequestIdStore {
 public:
  virtual ~RequestIdStore() = default;
  // The serialized response of an earlier successful call with this
  // request_id from `account_id` within 24 hours, or nullopt (always for an
  // empty request_id, and while that call is still running). INVALID_ARGUMENT
  // (request_id) if that call was a different request.
  virtual absl::StatusOr<std::optional<std::string>> Find(absl::string_view account_id,
                                                          absl::string_view request_id,
                                                          absl::string_view fingerprint) = 0;
  // Before acting: nullopt when this call now holds the request_id (always
  // for an empty one) and must act, then Remember its response or Release
  // the claim on failure; otherwise the response of the earlier successful
  // call, waiting a few seconds for one that is still running.
  // INVALID_ARGUMENT (request_id) if it was a different request; ABORTED if
  // the earlier call is still running after the wait (retry). A claim left by
  // an ended process is taken over at once, one left by a call that died
  // otherwise after a minute.
  virtual absl::StatusOr<RequestClaim> Claim(absl::string_view account_id,
                                             absl::string_view request_id,
                                             absl::string_view fingerprint) = 0;
  // Called inside the transaction that makes the call's whole effect (the
  // store's statements join it): the earlier identical call's response, or
  // nullopt: act, then Remember before that transaction commits.
  // INVALID_ARGUMENT (request_id) if the request_id is in use by a different
  // request.
  virtual absl::StatusOr<std::optional<std::string>> FindInTransaction(
      absl::string_view account_id, absl::string_view request_id,
      absl::string_view fingerprint) = 0;
  // Drops this call's claim (it failed; a retry may act). No-op without one.
  virtual absl::Status Release(absl::string_view account_id, absl::string_view request_id) = 0;
  // Remembers `response`, completing a claim; inside the caller's
  // transaction when called from one. No-op for an empty request_id.
  virtual absl::Status Remember(absl::string_view account_id, absl::string_view request_id,
                                absl::string_view fingerprint, absl::string_view response) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_REQUEST_ID_STORE_H_
