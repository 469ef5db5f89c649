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

// Migration 6, for ListImageTemplates (tools/bench/controlplane_bench):
// - version: bumped by every write to a template or its tags, disks or
//   locations, in the same transaction; TemplateCache entries are valid for
//   one version.
// - name_folded: the name lowercased by Unicode rules (LowercaseUtf8), for
//   name_contains. SQLite's lower() knows only ASCII, so here it fills only
//   ASCII names; SqliteTemplateStore fills the rest (the partial index finds
//   them) when it starts.
// - tag_list: the tags as US-separated text ("\x1fweb\x1fprod\x1f"; tags are
//   printable, so never hold US), so a tag filter is a test on the row
//   instead of an index probe per scanned row.
// - The index a list branch scans covers every column its filters and the
//   page read (key, id, version), so filtering touches no table row (a
//   partial index must hold visibility too, or SQLite reads the row).
std::string ListSpeedupSchema() {
  return R"sql(
ALTER TABLE image_templates ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
ALTER TABLE image_templates ADD COLUMN tag_list TEXT NOT NULL DEFAULT '';
ALTER TABLE image_templates ADD COLUMN name_folded TEXT;
UPDATE image_templates SET name_folded = lower(name) WHERE name NOT GLOB '*[^ -~]*';
CREATE INDEX image_templates_name_unfolded ON image_templates(id) WHERE name_folded IS NULL;
UPDATE image_templates SET tag_list = COALESCE(
  (SELECT char(31) || group_concat(g.tag, char(31)) || char(31)
   FROM image_template_tags g WHERE g.template_id = image_templates.id), '');

DROP INDEX image_templates_owner_create;
CREATE INDEX image_templates_owner_create ON image_templates(
  owner_account_id, create_time_us, id, status, deprecated, visibility, disabled, name,
  name_folded, tag_list, version);
CREATE INDEX image_templates_owner_name_cover ON image_templates(
  owner_account_id, name, id, status, deprecated, visibility, disabled, create_time_us,
  name_folded, tag_list, version);
DROP INDEX image_templates_create;
CREATE INDEX image_templates_create ON image_templates(
  create_time_us, id, owner_account_id, visibility, status, deprecated, disabled, name,
  name_folded, tag_list, version);
DROP INDEX image_templates_name;
CREATE INDEX image_templates_name ON image_templates(
  name, id, owner_account_id, visibility, status, deprecated, disabled, create_time_us,
  name_folded, tag_list, version);
DROP INDEX image_templates_public_create;
CREATE INDEX image_templates_public_create ON image_templates(
  create_time_us, id, owner_account_id, visibility, status, deprecated, disabled, name,
  name_folded, tag_list, version) WHERE visibility = 3;
DROP INDEX image_templates_public_name;
CREATE INDEX image_templates_public_name ON image_templates(
  name, id, owner_account_id, visibility, status, deprecated, disabled, create_time_us,
  name_folded, tag_list, version) WHERE visibility = 3;
)sql";
}

// Migration 7: the shares branch of a list (templates shared with the
// viewer) looks each shared template up by id; this index answers the lookup
// with every column the branch filters and reads, so it touches no table row
// (whose configuration blob may spill onto overflow pages).
std::string ShareListSchema() {
  return R"sql(
CREATE INDEX image_templates_id_cover ON image_templates(
  id, owner_account_id, visibility, status, deprecated, disabled, create_time_us, name,
  name_folded, tag_list, version);
)sql";
}

}  // namespace controlplane
