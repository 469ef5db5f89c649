// CreateImageTemplate end to end: the pre-flight checks and the CREATING
// record at call time (Begin), then the operation (Run): power_off (the prior
// power state saved first), capture_disk_<i> for every selected disk in
// parallel on the node serving its SAN portal, record_template (disks,
// configuration, location, ACTIVE; also past max_stored_bytes:
// RESOURCE_EXHAUSTED), power_restore. Failure or cancel end with the captured
// images deleted, the template FAILED and the server back in its prior power
// state; the cause is saved in the checkpoint before any image is deleted,
// so a restart (or a rerun after a lost final write) finishes the undo and
// ends with that cause, never going forward again. The operation does not
// end while the template is still CREATING: mark_failed is retried until it
// is written or the control plane stops. A restart resumes after the last
// recorded step (record_template finds a template it already made ACTIVE and
// leaves it; so does a cancelled create, which then only restores the power
// state and ends SUCCEEDED, as a cancel arriving after record_template
// does). Once the template is ACTIVE it stays so: a power_restore that fails
// for good fails the operation with that cause and deletes nothing.
#ifndef CONTROLPLANE_CREATE_WORKFLOW_H_
#define CONTROLPLANE_CREATE_WORKFLOW_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/caller.h"
#include "controlplane/compute_driver.h"
#include "controlplane/inventory_store.h"
#include "controlplane/operation_runner.h"
#include "controlplane/quota_provider.h"
#include "controlplane/storage_node_directory.h"
#include "controlplane/template_store.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {

// Checks `account_id`'s quotas (from `quotas`; null: none) against its usage
// in `templates` plus `new_templates` and `new_stored_bytes`;
// RESOURCE_EXHAUSTED past either. A new template needs room for at least one
// byte, a capture for all of its bytes.
absl::Status CheckTemplateQuota(QuotaProvider* quotas, TemplateStore& templates,
                                const std::string& account_id, int64_t new_templates,
                                int64_t new_stored_bytes);

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
    // Tests only: runs inside record_template before the template is
    // written (to stop the runner there).
    std::function<void(OperationContext&)> before_record_for_test;
  };
  explicit CreateWorkflow(Dependencies deps) : deps_(deps) {}

  // The quotas Begin and record_template enforce (null: none). Set before
  // any operation runs; ImageTemplateManager sets its own.
  void UseQuotas(QuotaProvider* quotas) { quotas_.store(quotas); }

  // Checks the server and stores the CREATING template with its PENDING
  // operation; returns the operation. The caller has validated the request
  // and checked permissions and the name. The owner (the server's account)
  // must be below its max_image_templates and max_stored_bytes: checked and
  // inserted under one lock, so concurrent creates never overshoot
  // (RESOURCE_EXHAUSTED). NOT_FOUND (server_id, also
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
  friend class CreateRun;

  // CheckTemplateQuota with this workflow's quotas and store. Call under
  // quota_mu_.
  absl::Status CheckQuota(const std::string& account_id, int64_t new_templates,
                          int64_t new_stored_bytes) {
    return CheckTemplateQuota(quotas_.load(), *deps_.templates, account_id, new_templates,
                              new_stored_bytes);
  }

  Dependencies deps_;
  std::atomic<QuotaProvider*> quotas_{nullptr};
  // Held from reading an account's usage to committing what adds to it
  // (Begin's insert, record_template's disks): usage is read outside the
  // writing transaction, and this is the one control plane writing the
  // database.
  absl::Mutex quota_mu_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_CREATE_WORKFLOW_H_
