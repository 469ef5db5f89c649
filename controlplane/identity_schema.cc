// Migration 1. Times are microseconds since the Unix epoch. Secrets (API keys)
// are stored only as SHA-256 hashes; passwords and CHAP secrets only as
// AES-256-GCM ciphertext (credential_cipher.h).
#include "controlplane/migrations.h"

namespace controlplane {

std::string IdentityInventorySchema() {
  return R"sql(
CREATE TABLE accounts (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  is_operator INTEGER NOT NULL,
  block_public_sharing INTEGER NOT NULL DEFAULT 0,
  max_image_templates INTEGER NOT NULL DEFAULT 0,
  max_stored_bytes INTEGER NOT NULL DEFAULT 0,
  create_time INTEGER NOT NULL
);

CREATE TABLE users (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  username TEXT NOT NULL,
  all_servers INTEGER NOT NULL DEFAULT 0,
  create_time INTEGER NOT NULL,
  UNIQUE (account_id, username)
);

CREATE TABLE user_permissions (
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  permission INTEGER NOT NULL,
  PRIMARY KEY (user_id, permission)
) WITHOUT ROWID;

CREATE TABLE api_keys (
  id TEXT PRIMARY KEY,
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  description TEXT NOT NULL,
  prefix TEXT NOT NULL,
  secret_hash BLOB NOT NULL,
  create_time INTEGER NOT NULL,
  revoke_time INTEGER
);
CREATE INDEX api_keys_by_user ON api_keys (user_id, create_time, id);

CREATE TABLE idempotent_requests (
  account_id TEXT NOT NULL,
  request_id TEXT NOT NULL,
  fingerprint BLOB NOT NULL,
  response BLOB NOT NULL,
  create_time INTEGER NOT NULL,
  PRIMARY KEY (account_id, request_id)
) WITHOUT ROWID;

CREATE TABLE audit_events (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  id TEXT NOT NULL UNIQUE,
  time INTEGER NOT NULL,
  account_id TEXT NOT NULL,
  user_id TEXT NOT NULL,
  api_key_id TEXT NOT NULL,
  method TEXT NOT NULL,
  target_type INTEGER NOT NULL,
  target_id TEXT NOT NULL,
  outcome_code INTEGER NOT NULL,
  outcome_message TEXT NOT NULL,
  request_id TEXT NOT NULL,
  operation_id TEXT NOT NULL,
  peer TEXT NOT NULL
);
CREATE INDEX audit_events_by_account ON audit_events (account_id, seq);
CREATE INDEX audit_events_by_target ON audit_events (target_id, seq);

CREATE TABLE datacenters (
  name TEXT PRIMARY KEY,
  description TEXT NOT NULL,
  create_time INTEGER NOT NULL
);

CREATE TABLE storage_nodes (
  id TEXT PRIMARY KEY,
  datacenter TEXT NOT NULL REFERENCES datacenters(name),
  address TEXT NOT NULL,
  served_portals TEXT NOT NULL,  -- newline-separated host:port list
  state INTEGER NOT NULL,
  last_heartbeat_time INTEGER NOT NULL,
  capacity_bytes INTEGER NOT NULL,
  free_bytes INTEGER NOT NULL,
  create_time INTEGER NOT NULL
);

CREATE TABLE servers (
  id TEXT PRIMARY KEY,
  account_id TEXT NOT NULL REFERENCES accounts(id),
  type INTEGER NOT NULL,
  hostname TEXT NOT NULL,
  domain TEXT NOT NULL,
  datacenter TEXT NOT NULL REFERENCES datacenters(name),
  state INTEGER NOT NULL,
  power_state INTEGER NOT NULL,
  configuration BLOB NOT NULL,  -- serialized imagetemplates.v1.ServerConfiguration
  source_image_template_id TEXT NOT NULL DEFAULT '',
  create_time INTEGER NOT NULL,
  update_time INTEGER NOT NULL
);
CREATE INDEX servers_by_account ON servers (account_id, hostname, id);
CREATE INDEX servers_by_hostname ON servers (hostname, id);

CREATE TABLE user_servers (
  user_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  PRIMARY KEY (user_id, server_id)
) WITHOUT ROWID;
CREATE INDEX user_servers_by_server ON user_servers (server_id);

CREATE TABLE san_volumes (
  id TEXT PRIMARY KEY,
  datacenter TEXT NOT NULL REFERENCES datacenters(name),
  san_host TEXT NOT NULL REFERENCES storage_nodes(id),
  portal TEXT NOT NULL,
  iqn TEXT NOT NULL,
  lun INTEGER NOT NULL,
  chap_user TEXT NOT NULL,
  chap_secret BLOB,  -- AES-256-GCM ciphertext, NULL without CHAP
  size_bytes INTEGER NOT NULL,
  thin INTEGER NOT NULL,
  state INTEGER NOT NULL,
  attached_server_id TEXT REFERENCES servers(id),
  create_time INTEGER NOT NULL,
  UNIQUE (portal, iqn, lun)
);
CREATE INDEX san_volumes_by_datacenter ON san_volumes (datacenter, state, size_bytes);
CREATE INDEX san_volumes_by_server ON san_volumes (attached_server_id);

CREATE TABLE server_disks (
  server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  device_index INTEGER NOT NULL,
  boot INTEGER NOT NULL,
  config_drive INTEGER NOT NULL,
  san_volume_id TEXT NOT NULL UNIQUE REFERENCES san_volumes(id),
  PRIMARY KEY (server_id, device_index)
) WITHOUT ROWID;

CREATE TABLE server_credentials (
  server_id TEXT NOT NULL REFERENCES servers(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  software TEXT NOT NULL,
  username TEXT NOT NULL,
  password BLOB NOT NULL,  -- AES-256-GCM ciphertext
  PRIMARY KEY (server_id, position)
) WITHOUT ROWID;

CREATE TABLE ip_pools (
  id TEXT PRIMARY KEY,
  datacenter TEXT NOT NULL REFERENCES datacenters(name),
  subnet TEXT NOT NULL,
  gateway TEXT NOT NULL,
  dns_servers TEXT NOT NULL,  -- newline-separated
  total_count INTEGER NOT NULL,
  create_time INTEGER NOT NULL
);
CREATE INDEX ip_pools_by_datacenter ON ip_pools (datacenter, create_time, id);

CREATE TABLE ip_pool_ranges (
  pool_id TEXT NOT NULL REFERENCES ip_pools(id) ON DELETE CASCADE,
  position INTEGER NOT NULL,
  first_address INTEGER NOT NULL,  -- IPv4 as an integer
  last_address INTEGER NOT NULL,
  PRIMARY KEY (pool_id, position)
) WITHOUT ROWID;

CREATE TABLE ip_allocations (
  pool_id TEXT NOT NULL REFERENCES ip_pools(id),
  address INTEGER NOT NULL,
  server_id TEXT NOT NULL,
  create_time INTEGER NOT NULL,
  PRIMARY KEY (pool_id, address)
) WITHOUT ROWID;
)sql";
}

}  // namespace controlplane
