#include "tests/identity_setup.h"

#include "gtest/gtest.h"
#include "tests/rpc.h"

namespace tests {

namespace v1 = imagetemplates::v1;

std::string CreateAccount(v1::IdentityService::Stub& identity, const std::string& admin_key,
                          const std::string& name) {
  v1::CreateAccountRequest request;
  request.set_name(name);
  v1::CreateAccountResponse response;
  grpc::Status status =
      Call(identity, &v1::IdentityService::Stub::CreateAccount, admin_key, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.account().id();
}

std::string CreateUser(v1::IdentityService::Stub& identity, const std::string& admin_key,
                       const std::string& account_id, const std::string& username,
                       const std::vector<v1::Permission>& permissions) {
  v1::CreateUserRequest request;
  request.set_account_id(account_id);
  request.set_username(username);
  for (auto p : permissions) request.add_permissions(p);
  request.mutable_device_access()->set_all_servers(true);
  v1::CreateUserResponse response;
  grpc::Status status =
      Call(identity, &v1::IdentityService::Stub::CreateUser, admin_key, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.user().id();
}

std::string CreateApiKey(v1::IdentityService::Stub& identity, const std::string& admin_key,
                         const std::string& user_id) {
  v1::CreateApiKeyRequest request;
  request.set_user_id(user_id);
  v1::CreateApiKeyResponse response;
  grpc::Status status =
      Call(identity, &v1::IdentityService::Stub::CreateApiKey, admin_key, request, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  return response.secret();
}

User CreateAccountUser(v1::IdentityService::Stub& identity, const std::string& admin_key,
                       const std::string& account_name, const std::string& username,
                       const std::vector<v1::Permission>& permissions) {
  User user;
  user.account_id = CreateAccount(identity, admin_key, account_name);
  user.user_id = CreateUser(identity, admin_key, user.account_id, username, permissions);
  user.key = CreateApiKey(identity, admin_key, user.user_id);
  return user;
}

}  // namespace tests
