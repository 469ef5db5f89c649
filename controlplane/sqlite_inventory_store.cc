// SqliteInventoryStore is one class whose methods are split by concern:
// sqlite_inventory_store_servers.cc       servers, their credentials and states
// sqlite_inventory_store_datacenters.cc   datacenters and storage nodes
// sqlite_inventory_store_san_volumes.cc   the SAN volume pool
// sqlite_inventory_store_ip_pools.cc      IP pools
// sqlite_inventory_store_deploys.cc       provisioning, addresses, release
// This file holds what they share (internal/sqlite_inventory_store_parts.h).
#include "controlplane/internal/sqlite_inventory_store_parts.h"

#include <algorithm>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"

namespace controlplane {
namespace internal {

namespace v1 = imagetemplates::v1;

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}
absl::Status NoSuchServer() { return absl::NotFoundError("server not found"); }

absl::Status OperatorsOnly(absl::string_view what) {
  return absl::PermissionDeniedError(
      absl::StrCat(what, " needs PERMISSION_PLATFORM_OPERATOR"));
}

// ---- Value checks.

absl::Status ValidateDatacenterName(absl::string_view field, absl::string_view name) {
  if (name.empty() || name.size() > 32) return Invalid(field, "must be 1..32 characters");
  for (char c : name) {
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) {
      return Invalid(field, "may contain only lowercase letters, digits and '-'");
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

}  // namespace internal
}  // namespace controlplane
