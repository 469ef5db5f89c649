#include "tests/two_datacenter_test.h"

#include "absl/strings/str_cat.h"

namespace tests {

namespace v1 = imagetemplates::v1;

namespace {

StackOptions TwoDatacenters(const std::string& dir_prefix, bool tls) {
  StackOptions options;
  options.dir_prefix = dir_prefix;
  options.node_datacenters = {"dc1", "dc2"};
  options.tls = tls;
  return options;
}

}  // namespace

TwoDatacenterTest::TwoDatacenterTest(const std::string& dir_prefix, const std::string& dc2_net,
                                     bool tls)
    : stack_(TwoDatacenters(dir_prefix, tls)), dc2_net_(dc2_net) {}

void TwoDatacenterTest::SetUp() {
  ASSERT_NO_FATAL_FAILURE(stack_.Start());  // with tls, nodes registered over TLS
  stack_.AddIpPool("dc2", absl::StrCat(dc2_net_, ".0/24"), absl::StrCat(dc2_net_, ".1"),
                   absl::StrCat(dc2_net_, ".10"), absl::StrCat(dc2_net_, ".20"));
  const User user = stack_.NewUser(
      "acme", {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_VIEW,
               v1::PERMISSION_SERVER_PROVISION});
  key_ = user.key;
  account_id_ = user.account_id;
}

}  // namespace tests
