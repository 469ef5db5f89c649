#include "storaged/internal/scsi_checks.h"

#include <limits>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace storaged {
namespace internal {
namespace {

constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();

TEST(VolumeSizeFromCapacityTest, AcceptsEveryUsualGeometry) {
  for (uint32_t bs = 512; bs <= 65536; bs *= 2) {
    auto size = VolumeSizeFromCapacity(1023, bs, "t");
    ASSERT_TRUE(size.ok()) << bs << ": " << size.status();
    EXPECT_EQ(*size, uint64_t{1024} * bs);
  }
  // The largest size that fits.
  auto top = VolumeSizeFromCapacity(kMax / 512 - 1, 512, "t");
  ASSERT_TRUE(top.ok()) << top.status();
  EXPECT_EQ(*top, kMax / 512 * 512);
}

TEST(VolumeSizeFromCapacityTest, RefusesOddBlockLengths) {
  for (uint32_t bs : {0u, 1u, 256u, 520u, 4095u, 4160u, 131072u, 0x80000000u}) {
    auto size = VolumeSizeFromCapacity(100, bs, "iscsi://h/iqn/1");
    EXPECT_EQ(size.status().code(), absl::StatusCode::kFailedPrecondition) << bs;
    EXPECT_TRUE(absl::StrContains(size.status().message(), absl::StrCat(bs, " bytes")))
        << size.status().message();
    EXPECT_TRUE(absl::StrContains(size.status().message(), "iscsi://h/iqn/1"));
  }
}

// (returned_lba + 1) * block_length wrapped: e.g. 2^55 blocks of 512 bytes
// is 0 in 64 bits, and the capture of an "empty" volume succeeded.
TEST(VolumeSizeFromCapacityTest, RefusesSizesThatWrap) {
  for (auto [lba, bs] : {std::pair<uint64_t, uint32_t>{kMax, 512},
                         {(uint64_t{1} << 55) - 1, 512},
                         {kMax / 512, 512},
                         {(uint64_t{1} << 48), 65536}}) {
    auto size = VolumeSizeFromCapacity(lba, bs, "t");
    EXPECT_EQ(size.status().code(), absl::StatusCode::kFailedPrecondition) << lba;
    EXPECT_TRUE(absl::StrContains(size.status().message(), absl::StrCat("last LBA ", lba)))
        << size.status().message();
  }
}

TEST(CheckFullTransferTest, ShortGoodReadIsDataLossNamingTheLba) {
  EXPECT_TRUE(CheckFullTransfer("READ(16) lba 8 blocks 512", "t", false, 0).ok());
  EXPECT_TRUE(CheckFullTransfer("READ(16) lba 8 blocks 512", "t", false, 4096).ok());  // overflow
  EXPECT_TRUE(CheckFullTransfer("READ(16) lba 8 blocks 512", "t", true, 0).ok());
  absl::Status s = CheckFullTransfer("READ(16) lba 8 blocks 512", "tgt", true, 4096);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(s.message(), "READ(16) lba 8 blocks 512 on tgt")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "4096 bytes short")) << s;
}

TEST(CheckReplyLengthTest, ShortReplyIsInternal) {
  EXPECT_TRUE(CheckReplyLength("READ CAPACITY(16)", "t", 32, 16).ok());
  EXPECT_TRUE(CheckReplyLength("READ CAPACITY(16)", "t", 16, 16).ok());
  absl::Status s = CheckReplyLength("READ CAPACITY(16)", "t", 8, 16);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(absl::StrContains(s.message(), "answered 8 bytes")) << s;
}

}  // namespace
}  // namespace internal
}  // namespace storaged
