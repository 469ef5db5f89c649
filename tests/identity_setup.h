// Accounts, users and API keys made over the IdentityService as the
// operator, the way every multi-process test sets up its callers. Failures
// are gtest failures (EXPECT), and the ids or keys then come back empty.
#ifndef TESTS_IDENTITY_SETUP_H_
#define TESTS_IDENTITY_SETUP_H_

#include <string>
#include <vector>

#include "imagetemplates/v1/identity.grpc.pb.h"

namespace tests {

struct User {
  std::string account_id;
  std::string user_id;
  std::string key;
};

// CreateAccount `name` with `admin_key`; the account's id.
std::string CreateAccount(imagetemplates::v1::IdentityService::Stub& identity,
                          const std::string& admin_key, const std::string& name);
// CreateUser `username` in `account_id` with `permissions` on all servers;
// the user's id.
std::string CreateUser(imagetemplates::v1::IdentityService::Stub& identity,
                       const std::string& admin_key, const std::string& account_id,
                       const std::string& username,
                       const std::vector<imagetemplates::v1::Permission>& permissions);
// CreateApiKey for `user_id`; the key's secret.
std::string CreateApiKey(imagetemplates::v1::IdentityService::Stub& identity,
                         const std::string& admin_key, const std::string& user_id);
// A new account `account_name` with one user `username` (as CreateUser) and
// an API key of that user.
User CreateAccountUser(imagetemplates::v1::IdentityService::Stub& identity,
                       const std::string& admin_key, const std::string& account_name,
                       const std::string& username,
                       const std::vector<imagetemplates::v1::Permission>& permissions);

}  // namespace tests

#endif  // TESTS_IDENTITY_SETUP_H_
