// SqliteInventoryStore: datacenters and the storage nodes (storaged daemons)
// registered in them, with the NodeRegistry's registration, heartbeats and
// DOWN marking.
#include "controlplane/sqlite_inventory_store.h"

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
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
using internal::OperatorsOnly;
using internal::ValidateDatacenterName;

namespace {

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

}  // namespace

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

// ------------------------------------------ Internal calls (NodeRegistry)

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

}  // namespace controlplane
