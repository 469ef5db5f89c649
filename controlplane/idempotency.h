// request_id deduplication for mutating calls (common.proto): the first
// call's response is stored under (account, request_id) in the same
// transaction as its effect; a repeat within 24 hours from the account gets
// that response back once the call's permission checks pass again for the
// repeating user, a different request under the same id gets INVALID_ARGUMENT.
#ifndef CONTROLPLANE_IDEMPOTENCY_H_
#define CONTROLPLANE_IDEMPOTENCY_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/sqlite_database.h"
#include "google/protobuf/message.h"

namespace controlplane {

// A digest of `method` and `request` with its request_id field cleared, so
// that a repeat compares equal and any other request does not. `implied_user`
// is the user a request acts on without naming it (CreateApiKey's "me"): the
// same bytes from two users are two requests then.
std::string RequestFingerprint(absl::string_view method, const google::protobuf::Message& request,
                               absl::string_view implied_user = "");

// RequestFingerprint of a request holding secrets (every string field named
// "password" or "chap_secret", at any depth): each is replaced by its
// `keyed_digest` (CredentialCipher::KeyedDigest) first. Fingerprints are
// stored in plain SHA-256, so one over a password would let anyone holding
// the database confirm guesses of it offline.
std::string SecretRequestFingerprint(
    absl::string_view method, const google::protobuf::Message& request,
    const std::function<std::string(absl::string_view)>& keyed_digest);

// Inside a transaction: the stored response of an earlier call with this
// request_id from `account_id`, or nullopt when there is none (or it is older
// than 24 hours). INVALID_ARGUMENT (request_id) if it was a different request.
// An empty request_id always yields nullopt.
absl::StatusOr<std::optional<std::string>> FindRequest(SqliteConnection& conn,
                                                       absl::string_view account_id,
                                                       absl::string_view request_id,
                                                       absl::string_view fingerprint);

// Inside the transaction that makes a call's whole effect, before it acts
// (RequestIdStore::FindInTransaction): the earlier identical call's response,
// or nullopt (act, then RememberRequest in the same transaction). Such calls
// take no claim: identical calls serialize on the transaction. A pending
// claim of the same request is a leftover of a crash and is ignored (the
// remembered response replaces it); INVALID_ARGUMENT (request_id) if a live
// claim or response is of a different request.
absl::StatusOr<std::optional<std::string>> FindRequestForUpdate(SqliteConnection& conn,
                                                                absl::string_view account_id,
                                                                absl::string_view request_id,
                                                                absl::string_view fingerprint);

// Inside a transaction, before a call acts (RequestIdStore::Claim).
struct ClaimResult {
  // An identical call holds the request_id and has not finished.
  bool running = false;
  // The earlier call's response; nullopt (and not running): claimed, act now.
  std::optional<std::string> response;
  // Set when this claim took over one left by a call that died mid-way: when
  // that claim was made (its effect, if any, is not older).
  std::optional<int64_t> orphan_time_micros;
};
// Claims (account_id, request_id) with a pending row naming `holder` (the
// claiming RequestIdStore), unless an earlier call finished (its response)
// or is running (`running`). A pending row of another holder is from a
// process that ended (the database has one writer process), and one older
// than a minute from a call that died; either is claimed again
// (`orphan_time_micros`). INVALID_ARGUMENT (request_id) for a different
// request. An empty request_id claims nothing.
absl::StatusOr<ClaimResult> ClaimRequest(SqliteConnection& conn, absl::string_view account_id,
                                         absl::string_view request_id,
                                         absl::string_view fingerprint,
                                         absl::string_view holder);
// Deletes a pending claim (not a finished call's response).
absl::Status ReleaseRequest(SqliteConnection& conn, absl::string_view account_id,
                            absl::string_view request_id);

// Inside the same transaction as the call's effect: remembers `response`
// (completing a claim). No-op for an empty request_id.
absl::Status RememberRequest(SqliteConnection& conn, absl::string_view account_id,
                             absl::string_view request_id, absl::string_view fingerprint,
                             absl::string_view response);

// Runs `work` in one transaction with request_id deduplication: a repeat of
// an earlier successful call returns its stored response without running
// `work`; otherwise `work` runs and its response is remembered (after
// `scrub`, which removes what must be shown only once, such as secrets).
// Failed calls are not remembered, so a retry may succeed. `replay_check`
// repeats, for a repeat, the permission checks that `work` makes (the caller
// may have lost a permission since): its error is returned instead of the
// stored response.
template <typename Response>
absl::StatusOr<Response> IdempotentTransaction(
    SqliteDatabase* db, absl::string_view account_id, absl::string_view request_id,
    const std::string& fingerprint,
    const std::function<absl::StatusOr<Response>(SqliteConnection&)>& work,
    const std::function<void(Response*)>& scrub = nullptr,
    const std::function<absl::Status(SqliteConnection&, const Response&)>& replay_check =
        nullptr) {
  Response response;
  absl::Status status = db->Transaction([&](SqliteConnection& conn) -> absl::Status {
    auto prior = FindRequest(conn, account_id, request_id, fingerprint);
    if (!prior.ok()) return prior.status();
    if (prior->has_value()) {
      if (!response.ParseFromString(**prior)) {
        return absl::InternalError("stored response of request_id does not parse");
      }
      return replay_check ? replay_check(conn, response) : absl::OkStatus();
    }
    absl::StatusOr<Response> result = work(conn);
    if (!result.ok()) return result.status();
    response = *std::move(result);
    if (request_id.empty()) return absl::OkStatus();
    Response stored = response;
    if (scrub) scrub(&stored);
    return RememberRequest(conn, account_id, request_id, fingerprint,
                           stored.SerializeAsString());
  });
  if (!status.ok()) return status;
  return response;
}

}  // namespace controlplane

#endif  // CONTROLPLANE_IDEMPOTENCY_H_
