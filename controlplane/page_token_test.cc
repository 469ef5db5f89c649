#include "controlplane/page_token.h"

#include "gtest/gtest.h"

namespace controlplane {
namespace {

TEST(PageTokenTest, PageSizeDefaultsCapsAndRejectsNegative) {
  EXPECT_EQ(*PageSize(0), 50);
  EXPECT_EQ(*PageSize(7), 7);
  EXPECT_EQ(*PageSize(500), 500);
  EXPECT_EQ(*PageSize(1 << 30), 500);
  auto negative = PageSize(-1);
  ASSERT_EQ(negative.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(negative.status().message().find("page_size"), absl::string_view::npos);
}

TEST(PageTokenTest, RoundTripsKeysWithAnyBytes) {
  std::string filters = FilterKey({"acct", "x"});
  std::vector<std::string> key = {"name with \0 nul", "", "id-1"};
  key[0] = std::string("a\0b", 3);
  std::string token = EncodePageToken(key, filters);
  auto decoded = DecodePageToken(token, filters);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(*decoded, key);
  EXPECT_TRUE(DecodePageToken("", filters)->empty());
}

TEST(PageTokenTest, RejectsGarbageDamageAndOtherFilters) {
  std::string filters = FilterKey({"acct", "x"});
  std::string token = EncodePageToken({"k"}, filters);
  for (const std::string& bad :
       {std::string("garbage!"), std::string("AAAA"), token.substr(1), token + "A",
        std::string(token.size(), 'x')}) {
    auto decoded = DecodePageToken(bad, filters);
    ASSERT_EQ(decoded.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(decoded.status().message().find("page_token"), absl::string_view::npos);
  }
  EXPECT_EQ(DecodePageToken(token, FilterKey({"acct", "y"})).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Length prefixes keep ("ab","c") and ("a","bc") apart.
  EXPECT_NE(FilterKey({"ab", "c"}), FilterKey({"a", "bc"}));
}

}  // namespace
}  // namespace controlplane
