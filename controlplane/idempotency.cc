#include "controlplane/idempotency.h"

#include <memory>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"

namespace controlplane {
namespace {
constexpr int64_t kWindowMicros = int64_t{24} * 3600 * 1000000;
}  // namespace

std::string RequestFingerprint(absl::string_view method,
                               const google::protobuf::Message& request) {
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
  return Sha256(absl::StrCat(method, "\n", bytes));
}

absl::StatusOr<std::optional<std::string>> FindRequest(SqliteConnection& conn,
                                                       absl::string_view account_id,
                                                       absl::string_view request_id,
                                                       absl::string_view fingerprint) {
  if (request_id.empty()) return std::nullopt;
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT fingerprint, response FROM idempotent_requests "
      "WHERE account_id = ?1 AND request_id = ?2 AND create_time >= ?3"));
  stmt.Bind(1, account_id).Bind(2, request_id).Bind(3, NowMicros() - kWindowMicros);
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return std::nullopt;
  if (stmt.ColumnBlob(0) != fingerprint) {
    return absl::InvalidArgumentError(
        "request_id: already used for a different request; choose a new request_id");
  }
  return stmt.ColumnBlob(1);
}

absl::Status RememberRequest(SqliteConnection& conn, absl::string_view account_id,
                             absl::string_view request_id, absl::string_view fingerprint,
                             absl::string_view response) {
  if (request_id.empty()) return absl::OkStatus();
  // REPLACE: an entry older than the window may be reused.
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "INSERT OR REPLACE INTO idempotent_requests "
      "(account_id, request_id, fingerprint, response, create_time) VALUES (?1, ?2, ?3, ?4, ?5)"));
  stmt.Bind(1, account_id).Bind(2, request_id).BindBlob(3, fingerprint).BindBlob(4, response);
  stmt.Bind(5, NowMicros());
  return stmt.Run();
}

}  // namespace controlplane
