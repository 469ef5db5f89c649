// AddImageTemplateLocations end to end. At call time (Begin): every target
// datacenter must have a live storage node; then one transaction adds a
// COPYING location per datacenter and inserts the PENDING copy operation.
// The operation (Run): copy_<datacenter>_disk<i> for every disk and target,
// up to parallel_copies at once, each sending the image from a live node
// holding it (storaged SendImage: only chunks the destination lacks cross) to
// a live node of the target datacenter and recording the replica; then
// record_locations marks the locations AVAILABLE, so deploys may use them.
// Failure or cancel: the copies still running are stopped, the cause is
// checkpointed (a restart finishes the undo, it never copies again),
// undo_copies deletes the images this operation created on destination nodes
// (images that were there before stay), then the locations turn FAILED
// (failure) or are removed (cancel).
//
// RemoveLocationData deletes a removed location's images from the nodes of
// its datacenter (RemoveImageTemplateLocations).
#ifndef CONTROLPLANE_COPY_WORKFLOW_H_
#define CONTROLPLANE_COPY_WORKFLOW_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controlplane/caller.h"
#include "controlplane/inventory_store.h"
#include "controlplane/operation_runner.h"
#include "controlplane/storage_node_directory.h"
#include "controlplane/template_store.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {

// Thread-safe. Owns none of its dependencies; they must outlive it.
class CopyWorkflow final : public Workflow {
 public:
  struct Dependencies {
    TemplateStore* templates = nullptr;
    InventoryStore* inventory = nullptr;
    StorageNodeDirectory* nodes = nullptr;
    // Attempts of each storaged call on UNAVAILABLE (the step retries too).
    int call_attempts = 3;
    // Disk images copied at once (each a SendImage between two nodes).
    int parallel_copies = 3;
  };
  explicit CopyWorkflow(Dependencies deps) : deps_(deps) {}

  // Adds the COPYING locations and the PENDING operation in one
  // transaction; returns the operation. `t` is visible to the caller, who
  // may change it; the request is validated. NOT_FOUND (a datacenter with no
  // storage node registered, or unknown); UNAVAILABLE (no live node there);
  // FAILED_PRECONDITION (not ACTIVE); ALREADY_EXISTS (a location in one of
  // them that is not FAILED; a FAILED one is copied again).
  absl::StatusOr<imagetemplates::v1::Operation> Begin(
      const Caller& caller, const imagetemplates::v1::AddImageTemplateLocationsRequest& request,
      const imagetemplates::v1::ImageTemplate& t, int64_t now_micros);

  absl::Status Run(OperationContext& context) override;

  // Deletes the template's images held by nodes of `datacenters` and forgets
  // those replicas. Best effort: a node that is down keeps its replica
  // record, so deleting the template later removes it. Returns the first
  // error (the caller logs it).
  absl::Status RemoveLocationData(const std::string& template_id,
                                  const std::vector<std::string>& datacenters);

 private:
  Dependencies deps_;
  friend class CopyRun;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_COPY_WORKFLOW_H_
