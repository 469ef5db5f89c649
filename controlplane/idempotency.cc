#include "controlplane/idempotency.h"

#include <algorithm>
#include <memory>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace controlplane {
namespace {
constexpr int64_t kWindowMicros = int64_t{24} * 3600 * 1000000;
// A claim still pending after this is from a call that died mid-way.
constexpr int64_t kStaleClaimMicros = int64_t{60} * 1000000;

// A pending claim's response column: "<holder> <first claim, micros>". The
// first claim's time survives takeovers (the row's create_time restarts the
// stale timer for the new holder), so a call that takes over a claim which
// was itself taken over still finds what the first call started.
std::string PendingValue(absl::string_view holder, int64_t first_claim_micros) {
  return absl::StrCat(holder, " ", first_claim_micros);
}
// The holder and first claim time of a pending value; a value without a time
// (written before times were kept) was first claimed at `created`.
std::pair<std::string, int64_t> ParsePending(absl::string_view value, int64_t created) {
  const size_t space = value.rfind(' ');
  int64_t first = 0;
  if (space != absl::string_view::npos && absl::SimpleAtoi(value.substr(space + 1), &first)) {
    return {std::string(value.substr(0, space)), first};
  }
  return {std::string(value), created};
}

absl::Status DifferentRequest() {
  return absl::InvalidArgumentError(
      "request_id: already used for a different request; choose a new request_id");
}
}  // namespace

std::string RequestFingerprint(absl::string_view method, const google::protobuf::Message& request,
                               absl::string_view implied_user) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  const auto* field = copy->GetDescriptor()->FindFieldByName("request_id");
  if (field != nullptr) copy->GetReflection()->ClearField(copy.get(), field);
  std::string bytes;
  {
    google::protobuf::io::StringOutputStream stream(&bytes);
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.SetSerializationDeterministic(true);
    copy->SerializeToCodedStream(&coded);
  }
  // Without an implied user the digest is what it was before there was one,
  // so request_ids stored by an older version still match.
  return Sha256(implied_user.empty() ? absl::StrCat(method, "\n", bytes)
                                     : absl::StrCat(method, "\n", implied_user, "\n", bytes));
}

namespace {
// Replaces each secret field of `message` (and of the messages it holds) by
// its keyed digest.
void DigestSecrets(google::protobuf::Message* message,
                   const std::function<std::string(absl::string_view)>& keyed_digest) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* reflection = message->GetReflection();
  std::vector<const FieldDescriptor*> fields;
  reflection->ListFields(*message, &fields);
  for (const FieldDescriptor* field : fields) {
    if (field->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      if (field->is_repeated()) {
        for (int i = 0; i < reflection->FieldSize(*message, field); ++i) {
          DigestSecrets(reflection->MutableRepeatedMessage(message, field, i), keyed_digest);
        }
      } else {
        DigestSecrets(reflection->MutableMessage(message, field), keyed_digest);
      }
    } else if (field->cpp_type() == FieldDescriptor::CPPTYPE_STRING && !field->is_repeated() &&
               (field->name() == "password" || field->name() == "chap_secret")) {
      // Hex: string fields must hold UTF-8 (protobuf logs an error otherwise).
      reflection->SetString(message, field, absl::BytesToHexString(keyed_digest(
                                                reflection->GetString(*message, field))));
    }
  }
}
}  // namespace

std::string SecretRequestFingerprint(
    absl::string_view method, const google::protobuf::Message& request,
    const std::function<std::string(absl::string_view)>& keyed_digest) {
  std::unique_ptr<google::protobuf::Message> copy(request.New());
  copy->CopyFrom(request);
  DigestSecrets(copy.get(), keyed_digest);
  return RequestFingerprint(method, *copy);
}

absl::StatusOr<std::optional<std::string>> FindRequest(SqliteConnection& conn,
                                                       absl::string_view account_id,
                                                       absl::string_view request_id,
                                                       absl::string_view fingerprint) {
  if (request_id.empty()) return std::nullopt;
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT fingerprint, response FROM idempotent_requests "
      "WHERE account_id = ?1 AND request_id = ?2 AND create_time >= ?3 AND pending = 0"));
  stmt.Bind(1, account_id).Bind(2, request_id).Bind(3, NowMicros() - kWindowMicros);
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::nullopt;
  if (stmt.ColumnBlob(0) != fingerprint) return DifferentRequest();
  return stmt.ColumnBlob(1);
}

absl::StatusOr<std::optional<std::string>> FindRequestForUpdate(SqliteConnection& conn,
                                                                absl::string_view account_id,
                                                                absl::string_view request_id,
                                                                absl::string_view fingerprint) {
  if (request_id.empty()) return std::nullopt;
  const int64_t now = NowMicros();
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT fingerprint, response, pending, create_time FROM idempotent_requests "
      "WHERE account_id = ?1 AND request_id = ?2"));
  stmt.Bind(1, account_id).Bind(2, request_id);
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::nullopt;
  const bool pending = stmt.ColumnInt(2) != 0;
  const bool live =
      stmt.ColumnInt(3) >= now - (pending ? kStaleClaimMicros : kWindowMicros);
  if (!live) return std::nullopt;
  if (stmt.ColumnBlob(0) != fingerprint) return DifferentRequest();
  if (pending) return std::nullopt;
  return stmt.ColumnBlob(1);
}

namespace {
// Deletes up to `limit` entries past the window: every write of a new
// entry calls it, so the table holds about a window's worth of calls
// instead of every request_id ever sent.
absl::Status PurgeExpiredRequests(SqliteConnection& conn, int64_t now, int limit = 64) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "DELETE FROM idempotent_requests WHERE (account_id, request_id) IN "
      "(SELECT account_id, request_id FROM idempotent_requests WHERE create_time < ?1 "
      "LIMIT ?2)"));
  return stmt.Bind(1, now - std::max(kWindowMicros, kStaleClaimMicros)).Bind(2, limit).Run();
}
}  // namespace

absl::StatusOr<ClaimResult> ClaimRequest(SqliteConnection& conn, absl::string_view account_id,
                                         absl::string_view request_id,
                                         absl::string_view fingerprint,
                                         absl::string_view holder) {
  ClaimResult result;
  if (request_id.empty()) return result;
  const int64_t now = NowMicros();
  int64_t first_claim_micros = now;
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT fingerprint, response, pending, create_time FROM idempotent_requests "
        "WHERE account_id = ?1 AND request_id = ?2"));
    stmt.Bind(1, account_id).Bind(2, request_id);
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    const int64_t created = row ? stmt.ColumnInt(3) : 0;
    const bool pending = row && stmt.ColumnInt(2) != 0;
    const auto [claim_holder, first_claim] =
        pending ? ParsePending(stmt.ColumnBlob(1), created) : std::make_pair(std::string(), now);
    const bool orphan =
        pending && (created < now - kStaleClaimMicros || claim_holder != holder);
    const bool live = row && !orphan && created >= now - kWindowMicros;
    if (live) {
      if (stmt.ColumnBlob(0) != fingerprint) return DifferentRequest();
      if (pending) {
        result.running = true;
      } else {
        result.response = stmt.ColumnBlob(1);
      }
      return result;
    }
    // Only a claim of this same request may have acted for this call; it
    // (or the first of a chain of takeovers) acted no earlier than its claim.
    if (orphan && stmt.ColumnBlob(0) == fingerprint) {
      result.orphan_time_micros = first_claim;
      first_claim_micros = first_claim;
    }
  }
  RETURN_IF_ERROR(PurgeExpiredRequests(conn, now));
  // REPLACE: an expired entry or an orphaned claim is taken over.
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "INSERT OR REPLACE INTO idempotent_requests "
      "(account_id, request_id, fingerprint, response, create_time, pending) "
      "VALUES (?1, ?2, ?3, ?4, ?5, 1)"));
  stmt.Bind(1, account_id).Bind(2, request_id).BindBlob(3, fingerprint);
  stmt.BindBlob(4, PendingValue(holder, first_claim_micros)).Bind(5, now);
  RETURN_IF_ERROR(stmt.Run());
  return result;
}

absl::Status ReleaseRequest(SqliteConnection& conn, absl::string_view account_id,
                            absl::string_view request_id) {
  if (request_id.empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "DELETE FROM idempotent_requests WHERE account_id = ?1 AND request_id = ?2 AND pending = 1"));
  return stmt.Bind(1, account_id).Bind(2, request_id).Run();
}

absl::Status RememberRequest(SqliteConnection& conn, absl::string_view account_id,
                             absl::string_view request_id, absl::string_view fingerprint,
                             absl::string_view response) {
  if (request_id.empty()) return absl::OkStatus();
  const int64_t now = NowMicros();
  RETURN_IF_ERROR(PurgeExpiredRequests(conn, now));
  // REPLACE: completes this call's claim, or reuses an expired entry.
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "INSERT OR REPLACE INTO idempotent_requests "
      "(account_id, request_id, fingerprint, response, create_time, pending) "
      "VALUES (?1, ?2, ?3, ?4, ?5, 0)"));
  stmt.Bind(1, account_id).Bind(2, request_id).BindBlob(3, fingerprint).BindBlob(4, response);
  stmt.Bind(5, now);
  return stmt.Run();
}

}  // namespace controlplane
