#include "controlplane/migrations.h"

namespace controlplane {
namespace {

// Migration 9: a counter that every change to a template, its children or
// its shares bumps in the same transaction (SqliteTemplateStore's list memo
// is valid for one value, read inside the page's snapshot). Unrelated
// commits (audit rows, heartbeats, operations) leave it alone, so the memo
// outlives them; before, any commit dropped it.
std::string TemplateListGenerationSchema() {
  std::string sql =
      "CREATE TABLE template_list_generation ("
      "id INTEGER PRIMARY KEY CHECK (id = 1), value INTEGER NOT NULL);"
      "INSERT INTO template_list_generation (id, value) VALUES (1, 0);";
  for (const char* table : {"image_templates", "image_template_shares", "image_template_tags",
                            "image_template_disks", "image_template_locations"}) {
    for (const char* event : {"INSERT", "UPDATE", "DELETE"}) {
      sql += std::string("CREATE TRIGGER ") + table + "_list_generation_" + event +
             " AFTER " + event + " ON " + table +
             " BEGIN UPDATE template_list_generation SET value = value + 1 WHERE id = 1; END;";
    }
  }
  return sql;
}

}  // namespace

const std::vector<std::string>& Migrations() {
  static const auto* migrations = new std::vector<std::string>{
      IdentityInventorySchema(),
      TemplateOperationSchema(),
      WorkflowSchema(),
      // 4: public templates in key order, for the public branch of a list
      // (tools/bench/controlplane_bench: it scanned ~5,000 rows per page).
      "CREATE INDEX image_templates_public_create ON image_templates(create_time_us, id) "
      "WHERE visibility = 3;"
      "CREATE INDEX image_templates_public_name ON image_templates(name, id) "
      "WHERE visibility = 3;",
      // 5: request_id claims (idempotency.h ClaimRequest): a call holds its
      // request_id while it acts, so two identical calls never both act.
      "ALTER TABLE idempotent_requests ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;",
      ListSpeedupSchema(),
      ShareListSchema(),
      // 8: audit events recorded before the template and operation services
      // named the full gRPC method ("DeleteImageTemplate") get the full name,
      // which ListAuditEvents' exact method filter matches.
      "UPDATE audit_events SET method = '/imagetemplates.v1.OperationService/CancelOperation' "
      "WHERE method = 'CancelOperation';"
      "UPDATE audit_events SET method = '/imagetemplates.v1.ImageTemplateService/' || method "
      "WHERE method <> '' AND substr(method, 1, 1) <> '/';",
      TemplateListGenerationSchema(),
      // 10: the software credentials of a template's source server as they
      // were when the create was accepted (AES-256-GCM, context
      // "template-credential/<template id>/<position>"): deploys of the owner
      // account copy these, never the source server's current ones. Deleted
      // with the template record (status DELETED). Templates created before
      // this migration have none.
      "CREATE TABLE template_credentials ("
      "template_id TEXT NOT NULL REFERENCES image_templates(id) ON DELETE CASCADE,"
      "position INTEGER NOT NULL, software TEXT NOT NULL, username TEXT NOT NULL,"
      "password BLOB NOT NULL, PRIMARY KEY (template_id, position));",
      // 11: static addresses of deployed servers outside every pool's ranges
      // (IPv4 as an integer; those inside one are ip_allocations rows of its
      // pool). IP pools are shared by every account of a datacenter, so a
      // deploy must not configure an address another server already has.
      // Not counted as pool addresses; released with the server.
      "CREATE TABLE static_addresses (datacenter TEXT NOT NULL, address INTEGER NOT NULL,"
      "server_id TEXT NOT NULL, create_time INTEGER NOT NULL,"
      "PRIMARY KEY (datacenter, address)) WITHOUT ROWID;"
      "CREATE INDEX static_addresses_server ON static_addresses(server_id);",
      // 12: expired request_ids are deleted as new ones are written
      // (PurgeExpiredRequests); this keeps finding them cheap.
      "CREATE INDEX idempotent_requests_create_time ON idempotent_requests(create_time);",
  };
  return *migrations;
}

}  // namespace controlplane
