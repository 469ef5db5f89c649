// DeployImageTemplate end to end. At call time (Begin): the storage node and
// IP pool checks, then one transaction that takes the volumes (one per
// template disk, at least its size or the size asked for, plus a config
// drive), creates the PROVISIONING servers and inserts the operation (step
// allocate_volumes). The operation (Run), servers in parallel:
// restore_disk_<i> for every disk (disks in parallel; the image is first
// copied to the node serving the target volume if it lacks it), then
// configure_network as its own step with its own retries (an address from the
// IP pool, the NoCloud seed written to the config drive; never redoes the
// restore), then activate (powered on, ACTIVE). Failure or cancel releases
// every server: FAILED, volumes FREE, addresses returned.
#ifndef CONTROLPLANE_DEPLOY_WORKFLOW_H_
#define CONTROLPLANE_DEPLOY_WORKFLOW_H_

#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
class DeployWorkflow final : public Workflow {
 public:
  struct Dependencies {
    TemplateStore* templates = nullptr;
    InventoryStore* inventory = nullptr;
    StorageNodeDirectory* nodes = nullptr;
    ComputeDriver* compute = nullptr;
    absl::Duration compute_timeout = absl::Minutes(2);
    int call_attempts = 3;
    // Restores running at once per operation.
    int max_parallel_restores = 8;
  };
  explicit DeployWorkflow(Dependencies deps) : deps_(deps) {}

  // Reserves everything and stores the PENDING operation; returns it. `t` is
  // the template, already checked visible, ACTIVE, enabled and located in
  // the datacenter; the request is validated. UNAVAILABLE (no live storage
  // node in the datacenter); ALREADY_EXISTS (a hostname); RESOURCE_EXHAUSTED
  // (volumes or addresses); NOT_FOUND (an IP pool).
  absl::StatusOr<imagetemplates::v1::Operation> Begin(
      const Caller& caller,
      const imagetemplates::v1::DeployImageTemplateRequest& request,
      const imagetemplates::v1::ImageTemplate& t, int64_t now_micros);

  absl::Status Run(OperationContext& context) override;

 private:
  Dependencies deps_;
  // Images being copied to a node ("node/image"): parallel restores of the
  // same image onto one node wait for one copy instead of copying it again;
  // other images and nodes do not wait.
  absl::Mutex copy_mu_;
  absl::flat_hash_set<std::string> copying_ ABSL_GUARDED_BY(copy_mu_);
  friend class DeployRun;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_DEPLOY_WORKFLOW_H_
