// SqliteInventoryStore: IP pools, the addresses deploys give new servers
// (allocation itself is in sqlite_inventory_store_deploys.cc).
#include "controlplane/sqlite_inventory_store.h"

#include <algorithm>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
using internal::ParseIpv4;
using internal::ReadPoolRow;
using internal::ValidateDatacenterName;

namespace {

// A network: host bits zero.
std::optional<internal::Cidr> ParseNetwork(absl::string_view text) {
  std::optional<internal::Cidr> cidr = internal::ParseCidr(text);
  if (!cidr || cidr->address != cidr->first()) return std::nullopt;
  return cidr;
}

}  // namespace

// --------------------------------------------------------------- IP pools

absl::StatusOr<v1::CreateIpPoolResponse> SqliteInventoryStore::CreateIpPool(
    const Caller& caller, const v1::CreateIpPoolRequest& request) {
  if (!caller.is_operator) return OperatorsOnly("adding IP pools");
  RETURN_IF_ERROR(ValidateDatacenterName("datacenter", request.datacenter()));
  std::optional<internal::Cidr> subnet = ParseNetwork(request.subnet());
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
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("CreateIpPool", request),
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
      db_, caller.account_id, request.request_id(),
      RequestFingerprint("DeleteIpPool", request),
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

}  // namespace controlplane
