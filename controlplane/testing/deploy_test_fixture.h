// The deploy tests' fixture: the workflow test environment with an ACTIVE
// two-disk template, an IP pool of dc1 and volumes for two deployed servers,
// and helpers that deploy and read back the servers a deploy made.
#ifndef CONTROLPLANE_TESTING_DEPLOY_TEST_FIXTURE_H_
#define CONTROLPLANE_TESTING_DEPLOY_TEST_FIXTURE_H_

#include "controlplane/caller.h"
#include "controlplane/testing/workflow_test_environment.h"
#include "gtest/gtest.h"

namespace controlplane {

class DeployTestFixture : public WorkflowTestEnvironment {
 protected:
  void SetUp() override {
    WorkflowTestEnvironment::SetUp();
    template_ = ActiveTemplate("golden");
    AddIpPool();
    AddDeployVolumes(2);
  }

  // The `i`th server `op` deployed, as the inventory holds it now.
  imagetemplates::v1::Server DeployedServer(const imagetemplates::v1::Operation& op, int i = 0) {
    return *inventory_->ReadServer(op.deployed_servers().server_ids(i));
  }

  // Its first network interface, the one a deploy configures.
  static imagetemplates::v1::NetworkInterface Nic(const imagetemplates::v1::Server& server) {
    return server.configuration().network_interfaces(0);
  }

  // Deploys `request` through the manager as `caller`, waits for its end and
  // reads its first server into `server` (the operation into `op` unless
  // null). A fatal failure unless the deploy is accepted and SUCCEEDED, so
  // call it inside ASSERT_NO_FATAL_FAILURE.
  void DeployOne(const Caller& caller,
                 const imagetemplates::v1::DeployImageTemplateRequest& request,
                 imagetemplates::v1::Server* server, imagetemplates::v1::Operation* op = nullptr) {
    auto started = manager_->DeployImageTemplate(caller, request);
    ASSERT_TRUE(started.ok()) << started.status();
    const imagetemplates::v1::Operation ended = WaitTerminal(started->id());
    ASSERT_EQ(ended.state(), imagetemplates::v1::OPERATION_STATE_SUCCEEDED)
        << ended.DebugString();
    *server = DeployedServer(ended);
    if (op != nullptr) *op = ended;
  }

  imagetemplates::v1::ImageTemplate template_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_DEPLOY_TEST_FIXTURE_H_
