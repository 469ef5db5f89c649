#include "storaged/internal/lba_status.h"

#include <cstdint>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace storaged {
namespace internal {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr uint64_t kProbe = 2048;
constexpr uint64_t k2To32 = uint64_t{1} << 32;

TEST(LbaStatusTest, ContiguousAnswerIsTakenWholeAndClipped) {
  std::vector<BlockRange> mapped;
  EXPECT_EQ(AddLbaStatus({{0, 100, true}, {100, 50, false}, {150, 100, true}}, 0, 200, kProbe,
                         &mapped),
            200u);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{0, 100}, BlockRange{150, 200}));
}

TEST(LbaStatusTest, RangesTouchingTheLastOneExtendIt) {
  std::vector<BlockRange> mapped = {{0, 10}};
  EXPECT_EQ(AddLbaStatus({{10, 5, true}, {15, 5, false}}, 10, 100, kProbe, &mapped), 20u);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{0, 15}));
}

TEST(LbaStatusTest, ADescriptorStartingBeforeTheQuestionIsClipped) {
  std::vector<BlockRange> mapped;
  EXPECT_EQ(AddLbaStatus({{0, 100, true}}, 50, 1000, kProbe, &mapped), 100u);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{50, 100}));
}

// A mapped extent of 2^32 + 10 blocks reported as 10 blocks long, then the
// hole after it: the answer stops at the gap instead of jumping over 2^32
// mapped blocks, and the next question starts there.
TEST(LbaStatusTest, AShortenedLengthStopsTheAnswerAtTheGap) {
  std::vector<BlockRange> mapped;
  const uint64_t hole = k2To32 + 10;
  EXPECT_EQ(AddLbaStatus({{0, 10, true}, {hole, 1000, false}}, 0, hole + 1000, kProbe, &mapped),
            10u);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{0, 10}));
}

// A mapped extent of exactly 2^32 blocks comes back 0 blocks long: the probe
// counts as mapped and the question moves past it.
TEST(LbaStatusTest, AZeroLengthFirstDescriptorIsProbed) {
  std::vector<BlockRange> mapped;
  EXPECT_EQ(AddLbaStatus({{0, 0, true}, {k2To32, 1000, false}}, 0, k2To32 + 1000, kProbe,
                         &mapped),
            kProbe);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{0, kProbe}));
  // The same for a hole of 2^32 blocks (a whole 2 TiB volume at 512 bytes).
  mapped.clear();
  EXPECT_EQ(AddLbaStatus({{0, 0, false}}, 0, k2To32, kProbe, &mapped), kProbe);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{0, kProbe}));
  // The probe stops at the end of the volume.
  mapped.clear();
  EXPECT_EQ(AddLbaStatus({{5, 0, false}}, 5, 8, kProbe, &mapped), 8u);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{5, 8}));
}

// A reply with 0 descriptors (out of spec): the rest of the range is read
// rather than the capture failing or asking again forever.
TEST(LbaStatusTest, AnEmptyAnswerCountsTheRestAsMapped) {
  std::vector<BlockRange> mapped;
  EXPECT_EQ(AddLbaStatus({}, 7, 100, kProbe, &mapped), 100u);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{7, 100}));
  // Joined to a mapped range that ends where the question starts.
  mapped = {{0, 7}};
  EXPECT_EQ(AddLbaStatus({}, 7, 100, kProbe, &mapped), 100u);
  EXPECT_THAT(mapped, ElementsAre(BlockRange{0, 100}));
  // Far beyond the probe size, up to the top of the LBA space.
  mapped.clear();
  EXPECT_EQ(AddLbaStatus({}, 0, ~uint64_t{0}, kProbe, &mapped), ~uint64_t{0});
  EXPECT_THAT(mapped, ElementsAre(BlockRange{0, ~uint64_t{0}}));
  // Nothing left to ask: nothing added.
  mapped.clear();
  EXPECT_EQ(AddLbaStatus({}, 100, 100, kProbe, &mapped), 100u);
  EXPECT_THAT(mapped, IsEmpty());
}

TEST(LbaStatusTest, HugeValuesDoNotOverflow) {
  std::vector<BlockRange> mapped;
  const uint64_t top = ~uint64_t{0} - 10;
  EXPECT_EQ(AddLbaStatus({{top, ~uint64_t{0}, true}}, top, ~uint64_t{0}, kProbe, &mapped),
            ~uint64_t{0});
  EXPECT_THAT(mapped, ElementsAre(BlockRange{top, ~uint64_t{0}}));
}

// Every other block mapped, then a few runs with growing gaps: the map stays
// within its budget, sorted and disjoint, and covers every mapped block.
TEST(LbaStatusTest, CoarsenRangesBoundsTheMapAndCoversEveryMappedBlock) {
  std::vector<BlockRange> original;
  for (uint64_t b = 0; b < 20000; b += 2) original.push_back({b, b + 1});
  for (uint64_t g = 1; g < 40; ++g) original.push_back({1000000 * g, 1000000 * g + g});
  std::vector<BlockRange> mapped = original;
  uint64_t gap = 1;
  CoarsenRanges(100, &gap, &mapped);
  EXPECT_LE(mapped.size(), 50u);
  EXPECT_GT(gap, 1u);
  for (size_t i = 1; i < mapped.size(); ++i) EXPECT_LT(mapped[i - 1].end, mapped[i].first);
  size_t j = 0;
  for (const BlockRange& r : original) {
    while (j < mapped.size() && mapped[j].end <= r.first) ++j;
    ASSERT_LT(j, mapped.size());
    EXPECT_LE(mapped[j].first, r.first);
    EXPECT_GE(mapped[j].end, r.end);
  }
  // Within budget: untouched.
  std::vector<BlockRange> small = {{0, 1}, {5, 6}};
  uint64_t small_gap = 1;
  CoarsenRanges(100, &small_gap, &small);
  EXPECT_THAT(small, ElementsAre(BlockRange{0, 1}, BlockRange{5, 6}));
  EXPECT_EQ(small_gap, 1u);
}

}  // namespace
}  // namespace internal
}  // namespace storaged
