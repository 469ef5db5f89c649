// Migration 2: image templates and everything hanging off them, and operations
// (the rows the create/deploy/delete/copy workers drive). request_ids live in
// migration 1's idempotent_requests.
//
// Times are microseconds since the Unix epoch. Enum columns hold the proto
// enum values of imagetemplates.v1.
#include "controlplane/migrations.h"

namespace controlplane {

std::string TemplateOperationSchema() {
  return R"sql(
CREATE TABLE image_templates (
  id TEXT PRIMARY KEY NOT NULL,
  owner_account_id TEXT NOT NULL REFERENCES accounts(id),
  name TEXT NOT NULL,
  note TEXT NOT NULL DEFAULT '',
  visibility INTEGER NOT NULL,
  status INTEGER NOT NULL,
  source_server_id TEXT NOT NULL DEFAULT '',
  -- Serialized imagetemplates.v1.ServerConfiguration.
  configuration BLOB NOT NULL DEFAULT x'',
  deprecated INTEGER NOT NULL DEFAULT 0,
  disabled INTEGER NOT NULL DEFAULT 0,
  delete_protected INTEGER NOT NULL DEFAULT 0,
  create_operation_id TEXT NOT NULL DEFAULT '',
  create_time_us INTEGER NOT NULL,
  update_time_us INTEGER NOT NULL,
  deprecate_time_us INTEGER
);
-- Names are unique per owner among templates not DELETED (status 5).
CREATE UNIQUE INDEX image_templates_owner_name
  ON image_templates(owner_account_id, name) WHERE status <> 5;
CREATE INDEX image_templates_owner_create
  ON image_templates(owner_account_id, create_time_us, id);
CREATE INDEX image_templates_create ON image_templates(create_time_us, id);
CREATE INDEX image_templates_name ON image_templates(name, id);
-- Public templates (visibility 3) are few; every account's list reads them.
CREATE INDEX image_templates_public ON image_templates(id) WHERE visibility = 3;

CREATE TABLE image_template_tags (
  template_id TEXT NOT NULL REFERENCES image_templates(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  tag TEXT NOT NULL,
  PRIMARY KEY (template_id, position)
);
CREATE INDEX image_template_tags_tag ON image_template_tags(tag, template_id);

CREATE TABLE image_template_disks (
  template_id TEXT NOT NULL REFERENCES image_templates(id) ON DELETE CASCADE,
  device_index INTEGER NOT NULL,
  boot INTEGER NOT NULL DEFAULT 0,
  logical_size_bytes INTEGER NOT NULL,
  stored_size_bytes INTEGER NOT NULL DEFAULT 0,
  manifest_digest TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (template_id, device_index)
);

CREATE TABLE image_template_shares (
  template_id TEXT NOT NULL REFERENCES image_templates(id) ON DELETE CASCADE,
  account_id TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
  create_time_us INTEGER NOT NULL,
  PRIMARY KEY (template_id, account_id)
);
CREATE INDEX image_template_shares_account
  ON image_template_shares(account_id, template_id);

-- rowid order is location order: the first is where the template was captured.
CREATE TABLE image_template_locations (
  template_id TEXT NOT NULL REFERENCES image_templates(id) ON DELETE CASCADE,
  datacenter TEXT NOT NULL,
  status INTEGER NOT NULL,
  operation_id TEXT NOT NULL DEFAULT '',
  create_time_us INTEGER NOT NULL,
  UNIQUE (template_id, datacenter)
);

CREATE TABLE operations (
  id TEXT PRIMARY KEY NOT NULL,
  kind INTEGER NOT NULL,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  user_id TEXT NOT NULL DEFAULT '',
  request_id TEXT NOT NULL DEFAULT '',
  state INTEGER NOT NULL,
  step TEXT NOT NULL DEFAULT '',
  bytes_done INTEGER NOT NULL DEFAULT 0,
  bytes_total INTEGER NOT NULL DEFAULT 0,
  bytes_per_second INTEGER NOT NULL DEFAULT 0,
  eta_ms INTEGER,
  error_code INTEGER NOT NULL DEFAULT 0,
  error_message TEXT NOT NULL DEFAULT '',
  result_image_template_id TEXT,
  -- Serialized imagetemplates.v1.DeployedServers.
  result_deployed_servers BLOB,
  target_type INTEGER NOT NULL DEFAULT 0,
  target_id TEXT NOT NULL DEFAULT '',
  -- The serialized request that started the operation, so a restarted
  -- control plane can resume it.
  params BLOB NOT NULL DEFAULT x'',
  cancel_requested INTEGER NOT NULL DEFAULT 0,
  -- Which control-plane process drives it and when it last said so; a stale
  -- heartbeat lets another process resume or fail the operation.
  worker_id TEXT NOT NULL DEFAULT '',
  heartbeat_time_us INTEGER NOT NULL DEFAULT 0,
  create_time_us INTEGER NOT NULL,
  update_time_us INTEGER NOT NULL,
  end_time_us INTEGER
);
CREATE INDEX operations_account_create
  ON operations(account_id, create_time_us, id);
CREATE INDEX operations_create ON operations(create_time_us, id);
CREATE INDEX operations_target ON operations(target_id, state);
CREATE INDEX operations_state ON operations(state);

CREATE TABLE operation_steps (
  operation_id TEXT NOT NULL REFERENCES operations(id) ON DELETE CASCADE,
  seq INTEGER NOT NULL,
  name TEXT NOT NULL,
  server_id TEXT NOT NULL DEFAULT '',
  state INTEGER NOT NULL,
  attempt_count INTEGER NOT NULL DEFAULT 1,
  start_time_us INTEGER,
  end_time_us INTEGER,
  error_code INTEGER NOT NULL DEFAULT 0,
  error_message TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (operation_id, seq)
);

)sql";
}

}  // namespace controlplane
