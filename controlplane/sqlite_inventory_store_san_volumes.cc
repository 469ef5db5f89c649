// SqliteInventoryStore: the SAN volume pool. CHAP secrets are stored only as
// CredentialCipher ciphertext and leave only through ReadSanVolumeWithSecret.
#include "controlplane/sqlite_inventory_store.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/idempotency.h"
#include "controlplane/ids.h"
#include "controlplane/internal/sqlite_inventory_store_parts.h"
#include "controlplane/page_token.h"
#include "controlplane/validation.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;
using internal::Exists;
using internal::Invalid;
using internal::OperatorsOnly;
using internal::ValidateDatacenterName;

namespace {

constexpr absl::string_view kVolumeColumns =
    "id, datacenter, san_host, portal, iqn, lun, chap_user, size_bytes, thin, state, "
    "attached_server_id, create_time, chap_secret";

v1::SanVolume ReadVolumeRow(const SqliteStatement& stmt) {
  v1::SanVolume v;
  v.set_id(stmt.ColumnText(0));
  v.set_datacenter(stmt.ColumnText(1));
  v.set_san_host(stmt.ColumnText(2));
  v.mutable_iscsi()->set_portal(stmt.ColumnText(3));
  v.mutable_iscsi()->set_iqn(stmt.ColumnText(4));
  v.mutable_iscsi()->set_lun(static_cast<uint32_t>(stmt.ColumnInt(5)));
  v.mutable_iscsi()->set_chap_user(stmt.ColumnText(6));
  v.set_size_bytes(stmt.ColumnInt(7));
  v.set_thin(stmt.ColumnInt(8) != 0);
  v.set_state(static_cast<v1::SanVolumeState>(stmt.ColumnInt(9)));
  v.set_attached_server_id(stmt.ColumnText(10));
  *v.mutable_create_time() = ToTimestamp(stmt.ColumnInt(11));
  return v;
}

std::string ChapContext(absl::string_view volume_id) {
  return absl::StrCat("chap-secret/", volume_id);
}

}  // namespace

// ------------------------------------------------------------ SAN volumes

absl::StatusOr<v1::CreateSanVolumeResponse> SqliteInventoryStore::CreateSanVolume(
    const Caller& caller, const v1::CreateSanVolumeRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("adding SAN volumes");
  RETURN_IF_ERROR(ValidateDatacenterName("datacenter", request.datacenter()));
  RETURN_IF_ERROR(ValidateToken("san_host", request.san_host(), 64, "._-"));
  const v1::IscsiAddress& iscsi = request.iscsi();
  RETURN_IF_ERROR(ValidateToken("iscsi.portal", iscsi.portal(), 255, ".:-[]"));
  RETURN_IF_ERROR(ValidateToken("iscsi.iqn", iscsi.iqn(), 223, ".:-"));
  if (iscsi.lun() > 16383) return Invalid("iscsi.lun", "must be 0..16383");
  if (!iscsi.chap_user().empty()) {
    RETURN_IF_ERROR(ValidateName("iscsi.chap_user", iscsi.chap_user(), 256).status());
    if (iscsi.chap_secret().empty() || iscsi.chap_secret().size() > 256) {
      return Invalid("iscsi.chap_secret", "1..256 bytes when chap_user is set");
    }
  } else if (!iscsi.chap_secret().empty()) {
    return Invalid("iscsi.chap_secret", "given without chap_user");
  }
  if (request.size_bytes() < (1 << 20) || request.size_bytes() % 512 != 0) {
    return Invalid("size_bytes", "must be at least 1 MiB and a multiple of 512");
  }
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::CreateSanVolumeResponse>(
      db_, caller.account_id, request.request_id(),
      SecretRequestFingerprint("CreateSanVolume", request, KeyedDigest()),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::CreateSanVolumeResponse> {
        ASSIGN_OR_RETURN(bool dc, Exists(conn, "SELECT 1 FROM datacenters WHERE name = ?1",
                                         request.datacenter()));
        if (!dc) return absl::NotFoundError("datacenter: not found");
        {
          ASSIGN_OR_RETURN(auto stmt,
                           conn.Prepare("SELECT datacenter FROM storage_nodes WHERE id = ?1"));
          stmt.Bind(1, request.san_host());
          ASSIGN_OR_RETURN(bool row, stmt.Step());
          if (!row || stmt.ColumnText(0) != request.datacenter()) {
            return absl::NotFoundError("san_host: no such storage node in the datacenter");
          }
        }
        std::string id = NewUuid();
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "INSERT INTO san_volumes (id, datacenter, san_host, portal, iqn, lun, chap_user, "
            "chap_secret, size_bytes, thin, state, create_time) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"));
        stmt.Bind(1, id).Bind(2, request.datacenter()).Bind(3, request.san_host());
        stmt.Bind(4, iscsi.portal()).Bind(5, iscsi.iqn()).Bind(6, int64_t{iscsi.lun()});
        stmt.Bind(7, iscsi.chap_user());
        if (iscsi.chap_secret().empty()) {
          stmt.BindNull(8);
        } else {
          ASSIGN_OR_RETURN(std::string sealed, cipher_->Encrypt(iscsi.chap_secret(), ChapContext(id)));
          stmt.BindBlob(8, sealed);
        }
        stmt.Bind(9, request.size_bytes()).Bind(10, request.thin());
        stmt.Bind(11, int{v1::SAN_VOLUME_STATE_FREE}).Bind(12, NowMicros());
        absl::Status status = stmt.Run();
        if (absl::IsAlreadyExists(status)) {
          return absl::AlreadyExistsError("iscsi: this portal, IQN and LUN is already registered");
        }
        RETURN_IF_ERROR(status);
        ASSIGN_OR_RETURN(auto read, conn.Prepare(
            absl::StrCat("SELECT ", kVolumeColumns, " FROM san_volumes WHERE id = ?1")));
        read.Bind(1, id);
        ASSIGN_OR_RETURN(bool row, read.Step());
        if (!row) return absl::InternalError("new volume vanished");
        v1::CreateSanVolumeResponse response;
        *response.mutable_san_volume() = ReadVolumeRow(read);
        return response;
      });
}

absl::StatusOr<v1::ListSanVolumesResponse> SqliteInventoryStore::ListSanVolumes(
    const Caller& caller, const v1::ListSanVolumesRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("listing SAN volumes");
  RETURN_IF_ERROR(ValidateEnum("state", request.state(), v1::SanVolumeState_IsValid, true));
  if (request.min_size_bytes() < 0) return Invalid("min_size_bytes", "must not be negative");
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters = FilterKey({"san_volumes", request.datacenter(), request.san_host(),
                                   absl::StrCat(request.state()),
                                   absl::StrCat(request.min_size_bytes())});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  RETURN_IF_ERROR(CheckCursor(after, 1));
  v1::ListSanVolumesResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(absl::StrCat(
        "SELECT ", kVolumeColumns, " FROM san_volumes WHERE (?1 = '' OR datacenter = ?1) "
        "AND (?2 = '' OR san_host = ?2) AND (?3 = 0 OR state = ?3) AND size_bytes >= ?4 "
        "AND (?5 = 0 OR id > ?6) ORDER BY id LIMIT ?7")));
    stmt.Bind(1, request.datacenter()).Bind(2, request.san_host()).Bind(3, int{request.state()});
    stmt.Bind(4, request.min_size_bytes()).Bind(5, !after.empty()).Bind(6, Part(after, 0));
    stmt.Bind(7, page_size + 1);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      if (response.san_volumes_size() == page_size) {
        response.set_next_page_token(
            EncodePageToken({response.san_volumes(page_size - 1).id()}, filters));
        break;
      }
      *response.add_san_volumes() = ReadVolumeRow(stmt);
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::DeleteSanVolumeResponse> SqliteInventoryStore::DeleteSanVolume(
    const Caller& caller, const v1::DeleteSanVolumeRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("removing SAN volumes");
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::DeleteSanVolumeResponse>(
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("DeleteSanVolume", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::DeleteSanVolumeResponse> {
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT state FROM san_volumes WHERE id = ?1"));
        stmt.Bind(1, request.id());
        ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) return absl::NotFoundError("SAN volume not found");
        if (stmt.ColumnInt(0) != v1::SAN_VOLUME_STATE_FREE) {
          return absl::FailedPreconditionError(
              "the volume is ATTACHED to a server; remove the server first");
        }
        ASSIGN_OR_RETURN(auto del, conn.Prepare("DELETE FROM san_volumes WHERE id = ?1"));
        RETURN_IF_ERROR(del.Bind(1, request.id()).Run());
        return v1::DeleteSanVolumeResponse();
      });
}

// -------------------------------------------- Internal calls (storaged)

absl::StatusOr<v1::SanVolume> SqliteInventoryStore::ReadSanVolumeWithSecret(
    const std::string& volume_id) {
  v1::SanVolume volume;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        absl::StrCat("SELECT ", kVolumeColumns, " FROM san_volumes WHERE id = ?1")));
    stmt.Bind(1, volume_id);
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::NotFoundError("SAN volume not found");
    volume = ReadVolumeRow(stmt);
    if (!stmt.ColumnIsNull(12)) {
      ASSIGN_OR_RETURN(*volume.mutable_iscsi()->mutable_chap_secret(),
                       cipher_->Decrypt(stmt.ColumnBlob(12), ChapContext(volume_id)));
    }
    return absl::OkStatus();
  }));
  return volume;
}

}  // namespace controlplane
