// AccountDirectory and QuotaProvider for the template service, answered from
// the identity side's account records (IdentityStore::GetQuotaLimits).
#ifndef CONTROLPLANE_IDENTITY_ACCOUNT_DIRECTORY_H_
#define CONTROLPLANE_IDENTITY_ACCOUNT_DIRECTORY_H_

#include <string>

#include "controlplane/account_directory.h"
#include "controlplane/identity_store.h"
#include "controlplane/quota_provider.h"

namespace controlplane {

// Thread-safe. Does not own the store, which must outlive it.
class IdentityAccountDirectory final : public AccountDirectory, public QuotaProvider {
 public:
  explicit IdentityAccountDirectory(IdentityStore* identity) : identity_(identity) {}

  absl::StatusOr<AccountPolicy> GetAccountPolicy(absl::string_view account_id) override {
    absl::StatusOr<QuotaLimits> limits = identity_->GetQuotaLimits(std::string(account_id));
    if (!limits.ok()) return limits.status();
    AccountPolicy policy;
    policy.block_public_sharing = limits->block_public_sharing;
    return policy;
  }

  absl::StatusOr<TemplateQuota> GetQuota(absl::string_view account_id) override {
    absl::StatusOr<QuotaLimits> limits = identity_->GetQuotaLimits(std::string(account_id));
    if (!limits.ok()) return limits.status();
    TemplateQuota quota;
    quota.max_image_templates = limits->max_image_templates;
    quota.max_stored_bytes = limits->max_stored_bytes;
    return quota;
  }

 private:
  IdentityStore* const identity_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_IDENTITY_ACCOUNT_DIRECTORY_H_
