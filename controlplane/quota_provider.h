// The template limits of an account, as the identity side stores them.
#ifndef CONTROLPLANE_QUOTA_PROVIDER_H_
#define CONTROLPLANE_QUOTA_PROVIDER_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace controlplane {

struct TemplateQuota {
  // Templates not DELETED; 0 means unlimited.
  int64_t max_image_templates = 0;
  // Sum of the templates' disks' stored_size_bytes; 0 means unlimited.
  int64_t max_stored_bytes = 0;
};

// Thread-safe.
class QuotaProvider {
 public:
  virtual ~QuotaProvider() = default;
  // The account's limits (unlimited if none were set). NOT_FOUND if the
  // account does not exist.
  virtual absl::StatusOr<TemplateQuota> GetQuota(absl::string_view account_id) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_QUOTA_PROVIDER_H_
