// A gtest fixture for tests that span two datacenters: storaged n0 in dc1
// and n1 in dc2 (tests/stack.h), an IP pool in dc2 besides dc1's, and
// account acme with a user (key_) who manages templates and views and
// provisions servers.
#ifndef TESTS_TWO_DATACENTER_TEST_H_
#define TESTS_TWO_DATACENTER_TEST_H_

#include <string>

#include "gtest/gtest.h"
#include "tests/stack.h"

namespace tests {

class TwoDatacenterTest : public ::testing::Test {
 protected:
  // `dc2_net`: the first three octets of dc2's /24 (gateway .1, range
  // .10-.20). With `tls`, every hop is TLS (StackOptions::tls).
  TwoDatacenterTest(const std::string& dir_prefix, const std::string& dc2_net, bool tls = false);

  void SetUp() override;

  Stack stack_;
  std::string key_, account_id_;

 private:
  const std::string dc2_net_;
};

}  // namespace tests

#endif  // TESTS_TWO_DATACENTER_TEST_H_
