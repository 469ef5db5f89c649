#include "controlplane/api_key_authenticator.h"

#include <openssl/crypto.h>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "imagetemplates/v1/common.pb.h"

namespace controlplane {
namespace {

constexpr absl::string_view kSecretPrefix = "itk_";
constexpr size_t kSecretBytes = 32;
// Bounds the cache; past it the cache starts over.
constexpr size_t kMaxCachedKeys = 100000;

absl::Status Unauthenticated(absl::string_view why) {
  return absl::UnauthenticatedError(absl::StrCat(
      why, "; send the metadata \"authorization: Bearer <api key>\" with a valid, unrevoked key"));
}

bool SameHash(absl::string_view a, absl::string_view b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

FailedAuthLimiter::Options WithLabel(FailedAuthLimiter::Options options,
                                     absl::string_view label) {
  options.log_label = label;
  return options;
}

}  // namespace

GeneratedApiKey GenerateApiKey() {
  GeneratedApiKey key;
  key.id = NewUuid();
  key.secret = absl::StrCat(kSecretPrefix, key.id, "_",
                            absl::WebSafeBase64Escape(RandomBytes(kSecretBytes)));
  key.prefix = key.secret.substr(0, kSecretPrefix.size() + 8);
  key.secret_hash = Sha256(key.secret);
  return key;
}

absl::Status InsertApiKey(SqliteConnection& conn, const GeneratedApiKey& key,
                          absl::string_view user_id, absl::string_view description,
                          int64_t create_time) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "INSERT INTO api_keys (id, user_id, description, prefix, secret_hash, create_time) "
      "VALUES (?1, ?2, ?3, ?4, ?5, ?6)"));
  stmt.Bind(1, key.id).Bind(2, user_id).Bind(3, description).Bind(4, key.prefix);
  stmt.BindBlob(5, key.secret_hash).Bind(6, create_time);
  return stmt.Run();
}

absl::StatusOr<Caller> LoadCaller(SqliteConnection& conn, absl::string_view user_id) {
  Caller caller;
  bool operator_account = false;
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT u.account_id, u.all_servers, a.is_operator FROM users u "
        "JOIN accounts a ON a.id = u.account_id WHERE u.id = ?1"));
    stmt.Bind(1, user_id);
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::NotFoundError("user not found");
    caller.user_id = std::string(user_id);
    caller.account_id = stmt.ColumnText(0);
    caller.all_servers = stmt.ColumnInt(1) != 0;
    operator_account = stmt.ColumnInt(2) != 0;
  }
  {
    ASSIGN_OR_RETURN(auto stmt,
                     conn.Prepare("SELECT permission FROM user_permissions WHERE user_id = ?1"));
    stmt.Bind(1, user_id);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      caller.permissions.insert(static_cast<int>(stmt.ColumnInt(0)));
    }
  }
  caller.is_operator =
      operator_account &&
      caller.permissions.contains(imagetemplates::v1::PERMISSION_PLATFORM_OPERATOR);
  if (!caller.all_servers) {
    ASSIGN_OR_RETURN(auto stmt,
                     conn.Prepare("SELECT server_id FROM user_servers WHERE user_id = ?1"));
    stmt.Bind(1, user_id);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      caller.server_ids.insert(stmt.ColumnText(0));
    }
  }
  return caller;
}

ApiKeyAuthenticator::ApiKeyAuthenticator(SqliteDatabase* db, FailedAuthLimiter::Options limiter,
                                         std::function<absl::Time()> now)
    : db_(db),
      limiter_(WithLabel(limiter, "throttling unproven API keys from"), now),
      refusals_(WithLabel(limiter, "auditing refused calls in summaries from"), std::move(now)) {
  // Everything LoadCaller and the key lookup read. Cascaded deletes fire the
  // child tables' triggers too.
  absl::Status watched =
      db_->WatchTables({"accounts", "users", "user_permissions", "user_servers", "api_keys"});
  cache_enabled_ = watched.ok();
  if (!watched.ok()) {
    common::LogError("API key cache off, every call reads the database: %s",
                     watched.ToString());
  }
}

int64_t ApiKeyAuthenticator::cache_hits() const {
  absl::MutexLock lock(&mu_);
  return cache_hits_;
}

absl::StatusOr<Caller> ApiKeyAuthenticator::Authenticate(
    const grpc::ServerContextBase& context) {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  const std::string peer = context.peer();
  absl::StatusOr<Caller> caller =
      it == metadata.end()
          ? RefuseUnread(peer, Unauthenticated("no authorization metadata"))
          : AuthenticateHeader(absl::string_view(it->second.data(), it->second.size()), peer);
  if (caller.ok()) caller->peer = peer;
  return caller;
}

absl::Status ApiKeyAuthenticator::RefuseUnread(absl::string_view peer, absl::Status status) {
  if (peer.empty()) return status;
  // Not counted in limiter_: such a call reads nothing and guesses no
  // secret, and must not lock the address's unproven good keys out.
  const std::string address = FailedAuthLimiter::AddressOf(peer);
  if (refusals_.RecordFailure(address)) return MarkThrottled(std::move(status), address);
  return status;
}

absl::Status ApiKeyAuthenticator::CountFailure(absl::string_view address, absl::Status status) {
  const bool guessing = limiter_.RecordFailure(address);
  if (refusals_.RecordFailure(address) || guessing) {
    return MarkThrottled(std::move(status), address);
  }
  return status;
}

absl::StatusOr<Caller> ApiKeyAuthenticator::AuthenticateHeader(absl::string_view authorization,
                                                               absl::string_view peer) {
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWith(authorization, kBearer)) {
    return RefuseUnread(peer,
                        Unauthenticated("authorization metadata is not \"Bearer <api key>\""));
  }
  absl::string_view secret = authorization.substr(kBearer.size());
  // itk_ + 36-character UUID + _ + secret part.
  constexpr size_t kIdStart = kSecretPrefix.size();
  if (!absl::StartsWith(secret, kSecretPrefix) || secret.size() < kIdStart + 37 + 1 ||
      secret[kIdStart + 36] != '_' || !IsUuid(secret.substr(kIdStart, 36))) {
    return RefuseUnread(peer, Unauthenticated("malformed API key"));
  }
  std::string key_id(secret.substr(kIdStart, 36));
  std::string hash = Sha256(secret);
  // Read before the tables: a change committed after this read bumps it, so
  // what is cached under it can only be replaced, never served stale.
  const uint64_t generation = db_->watched_generation();
  // A key that authenticated before, even if the identity tables changed
  // since (its entry is stale, so the table is read again).
  bool proven = false;
  std::string refused_why;
  {
    absl::MutexLock lock(&mu_);
    auto it = cache_.find(key_id);
    if (cache_enabled_ && it != cache_.end() && SameHash(it->second.secret_hash, hash)) {
      if (it->second.generation == generation) {
        ++cache_hits_;
        return it->second.caller;
      }
      proven = true;
    }
    auto refused = refused_.find(key_id);
    if (refused != refused_.end() && SameHash(refused->second.secret_hash, hash)) {
      ++cache_hits_;
      refused_why = refused->second.why;
    }
  }
  if (!refused_why.empty()) return RefuseUnread(peer, Unauthenticated(refused_why));
  // Only unproven keys are throttled: a proven one is no guess, and a good
  // client behind a throttled address keeps working after an identity change.
  const std::string address = peer.empty() ? "" : FailedAuthLimiter::AddressOf(peer);
  if (!address.empty() && !proven) {
    absl::Status allowed = limiter_.Check(address);
    if (!allowed.ok()) {
      // Keeps the address's refusals summarized while the flood lasts.
      refusals_.RecordFailure(address);
      return allowed;
    }
  }
  bool unknown = false;
  std::string final_refusal;  // why a key with the right secret never works again
  absl::StatusOr<Caller> result;
  absl::Status status = db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT secret_hash, revoke_time IS NOT NULL, user_id FROM api_keys WHERE id = ?1"));
    stmt.Bind(1, key_id);
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    std::string stored = row ? stmt.ColumnBlob(0) : "";
    if (!row || !SameHash(stored, hash)) {
      unknown = true;
      return Unauthenticated("unknown API key");
    }
    if (stmt.ColumnInt(1) != 0) {
      final_refusal = "API key revoked";
      return Unauthenticated(final_refusal);
    }
    std::string user_id = stmt.ColumnText(2);
    result = LoadCaller(conn, user_id);
    if (!result.ok() && absl::IsNotFound(result.status())) {
      final_refusal = "the API key's user no longer exists";
      return Unauthenticated(final_refusal);
    }
    if (result.ok()) result->api_key_id = key_id;
    return result.status();
  });
  if (!status.ok()) {
    if (absl::IsUnauthenticated(status)) {
      absl::MutexLock lock(&mu_);
      cache_.erase(key_id);  // no longer proven
      if (!final_refusal.empty()) {
        if (refused_.size() >= kMaxCachedKeys) refused_.clear();
        refused_[key_id] = RefusedKey{hash, final_refusal};
      }
    }
    // A guess (or a typo); revoked keys and deleted users are not guesses.
    if (unknown && !address.empty()) return CountFailure(address, std::move(status));
    if (!final_refusal.empty()) return RefuseUnread(peer, std::move(status));
    return status;
  }
  if (cache_enabled_) {
    absl::MutexLock lock(&mu_);
    if (cache_.size() >= kMaxCachedKeys) cache_.clear();
    cache_[key_id] = CachedKey{hash, *result, generation};
  }
  return result;
}

}  // namespace controlplane
