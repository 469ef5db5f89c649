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
  };
  return *migrations;
}

}  // namespace controlplane
