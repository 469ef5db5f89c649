// DeleteImageTemplate's operation: delete_images removes the template's
// images from every node holding them (NOT_FOUND is fine; chunks still used by
// other templates survive in the node's store), then delete_record marks the
// template DELETED and drops its locations. Deletes cannot be cancelled; a
// node that stays down (through the step's retries) fails the operation with
// UNAVAILABLE naming the node, after deleting the images on the other nodes,
// and leaves the template DELETING with the replicas still to delete;
// DeleteImageTemplate may then be called again to finish the job.
#ifndef CONTROLPLANE_DELETE_WORKFLOW_H_
#define CONTROLPLANE_DELETE_WORKFLOW_H_

#include "controlplane/operation_runner.h"
#include "controlplane/storage_node_directory.h"
#include "controlplane/template_store.h"

namespace controlplane {

// Thread-safe. Owns none of its dependencies.
class DeleteWorkflow final : public Workflow {
 public:
  DeleteWorkflow(TemplateStore* templates, StorageNodeDirectory* nodes)
      : templates_(templates), nodes_(nodes) {}

  absl::Status Run(OperationContext& context) override;

 private:
  TemplateStore* const templates_;
  StorageNodeDirectory* const nodes_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_DELETE_WORKFLOW_H_
