// API keys: generation, and the Authenticator that resolves
// `authorization: Bearer <secret>` against the api_keys table.
//
// A secret reads "itk_<key id>_<43 characters of base64url>": the key id makes
// the lookup one primary-key hit; the 32 random bytes are the credential. Only
// SHA-256(secret) is stored and it is compared in constant time. Nothing is
// cached, so a revoked key or deleted user fails on the very next call.
#ifndef CONTROLPLANE_API_KEY_AUTHENTICATOR_H_
#define CONTROLPLANE_API_KEY_AUTHENTICATOR_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/authenticator.h"
#include "controlplane/caller.h"
#include "controlplane/sqlite_database.h"

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

// Thread-safe; `db` must outlive it.
class ApiKeyAuthenticator final : public Authenticator {
 public:
  explicit ApiKeyAuthenticator(SqliteDatabase* db) : db_(db) {}

  absl::StatusOr<Caller> Authenticate(const grpc::ServerContext& context) override;
  // The same, from the raw metadata value ("Bearer ...").
  absl::StatusOr<Caller> AuthenticateHeader(absl::string_view authorization);

 private:
  SqliteDatabase* db_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_API_KEY_AUTHENTICATOR_H_
