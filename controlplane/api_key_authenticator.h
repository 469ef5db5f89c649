// API keys: generation, and the Authenticator that resolves
// `authorization: Bearer <secret>` against the api_keys table.
//
// A secret reads "itk_<key id>_<43 characters of base64url>": the key id makes
// the lookup one primary-key hit; the 32 random bytes are the credential. Only
// SHA-256(secret) is stored and it is compared in constant time. The resolved
// caller is cached per key id until any identity table (accounts, users,
// permissions, device access, keys) changes, so a revoked key, a deleted user
// or a changed permission takes effect on the very next call. Unknown keys
// (guesses, each a database read) are throttled per client address
// (FailedAuthLimiter). Missing and malformed keys are refused without a read
// and never throttle anything; every refusal of an address (missing,
// malformed, unknown or throttled key) counts in a second per-address bucket
// of the same size, and once that is empty the address's refusals are marked
// (MarkThrottled) so that the audit log summarizes them.
#ifndef CONTROLPLANE_API_KEY_AUTHENTICATOR_H_
#define CONTROLPLANE_API_KEY_AUTHENTICATOR_H_

#include <cstdint>
#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/authenticator.h"
#include "controlplane/caller.h"
#include "controlplane/failed_auth_limiter.h"
#include "controlplane/sqlite_database.h"
#include "absl/synchronization/mutex.h"

namespace controlplane {

struct GeneratedApiKey {
  std::string id;           // UUID, the api_keys primary key
  std::string secret;       // shown once to the user
  std::string prefix;       // recognisable start of the secret
  std::string secret_hash;  // SHA-256(secret), what is stored
};
GeneratedApiKey GenerateApiKey();

// Inserts a generated key for `user_id` inside a transaction.
absl::Status InsertApiKey(SqliteConnection& conn, const GeneratedApiKey& key,
                          absl::string_view user_id, absl::string_view description,
                          int64_t create_time);

// The Caller for a user (permissions, device access, operator flag), without
// key or peer. NOT_FOUND if the user does not exist.
absl::StatusOr<Caller> LoadCaller(SqliteConnection& conn, absl::string_view user_id);

// Thread-safe; `db` must outlive it and be the database's only writer (the
// cache learns of identity changes from db->watched_generation()).
class ApiKeyAuthenticator final : public Authenticator {
 public:
  explicit ApiKeyAuthenticator(SqliteDatabase* db,
                               FailedAuthLimiter::Options limiter = FailedAuthLimiter::Options(),
                               std::function<absl::Time()> now = [] { return absl::Now(); });

  // Throttled by the call's peer address.
  absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& context) override;
  // The same, from the raw metadata value ("Bearer ...") and the gRPC peer
  // string; an empty peer is never throttled. While the peer's address is
  // throttled, a key that never authenticated here (since the cache last
  // started over) is refused with UNAUTHENTICATED saying how long to wait,
  // without a database read; a key that did is still read and served. A
  // revoked key (or one whose user is gone) is refused from memory after its
  // first refusal: revocation is final.
  absl::StatusOr<Caller> AuthenticateHeader(absl::string_view authorization,
                                            absl::string_view peer = "");

  // Calls answered from memory (served or refused), for tests.
  int64_t cache_hits() const;

 private:
  // `status`, a refusal that is no guess (no key, a malformed, revoked or
  // orphaned key): counted in refusals_ only, marked if the address floods.
  absl::Status RefuseUnread(absl::string_view peer, absl::Status status);
  // Counts an unknown key of `address` in both buckets; marks `status` if
  // either was already empty.
  absl::Status CountFailure(absl::string_view address, absl::Status status);

  struct CachedKey {
    std::string secret_hash;
    Caller caller;
    uint64_t generation;
  };

  SqliteDatabase* db_;
  // Unknown keys: gates the database reads of unproven keys.
  FailedAuthLimiter limiter_;
  // Every refusal: decides only which refusals are marked for summaries.
  FailedAuthLimiter refusals_;
  // False when the identity tables could not be watched: every call reads.
  bool cache_enabled_ = false;
  mutable absl::Mutex mu_;
  // By key id. Only keys that authenticated; unknown keys always read the table.
  absl::flat_hash_map<std::string, CachedKey> cache_ ABSL_GUARDED_BY(mu_);
  struct RefusedKey {
    std::string secret_hash;
    std::string why;
  };
  // By key id: keys with the right secret refused for good (revoked, user
  // deleted); neither can be undone, so entries never go stale.
  absl::flat_hash_map<std::string, RefusedKey> refused_ ABSL_GUARDED_BY(mu_);
  int64_t cache_hits_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_API_KEY_AUTHENTICATOR_H_
