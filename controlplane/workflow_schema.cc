// Migration 3: what the create/deploy/delete workflows need beyond the rows
// of migrations 1 and 2.
//
// - operations.checkpoint: the workflow's own state (a serialized
//   controlplane.internal checkpoint message), written together with each
//   finished step so a restarted control plane resumes from there.
// - image_replicas: which storage node holds which captured image, so
//   deploys find a source for each disk and deletes reach every copy.
#include "controlplane/migrations.h"

namespace controlplane {

std::string WorkflowSchema() {
  return R"sql(
ALTER TABLE operations ADD COLUMN checkpoint BLOB NOT NULL DEFAULT x'';

CREATE TABLE image_replicas (
  template_id TEXT NOT NULL,
  image_id TEXT NOT NULL,
  -- A node holding a replica cannot be forgotten (DeleteStorageNode).
  node_id TEXT NOT NULL REFERENCES storage_nodes(id),
  manifest_digest TEXT NOT NULL,
  create_time_us INTEGER NOT NULL,
  PRIMARY KEY (image_id, node_id)
);
CREATE INDEX image_replicas_template ON image_replicas(template_id);
CREATE INDEX ip_allocations_server ON ip_allocations(server_id);
)sql";
}

}  // namespace controlplane
