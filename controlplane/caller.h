// Who is calling: resolved from the API key by the Authenticator on every
// RPC and handed to the business logic, which decides what the caller may see
// and do.
#ifndef CONTROLPLANE_CALLER_H_
#define CONTROLPLANE_CALLER_H_

#include <string>

#include "absl/container/flat_hash_set.h"
#include "imagetemplates/v1/common.pb.h"

namespace controlplane {

struct Caller {
  std::string user_id;
  std::string account_id;
  std::string api_key_id;
  std::string peer;  // grpc peer string, for the audit log
  // Users of the operator account holding PERMISSION_PLATFORM_OPERATOR.
  bool is_operator = false;
  absl::flat_hash_set<int> permissions;  // imagetemplates::v1::Permission values
  // Device access: every server of the account, or only these.
  bool all_servers = false;
  absl::flat_hash_set<std::string> server_ids;

  // Operators hold every permission.
  bool Has(imagetemplates::v1::Permission permission) const {
    return is_operator || permissions.contains(permission);
  }
  bool CanAccessServer(const std::string& server_id) const {
    return is_operator || all_servers || server_ids.contains(server_id);
  }
};

}  // namespace controlplane

#endif  // CONTROLPLANE_CALLER_H_
