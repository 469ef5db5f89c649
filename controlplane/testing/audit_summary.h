// Reading the summary audit events that stand for many refused calls.
#ifndef CONTROLPLANE_TESTING_AUDIT_SUMMARY_H_
#define CONTROLPLANE_TESTING_AUDIT_SUMMARY_H_

#include <cstdint>
#include <cstdio>

#include "imagetemplates/v1/audit.pb.h"

namespace controlplane {

// The number of refused calls `event` summarizes (its message starts "summary
// of N refused calls", see ThrottledRefusals::Message); 0 for an event of one
// call.
inline int64_t SummaryCount(const imagetemplates::v1::AuditEvent& event) {
  long long count = 0;
  if (std::sscanf(event.outcome().message().c_str(), "summary of %lld refused calls",
                  &count) != 1) {
    return 0;
  }
  return count;
}

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_AUDIT_SUMMARY_H_
