// SqliteInventoryStore: servers (the operator's records and the caller-facing
// reads), their sealed software credentials, and the state changes the
// create and deploy flows make.
#include "controlplane/sqlite_inventory_store.h"

#include <set>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
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
using internal::NoSuchServer;
using internal::OperatorsOnly;
using internal::ParseIpv4;
using internal::ReadServerRow;
using internal::ValidateDatacenterName;

namespace {

constexpr int kMaxCredentials = 32;
constexpr int kMaxDisks = 16;

// FAILED_PRECONDITION while an operation that is not terminal holds the
// server: a create capturing it (its target) or a deploy building it (in its
// deployed servers). Changing or removing it then would pull it from under
// the operation.
absl::Status RefuseWhileHeld(SqliteConnection& conn, const std::string& server_id,
                             absl::string_view action) {
  auto busy = [&](absl::string_view operation_id, absl::string_view what) {
    return absl::FailedPreconditionError(absl::StrCat(
        "server ", server_id, " is held by operation ", operation_id, " (", what,
        "); wait for it to end or cancel it, then ", action, " the server"));
  };
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id FROM operations WHERE target_id = ?1 AND kind = ?2 AND state IN (1, 2, 3) "
        "LIMIT 1"));
    stmt.Bind(1, server_id).Bind(2, int{v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE});
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (row) return busy(stmt.ColumnText(0), "capturing it");
  }
  // Running deploys are few; their server lists are serialized.
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT id, result_deployed_servers FROM operations WHERE kind = ?1 AND "
      "state IN (1, 2, 3) AND result_deployed_servers IS NOT NULL"));
  stmt.Bind(1, int{v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE});
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::DeployedServers servers;
    if (!servers.ParseFromString(stmt.ColumnBlob(1))) continue;
    for (const std::string& id : servers.server_ids()) {
      if (id == server_id) return busy(stmt.ColumnText(0), "deploying it");
    }
  }
  return absl::OkStatus();
}

bool IsHostLabel(absl::string_view label) {
  if (label.empty() || label.size() > 63 || label.front() == '-' || label.back() == '-') {
    return false;
  }
  for (char c : label) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-') return false;
  }
  return true;
}

absl::Status ValidateHostname(absl::string_view hostname) {
  if (!IsHostLabel(hostname)) {
    return Invalid("hostname", "must be an RFC 1123 label: 1..63 letters, digits or '-', "
                               "not starting or ending with '-'");
  }
  return absl::OkStatus();
}

absl::Status ValidateDomain(absl::string_view domain) {
  if (domain.empty()) return absl::OkStatus();
  if (domain.size() > 189) return Invalid("domain", "must be at most 189 characters");
  for (absl::string_view label : absl::StrSplit(domain, '.')) {
    if (!IsHostLabel(label)) return Invalid("domain", "must be dot-separated RFC 1123 labels");
  }
  return absl::OkStatus();
}

bool IsMac(absl::string_view mac) {
  if (mac.size() != 17) return false;
  for (size_t i = 0; i < mac.size(); ++i) {
    if (i % 3 == 2) {
      if (mac[i] != ':') return false;
    } else if (!absl::ascii_isxdigit(static_cast<unsigned char>(mac[i]))) {
      return false;
    }
  }
  return true;
}

absl::Status ValidateConfiguration(absl::string_view field, const v1::ServerConfiguration& config) {
  if (config.cpu_count() < 1 || config.cpu_count() > 128) {
    return Invalid(absl::StrCat(field, ".cpu_count"), "must be 1..128");
  }
  if (config.memory_mib() < 256 || config.memory_mib() > 4194304) {
    return Invalid(absl::StrCat(field, ".memory_mib"), "must be 256..4194304");
  }
  if (!config.os_reference().empty()) {
    RETURN_IF_ERROR(ValidateToken(absl::StrCat(field, ".os_reference"), config.os_reference(),
                                  64, "_.-"));
  }
  RETURN_IF_ERROR(ValidateEnum(absl::StrCat(field, ".boot_mode"), config.boot_mode(),
                               v1::BootMode_IsValid, true));
  if (config.network_interfaces_size() > 16) {
    return Invalid(absl::StrCat(field, ".network_interfaces"), "at most 16");
  }
  std::set<std::string> names;
  for (const v1::NetworkInterface& nic : config.network_interfaces()) {
    std::string f = absl::StrCat(field, ".network_interfaces");
    RETURN_IF_ERROR(ValidateToken(absl::StrCat(f, ".name"), nic.name(), 15, "_.-"));
    if (!names.insert(nic.name()).second) return Invalid(f, "duplicate name");
    if (!nic.mac_address().empty() && !IsMac(nic.mac_address())) {
      return Invalid(absl::StrCat(f, ".mac_address"), "must look like 02:00:00:ab:cd:ef");
    }
    if (!nic.ip_address().empty()) {
      std::vector<absl::string_view> parts = absl::StrSplit(nic.ip_address(), '/');
      int prefix = 0;
      if (parts.size() != 2 || !ParseIpv4(parts[0]) || !absl::SimpleAtoi(parts[1], &prefix) ||
          prefix < 0 || prefix > 32) {
        return Invalid(absl::StrCat(f, ".ip_address"), "must look like 10.0.0.5/24");
      }
    }
    if (!nic.gateway().empty() && !ParseIpv4(nic.gateway())) {
      return Invalid(absl::StrCat(f, ".gateway"), "must be an IPv4 address");
    }
    if (nic.dns_servers_size() > 4) return Invalid(absl::StrCat(f, ".dns_servers"), "at most 4");
    for (const std::string& dns : nic.dns_servers()) {
      if (!ParseIpv4(dns)) return Invalid(absl::StrCat(f, ".dns_servers"), "must be IPv4 addresses");
    }
    if (!nic.ip_pool_id().empty()) {
      RETURN_IF_ERROR(ValidateUuid(absl::StrCat(f, ".ip_pool_id"), nic.ip_pool_id()));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateCredentials(
    const google::protobuf::RepeatedPtrField<v1::SoftwareCredential>& creds) {
  if (creds.size() > kMaxCredentials) {
    return Invalid("credentials", absl::StrCat("at most ", kMaxCredentials));
  }
  std::set<std::pair<std::string, std::string>> seen;
  for (const v1::SoftwareCredential& c : creds) {
    RETURN_IF_ERROR(ValidateName("credentials.software", c.software(), 64).status());
    RETURN_IF_ERROR(ValidateName("credentials.username", c.username(), 64).status());
    // The password is checked for length only, and never echoed.
    if (c.password().size() > 256 * 4 || Utf8Length(c.password()) < 0 ||
        Utf8Length(c.password()) > 256) {
      return Invalid("credentials.password", "must be valid UTF-8, at most 256 characters");
    }
    if (!seen.insert({c.software(), c.username()}).second) {
      return Invalid("credentials", "duplicate software and username");
    }
  }
  return absl::OkStatus();
}

// The server if the caller may see it (operator, or own account and inside
// device access), else NOT_FOUND; then PERMISSION_DENIED without `needed`.
absl::StatusOr<v1::Server> VisibleServer(SqliteConnection& conn, const Caller& caller,
                                         absl::string_view id, v1::Permission needed) {
  ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, id));
  if (!server) return NoSuchServer();
  if (!caller.is_operator &&
      (server->account_id() != caller.account_id || !caller.CanAccessServer(server->id()))) {
    return NoSuchServer();
  }
  if (!caller.Has(needed)) {
    return absl::PermissionDeniedError(
        absl::StrCat("this needs ", v1::Permission_Name(needed)));
  }
  return *std::move(server);
}

std::string CredentialContext(absl::string_view server_id, int position) {
  return ServerCredentialContext(server_id, position);
}

}  // namespace

// ---------------------------------------------------------------- Servers

absl::Status SqliteInventoryStore::WriteCredentials(
    SqliteConnection& conn, const std::string& server_id,
    const google::protobuf::RepeatedPtrField<v1::SoftwareCredential>& creds) {
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM server_credentials WHERE server_id = ?1"));
    RETURN_IF_ERROR(stmt.Bind(1, server_id).Run());
  }
  int position = 0;
  for (const v1::SoftwareCredential& c : creds) {
    ASSIGN_OR_RETURN(std::string sealed,
                     cipher_->Encrypt(c.password(), CredentialContext(server_id, position)));
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "INSERT INTO server_credentials (server_id, position, software, username, password) "
        "VALUES (?1, ?2, ?3, ?4, ?5)"));
    stmt.Bind(1, server_id).Bind(2, position).Bind(3, c.software()).Bind(4, c.username());
    RETURN_IF_ERROR(stmt.BindBlob(5, sealed).Run());
    ++position;
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<v1::SoftwareCredential>> SqliteInventoryStore::ReadCredentialsIn(
    SqliteConnection& conn, const std::string& server_id) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT position, software, username, password FROM server_credentials "
      "WHERE server_id = ?1 ORDER BY position"));
  stmt.Bind(1, server_id);
  std::vector<v1::SoftwareCredential> creds;
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::SoftwareCredential c;
    c.set_software(stmt.ColumnText(1));
    c.set_username(stmt.ColumnText(2));
    ASSIGN_OR_RETURN(*c.mutable_password(),
                     cipher_->Decrypt(stmt.ColumnBlob(3),
                                      CredentialContext(server_id,
                                                        static_cast<int>(stmt.ColumnInt(0)))));
    creds.push_back(std::move(c));
  }
  return creds;
}

absl::StatusOr<v1::CreateServerResponse> SqliteInventoryStore::CreateServer(
    const Caller& caller, const v1::CreateServerRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("registering servers");
  RETURN_IF_ERROR(ValidateUuid("account_id", request.account_id()));
  RETURN_IF_ERROR(ValidateEnum("type", request.type(), v1::ServerType_IsValid, false));
  RETURN_IF_ERROR(ValidateHostname(request.hostname()));
  RETURN_IF_ERROR(ValidateDomain(request.domain()));
  RETURN_IF_ERROR(ValidateDatacenterName("datacenter", request.datacenter()));
  RETURN_IF_ERROR(ValidateConfiguration("configuration", request.configuration()));
  RETURN_IF_ERROR(ValidateEnum("power_state", request.power_state(), v1::PowerState_IsValid, true));
  if (request.disks_size() == 0 || request.disks_size() > kMaxDisks) {
    return Invalid("disks", absl::StrCat("1..", kMaxDisks, " disks, exactly one of them boot"));
  }
  std::set<int> indexes;
  int boot_disks = 0;
  for (const v1::ServerDisk& disk : request.disks()) {
    if (disk.device_index() < 0 || disk.device_index() > 15) {
      return Invalid("disks.device_index", "must be 0..15");
    }
    if (!indexes.insert(disk.device_index()).second) {
      return Invalid("disks.device_index", "duplicate");
    }
    if (disk.boot()) ++boot_disks;
    if (disk.boot() && disk.config_drive()) {
      return Invalid("disks", "the boot disk cannot be the config drive");
    }
    RETURN_IF_ERROR(ValidateUuid("disks.san_volume_id", disk.san_volume_id()));
  }
  if (boot_disks != 1) return Invalid("disks", "exactly one disk must be the boot disk");
  RETURN_IF_ERROR(ValidateCredentials(request.credentials()));
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));

  return IdempotentTransaction<v1::CreateServerResponse>(
      db_, caller.account_id, request.request_id(),
      SecretRequestFingerprint("CreateServer", request, KeyedDigest()),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::CreateServerResponse> {
        ASSIGN_OR_RETURN(bool account, Exists(conn, "SELECT 1 FROM accounts WHERE id = ?1",
                                              request.account_id()));
        if (!account) return absl::NotFoundError("account_id: account not found");
        ASSIGN_OR_RETURN(bool dc, Exists(conn, "SELECT 1 FROM datacenters WHERE name = ?1",
                                         request.datacenter()));
        if (!dc) return absl::NotFoundError("datacenter: not found");
        std::string id = NewUuid();
        int64_t now = NowMicros();
        {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "INSERT INTO servers (id, account_id, type, hostname, domain, datacenter, state, "
              "power_state, configuration, create_time, update_time) "
              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?10)"));
          stmt.Bind(1, id).Bind(2, request.account_id()).Bind(3, int{request.type()});
          stmt.Bind(4, request.hostname()).Bind(5, request.domain()).Bind(6, request.datacenter());
          stmt.Bind(7, int{v1::SERVER_STATE_ACTIVE});
          stmt.Bind(8, int{request.power_state() == v1::POWER_STATE_UNSPECIFIED
                               ? v1::POWER_STATE_RUNNING
                               : request.power_state()});
          stmt.BindBlob(9, request.configuration().SerializeAsString()).Bind(10, now);
          RETURN_IF_ERROR(stmt.Run());
        }
        for (const v1::ServerDisk& disk : request.disks()) {
          ASSIGN_OR_RETURN(auto volume, conn.Prepare(
              "SELECT state, datacenter FROM san_volumes WHERE id = ?1"));
          volume.Bind(1, disk.san_volume_id());
          ASSIGN_OR_RETURN(bool found, volume.Step());
          if (!found) {
            return absl::NotFoundError(
                absl::StrCat("disks.san_volume_id: volume ", disk.san_volume_id(), " not found"));
          }
          if (volume.ColumnInt(0) != v1::SAN_VOLUME_STATE_FREE) {
            return absl::FailedPreconditionError(absl::StrCat(
                "disks.san_volume_id: volume ", disk.san_volume_id(), " is not FREE"));
          }
          if (volume.ColumnText(1) != request.datacenter()) {
            return absl::FailedPreconditionError(absl::StrCat(
                "disks.san_volume_id: volume ", disk.san_volume_id(), " lies in datacenter ",
                volume.ColumnText(1)));
          }
          ASSIGN_OR_RETURN(auto attach, conn.Prepare(
              "UPDATE san_volumes SET state = ?2, attached_server_id = ?3 WHERE id = ?1"));
          attach.Bind(1, disk.san_volume_id()).Bind(2, int{v1::SAN_VOLUME_STATE_ATTACHED});
          RETURN_IF_ERROR(attach.Bind(3, id).Run());
          ASSIGN_OR_RETURN(auto insert, conn.Prepare(
              "INSERT INTO server_disks (server_id, device_index, boot, config_drive, "
              "san_volume_id) VALUES (?1, ?2, ?3, ?4, ?5)"));
          insert.Bind(1, id).Bind(2, disk.device_index()).Bind(3, disk.boot());
          RETURN_IF_ERROR(insert.Bind(4, disk.config_drive()).Bind(5, disk.san_volume_id()).Run());
        }
        RETURN_IF_ERROR(WriteCredentials(conn, id, request.credentials()));
        ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, id));
        v1::CreateServerResponse response;
        *response.mutable_server() = *std::move(server);
        return response;
      });
}

absl::StatusOr<v1::GetServerResponse> SqliteInventoryStore::GetServer(
    const Caller& caller, const v1::GetServerRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  v1::GetServerResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(*response.mutable_server(),
                     VisibleServer(conn, caller, request.id(), v1::PERMISSION_SERVER_VIEW));
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::ListServersResponse> SqliteInventoryStore::ListServers(
    const Caller& caller, const v1::ListServersRequest& request) {
  if (!caller.Has(v1::PERMISSION_SERVER_VIEW)) {
    return absl::PermissionDeniedError("listing servers needs PERMISSION_SERVER_VIEW");
  }
  std::string account_id = request.account_id();
  if (!account_id.empty()) {
    RETURN_IF_ERROR(ValidateUuid("account_id", account_id));
    if (!caller.is_operator && account_id != caller.account_id) {
      return absl::NotFoundError("account_id: account not found");
    }
  }
  if (!caller.is_operator) account_id = caller.account_id;
  if (!request.datacenter().empty()) {
    RETURN_IF_ERROR(ValidateDatacenterName("datacenter", request.datacenter()));
  }
  RETURN_IF_ERROR(ValidateEnum("type", request.type(), v1::ServerType_IsValid, true));
  RETURN_IF_ERROR(ValidateEnum("state", request.state(), v1::ServerState_IsValid, true));
  if (!request.source_image_template_id().empty()) {
    RETURN_IF_ERROR(ValidateUuid("source_image_template_id", request.source_image_template_id()));
  }
  // A fully qualified name is at most 253 characters.
  RETURN_IF_ERROR(ValidateText("hostname_contains", request.hostname_contains(), 253));
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  bool restricted = !caller.is_operator && !caller.all_servers;
  std::string filters = FilterKey(
      {"servers", account_id, restricted ? caller.user_id : "", request.datacenter(),
       absl::StrCat(request.type()), absl::StrCat(request.state()), request.hostname_contains(),
       request.source_image_template_id()});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  RETURN_IF_ERROR(CheckCursor(after, 2));
  v1::ListServersResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id FROM servers WHERE (?1 = '' OR account_id = ?1) "
        "AND (?2 = '' OR datacenter = ?2) AND (?3 = 0 OR type = ?3) AND (?4 = 0 OR state = ?4) "
        "AND (?5 = '' OR instr(lower(hostname), lower(?5)) > 0) "
        "AND (?6 = '' OR source_image_template_id = ?6) "
        "AND (?7 = 0 OR id IN (SELECT server_id FROM user_servers WHERE user_id = ?8)) "
        "AND (?9 = 0 OR (hostname, id) > (?10, ?11)) ORDER BY hostname, id LIMIT ?12"));
    stmt.Bind(1, account_id).Bind(2, request.datacenter()).Bind(3, int{request.type()});
    stmt.Bind(4, int{request.state()}).Bind(5, request.hostname_contains());
    stmt.Bind(6, request.source_image_template_id()).Bind(7, restricted).Bind(8, caller.user_id);
    stmt.Bind(9, !after.empty()).Bind(10, Part(after, 0)).Bind(11, Part(after, 1));
    stmt.Bind(12, page_size + 1);
    ASSIGN_OR_RETURN(auto page, PageIds(stmt, page_size));
    for (const std::string& id : page.first) {
      ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, id));
      if (server) *response.add_servers() = *std::move(server);
    }
    if (page.second && response.servers_size() > 0) {
      const v1::Server& last = response.servers(response.servers_size() - 1);
      response.set_next_page_token(EncodePageToken({last.hostname(), last.id()}, filters));
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::UpdateServerResponse> SqliteInventoryStore::UpdateServer(
    const Caller& caller, const v1::UpdateServerRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  if (!caller.is_operator) {
    // Visible servers answer PERMISSION_DENIED, invisible ones NOT_FOUND.
    RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) {
      return VisibleServer(conn, caller, request.id(), v1::PERMISSION_SERVER_VIEW).status();
    }));
    return OperatorsOnly("changing servers");
  }
  ASSIGN_OR_RETURN(auto paths,
                   ValidateUpdateMask(request.update_mask(), {"hostname", "domain", "state",
                                                              "power_state", "configuration"}));
  if (paths.count("hostname")) RETURN_IF_ERROR(ValidateHostname(request.hostname()));
  if (paths.count("domain")) RETURN_IF_ERROR(ValidateDomain(request.domain()));
  if (paths.count("state")) {
    RETURN_IF_ERROR(ValidateEnum("state", request.state(), v1::ServerState_IsValid, false));
  }
  if (paths.count("power_state")) {
    RETURN_IF_ERROR(
        ValidateEnum("power_state", request.power_state(), v1::PowerState_IsValid, false));
  }
  if (paths.count("configuration")) {
    RETURN_IF_ERROR(ValidateConfiguration("configuration", request.configuration()));
  }
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::UpdateServerResponse>(
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("UpdateServer", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::UpdateServerResponse> {
        ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, request.id()));
        if (!server) return NoSuchServer();
        RETURN_IF_ERROR(RefuseWhileHeld(conn, request.id(), "change"));
        if (paths.count("hostname")) server->set_hostname(request.hostname());
        if (paths.count("domain")) server->set_domain(request.domain());
        if (paths.count("state")) server->set_state(request.state());
        if (paths.count("power_state")) server->set_power_state(request.power_state());
        if (paths.count("configuration")) {
          *server->mutable_configuration() = request.configuration();
        }
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "UPDATE servers SET hostname = ?2, domain = ?3, state = ?4, power_state = ?5, "
            "configuration = ?6, update_time = ?7 WHERE id = ?1"));
        stmt.Bind(1, server->id()).Bind(2, server->hostname()).Bind(3, server->domain());
        stmt.Bind(4, int{server->state()}).Bind(5, int{server->power_state()});
        stmt.BindBlob(6, server->configuration().SerializeAsString()).Bind(7, NowMicros());
        RETURN_IF_ERROR(stmt.Run());
        ASSIGN_OR_RETURN(auto updated, ReadServerRow(conn, request.id()));
        v1::UpdateServerResponse response;
        *response.mutable_server() = *std::move(updated);
        return response;
      });
}

absl::StatusOr<v1::DeleteServerResponse> SqliteInventoryStore::DeleteServer(
    const Caller& caller, const v1::DeleteServerRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  if (!caller.is_operator) {
    RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) {
      return VisibleServer(conn, caller, request.id(), v1::PERMISSION_SERVER_VIEW).status();
    }));
    return OperatorsOnly("removing servers");
  }
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::DeleteServerResponse>(
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("DeleteServer", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::DeleteServerResponse> {
        ASSIGN_OR_RETURN(bool found,
                         Exists(conn, "SELECT 1 FROM servers WHERE id = ?1", request.id()));
        if (!found) return NoSuchServer();
        RETURN_IF_ERROR(RefuseWhileHeld(conn, request.id(), "remove"));
        {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM server_disks WHERE server_id = ?1"));
          RETURN_IF_ERROR(stmt.Bind(1, request.id()).Run());
        }
        {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "UPDATE san_volumes SET state = ?2, attached_server_id = NULL "
              "WHERE attached_server_id = ?1"));
          RETURN_IF_ERROR(stmt.Bind(1, request.id()).Bind(2, int{v1::SAN_VOLUME_STATE_FREE}).Run());
        }
        {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM ip_allocations WHERE server_id = ?1"));
          RETURN_IF_ERROR(stmt.Bind(1, request.id()).Run());
        }
        {
          ASSIGN_OR_RETURN(auto stmt,
                           conn.Prepare("DELETE FROM static_addresses WHERE server_id = ?1"));
          RETURN_IF_ERROR(stmt.Bind(1, request.id()).Run());
        }
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM servers WHERE id = ?1"));
        RETURN_IF_ERROR(stmt.Bind(1, request.id()).Run());
        return v1::DeleteServerResponse();
      });
}

absl::StatusOr<v1::SetServerCredentialsResponse> SqliteInventoryStore::SetServerCredentials(
    const Caller& caller, const v1::SetServerCredentialsRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("server_id", request.server_id()));
  RETURN_IF_ERROR(ValidateCredentials(request.credentials()));
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::SetServerCredentialsResponse>(
      db_, caller.account_id, request.request_id(),
      SecretRequestFingerprint("SetServerCredentials", request, KeyedDigest()),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::SetServerCredentialsResponse> {
        ASSIGN_OR_RETURN(v1::Server server,
                         VisibleServer(conn, caller, request.server_id(),
                                       v1::PERMISSION_SERVER_CREDENTIALS_VIEW));
        RETURN_IF_ERROR(WriteCredentials(conn, server.id(), request.credentials()));
        {
          ASSIGN_OR_RETURN(auto stmt,
                           conn.Prepare("UPDATE servers SET update_time = ?2 WHERE id = ?1"));
          RETURN_IF_ERROR(stmt.Bind(1, server.id()).Bind(2, NowMicros()).Run());
        }
        ASSIGN_OR_RETURN(auto updated, ReadServerRow(conn, server.id()));
        v1::SetServerCredentialsResponse response;
        *response.mutable_server() = *std::move(updated);
        return response;
      },
      nullptr,
      // A repeat skips VisibleServer: the caller may have lost the permission
      // or the server's device access since.
      [&](SqliteConnection&, const v1::SetServerCredentialsResponse& r) -> absl::Status {
        if (!caller.CanAccessServer(r.server().id())) return NoSuchServer();
        if (!caller.Has(v1::PERMISSION_SERVER_CREDENTIALS_VIEW)) {
          return absl::PermissionDeniedError("this needs PERMISSION_SERVER_CREDENTIALS_VIEW");
        }
        return absl::OkStatus();
      });
}

absl::StatusOr<v1::GetServerCredentialsResponse> SqliteInventoryStore::GetServerCredentials(
    const Caller& caller, const v1::GetServerCredentialsRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("server_id", request.server_id()));
  v1::GetServerCredentialsResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(v1::Server server,
                     VisibleServer(conn, caller, request.server_id(),
                                   v1::PERMISSION_SERVER_CREDENTIALS_VIEW));
    ASSIGN_OR_RETURN(auto creds, ReadCredentialsIn(conn, server.id()));
    for (auto& c : creds) *response.add_credentials() = std::move(c);
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::GetServerConsoleResponse> SqliteInventoryStore::GetServerConsole(
    const Caller& caller, const v1::GetServerConsoleRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("server_id", request.server_id()));
  if (request.line_count() < 0 || request.line_count() > 10000) {
    return Invalid("line_count", "must be 0..10000 (0 means 100)");
  }
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) {
    return VisibleServer(conn, caller, request.server_id(), v1::PERMISSION_SERVER_VIEW).status();
  }));
  return absl::UnavailableError(
      "no compute driver is configured, so the console cannot be read; retry later");
}

// ------------------------------------------- Internal calls (create, deploy)

absl::StatusOr<v1::Server> SqliteInventoryStore::ReadServer(const std::string& server_id) {
  v1::Server server;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto row, ReadServerRow(conn, server_id));
    if (!row) return NoSuchServer();
    server = *std::move(row);
    return absl::OkStatus();
  }));
  return server;
}

absl::StatusOr<std::vector<v1::SoftwareCredential>> SqliteInventoryStore::ReadCredentials(
    const std::string& server_id) {
  std::vector<v1::SoftwareCredential> creds;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(creds, ReadCredentialsIn(conn, server_id));
    return absl::OkStatus();
  }));
  return creds;
}

absl::Status SqliteInventoryStore::SetServerStates(const std::string& server_id,
                                                   v1::ServerState state,
                                                   v1::PowerState power_state) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "UPDATE servers SET state = ?2, power_state = ?3, update_time = ?4 WHERE id = ?1"));
    stmt.Bind(1, server_id).Bind(2, int{state}).Bind(3, int{power_state}).Bind(4, NowMicros());
    RETURN_IF_ERROR(stmt.Run());
    if (stmt.Changes() == 0) return NoSuchServer();
    return absl::OkStatus();
  });
}

absl::Status SqliteInventoryStore::SetServerState(const std::string& server_id,
                                                  v1::ServerState state) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, server_id));
    if (!server) return NoSuchServer();
    // ACTIVE ends a deploy (again, when its activate step is repeated after a
    // restart); a released deploy server (FAILED) must stay released.
    if (state == v1::SERVER_STATE_ACTIVE && server->state() != v1::SERVER_STATE_PROVISIONING &&
        server->state() != v1::SERVER_STATE_ACTIVE) {
      return absl::FailedPreconditionError(absl::StrCat(
          "server ", server_id, " is ", v1::ServerState_Name(server->state()),
          "; only a PROVISIONING server becomes ACTIVE"));
    }
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "UPDATE servers SET state = ?2, update_time = ?3 WHERE id = ?1"));
    return stmt.Bind(1, server_id).Bind(2, int{state}).Bind(3, NowMicros()).Run();
  });
}

absl::Status SqliteInventoryStore::SetPowerState(const std::string& server_id,
                                                 v1::PowerState power_state) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "UPDATE servers SET power_state = ?2, update_time = ?3 WHERE id = ?1"));
    RETURN_IF_ERROR(
        stmt.Bind(1, server_id).Bind(2, int{power_state}).Bind(3, NowMicros()).Run());
    if (stmt.Changes() == 0) return NoSuchServer();
    return absl::OkStatus();
  });
}

}  // namespace controlplane
