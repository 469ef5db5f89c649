// A gtest fixture for storaged's tests against a real iSCSI target: one
// private tgtd (tests/san.h) for the whole suite, a fresh LUN per MakeLun.
#ifndef STORAGED_TESTING_TGTD_FIXTURE_H_
#define STORAGED_TESTING_TGTD_FIXTURE_H_

#include <cstdint>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "tests/san.h"

namespace storaged {

// Derive the suite's fixture from it: `class FooTest : public TgtdFixture`.
// Not thread-safe (tests::San is not).
class TgtdFixture : public ::testing::Test {
 protected:
  // Starts tgtd once for the suite; the suite fails if it does not come up.
  static void SetUpTestSuite() {
    auto san = tests::San::Start();
    ASSERT_TRUE(san.ok()) << san.status();
    san_ = std::move(*san).release();
  }
  static void TearDownTestSuite() {
    delete san_;
    san_ = nullptr;
  }

  // A new target "lun<N>" with LUN 1 of `size` bytes. A tgtadm failure fails
  // the test (the Lun returned is then empty).
  static tests::Lun MakeLun(uint64_t size, bool thin, uint32_t block_size = 512) {
    tests::LunOptions options;
    options.thin = thin;
    options.block_size = block_size;
    auto lun = san_->CreateLun(absl::StrCat("lun", next_lun_++), size, options);
    EXPECT_TRUE(lun.ok()) << lun.status();
    return lun.ok() ? *std::move(lun) : tests::Lun();
  }

  // The target name of `lun` (its IQN after the ':'), as San::SetChap and
  // San::DropConnections take it.
  static std::string TargetName(const tests::Lun& lun) {
    return lun.iqn.substr(lun.iqn.find(':') + 1);
  }

  inline static tests::San* san_ = nullptr;

 private:
  inline static int next_lun_ = 0;
};

}  // namespace storaged

#endif  // STORAGED_TESTING_TGTD_FIXTURE_H_
