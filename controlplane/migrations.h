// The control plane's schema, as numbered migrations applied in order by
// SqliteDatabase::Open. Append new migrations; never edit a released one.
#ifndef CONTROLPLANE_MIGRATIONS_H_
#define CONTROLPLANE_MIGRATIONS_H_

#include <string>
#include <vector>

namespace controlplane {

// Migration 1: accounts, users, API keys, quotas, audit log, datacenters,
// servers and disks, credentials, SAN volumes, storage nodes, IP pools.
std::string IdentityInventorySchema();
// Migration 2: image templates, disks, tags, shares, locations, operations,
// request ids.
std::string TemplateOperationSchema();
// Migration 3: operation checkpoints and image replicas (workflow_schema.cc).
std::string WorkflowSchema();

// Migration 6: image_templates.version (for TemplateCache), tag_list and
// name_folded, and covering indexes for the list queries (template_schema.cc).
std::string ListSpeedupSchema();
// Migration 7: a covering index by id for the shares branch of a list.
std::string ShareListSchema();

const std::vector<std::string>& Migrations();

}  // namespace controlplane

#endif  // CONTROLPLANE_MIGRATIONS_H_
