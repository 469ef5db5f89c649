// Small pieces shared by the create, deploy and delete workflows.
#ifndef CONTROLPLANE_WORKFLOW_UTIL_H_
#define CONTROLPLANE_WORKFLOW_UTIL_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "controlplane/storage_node_directory.h"
#include "controlplane/template_store.h"
#include "imagetemplates/v1/inventory.pb.h"

namespace controlplane {

// "iscsi://[user%secret@]portal/iqn/lun" for storaged; `volume` must carry
// its CHAP secret (InventoryStore::ReadSanVolumeWithSecret).
std::string IscsiUrl(const imagetemplates::v1::SanVolume& volume);

// A server's configuration as a template records it: interfaces keep only
// their names.
imagetemplates::v1::ServerConfiguration TemplateConfiguration(
    const imagetemplates::v1::ServerConfiguration& server_configuration);

// The first error that is not CANCELLED, else the first error, else OK: a
// parallel step's real cause wins over the siblings it cancelled.
absl::Status FirstError(const std::vector<absl::Status>& results);

// Deletes every recorded replica of the template's images (NOT_FOUND on the
// node is fine) and forgets it; a node no longer registered is forgotten too.
// Returns UNAVAILABLE if a holding node is down (those replicas stay).
absl::Status DeleteReplicas(TemplateStore* templates,
                            StorageNodeDirectory* nodes,
                            const std::string& template_id,
                            const std::atomic<bool>* stop);

}  // namespace controlplane

#endif  // CONTROLPLANE_WORKFLOW_UTIL_H_
