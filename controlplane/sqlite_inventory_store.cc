#include "controlplane/sqlite_inventory_store.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "controlplane/idempotency.h"
#include "controlplane/ids.h"
#include "controlplane/page_token.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/validation.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

namespace {

constexpr int kMaxCredentials = 32;
constexpr int kMaxDisks = 16;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}
absl::Status NoSuchServer() { return absl::NotFoundError("server not found"); }

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
absl::Status OperatorsOnly(absl::string_view what) {
  return absl::PermissionDeniedError(
      absl::StrCat(what, " needs PERMISSION_PLATFORM_OPERATOR"));
}

// ---- Value checks.

// Strict dotted quad; returns the address as an integer.
std::optional<uint32_t> ParseIpv4(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 4) return std::nullopt;
  uint32_t address = 0;
  for (absl::string_view part : parts) {
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) return std::nullopt;
    uint32_t octet = 0;
    for (char c : part) {
      if (c < '0' || c > '9') return std::nullopt;
      octet = octet * 10 + (c - '0');
    }
    if (octet > 255) return std::nullopt;
    address = (address << 8) | octet;
  }
  return address;
}

std::string FormatIpv4(uint32_t a) {
  return absl::StrCat(a >> 24, ".", (a >> 16) & 0xff, ".", (a >> 8) & 0xff, ".", a & 0xff);
}

struct Cidr {
  uint32_t network;
  int prefix;
  uint32_t first() const { return network; }
  uint32_t last() const {
    return prefix == 0 ? 0xffffffffu : network | (0xffffffffu >> prefix);
  }
  bool Contains(uint32_t a) const { return a >= first() && a <= last(); }
};

std::optional<Cidr> ParseCidr(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  if (parts.size() != 2) return std::nullopt;
  auto address = ParseIpv4(parts[0]);
  int prefix = 0;
  if (!address || parts[1].empty() || parts[1].size() > 2 || !absl::SimpleAtoi(parts[1], &prefix) ||
      prefix < 0 || prefix > 32) {
    return std::nullopt;
  }
  uint32_t mask = prefix == 0 ? 0 : 0xffffffffu << (32 - prefix);
  if ((*address & ~mask) != 0) return std::nullopt;  // host bits set: not a network
  return Cidr{*address, prefix};
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

absl::Status ValidateDatacenterName(absl::string_view field, absl::string_view name) {
  if (name.empty() || name.size() > 32) return Invalid(field, "must be 1..32 characters");
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return Invalid(field, "may contain only lowercase letters, digits and '-'");
    }
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

// ---- Row readers.

absl::StatusOr<std::optional<v1::Server>> ReadServerRow(SqliteConnection& conn,
                                                        absl::string_view id) {
  v1::Server server;
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id, account_id, type, hostname, domain, datacenter, state, power_state, "
        "configuration, source_image_template_id, create_time, update_time, "
        "EXISTS (SELECT 1 FROM server_credentials c WHERE c.server_id = servers.id) "
        "FROM servers WHERE id = ?1"));
    stmt.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return std::nullopt;
    server.set_id(stmt.ColumnText(0));
    server.set_account_id(stmt.ColumnText(1));
    server.set_type(static_cast<v1::ServerType>(stmt.ColumnInt(2)));
    server.set_hostname(stmt.ColumnText(3));
    server.set_domain(stmt.ColumnText(4));
    server.set_datacenter(stmt.ColumnText(5));
    server.set_state(static_cast<v1::ServerState>(stmt.ColumnInt(6)));
    server.set_power_state(static_cast<v1::PowerState>(stmt.ColumnInt(7)));
    if (!server.mutable_configuration()->ParseFromString(stmt.ColumnBlob(8))) {
      return absl::DataLossError("stored server configuration does not parse");
    }
    server.set_source_image_template_id(stmt.ColumnText(9));
    *server.mutable_create_time() = ToTimestamp(stmt.ColumnInt(10));
    *server.mutable_update_time() = ToTimestamp(stmt.ColumnInt(11));
    server.set_has_credentials(stmt.ColumnInt(12) != 0);
  }
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT d.device_index, d.boot, d.config_drive, v.size_bytes, v.id, v.portal, v.iqn, "
      "v.lun, v.chap_user, v.datacenter, v.san_host FROM server_disks d "
      "JOIN san_volumes v ON v.id = d.san_volume_id WHERE d.server_id = ?1 "
      "ORDER BY d.device_index"));
  stmt.Bind(1, id);
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::ServerDisk* disk = server.add_disks();
    disk->set_device_index(static_cast<int32_t>(stmt.ColumnInt(0)));
    disk->set_boot(stmt.ColumnInt(1) != 0);
    disk->set_config_drive(stmt.ColumnInt(2) != 0);
    disk->set_size_bytes(stmt.ColumnInt(3));
    disk->set_san_volume_id(stmt.ColumnText(4));
    disk->mutable_iscsi()->set_portal(stmt.ColumnText(5));
    disk->mutable_iscsi()->set_iqn(stmt.ColumnText(6));
    disk->mutable_iscsi()->set_lun(static_cast<uint32_t>(stmt.ColumnInt(7)));
    disk->mutable_iscsi()->set_chap_user(stmt.ColumnText(8));
    disk->set_datacenter(stmt.ColumnText(9));
    disk->set_san_host(stmt.ColumnText(10));
  }
  return server;
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

constexpr absl::string_view kNodeColumns =
    "id, datacenter, address, served_portals, state, last_heartbeat_time, capacity_bytes, "
    "free_bytes, create_time";

v1::StorageNode ReadNodeRow(const SqliteStatement& stmt) {
  v1::StorageNode n;
  n.set_id(stmt.ColumnText(0));
  n.set_datacenter(stmt.ColumnText(1));
  n.set_address(stmt.ColumnText(2));
  for (absl::string_view portal : absl::StrSplit(stmt.ColumnText(3), '\n', absl::SkipEmpty())) {
    n.add_served_portals(std::string(portal));
  }
  n.set_state(static_cast<v1::StorageNodeState>(stmt.ColumnInt(4)));
  *n.mutable_last_heartbeat_time() = ToTimestamp(stmt.ColumnInt(5));
  n.set_capacity_bytes(stmt.ColumnInt(6));
  n.set_free_bytes(stmt.ColumnInt(7));
  *n.mutable_create_time() = ToTimestamp(stmt.ColumnInt(8));
  return n;
}

absl::StatusOr<std::optional<v1::IpPool>> ReadPoolRow(SqliteConnection& conn,
                                                      absl::string_view id) {
  v1::IpPool pool;
  {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id, datacenter, subnet, gateway, dns_servers, total_count, create_time, "
        "(SELECT COUNT(*) FROM ip_allocations a WHERE a.pool_id = ip_pools.id) "
        "FROM ip_pools WHERE id = ?1"));
    stmt.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return std::nullopt;
    pool.set_id(stmt.ColumnText(0));
    pool.set_datacenter(stmt.ColumnText(1));
    pool.set_subnet(stmt.ColumnText(2));
    pool.set_gateway(stmt.ColumnText(3));
    for (absl::string_view dns : absl::StrSplit(stmt.ColumnText(4), '\n', absl::SkipEmpty())) {
      pool.add_dns_servers(std::string(dns));
    }
    pool.set_total_count(stmt.ColumnInt(5));
    *pool.mutable_create_time() = ToTimestamp(stmt.ColumnInt(6));
    pool.set_allocated_count(stmt.ColumnInt(7));
  }
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT first_address, last_address FROM ip_pool_ranges WHERE pool_id = ?1 "
      "ORDER BY position"));
  stmt.Bind(1, id);
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::IpRange* range = pool.add_ranges();
    range->set_start(FormatIpv4(static_cast<uint32_t>(stmt.ColumnInt(0))));
    range->set_end(FormatIpv4(static_cast<uint32_t>(stmt.ColumnInt(1))));
  }
  return pool;
}

absl::StatusOr<bool> Exists(SqliteConnection& conn, absl::string_view sql, absl::string_view key) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
  stmt.Bind(1, key);
  return stmt.Step();
}

std::string CredentialContext(absl::string_view server_id, int position) {
  return absl::StrCat("server-credential/", server_id, "/", position);
}
std::string ChapContext(absl::string_view volume_id) {
  return absl::StrCat("chap-secret/", volume_id);
}

// Collects the ids of a keyset page: fetches up to page_size + 1 rows of
// column 0, returns the first page_size and whether there were more.
absl::StatusOr<std::pair<std::vector<std::string>, bool>> PageIds(SqliteStatement& stmt,
                                                                  int page_size) {
  std::vector<std::string> ids;
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    ids.push_back(stmt.ColumnText(0));
  }
  bool more = static_cast<int>(ids.size()) > page_size;
  if (more) ids.pop_back();
  return std::make_pair(std::move(ids), more);
}

absl::Status CheckCursor(const std::vector<std::string>& after, size_t parts) {
  if (!after.empty() && after.size() != parts) return Invalid("page_token", "malformed");
  return absl::OkStatus();
}

std::string Part(const std::vector<std::string>& after, size_t i) {
  return after.empty() ? std::string() : after[i];
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
      db_, caller.account_id, request.request_id(), RequestFingerprint("CreateServer", request),
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
  if (request.update_mask().paths_size() == 0) {
    return Invalid("update_mask", "must name at least one field");
  }
  std::set<std::string> paths;
  for (const std::string& path : request.update_mask().paths()) {
    if (path != "hostname" && path != "domain" && path != "state" && path != "power_state" &&
        path != "configuration") {
      return Invalid("update_mask", absl::StrCat("unknown path \"", path, "\""));
    }
    paths.insert(path);
  }
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
      db_, caller.account_id, request.request_id(), RequestFingerprint("UpdateServer", request),
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
      db_, caller.account_id, request.request_id(), RequestFingerprint("DeleteServer", request),
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
      RequestFingerprint("SetServerCredentials", request),
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

// ------------------------------------------------------------ Datacenters

absl::StatusOr<v1::CreateDatacenterResponse> SqliteInventoryStore::CreateDatacenter(
    const Caller& caller, const v1::CreateDatacenterRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("adding datacenters");
  RETURN_IF_ERROR(ValidateDatacenterName("name", request.name()));
  RETURN_IF_ERROR(ValidateText("description", request.description(), 1000));
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::CreateDatacenterResponse>(
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("CreateDatacenter", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::CreateDatacenterResponse> {
        int64_t now = NowMicros();
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "INSERT INTO datacenters (name, description, create_time) VALUES (?1, ?2, ?3)"));
        absl::Status status =
            stmt.Bind(1, request.name()).Bind(2, request.description()).Bind(3, now).Run();
        if (absl::IsAlreadyExists(status)) {
          return absl::AlreadyExistsError("name: a datacenter with this name exists");
        }
        RETURN_IF_ERROR(status);
        v1::CreateDatacenterResponse response;
        response.mutable_datacenter()->set_name(request.name());
        response.mutable_datacenter()->set_description(request.description());
        *response.mutable_datacenter()->mutable_create_time() = ToTimestamp(now);
        return response;
      });
}

absl::StatusOr<v1::ListDatacentersResponse> SqliteInventoryStore::ListDatacenters(
    const Caller& caller, const v1::ListDatacentersRequest& request) {
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters = FilterKey({"datacenters"});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  RETURN_IF_ERROR(CheckCursor(after, 1));
  v1::ListDatacentersResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT name, description, create_time FROM datacenters "
        "WHERE (?1 = 0 OR name > ?2) ORDER BY name LIMIT ?3"));
    stmt.Bind(1, !after.empty()).Bind(2, Part(after, 0)).Bind(3, page_size + 1);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      if (response.datacenters_size() == page_size) {
        response.set_next_page_token(
            EncodePageToken({response.datacenters(page_size - 1).name()}, filters));
        break;
      }
      v1::Datacenter* dc = response.add_datacenters();
      dc->set_name(stmt.ColumnText(0));
      dc->set_description(stmt.ColumnText(1));
      *dc->mutable_create_time() = ToTimestamp(stmt.ColumnInt(2));
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::DeleteDatacenterResponse> SqliteInventoryStore::DeleteDatacenter(
    const Caller& caller, const v1::DeleteDatacenterRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("removing datacenters");
  RETURN_IF_ERROR(ValidateDatacenterName("name", request.name()));
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::DeleteDatacenterResponse>(
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("DeleteDatacenter", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::DeleteDatacenterResponse> {
        ASSIGN_OR_RETURN(bool found,
                         Exists(conn, "SELECT 1 FROM datacenters WHERE name = ?1", request.name()));
        if (!found) return absl::NotFoundError("datacenter not found");
        for (const auto& [sql, what] : std::vector<std::pair<const char*, const char*>>{
                 {"SELECT 1 FROM servers WHERE datacenter = ?1 LIMIT 1", "servers"},
                 {"SELECT 1 FROM san_volumes WHERE datacenter = ?1 LIMIT 1", "SAN volumes"},
                 {"SELECT 1 FROM storage_nodes WHERE datacenter = ?1 LIMIT 1", "storage nodes"},
                 {"SELECT 1 FROM ip_pools WHERE datacenter = ?1 LIMIT 1", "IP pools"}}) {
          ASSIGN_OR_RETURN(bool used, Exists(conn, sql, request.name()));
          if (used) {
            return absl::FailedPreconditionError(
                absl::StrCat("the datacenter still has ", what, "; remove them first"));
          }
        }
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM datacenters WHERE name = ?1"));
        absl::Status status = stmt.Bind(1, request.name()).Run();
        // Template locations reference datacenters by foreign key.
        if (absl::IsFailedPrecondition(status)) {
          return absl::FailedPreconditionError(
              "the datacenter still holds template locations; remove them first");
        }
        RETURN_IF_ERROR(status);
        return v1::DeleteDatacenterResponse();
      });
}

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
      db_, caller.account_id, request.request_id(), RequestFingerprint("CreateSanVolume", request),
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
      db_, caller.account_id, request.request_id(), RequestFingerprint("DeleteSanVolume", request),
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

// ---------------------------------------------------------- Storage nodes

absl::StatusOr<v1::ListStorageNodesResponse> SqliteInventoryStore::ListStorageNodes(
    const Caller& caller, const v1::ListStorageNodesRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("listing storage nodes");
  RETURN_IF_ERROR(ValidateEnum("state", request.state(), v1::StorageNodeState_IsValid, true));
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters =
      FilterKey({"storage_nodes", request.datacenter(), absl::StrCat(request.state())});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  RETURN_IF_ERROR(CheckCursor(after, 1));
  v1::ListStorageNodesResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(absl::StrCat(
        "SELECT ", kNodeColumns, " FROM storage_nodes WHERE (?1 = '' OR datacenter = ?1) "
        "AND (?2 = 0 OR state = ?2) AND (?3 = 0 OR id > ?4) ORDER BY id LIMIT ?5")));
    stmt.Bind(1, request.datacenter()).Bind(2, int{request.state()}).Bind(3, !after.empty());
    stmt.Bind(4, Part(after, 0)).Bind(5, page_size + 1);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      if (response.storage_nodes_size() == page_size) {
        response.set_next_page_token(
            EncodePageToken({response.storage_nodes(page_size - 1).id()}, filters));
        break;
      }
      *response.add_storage_nodes() = ReadNodeRow(stmt);
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::GetStorageNodeResponse> SqliteInventoryStore::GetStorageNode(
    const Caller& caller, const v1::GetStorageNodeRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("reading storage nodes");
  RETURN_IF_ERROR(ValidateToken("id", request.id(), 64, "._-"));
  v1::GetStorageNodeResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        absl::StrCat("SELECT ", kNodeColumns, " FROM storage_nodes WHERE id = ?1")));
    stmt.Bind(1, request.id());
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) return absl::NotFoundError("storage node not found");
    *response.mutable_storage_node() = ReadNodeRow(stmt);
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::DeleteStorageNodeResponse> SqliteInventoryStore::DeleteStorageNode(
    const Caller& caller, const v1::DeleteStorageNodeRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("removing storage nodes");
  RETURN_IF_ERROR(ValidateToken("id", request.id(), 64, "._-"));
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::DeleteStorageNodeResponse>(
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("DeleteStorageNode", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::DeleteStorageNodeResponse> {
        ASSIGN_OR_RETURN(bool found,
                         Exists(conn, "SELECT 1 FROM storage_nodes WHERE id = ?1", request.id()));
        if (!found) return absl::NotFoundError("storage node not found");
        ASSIGN_OR_RETURN(bool serves, Exists(conn,
            "SELECT 1 FROM san_volumes WHERE san_host = ?1 LIMIT 1", request.id()));
        if (serves) {
          return absl::FailedPreconditionError(
              "the node serves volumes in the pool; remove them first");
        }
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM storage_nodes WHERE id = ?1"));
        absl::Status status = stmt.Bind(1, request.id()).Run();
        if (absl::IsFailedPrecondition(status)) {
          return absl::FailedPreconditionError(
              "the node holds template locations; move or delete them first");
        }
        RETURN_IF_ERROR(status);
        return v1::DeleteStorageNodeResponse();
      });
}

// --------------------------------------------------------------- IP pools

absl::StatusOr<v1::CreateIpPoolResponse> SqliteInventoryStore::CreateIpPool(
    const Caller& caller, const v1::CreateIpPoolRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("adding IP pools");
  RETURN_IF_ERROR(ValidateDatacenterName("datacenter", request.datacenter()));
  std::optional<Cidr> subnet = ParseCidr(request.subnet());
  if (!subnet) return Invalid("subnet", "must be an IPv4 network in CIDR form, like 10.0.0.0/24");
  std::optional<uint32_t> gateway = ParseIpv4(request.gateway());
  if (!gateway) return Invalid("gateway", "must be an IPv4 address");
  if (!subnet->Contains(*gateway)) return Invalid("gateway", "must lie inside subnet");
  if (request.dns_servers_size() > 4) return Invalid("dns_servers", "at most 4");
  for (const std::string& dns : request.dns_servers()) {
    if (!ParseIpv4(dns)) return Invalid("dns_servers", "must be IPv4 addresses");
  }
  if (request.ranges_size() < 1 || request.ranges_size() > 64) {
    return Invalid("ranges", "1..64 ranges");
  }
  std::vector<std::pair<uint32_t, uint32_t>> ranges;
  int64_t total = 0;
  for (const v1::IpRange& range : request.ranges()) {
    auto start = ParseIpv4(range.start());
    auto end = ParseIpv4(range.end());
    if (!start || !end) return Invalid("ranges", "start and end must be IPv4 addresses");
    if (*end < *start) return Invalid("ranges", "end must not be below start");
    if (!subnet->Contains(*start) || !subnet->Contains(*end)) {
      return Invalid("ranges", "must lie inside subnet");
    }
    if (*gateway >= *start && *gateway <= *end) {
      return Invalid("gateway", "must lie outside the ranges");
    }
    ranges.emplace_back(*start, *end);
    total += int64_t{*end} - *start + 1;
  }
  std::vector<std::pair<uint32_t, uint32_t>> sorted = ranges;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    if (sorted[i].first <= sorted[i - 1].second) return Invalid("ranges", "must not overlap");
  }
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::CreateIpPoolResponse>(
      db_, caller.account_id, request.request_id(), RequestFingerprint("CreateIpPool", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::CreateIpPoolResponse> {
        ASSIGN_OR_RETURN(bool dc, Exists(conn, "SELECT 1 FROM datacenters WHERE name = ?1",
                                         request.datacenter()));
        if (!dc) return absl::NotFoundError("datacenter: not found");
        for (const auto& [first, last] : ranges) {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "SELECT 1 FROM ip_pool_ranges r JOIN ip_pools p ON p.id = r.pool_id "
              "WHERE p.datacenter = ?1 AND r.first_address <= ?3 AND r.last_address >= ?2 "
              "LIMIT 1"));
          stmt.Bind(1, request.datacenter()).Bind(2, int64_t{first}).Bind(3, int64_t{last});
          ASSIGN_OR_RETURN(bool overlap, stmt.Step());
          if (overlap) {
            return absl::AlreadyExistsError(
                "ranges: overlap another IP pool of the datacenter");
          }
        }
        std::string id = NewUuid();
        {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "INSERT INTO ip_pools (id, datacenter, subnet, gateway, dns_servers, total_count, "
              "create_time) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"));
          stmt.Bind(1, id).Bind(2, request.datacenter()).Bind(3, request.subnet());
          stmt.Bind(4, request.gateway()).Bind(5, absl::StrJoin(request.dns_servers(), "\n"));
          RETURN_IF_ERROR(stmt.Bind(6, total).Bind(7, NowMicros()).Run());
        }
        for (size_t i = 0; i < ranges.size(); ++i) {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "INSERT INTO ip_pool_ranges (pool_id, position, first_address, last_address) "
              "VALUES (?1, ?2, ?3, ?4)"));
          stmt.Bind(1, id).Bind(2, static_cast<int64_t>(i)).Bind(3, int64_t{ranges[i].first});
          RETURN_IF_ERROR(stmt.Bind(4, int64_t{ranges[i].second}).Run());
        }
        ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, id));
        v1::CreateIpPoolResponse response;
        *response.mutable_ip_pool() = *std::move(pool);
        return response;
      });
}

absl::StatusOr<v1::ListIpPoolsResponse> SqliteInventoryStore::ListIpPools(
    const Caller& caller, const v1::ListIpPoolsRequest& request) {
  if (!caller.Has(v1::PERMISSION_SERVER_PROVISION)) {
    return absl::PermissionDeniedError("listing IP pools needs PERMISSION_SERVER_PROVISION");
  }
  ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
  std::string filters = FilterKey({"ip_pools", request.datacenter()});
  ASSIGN_OR_RETURN(auto after, DecodePageToken(request.page_token(), filters));
  RETURN_IF_ERROR(CheckCursor(after, 1));
  v1::ListIpPoolsResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id FROM ip_pools WHERE (?1 = '' OR datacenter = ?1) AND (?2 = 0 OR id > ?3) "
        "ORDER BY id LIMIT ?4"));
    stmt.Bind(1, request.datacenter()).Bind(2, !after.empty()).Bind(3, Part(after, 0));
    stmt.Bind(4, page_size + 1);
    ASSIGN_OR_RETURN(auto page, PageIds(stmt, page_size));
    for (const std::string& id : page.first) {
      ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, id));
      if (pool) *response.add_ip_pools() = *std::move(pool);
    }
    if (page.second && !page.first.empty()) {
      response.set_next_page_token(EncodePageToken({page.first.back()}, filters));
    }
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::GetIpPoolResponse> SqliteInventoryStore::GetIpPool(
    const Caller& caller, const v1::GetIpPoolRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  if (!caller.Has(v1::PERMISSION_SERVER_PROVISION)) {
    return absl::PermissionDeniedError("reading IP pools needs PERMISSION_SERVER_PROVISION");
  }
  v1::GetIpPoolResponse response;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, request.id()));
    if (!pool) return absl::NotFoundError("IP pool not found");
    *response.mutable_ip_pool() = *std::move(pool);
    return absl::OkStatus();
  }));
  return response;
}

absl::StatusOr<v1::DeleteIpPoolResponse> SqliteInventoryStore::DeleteIpPool(
    const Caller& caller, const v1::DeleteIpPoolRequest& request) {
  RETURN_IF_ERROR(ValidateUuid("id", request.id()));
  if (!caller.is_operator) return OperatorsOnly("removing IP pools");
  RETURN_IF_ERROR(ValidateRequestId(request.request_id()));
  return IdempotentTransaction<v1::DeleteIpPoolResponse>(
      db_, caller.account_id, request.request_id(), RequestFingerprint("DeleteIpPool", request),
      [&](SqliteConnection& conn) -> absl::StatusOr<v1::DeleteIpPoolResponse> {
        ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, request.id()));
        if (!pool) return absl::NotFoundError("IP pool not found");
        if (pool->allocated_count() > 0) {
          return absl::FailedPreconditionError(
              "addresses of the pool are allocated to servers; release them first");
        }
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare("DELETE FROM ip_pools WHERE id = ?1"));
        RETURN_IF_ERROR(stmt.Bind(1, request.id()).Run());
        return v1::DeleteIpPoolResponse();
      });
}

// --------------------------------------------------------------- Internal

absl::Status SqliteInventoryStore::UpsertStorageNode(const v1::StorageNode& node) {
  RETURN_IF_ERROR(ValidateToken("node_id", node.id(), 64, "._-"));
  RETURN_IF_ERROR(ValidateDatacenterName("datacenter", node.datacenter()));
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(bool dc, Exists(conn, "SELECT 1 FROM datacenters WHERE name = ?1",
                                     node.datacenter()));
    if (!dc) return absl::NotFoundError("datacenter: not found");
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT datacenter FROM storage_nodes WHERE id = ?1"));
      stmt.Bind(1, node.id());
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (row && stmt.ColumnText(0) != node.datacenter()) {
        return absl::FailedPreconditionError(
            "node_id: registered in another datacenter; delete it there first");
      }
    }
    {
      // A portal has one live node; a DOWN node's portals may be taken over.
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "SELECT id, served_portals FROM storage_nodes WHERE id <> ?1 AND state = ?2"));
      stmt.Bind(1, node.id()).Bind(2, int{v1::STORAGE_NODE_STATE_UP});
      while (true) {
        ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) break;
        for (absl::string_view portal :
             absl::StrSplit(stmt.ColumnText(1), '\n', absl::SkipEmpty())) {
          for (const std::string& mine : node.served_portals()) {
            if (mine == portal) {
              return absl::FailedPreconditionError(absl::StrCat(
                  "served_portals: ", mine, " is served by storage node ", stmt.ColumnText(0),
                  "; stop that node or give this one other portals"));
            }
          }
        }
      }
    }
    int64_t now = node.has_last_heartbeat_time() ? FromTimestamp(node.last_heartbeat_time())
                                                 : NowMicros();
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "INSERT INTO storage_nodes (id, datacenter, address, served_portals, state, "
        "last_heartbeat_time, capacity_bytes, free_bytes, create_time) "
        "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?6) ON CONFLICT (id) DO UPDATE SET "
        "address = excluded.address, served_portals = excluded.served_portals, "
        "state = excluded.state, last_heartbeat_time = excluded.last_heartbeat_time, "
        "capacity_bytes = excluded.capacity_bytes, free_bytes = excluded.free_bytes"));
    stmt.Bind(1, node.id()).Bind(2, node.datacenter()).Bind(3, node.address());
    stmt.Bind(4, absl::StrJoin(node.served_portals(), "\n"));
    stmt.Bind(5, int{v1::STORAGE_NODE_STATE_UP}).Bind(6, now).Bind(7, node.capacity_bytes());
    return stmt.Bind(8, node.free_bytes()).Run();
  });
}

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
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "UPDATE servers SET state = ?2, update_time = ?3 WHERE id = ?1"));
    RETURN_IF_ERROR(stmt.Bind(1, server_id).Bind(2, int{state}).Bind(3, NowMicros()).Run());
    if (stmt.Changes() == 0) return NoSuchServer();
    return absl::OkStatus();
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

absl::Status SqliteInventoryStore::RecordHeartbeat(const std::string& node_id,
                                                   int64_t capacity_bytes, int64_t free_bytes,
                                                   int64_t now_micros) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "UPDATE storage_nodes SET state = ?2, last_heartbeat_time = ?3, capacity_bytes = ?4, "
        "free_bytes = ?5 WHERE id = ?1"));
    stmt.Bind(1, node_id).Bind(2, int{v1::STORAGE_NODE_STATE_UP}).Bind(3, now_micros);
    RETURN_IF_ERROR(stmt.Bind(4, capacity_bytes).Bind(5, free_bytes).Run());
    if (stmt.Changes() == 0) {
      return absl::NotFoundError(
          absl::StrCat("storage node ", node_id, " is not registered; register again"));
    }
    return absl::OkStatus();
  });
}

absl::StatusOr<std::vector<v1::StorageNode>> SqliteInventoryStore::ReadStorageNodes(
    const std::string& datacenter) {
  std::vector<v1::StorageNode> nodes;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(absl::StrCat(
        "SELECT ", kNodeColumns, " FROM storage_nodes WHERE (?1 = '' OR datacenter = ?1) "
        "ORDER BY id")));
    stmt.Bind(1, datacenter);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      nodes.push_back(ReadNodeRow(stmt));
    }
    return absl::OkStatus();
  }));
  return nodes;
}

absl::StatusOr<std::vector<std::string>> SqliteInventoryStore::MarkStorageNodesDown(
    int64_t cutoff_micros) {
  std::vector<std::string> ids;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ids.clear();
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "SELECT id FROM storage_nodes WHERE state = ?1 AND last_heartbeat_time < ?2"));
      stmt.Bind(1, int{v1::STORAGE_NODE_STATE_UP}).Bind(2, cutoff_micros);
      while (true) {
        ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row) break;
        ids.push_back(stmt.ColumnText(0));
      }
    }
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "UPDATE storage_nodes SET state = ?3 WHERE state = ?1 AND last_heartbeat_time < ?2"));
    stmt.Bind(1, int{v1::STORAGE_NODE_STATE_UP}).Bind(2, cutoff_micros);
    return stmt.Bind(3, int{v1::STORAGE_NODE_STATE_DOWN}).Run();
  }));
  return ids;
}

namespace {

std::string NewMac() {
  // Locally administered, unicast (02:...).
  std::string bytes = RandomBytes(5);
  std::string mac = "02";
  for (unsigned char b : bytes) {
    absl::StrAppend(&mac, ":", absl::Hex(b, absl::kZeroPad2));
  }
  return mac;
}

// Free addresses of a pool: total minus allocated.
absl::StatusOr<int64_t> FreeAddresses(SqliteConnection& conn, absl::string_view pool_id) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT total_count - (SELECT COUNT(*) FROM ip_allocations a WHERE a.pool_id = p.id) "
      "FROM ip_pools p WHERE p.id = ?1"));
  stmt.Bind(1, pool_id);
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  if (!row) return absl::NotFoundError(absl::StrCat("IP pool ", pool_id, " not found"));
  return stmt.ColumnInt(0);
}

}  // namespace

absl::StatusOr<std::vector<v1::Server>> SqliteInventoryStore::ProvisionServers(
    const ProvisionPlan& plan, const OperationBuilder& build_operation) {
  if (plan.server_ids.size() != plan.hostnames.size() || plan.server_ids.empty()) {
    return absl::InvalidArgumentError("one hostname per server is needed");
  }
  std::vector<v1::SoftwareCredential> credentials;
  if (!plan.credentials_from_server_id.empty()) {
    absl::StatusOr<std::vector<v1::SoftwareCredential>> read =
        ReadCredentials(plan.credentials_from_server_id);
    // The source server may be gone by now; its template still deploys.
    if (read.ok()) credentials = *std::move(read);
  }
  google::protobuf::RepeatedPtrField<v1::SoftwareCredential> creds(credentials.begin(),
                                                                   credentials.end());
  std::vector<v1::Server> servers;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    servers.clear();
    ASSIGN_OR_RETURN(bool dc, Exists(conn, "SELECT 1 FROM datacenters WHERE name = ?1",
                                     plan.datacenter));
    if (!dc) return absl::NotFoundError(absl::StrCat("datacenter ", plan.datacenter, " not found"));
    for (const std::string& hostname : plan.hostnames) {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "SELECT 1 FROM servers WHERE account_id = ?1 AND lower(hostname) = lower(?2) "
          "AND lower(domain) = lower(?3) AND state <> ?4"));
      stmt.Bind(1, plan.account_id).Bind(2, hostname).Bind(3, plan.domain);
      ASSIGN_OR_RETURN(bool taken, stmt.Bind(4, int{v1::SERVER_STATE_FAILED}).Step());
      if (taken) {
        return absl::AlreadyExistsError(absl::StrCat(
            "hostnames: ", hostname, plan.domain.empty() ? "" : ".", plan.domain,
            " is already used in the account; choose another hostname"));
      }
    }
    // Addresses are taken in the network step; check now that they exist.
    for (const auto& [pool_id, needed] : plan.addresses_needed) {
      int64_t free = 0;
      if (pool_id.empty()) {
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "SELECT COALESCE(SUM(p.total_count - (SELECT COUNT(*) FROM ip_allocations a "
            "WHERE a.pool_id = p.id)), 0) FROM ip_pools p WHERE p.datacenter = ?1"));
        stmt.Bind(1, plan.datacenter);
        ASSIGN_OR_RETURN(bool row, stmt.Step());
        free = row ? stmt.ColumnInt(0) : 0;
      } else {
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare("SELECT datacenter FROM ip_pools WHERE id = ?1"));
        stmt.Bind(1, pool_id);
        ASSIGN_OR_RETURN(bool row, stmt.Step());
        if (!row || stmt.ColumnText(0) != plan.datacenter) {
          return absl::NotFoundError(absl::StrCat(
              "networks.ip_pool_id: IP pool ", pool_id, " not found in ", plan.datacenter));
        }
        ASSIGN_OR_RETURN(free, FreeAddresses(conn, pool_id));
      }
      if (free < needed) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "the IP pools ", pool_id.empty() ? "of " + plan.datacenter : pool_id, " have ", free,
            " free addresses, the deploy needs ", needed,
            "; deploy fewer servers or ask an operator to add addresses"));
      }
    }
    const int64_t now = NowMicros();
    for (size_t i = 0; i < plan.server_ids.size(); ++i) {
      const std::string& id = plan.server_ids[i];
      v1::ServerConfiguration config = plan.configuration;
      if (config.network_interfaces_size() == 0) config.add_network_interfaces()->set_name("eth0");
      for (v1::NetworkInterface& nic : *config.mutable_network_interfaces()) {
        std::string name = nic.name();
        nic.Clear();
        nic.set_name(name);
        nic.set_mac_address(NewMac());
      }
      {
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "INSERT INTO servers (id, account_id, type, hostname, domain, datacenter, state, "
            "power_state, configuration, source_image_template_id, create_time, update_time) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?11)"));
        stmt.Bind(1, id).Bind(2, plan.account_id).Bind(3, int{v1::SERVER_TYPE_VIRTUAL});
        stmt.Bind(4, plan.hostnames[i]).Bind(5, plan.domain).Bind(6, plan.datacenter);
        stmt.Bind(7, int{v1::SERVER_STATE_PROVISIONING}).Bind(8, int{v1::POWER_STATE_STOPPED});
        stmt.BindBlob(9, config.SerializeAsString()).Bind(10, plan.source_image_template_id);
        RETURN_IF_ERROR(stmt.Bind(11, now).Run());
      }
      struct Need {
        int32_t device_index;
        bool boot;
        bool config_drive;
        int64_t min_size;
        const std::vector<std::string>* preferred;
      };
      std::vector<Need> needs;
      for (const ProvisionDisk& disk : plan.disks) {
        needs.push_back({disk.device_index, disk.boot, false, disk.min_size_bytes,
                         &disk.preferred_san_hosts});
      }
      // Big disks first and the smallest volume that fits, so no request
      // takes a bigger volume than it needs.
      std::sort(needs.begin(), needs.end(),
                [](const Need& a, const Need& b) { return a.min_size > b.min_size; });
      static const std::vector<std::string> kNone;
      needs.push_back({plan.config_drive_index, false, true, plan.config_drive_min_bytes, &kNone});
      for (const Need& need : needs) {
        ASSIGN_OR_RETURN(auto pick, conn.Prepare(
            "SELECT id FROM san_volumes WHERE datacenter = ?1 AND state = ?2 AND size_bytes >= ?3 "
            "AND (json_array_length(?4) = 0 OR san_host IN (SELECT value FROM json_each(?4))) "
            "ORDER BY size_bytes, id LIMIT 1"));
        std::string preferred = "[";
        for (size_t h = 0; h < need.preferred->size(); ++h) {
          absl::StrAppend(&preferred, h ? "," : "", "\"", (*need.preferred)[h], "\"");
        }
        preferred += "]";
        pick.Bind(1, plan.datacenter).Bind(2, int{v1::SAN_VOLUME_STATE_FREE});
        pick.Bind(3, need.min_size).Bind(4, preferred);
        ASSIGN_OR_RETURN(bool row, pick.Step());
        if (!row) {
          return absl::ResourceExhaustedError(absl::StrCat(
              "datacenter ", plan.datacenter, " has too few FREE SAN volumes: ",
              plan.server_ids.size(), " servers need one of at least ", need.min_size,
              " bytes for ", need.config_drive ? "the config drive" : "disk ",
              need.config_drive ? "" : absl::StrCat(need.device_index),
              need.preferred->empty() ? ""
                                      : absl::StrCat(" on SAN hosts ",
                                                     absl::StrJoin(*need.preferred, ", ")),
              " each; ask an operator to add volumes or deploy fewer servers"));
        }
        const std::string volume_id = pick.ColumnText(0);
        ASSIGN_OR_RETURN(auto attach, conn.Prepare(
            "UPDATE san_volumes SET state = ?2, attached_server_id = ?3 WHERE id = ?1"));
        attach.Bind(1, volume_id).Bind(2, int{v1::SAN_VOLUME_STATE_ATTACHED});
        RETURN_IF_ERROR(attach.Bind(3, id).Run());
        ASSIGN_OR_RETURN(auto insert, conn.Prepare(
            "INSERT INTO server_disks (server_id, device_index, boot, config_drive, "
            "san_volume_id) VALUES (?1, ?2, ?3, ?4, ?5)"));
        insert.Bind(1, id).Bind(2, need.device_index).Bind(3, need.boot);
        RETURN_IF_ERROR(insert.Bind(4, need.config_drive).Bind(5, volume_id).Run());
      }
      RETURN_IF_ERROR(WriteCredentials(conn, id, creds));
      if (!plan.grant_user_id.empty()) {
        ASSIGN_OR_RETURN(auto grant, conn.Prepare(
            "INSERT OR IGNORE INTO user_servers (user_id, server_id) VALUES (?1, ?2)"));
        RETURN_IF_ERROR(grant.Bind(1, plan.grant_user_id).Bind(2, id).Run());
      }
      ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, id));
      if (!server) return absl::InternalError("new server vanished");
      servers.push_back(*std::move(server));
    }
    ASSIGN_OR_RETURN(auto operation, build_operation(servers));
    return InsertOperationRow(conn, operation.first, operation.second);
  }));
  return servers;
}

absl::StatusOr<AddressAssignment> SqliteInventoryStore::AllocateAddress(
    const std::string& server_id, const std::string& ip_pool_id) {
  AddressAssignment result;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, server_id));
    if (!server) return NoSuchServer();
    std::string pool_id;
    std::optional<uint32_t> address;
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "SELECT pool_id, address FROM ip_allocations WHERE server_id = ?1 LIMIT 1"));
      stmt.Bind(1, server_id);
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (row) {
        pool_id = stmt.ColumnText(0);
        address = static_cast<uint32_t>(stmt.ColumnInt(1));
      }
    }
    if (!address) {
      std::vector<std::string> candidates;
      if (!ip_pool_id.empty()) {
        candidates.push_back(ip_pool_id);
      } else {
        ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
            "SELECT id FROM ip_pools WHERE datacenter = ?1 ORDER BY create_time, id"));
        stmt.Bind(1, server->datacenter());
        while (true) {
          ASSIGN_OR_RETURN(bool row, stmt.Step());
          if (!row) break;
          candidates.push_back(stmt.ColumnText(0));
        }
      }
      for (const std::string& candidate : candidates) {
        ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, candidate));
        if (!pool) return absl::NotFoundError(absl::StrCat("IP pool ", candidate, " not found"));
        if (pool->datacenter() != server->datacenter()) {
          return absl::FailedPreconditionError(absl::StrCat(
              "IP pool ", candidate, " lies in ", pool->datacenter(), ", the server in ",
              server->datacenter()));
        }
        ASSIGN_OR_RETURN(auto ranges, conn.Prepare(
            "SELECT first_address, last_address FROM ip_pool_ranges WHERE pool_id = ?1 "
            "ORDER BY first_address"));
        ranges.Bind(1, candidate);
        while (!address) {
          ASSIGN_OR_RETURN(bool row, ranges.Step());
          if (!row) break;
          uint32_t next = static_cast<uint32_t>(ranges.ColumnInt(0));
          const uint32_t last = static_cast<uint32_t>(ranges.ColumnInt(1));
          // Walk the allocations of this range in order; the first gap wins.
          ASSIGN_OR_RETURN(auto used, conn.Prepare(
              "SELECT address FROM ip_allocations WHERE pool_id = ?1 AND address BETWEEN ?2 "
              "AND ?3 ORDER BY address"));
          used.Bind(1, candidate).Bind(2, int64_t{next}).Bind(3, int64_t{last});
          bool full = false;
          while (true) {
            ASSIGN_OR_RETURN(bool taken, used.Step());
            if (!taken) break;
            uint32_t a = static_cast<uint32_t>(used.ColumnInt(0));
            if (a != next) break;
            if (next == last) {
              full = true;
              break;
            }
            ++next;
          }
          if (!full) address = next;
        }
        if (address) {
          pool_id = candidate;
          break;
        }
      }
      if (!address) {
        return absl::ResourceExhaustedError(absl::StrCat(
            "no free address in ", ip_pool_id.empty() ? "the IP pools of " + server->datacenter()
                                                      : "IP pool " + ip_pool_id,
            "; ask an operator to add addresses"));
      }
      ASSIGN_OR_RETURN(auto insert, conn.Prepare(
          "INSERT INTO ip_allocations (pool_id, address, server_id, create_time) "
          "VALUES (?1, ?2, ?3, ?4)"));
      insert.Bind(1, pool_id).Bind(2, int64_t{*address}).Bind(3, server_id);
      RETURN_IF_ERROR(insert.Bind(4, NowMicros()).Run());
    }
    ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, pool_id));
    if (!pool) return absl::InternalError("allocated pool vanished");
    std::vector<absl::string_view> subnet = absl::StrSplit(pool->subnet(), '/');
    result.ip_pool_id = pool_id;
    result.address = absl::StrCat(FormatIpv4(*address), "/", subnet.size() == 2 ? subnet[1] : "32");
    result.gateway = pool->gateway();
    result.dns_servers.assign(pool->dns_servers().begin(), pool->dns_servers().end());
    v1::ServerConfiguration config = server->configuration();
    if (config.network_interfaces_size() == 0) config.add_network_interfaces()->set_name("eth0");
    v1::NetworkInterface* nic = config.mutable_network_interfaces(0);
    nic->set_ip_address(result.address);
    nic->set_gateway(result.gateway);
    nic->clear_dns_servers();
    for (const std::string& dns : result.dns_servers) nic->add_dns_servers(dns);
    nic->set_ip_pool_id(pool_id);
    ASSIGN_OR_RETURN(auto update, conn.Prepare(
        "UPDATE servers SET configuration = ?2, update_time = ?3 WHERE id = ?1"));
    update.Bind(1, server_id).BindBlob(2, config.SerializeAsString());
    return update.Bind(3, NowMicros()).Run();
  }));
  return result;
}

absl::Status SqliteInventoryStore::ReleaseServer(const std::string& server_id) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, server_id));
    if (!server) return absl::OkStatus();
    for (const char* sql : {"DELETE FROM server_disks WHERE server_id = ?1",
                            "DELETE FROM ip_allocations WHERE server_id = ?1"}) {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
      RETURN_IF_ERROR(stmt.Bind(1, server_id).Run());
    }
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "UPDATE san_volumes SET state = ?2, attached_server_id = NULL "
          "WHERE attached_server_id = ?1"));
      RETURN_IF_ERROR(stmt.Bind(1, server_id).Bind(2, int{v1::SAN_VOLUME_STATE_FREE}).Run());
    }
    v1::ServerConfiguration config = server->configuration();
    for (v1::NetworkInterface& nic : *config.mutable_network_interfaces()) {
      nic.clear_ip_address();
      nic.clear_gateway();
      nic.clear_dns_servers();
      nic.clear_ip_pool_id();
    }
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "UPDATE servers SET state = ?2, power_state = ?3, configuration = ?4, update_time = ?5 "
        "WHERE id = ?1"));
    stmt.Bind(1, server_id).Bind(2, int{v1::SERVER_STATE_FAILED});
    stmt.Bind(3, int{v1::POWER_STATE_STOPPED}).BindBlob(4, config.SerializeAsString());
    return stmt.Bind(5, NowMicros()).Run();
  });
}

}  // namespace controlplane
