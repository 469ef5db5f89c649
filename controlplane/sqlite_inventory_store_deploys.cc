// SqliteInventoryStore: what a deploy does to the inventory. Provisioning
// takes volumes and addresses and creates servers in one transaction; the
// network step writes the reserved address into the server; a failed deploy
// releases both.
#include "controlplane/sqlite_inventory_store.h"

#include <algorithm>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/internal/sqlite_inventory_store_parts.h"
#include "controlplane/sqlite_operation_store.h"
#include "imagetemplates/v1/common.pb.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;
using internal::Exists;
using internal::FormatIpv4;
using internal::NoSuchServer;
using internal::ReadPoolRow;
using internal::ReadServerRow;

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

absl::Status InsertAllocation(SqliteConnection& conn, absl::string_view pool_id,
                              uint32_t address, absl::string_view server_id) {
  ASSIGN_OR_RETURN(auto insert, conn.Prepare(
      "INSERT INTO ip_allocations (pool_id, address, server_id, create_time) "
      "VALUES (?1, ?2, ?3, ?4)"));
  insert.Bind(1, pool_id).Bind(2, int64_t{address}).Bind(3, server_id);
  return insert.Bind(4, NowMicros()).Run();
}

// An address taken from an IP pool, written as the server's in `nic`.
absl::StatusOr<AddressAssignment> ApplyPoolAddress(SqliteConnection& conn,
                                                   const std::string& pool_id, uint32_t address,
                                                   v1::NetworkInterface& nic) {
  ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, pool_id));
  if (!pool) return absl::InternalError("allocated pool vanished");
  std::vector<absl::string_view> subnet = absl::StrSplit(pool->subnet(), '/');
  AddressAssignment result;
  result.ip_pool_id = pool_id;
  result.address = absl::StrCat(FormatIpv4(address), "/", subnet.size() == 2 ? subnet[1] : "32");
  result.gateway = pool->gateway();
  result.dns_servers.assign(pool->dns_servers().begin(), pool->dns_servers().end());
  nic.set_ip_address(result.address);
  nic.set_gateway(result.gateway);
  nic.clear_dns_servers();
  for (const std::string& dns : result.dns_servers) nic.add_dns_servers(dns);
  nic.set_ip_pool_id(pool_id);
  return result;
}

// Takes the lowest free address of `ip_pool_id` (empty: of the first pool of
// `datacenter` with one) for `server_id`: the one address search of both
// provisioning and AllocateAddress. RESOURCE_EXHAUSTED if none is free;
// NOT_FOUND (pool); FAILED_PRECONDITION if the pool lies in another
// datacenter.
absl::StatusOr<std::pair<std::string, uint32_t>> TakePoolAddress(
    SqliteConnection& conn, const std::string& datacenter, const std::string& ip_pool_id,
    const std::string& server_id) {
  std::vector<std::string> candidates;
  if (!ip_pool_id.empty()) {
    candidates.push_back(ip_pool_id);
  } else {
    ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
        "SELECT id FROM ip_pools WHERE datacenter = ?1 ORDER BY create_time, id"));
    stmt.Bind(1, datacenter);
    while (true) {
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (!row) break;
      candidates.push_back(stmt.ColumnText(0));
    }
  }
  for (const std::string& candidate : candidates) {
    ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, candidate));
    if (!pool) return absl::NotFoundError(absl::StrCat("IP pool ", candidate, " not found"));
    if (pool->datacenter() != datacenter) {
      return absl::FailedPreconditionError(absl::StrCat(
          "IP pool ", candidate, " lies in ", pool->datacenter(), ", the server in ",
          datacenter));
    }
    ASSIGN_OR_RETURN(auto ranges, conn.Prepare(
        "SELECT first_address, last_address FROM ip_pool_ranges WHERE pool_id = ?1 "
        "ORDER BY first_address"));
    ranges.Bind(1, candidate);
    while (true) {
      ASSIGN_OR_RETURN(bool row, ranges.Step());
      if (!row) break;
      uint32_t next = static_cast<uint32_t>(ranges.ColumnInt(0));
      const uint32_t last = static_cast<uint32_t>(ranges.ColumnInt(1));
      // Walk the allocations of this range in order; the first gap wins.
      // A server's static address recorded outside every range before an
      // operator added this range is taken too.
      ASSIGN_OR_RETURN(auto used, conn.Prepare(
          "SELECT address FROM ip_allocations WHERE pool_id = ?1 AND address BETWEEN ?2 "
          "AND ?3 UNION SELECT address FROM static_addresses WHERE datacenter = ?4 "
          "AND address BETWEEN ?2 AND ?3 ORDER BY address"));
      used.Bind(1, candidate).Bind(2, int64_t{next}).Bind(3, int64_t{last});
      used.Bind(4, datacenter);
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
      if (full) continue;
      RETURN_IF_ERROR(InsertAllocation(conn, candidate, next, server_id));
      return std::make_pair(candidate, next);
    }
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "no free address in ", ip_pool_id.empty() ? "the IP pools of " + datacenter
                                                : "IP pool " + ip_pool_id,
      "; ask an operator to add addresses"));
}

// A deployed server's static address resolved against the datacenter's IP
// pools. It must lie in the subnet of one of them (FAILED_PRECONDITION
// naming them otherwise: nothing would keep an address outside every pool
// from being handed out twice), with that subnet's prefix length, and not be
// its network, broadcast or gateway address (INVALID_ARGUMENT). It is
// reserved in the pool whose range holds it, or else recorded for the
// datacenter (static_addresses, not a pool address): ALREADY_EXISTS if any
// server of the datacenter, of any account, holds it either way. Gateway and
// DNS servers come from that pool where the request left them empty.
absl::StatusOr<v1::NetworkInterface> ReserveStaticAddress(
    SqliteConnection& conn, const std::string& datacenter, const std::string& server_id,
    const v1::StaticNetworkAddress& requested) {
  constexpr absl::string_view kField = "networks.static_address.address";
  const std::optional<internal::Cidr> requested_cidr = internal::ParseCidr(requested.address());
  if (!requested_cidr) {
    return internal::Invalid(kField, "an IPv4 address with prefix length, like 10.0.0.5/24");
  }
  const uint32_t address = requested_cidr->address;
  ASSIGN_OR_RETURN(auto pools, conn.Prepare(
      "SELECT id FROM ip_pools WHERE datacenter = ?1 ORDER BY create_time, id"));
  pools.Bind(1, datacenter);
  std::vector<std::string> pool_ids;
  while (true) {
    ASSIGN_OR_RETURN(bool row, pools.Step());
    if (!row) break;
    pool_ids.push_back(pools.ColumnText(0));
  }
  // The pool the address belongs to: the first whose range holds it, else
  // the one whose subnet holds it most specifically (longest prefix).
  std::optional<v1::IpPool> chosen;
  std::optional<internal::Cidr> chosen_subnet;
  bool in_range = false;
  std::vector<std::string> subnets;
  for (const std::string& pool_id : pool_ids) {
    ASSIGN_OR_RETURN(auto pool, ReadPoolRow(conn, pool_id));
    if (!pool) continue;
    subnets.push_back(absl::StrCat(pool->subnet(), " (IP pool ", pool_id, ")"));
    const std::optional<internal::Cidr> subnet = internal::ParseCidr(pool->subnet());
    if (!subnet || !subnet->Contains(address) || in_range) continue;
    ASSIGN_OR_RETURN(auto range, conn.Prepare(
        "SELECT 1 FROM ip_pool_ranges WHERE pool_id = ?1 AND first_address <= ?2 "
        "AND last_address >= ?2"));
    range.Bind(1, pool_id).Bind(2, int64_t{address});
    ASSIGN_OR_RETURN(bool reservable, range.Step());
    if (reservable || !chosen || subnet->prefix > chosen_subnet->prefix) {
      chosen = *std::move(pool);
      chosen_subnet = subnet;
      in_range = reservable;
    }
  }
  if (!chosen) {
    return absl::FailedPreconditionError(absl::StrCat(
        kField, ": ", FormatIpv4(address), " lies in no IP pool of datacenter ", datacenter,
        subnets.empty() ? " (it has none; an operator must add one)"
                        : absl::StrCat("; choose an address in ", absl::StrJoin(subnets, ", ")),
        ", or take one from a pool with ip_pool_id"));
  }
  const std::string subnet_text = chosen->subnet();
  if (requested_cidr->prefix != chosen_subnet->prefix) {
    return internal::Invalid(
        kField, absl::StrCat(requested.address(), " has prefix /", requested_cidr->prefix,
                             " but its subnet ", subnet_text, " (IP pool ", chosen->id(),
                             ") has /", chosen_subnet->prefix, "; write ", FormatIpv4(address),
                             "/", chosen_subnet->prefix));
  }
  const bool has_broadcast = chosen_subnet->prefix <= 30;
  if (has_broadcast &&
      (address == chosen_subnet->first() || address == chosen_subnet->last())) {
    return internal::Invalid(
        kField, absl::StrCat(FormatIpv4(address), " is the ",
                             address == chosen_subnet->first() ? "network" : "broadcast",
                             " address of ", subnet_text, "; choose a host address"));
  }
  if (std::optional<uint32_t> gateway = internal::ParseIpv4(chosen->gateway());
      gateway && *gateway == address) {
    return internal::Invalid(kField, absl::StrCat(FormatIpv4(address), " is the gateway of ",
                                                  subnet_text, "; choose a host address"));
  }

  v1::NetworkInterface nic;
  nic.set_ip_address(requested.address());
  nic.set_gateway(requested.gateway().empty() ? chosen->gateway() : requested.gateway());
  if (requested.dns_servers_size() > 0) {
    for (const std::string& dns : requested.dns_servers()) nic.add_dns_servers(dns);
  } else {
    for (const std::string& dns : chosen->dns_servers()) nic.add_dns_servers(dns);
  }
  // Pools are shared by the datacenter's accounts: an address must be free
  // in all of them and among the static ones, in a range or not.
  ASSIGN_OR_RETURN(auto taken, conn.Prepare(
      "SELECT a.pool_id FROM ip_allocations a JOIN ip_pools p ON p.id = a.pool_id "
      "WHERE p.datacenter = ?1 AND a.address = ?2 "
      "UNION ALL SELECT '' FROM static_addresses WHERE datacenter = ?1 AND address = ?2"));
  taken.Bind(1, datacenter).Bind(2, int64_t{address});
  ASSIGN_OR_RETURN(bool used, taken.Step());
  if (used) {
    const std::string pool = taken.ColumnText(0);
    return absl::AlreadyExistsError(absl::StrCat(
        kField, ": ", FormatIpv4(address), " is already ",
        pool.empty() ? absl::StrCat("used by a server in datacenter ", datacenter)
                     : absl::StrCat("allocated in IP pool ", pool),
        "; choose a free address or take one from a pool with ip_pool_id"));
  }
  // Servers the operator registered, and those deployed before static
  // addresses were recorded (migration 11), hold theirs only in their
  // configuration. Static deploys are rare; reading the datacenter's
  // configurations for them is cheap enough.
  ASSIGN_OR_RETURN(auto configured, conn.Prepare(
      "SELECT configuration FROM servers WHERE datacenter = ?1 AND state <> ?2"));
  configured.Bind(1, datacenter).Bind(2, int{v1::SERVER_STATE_FAILED});
  while (true) {
    ASSIGN_OR_RETURN(bool row, configured.Step());
    if (!row) break;
    v1::ServerConfiguration config;
    if (!config.ParseFromString(configured.ColumnBlob(0))) continue;
    for (const v1::NetworkInterface& held : config.network_interfaces()) {
      const std::optional<internal::Cidr> cidr = internal::ParseCidr(held.ip_address());
      if (cidr && cidr->address == address) {
        return absl::AlreadyExistsError(absl::StrCat(
            kField, ": ", FormatIpv4(address), " is already used by a server in datacenter ",
            datacenter, "; choose a free address or take one from a pool with ip_pool_id"));
      }
    }
  }
  if (!in_range) {
    ASSIGN_OR_RETURN(auto insert, conn.Prepare(
        "INSERT INTO static_addresses (datacenter, address, server_id, create_time) "
        "VALUES (?1, ?2, ?3, ?4)"));
    insert.Bind(1, datacenter).Bind(2, int64_t{address}).Bind(3, server_id);
    RETURN_IF_ERROR(insert.Bind(4, NowMicros()).Run());
    return nic;
  }
  RETURN_IF_ERROR(InsertAllocation(conn, chosen->id(), address, server_id));
  nic.set_ip_pool_id(chosen->id());
  return nic;
}

// The deploy's template as this transaction sees it: still visible to the
// deploying account, ACTIVE, enabled and AVAILABLE in the datacenter. The
// caller checked all of this before; a delete, unshare, disable or location
// removal committed since then must not let the deploy through (a delete
// refuses while a deploy operation is unfinished, so one of the two wins).
absl::Status RecheckTemplate(SqliteConnection& conn, const ProvisionPlan& plan) {
  const std::string& id = plan.source_image_template_id;
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT t.owner_account_id, t.visibility, t.status, t.disabled, "
      "EXISTS (SELECT 1 FROM image_template_shares s WHERE s.template_id = t.id "
      "AND s.account_id = ?2), "
      "EXISTS (SELECT 1 FROM image_template_locations l WHERE l.template_id = t.id "
      "AND l.datacenter = ?3 AND l.status = ?4) "
      "FROM image_templates t WHERE t.id = ?1"));
  stmt.Bind(1, id).Bind(2, plan.account_id).Bind(3, plan.datacenter);
  stmt.Bind(4, int{v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE});
  ASSIGN_OR_RETURN(bool row, stmt.Step());
  auto not_found = [&] {
    return absl::NotFoundError(absl::StrCat("image template ", id, " not found"));
  };
  if (!row) return not_found();
  const bool owned = stmt.ColumnText(0) == plan.account_id;
  const auto visibility = static_cast<v1::Visibility>(stmt.ColumnInt(1));
  const auto status = static_cast<v1::ImageTemplateStatus>(stmt.ColumnInt(2));
  const bool disabled = stmt.ColumnInt(3) != 0;
  const bool shared = stmt.ColumnInt(4) != 0;
  const bool available = stmt.ColumnInt(5) != 0;
  const bool deleting = status == v1::IMAGE_TEMPLATE_STATUS_DELETING ||
                        status == v1::IMAGE_TEMPLATE_STATUS_DELETED;
  // As ImageTemplateManager's visibility rule.
  if (!plan.any_template && !owned &&
      (disabled || deleting || !(visibility == v1::VISIBILITY_PUBLIC || shared))) {
    return not_found();
  }
  if (status != v1::IMAGE_TEMPLATE_STATUS_ACTIVE) {
    return absl::FailedPreconditionError(
        absl::StrCat("image template ", id, " is ", v1::ImageTemplateStatus_Name(status),
                     "; only ACTIVE templates can be deployed"));
  }
  if (disabled) {
    return absl::FailedPreconditionError(absl::StrCat(
        "image template ", id, " is disabled; its owner must enable it first"));
  }
  if (!available) {
    return absl::FailedPreconditionError(absl::StrCat(
        "image template ", id, " has no AVAILABLE location in ", plan.datacenter));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<v1::Server>> SqliteInventoryStore::ProvisionServers(
    const ProvisionPlan& plan, const OperationBuilder& build_operation) {
  if (plan.server_ids.size() != plan.hostnames.size() || plan.server_ids.empty()) {
    return absl::InvalidArgumentError("one hostname per server is needed");
  }
  std::vector<v1::Server> servers;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    servers.clear();
    ASSIGN_OR_RETURN(bool dc, Exists(conn, "SELECT 1 FROM datacenters WHERE name = ?1",
                                     plan.datacenter));
    if (!dc) return absl::NotFoundError(absl::StrCat("datacenter ", plan.datacenter, " not found"));
    if (!plan.source_image_template_id.empty()) {
      RETURN_IF_ERROR(RecheckTemplate(conn, plan));
    }
    // The template's own snapshot, not the source server's current
    // credentials (which the deploying user may not be allowed to see, and
    // which may have changed or gone since the capture).
    google::protobuf::RepeatedPtrField<v1::SoftwareCredential> creds;
    if (!plan.credentials_from_template_id.empty()) {
      ASSIGN_OR_RETURN(creds, ReadTemplateCredentialsIn(conn, plan.credentials_from_template_id));
    }
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
    // Static addresses are reserved now, before the pools' free addresses
    // are counted: a reserved one is no longer free.
    if (!plan.static_addresses.empty() &&
        plan.static_addresses.size() != plan.server_ids.size()) {
      return absl::InvalidArgumentError("one static address entry per server is needed");
    }
    std::vector<std::optional<v1::NetworkInterface>> static_nics(plan.server_ids.size());
    for (size_t i = 0; i < plan.static_addresses.size(); ++i) {
      if (plan.static_addresses[i].address().empty()) continue;
      ASSIGN_OR_RETURN(static_nics[i],
                       ReserveStaticAddress(conn, plan.datacenter, plan.server_ids[i],
                                            plan.static_addresses[i]));
    }
    // Pool addresses are counted first, so a short pool is refused with the
    // counts, then taken per server below.
    if (!plan.address_pools.empty() && plan.address_pools.size() != plan.server_ids.size()) {
      return absl::InvalidArgumentError("one address pool entry per server is needed");
    }
    std::map<std::string, int> addresses_needed;
    for (const std::optional<std::string>& pool_id : plan.address_pools) {
      if (pool_id) ++addresses_needed[*pool_id];
    }
    for (const auto& [pool_id, needed] : addresses_needed) {
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
      if (static_nics[i]) {
        v1::NetworkInterface* nic = config.mutable_network_interfaces(0);
        nic->set_ip_address(static_nics[i]->ip_address());
        nic->set_gateway(static_nics[i]->gateway());
        *nic->mutable_dns_servers() = static_nics[i]->dns_servers();
        nic->set_ip_pool_id(static_nics[i]->ip_pool_id());
      } else if (!plan.address_pools.empty() && plan.address_pools[i]) {
        // Reserved now so a concurrent deploy cannot take it after the count.
        ASSIGN_OR_RETURN(auto taken,
                         TakePoolAddress(conn, plan.datacenter, *plan.address_pools[i], id));
        RETURN_IF_ERROR(
            ApplyPoolAddress(conn, taken.first, taken.second, *config.mutable_network_interfaces(0))
                .status());
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

absl::StatusOr<google::protobuf::RepeatedPtrField<v1::SoftwareCredential>>
SqliteInventoryStore::ReadTemplateCredentialsIn(SqliteConnection& conn,
                                                const std::string& template_id) {
  ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
      "SELECT position, software, username, password FROM template_credentials "
      "WHERE template_id = ?1 ORDER BY position"));
  stmt.Bind(1, template_id);
  google::protobuf::RepeatedPtrField<v1::SoftwareCredential> creds;
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    v1::SoftwareCredential* c = creds.Add();
    c->set_software(stmt.ColumnText(1));
    c->set_username(stmt.ColumnText(2));
    ASSIGN_OR_RETURN(*c->mutable_password(),
                     cipher_->Decrypt(stmt.ColumnBlob(3),
                                      TemplateCredentialContext(
                                          template_id, static_cast<int>(stmt.ColumnInt(0)))));
  }
  return creds;
}

absl::StatusOr<AddressAssignment> SqliteInventoryStore::AllocateAddress(
    const std::string& server_id, const std::string& ip_pool_id) {
  AddressAssignment result;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, server_id));
    if (!server) return NoSuchServer();
    // Only the network step of a deploy in progress takes an address: a
    // resumed or repeated step must not hand one to a released server.
    if (server->state() != v1::SERVER_STATE_PROVISIONING) {
      return absl::FailedPreconditionError(absl::StrCat(
          "server ", server_id, " is ", v1::ServerState_Name(server->state()),
          "; addresses are allocated only to PROVISIONING servers"));
    }
    // Normally reserved when the deploy was accepted; a deploy accepted
    // before reservations existed takes its address now.
    std::pair<std::string, uint32_t> taken;
    {
      ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
          "SELECT pool_id, address FROM ip_allocations WHERE server_id = ?1 LIMIT 1"));
      stmt.Bind(1, server_id);
      ASSIGN_OR_RETURN(bool row, stmt.Step());
      if (row) taken = {stmt.ColumnText(0), static_cast<uint32_t>(stmt.ColumnInt(1))};
    }
    if (taken.first.empty()) {
      ASSIGN_OR_RETURN(taken, TakePoolAddress(conn, server->datacenter(), ip_pool_id, server_id));
    }
    v1::ServerConfiguration config = server->configuration();
    if (config.network_interfaces_size() == 0) config.add_network_interfaces()->set_name("eth0");
    ASSIGN_OR_RETURN(result, ApplyPoolAddress(conn, taken.first, taken.second,
                                              *config.mutable_network_interfaces(0)));
    ASSIGN_OR_RETURN(auto update, conn.Prepare(
        "UPDATE servers SET configuration = ?2, update_time = ?3 WHERE id = ?1"));
    update.Bind(1, server_id).BindBlob(2, config.SerializeAsString());
    return update.Bind(3, NowMicros()).Run();
  }));
  return result;
}

absl::StatusOr<v1::SanVolume> SqliteInventoryStore::ReadAttachedVolumeWithSecret(
    const std::string& volume_id, const std::string& server_id) {
  ASSIGN_OR_RETURN(v1::SanVolume volume, ReadSanVolumeWithSecret(volume_id));
  if (volume.state() != v1::SAN_VOLUME_STATE_ATTACHED || volume.attached_server_id() != server_id) {
    return absl::FailedPreconditionError(absl::StrCat(
        "SAN volume ", volume_id, " is no longer attached to server ", server_id, " (",
        v1::SanVolumeState_Name(volume.state()),
        volume.attached_server_id().empty() ? "" : " to " + volume.attached_server_id(),
        "); it was released"));
  }
  return volume;
}

absl::Status SqliteInventoryStore::ReleaseServer(const std::string& server_id) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(auto server, ReadServerRow(conn, server_id));
    if (!server) return absl::OkStatus();
    for (const char* sql : {"DELETE FROM server_disks WHERE server_id = ?1",
                            "DELETE FROM ip_allocations WHERE server_id = ?1",
                            "DELETE FROM static_addresses WHERE server_id = ?1"}) {
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
