// A gtest fixture for creates and deploys in one datacenter: the stack of
// tests/stack.h (SANs 0 and 1 served by storaged n0 and n1 in dc1), an IP
// pool in dc1, and account acme with a user who manages templates and
// public images and views and provisions servers. Shared by
// create_deploy_test and create_undo_crash_test.
#ifndef TESTS_CREATE_DEPLOY_FIXTURE_H_
#define TESTS_CREATE_DEPLOY_FIXTURE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/time/time.h"
#include "grpcpp/support/status.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/san.h"
#include "tests/stack.h"

namespace tests {

// True if `data` holds only zero bytes.
bool AllZero(const std::string& data);

class CreateDeployTest : public ::testing::Test {
 protected:
  void SetUp() override;

  User NewUser(const std::string& account_name,
               const std::vector<imagetemplates::v1::Permission>& permissions) {
    return stack_.NewUser(account_name, permissions);
  }
  std::string AddVolume(int san, const std::string& name, uint64_t size,
                        Lun* out = nullptr) {
    return stack_.AddVolume(san, name, size, out);
  }
  // A RUNNING server "source" of `owner` (2 CPUs, 2048 MiB, eth0 at
  // 10.99.0.5/24) with the given disk volumes (index 0 boots); its id.
  std::string AddServer(const User& owner,
                        const std::vector<std::string>& volumes);
  // CreateImageTemplate of `server_id` as `user`; the returned operation.
  // The call's status goes to `*status_out`, or must be OK if it is null.
  imagetemplates::v1::Operation CreateTemplate(
      const User& user, const std::string& server_id, const std::string& name,
      std::vector<int> data_disks, grpc::Status* status_out = nullptr);
  grpc::Status Deploy(
      const User& user,
      const imagetemplates::v1::DeployImageTemplateRequest& request,
      imagetemplates::v1::Operation* op);
  // One server `hostname`.example.com in dc1.
  static imagetemplates::v1::DeployImageTemplateRequest DeployRequest(
      const std::string& template_id, const std::string& hostname);

  imagetemplates::v1::Operation WaitOperation(
      const std::string& key, const std::string& id,
      absl::Duration timeout = absl::Seconds(180)) {
    return stack_.WaitOperation(key, id, timeout);
  }
  imagetemplates::v1::Server GetServer(const std::string& id) {
    return stack_.GetServer(admin_, id);
  }
  imagetemplates::v1::ImageTemplate GetTemplate(const std::string& id) {
    return stack_.GetTemplate(admin_, id);
  }
  // Every SAN volume (up to 500).
  std::vector<imagetemplates::v1::SanVolume> Volumes();
  // Addresses allocated from the dc1 pool.
  int64_t AllocatedAddresses();
  // The config drive's files, extracted with xorriso (an independent reader).
  std::map<std::string, std::string> ReadConfigDrive(
      const std::string& backing);

  Stack stack_;
  std::string dir_;
  std::string admin_;
  std::string pool_id_;
  User acme_;
};

}  // namespace tests

#endif  // TESTS_CREATE_DEPLOY_FIXTURE_H_
