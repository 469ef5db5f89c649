#include "controlplane/migrations.h"

namespace controlplane {

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
  };
  return *migrations;
}

}  // namespace controlplane
