// Records every mutating call, allowed or refused (floods of refusals from a
// throttled address as counted summaries).
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
  // An outcome marked by MarkThrottled (authenticator.h) is one of a flood
  // of refusals from one address: an implementation may count it into a
  // summary event (count, address, method, time window) instead of writing
  // it alone, so that the flood cannot cost a write per call.
  virtual void Record(const Caller& caller, absl::string_view account_id,
                      absl::string_view method,
                      const imagetemplates::v1::ResourceReference& target,
                      const absl::Status& outcome, absl::string_view request_id,
                      absl::string_view operation_id = "") = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_AUDIT_LOG_H_
