#include "controlplane/validation.h"

#include <set>

#include "controlplane/ids.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

TEST(ValidationTest, NamesAreTrimmedAndCheckedByCharacter) {
  EXPECT_EQ(*ValidateName("name", "  café  ", 4), "café");
  EXPECT_EQ(ValidateName("name", "cafés", 4).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(*ValidateName("name", "'; DROP TABLE x; --", 100), "'; DROP TABLE x; --");
  for (const std::string& bad : {std::string(""), std::string(" \t "), std::string("a\nb"),
                                 std::string("a\x7f"), std::string("\xc3"),
                                 std::string("\xed\xa0\x80")}) {
    auto result = ValidateName("name", bad, 100);
    ASSERT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(result.status().message().substr(0, 5), "name:");
  }
  EXPECT_TRUE(ValidateText("note", "line\nline", 20).ok());
}

TEST(ValidationTest, UuidsAndRequestIds) {
  std::set<std::string> ids;
  for (int i = 0; i < 100; ++i) {
    std::string id = NewUuid();
    EXPECT_TRUE(IsUuid(id)) << id;
    EXPECT_EQ(id[14], '4');
    ids.insert(id);
  }
  EXPECT_EQ(ids.size(), 100u);
  EXPECT_FALSE(IsUuid("6F9619FF-8B86-D011-B42D-00C04FC964FF"));
  EXPECT_FALSE(IsUuid("not-a-uuid"));
  EXPECT_TRUE(ValidateRequestId("").ok());
  EXPECT_TRUE(ValidateRequestId("abc_DEF-123").ok());
  EXPECT_FALSE(ValidateRequestId(std::string(65, 'a')).ok());
  EXPECT_FALSE(ValidateRequestId("a b").ok());
}

}  // namespace
}  // namespace controlplane
