// An AuditLog for tests that keeps every event in memory.
#ifndef CONTROLPLANE_TESTING_AUDIT_LOG_FAKE_H_
#define CONTROLPLANE_TESTING_AUDIT_LOG_FAKE_H_

#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/audit_log.h"

namespace controlplane {

struct RecordedAuditEvent {
  std::string user_id;
  std::string account_id;
  std::string method;
  imagetemplates::v1::ResourceReference target;
  absl::StatusCode code;
  std::string request_id;
  std::string operation_id;
};

// Thread-safe.
class RecordingAuditLog final : public AuditLog {
 public:
  void Record(const Caller& caller, absl::string_view account_id, absl::string_view method,
              const imagetemplates::v1::ResourceReference& target, const absl::Status& outcome,
              absl::string_view request_id, absl::string_view operation_id) override {
    absl::MutexLock lock(&mu_);
    events_.push_back({caller.user_id, std::string(account_id), std::string(method), target,
                       outcome.code(), std::string(request_id), std::string(operation_id)});
  }
  std::vector<RecordedAuditEvent> events() {
    absl::MutexLock lock(&mu_);
    return events_;
  }
  void Clear() {
    absl::MutexLock lock(&mu_);
    events_.clear();
  }

 private:
  absl::Mutex mu_;
  std::vector<RecordedAuditEvent> events_ ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_AUDIT_LOG_FAKE_H_
