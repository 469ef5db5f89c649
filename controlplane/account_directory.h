// What the template service needs to know about accounts it does not own.
#ifndef CONTROLPLANE_ACCOUNT_DIRECTORY_H_
#define CONTROLPLANE_ACCOUNT_DIRECTORY_H_

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace controlplane {

struct AccountPolicy {
  // Set on the account: its templates cannot be published.
  bool block_public_sharing = false;
};

// Thread-safe.
class AccountDirectory {
 public:
  virtual ~AccountDirectory() = default;
  // The account's sharing policy. NOT_FOUND if no account has this id (the
  // target of a share must exist).
  virtual absl::StatusOr<AccountPolicy> GetAccountPolicy(absl::string_view account_id) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_ACCOUNT_DIRECTORY_H_
