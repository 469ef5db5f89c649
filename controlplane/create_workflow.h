// CreateImageTemplate end to end: the pre-flight checks and the CREATING
// record at call time (Begin), then the operation (Run): power_off (the prior
// power state saved first), capture_disk_<i> for every selected disk in
// parallel on the node serving its SAN portal, record_template (disks,
// configuration, location, ACTIVE), power_restore. Failure, cancel or a
// restart in the middle end with the captured images deleted, the template
// FAILED and the server back in its prior power state. Once the template is
// ACTIVE it stays so: a power_restore that fails for good fails the
// operation with that cause and deletes nothing.
#ifndef CONTROLPLANE_CREATE_WORKFLOW_H_
#define CONTROLPLANE_CREATE_WORKFLOW_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "controlplane/caller.h"
#include "controlplane/compute_driver.h"
#include "controlplane/inventory_store.h"
#include "controlplane/operation_runner.h"
#include "controlplane/storage_node_directory.h"
#include "controlplane/template_store.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {

// Thread-safe. Owns none of its dependencies; they must outlive it.
class CreateWorkflow final : public Workflow {
 public:
  struct Dependencies {
    TemplateStore* templates = nullptr;
    InventoryStore* inventory = nullptr;
    StorageNodeDirectory* nodes = nullptr;
    ComputeDriver* compute = nullptr;
    absl::Duration compute_timeout = absl::Minutes(2);
    // Attempts of each storaged call on UNAVAILABLE (the step retries too).
    int call_attempts = 3;
  };
  explicit CreateWorkflow(Dependencies deps) : deps_(deps) {}

  // Checks the server and stores the CREATING template with its PENDING
  // operation; returns the operation. The caller has validated the request
  // and checked permissions, quota and the name. NOT_FOUND (server_id, also
  // another account's server); FAILED_PRECONDITION (bare metal, not ACTIVE,
  // no credentials, another operation holds the server, an unknown data disk
  // index, no storage node serves a disk's portal); INVALID_ARGUMENT
  // (data_disk_indexes naming the boot disk or the config drive);
  // UNAVAILABLE (a disk's storage node is down); ALREADY_EXISTS (name).
  absl::StatusOr<imagetemplates::v1::Operation> Begin(
      const Caller& caller,
      const imagetemplates::v1::CreateImageTemplateRequest& request,
      const std::string& name, const std::vector<std::string>& tags,
      int64_t now_micros);

  absl::Status Run(OperationContext& context) override;

 private:
  Dependencies deps_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_CREATE_WORKFLOW_H_
