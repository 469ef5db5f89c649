// Records every mutating call, allowed or refused.
#ifndef CONTROLPLANE_AUDIT_LOG_H_
#define CONTROLPLANE_AUDIT_LOG_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "controlplane/caller.h"
#include "imagetemplates/v1/common.pb.h"

namespace controlplane {

// Thread-safe.
class AuditLog {
 public:
  virtual ~AuditLog() = default;
  // Appends one event: `method` is the RPC name ("ShareImageTemplate"),
  // `target` what it acted on, `outcome` the status returned to the caller,
  // `account_id` the account whose audit log shows it (usually the caller's;
  // the owner's for actions on another account's resources). Failures to
  // write are logged, never returned: auditing must not change the outcome.
  virtual void Record(const Caller& caller, absl::string_view account_id,
                      absl::string_view method,
                      const imagetemplates::v1::ResourceReference& target,
                      const absl::Status& outcome, absl::string_view request_id,
                      absl::string_view operation_id = "") = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_AUDIT_LOG_H_
