// In-memory AccountDirectory and QuotaProvider for tests.
#ifndef CONTROLPLANE_TESTING_ACCOUNT_DIRECTORY_FAKE_H_
#define CONTROLPLANE_TESTING_ACCOUNT_DIRECTORY_FAKE_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/account_directory.h"
#include "controlplane/quota_provider.h"

namespace controlplane {

// Thread-safe.
class FakeAccountDirectory final : public AccountDirectory, public QuotaProvider {
 public:
  void AddAccount(const std::string& id, AccountPolicy policy = {}, TemplateQuota quota = {}) {
    absl::MutexLock lock(&mu_);
    accounts_[id] = {policy, quota};
  }
  void SetPolicy(const std::string& id, AccountPolicy policy) {
    absl::MutexLock lock(&mu_);
    accounts_[id].policy = policy;
  }
  void SetQuota(const std::string& id, TemplateQuota quota) {
    absl::MutexLock lock(&mu_);
    accounts_[id].quota = quota;
  }

  absl::StatusOr<AccountPolicy> GetAccountPolicy(absl::string_view account_id) override {
    absl::MutexLock lock(&mu_);
    auto it = accounts_.find(account_id);
    if (it == accounts_.end()) return absl::NotFoundError(absl::StrCat("account ", account_id));
    return it->second.policy;
  }
  absl::StatusOr<TemplateQuota> GetQuota(absl::string_view account_id) override {
    absl::MutexLock lock(&mu_);
    auto it = accounts_.find(account_id);
    if (it == accounts_.end()) return absl::NotFoundError(absl::StrCat("account ", account_id));
    return it->second.quota;
  }

 private:
  struct Entry {
    AccountPolicy policy;
    TemplateQuota quota;
  };
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Entry> accounts_ ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_ACCOUNT_DIRECTORY_FAKE_H_
