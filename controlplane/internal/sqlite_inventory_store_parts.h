// The parts of SqliteInventoryStore's implementation that its source files
// share, one file a concern: sqlite_inventory_store_servers.cc,
// _datacenters.cc (with storage nodes), _san_volumes.cc, _ip_pools.cc and
// _deploys.cc (provisioning, address allocation, release). Defined in
// sqlite_inventory_store.cc.
#ifndef CONTROLPLANE_INTERNAL_SQLITE_INVENTORY_STORE_PARTS_H_
#define CONTROLPLANE_INTERNAL_SQLITE_INVENTORY_STORE_PARTS_H_

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/internal/ipv4.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_keyset_page.h"
#include "imagetemplates/v1/inventory.pb.h"

namespace controlplane {
namespace internal {

// INVALID_ARGUMENT "field: what".
absl::Status Invalid(absl::string_view field, absl::string_view what);
// NOT_FOUND "server not found".
absl::Status NoSuchServer();
// PERMISSION_DENIED: `what` needs PERMISSION_PLATFORM_OPERATOR.
absl::Status OperatorsOnly(absl::string_view what);

// ---- Value checks.

// IPv4 literals: ParseIpv4, FormatIpv4, Cidr, ParseCidr (ipv4.h).

// 1..32 characters of [a-z0-9-]; INVALID_ARGUMENT naming `field`.
absl::Status ValidateDatacenterName(absl::string_view field, absl::string_view name);

// ---- Row readers.

// The server with its disks (no secrets); nullopt if there is no such row.
absl::StatusOr<std::optional<imagetemplates::v1::Server>> ReadServerRow(SqliteConnection& conn,
                                                                        absl::string_view id);
// The pool with its ranges and allocated count; nullopt if there is none.
absl::StatusOr<std::optional<imagetemplates::v1::IpPool>> ReadPoolRow(SqliteConnection& conn,
                                                                      absl::string_view id);
// Whether `sql`, with ?1 bound to `key`, returns a row.
absl::StatusOr<bool> Exists(SqliteConnection& conn, absl::string_view sql, absl::string_view key);

}  // namespace internal
}  // namespace controlplane

#endif  // CONTROLPLANE_INTERNAL_SQLITE_INVENTORY_STORE_PARTS_H_
