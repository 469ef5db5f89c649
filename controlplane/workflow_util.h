// Small pieces shared by the create, deploy, copy and delete workflows.
#ifndef CONTROLPLANE_WORKFLOW_UTIL_H_
#define CONTROLPLANE_WORKFLOW_UTIL_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/operation_runner.h"
#include "controlplane/storage_node_directory.h"
#include "common/log.h"
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

// Parses the operation's initial checkpoint into `*checkpoint` (guarded by
// `*mu`, which must outlive the operation's run) and has `context` save it
// from there from now on. Returns INTERNAL, naming the `kind` of operation,
// if it does not parse or names no template.
template <typename Checkpoint>
absl::Status LoadCheckpoint(absl::string_view kind, OperationContext& context, absl::Mutex* mu,
                            Checkpoint* checkpoint) {
  absl::MutexLock lock(mu);
  if (!checkpoint->ParseFromString(context.initial_checkpoint()) ||
      checkpoint->template_id().empty()) {
    return absl::InternalError(absl::StrCat(kind, " operation has no usable checkpoint"));
  }
  context.SetCheckpointSource([mu, checkpoint] {
    absl::MutexLock lock(mu);
    return checkpoint->SerializeAsString();
  });
  return absl::OkStatus();
}

// A workflow that fails records why in its checkpoint before it undoes
// anything, so a run after a restart finishes the undo with that cause and
// never goes forward again (an undo may have freed what forward steps
// recorded as done). OK while none is recorded.
template <typename Checkpoint>
absl::Status RecordedFailure(const Checkpoint& checkpoint) {
  if (checkpoint.failure_code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(checkpoint.failure_code()),
                      checkpoint.failure_message());
}

// Records `cause` in `*checkpoint` (guarded by `*mu`) and saves it; a failed
// save is logged, as the first undo step saves the checkpoint again.
template <typename Checkpoint>
void RecordFailure(const absl::Status& cause, OperationContext& context, absl::Mutex* mu,
                   Checkpoint* checkpoint) {
  {
    absl::MutexLock lock(mu);
    checkpoint->set_failure_code(static_cast<int>(cause.code()));
    checkpoint->set_failure_message(std::string(cause.message()));
  }
  if (absl::Status saved = context.SaveCheckpoint(); !saved.ok()) {
    common::LogWarning("operation %s: recording the failure: %s", context.id(),
                       saved.ToString());
  }
}

}  // namespace controlplane

#endif  // CONTROLPLANE_WORKFLOW_UTIL_H_
