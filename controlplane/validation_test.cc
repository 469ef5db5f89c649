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

TEST(ValidationTest, LowercaseUtf8IsUnicodeAware) {
  EXPECT_EQ(LowercaseUtf8("Web-SERVER 1"), "web-server 1");
  EXPECT_EQ(LowercaseUtf8("\xc3\x84PFEL"), "\xc3\xa4pfel");                   // ÄPFEL -> äpfel
  EXPECT_EQ(LowercaseUtf8("\xce\x94\xce\x95\xce\x9b"), "\xce\xb4\xce\xb5\xce\xbb");  // ΔΕΛ -> δελ
  EXPECT_EQ(LowercaseUtf8("\xd0\x94\xd0\xbe\xd0\xbc"), "\xd0\xb4\xd0\xbe\xd0\xbc");  // Дом -> дом
  EXPECT_EQ(LowercaseUtf8("\xe1\xba\x9e"), "\xc3\x9f");                        // ẞ -> ß (3 -> 2 bytes)
  EXPECT_EQ(LowercaseUtf8("\xf0\x90\x90\x80"), "\xf0\x90\x90\xa8");            // Deseret, 4 bytes
  EXPECT_EQ(LowercaseUtf8("\xef\xbc\xa1"), "\xef\xbd\x81");                    // fullwidth Ａ -> ａ
  EXPECT_EQ(LowercaseUtf8("caf\xc3\xa9 \xe2\x9c\x93"), "caf\xc3\xa9 \xe2\x9c\x93");  // unchanged
  EXPECT_EQ(LowercaseUtf8("\xc4\xb0\xe2\x84\xaa"), "ik");  // İ K (Kelvin) -> ASCII
  EXPECT_EQ(LowercaseUtf8("A\xc3Z"), "a\xc3z");  // a stray byte is kept
}

TEST(ValidationTest, UpdateMasksNameOnlyAllowedPaths) {
  google::protobuf::FieldMask mask;
  absl::StatusOr<absl::flat_hash_set<std::string>> paths =
      ValidateUpdateMask(mask, {"name", "note"});
  EXPECT_EQ(paths.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(paths.status().message(), "update_mask: name the fields to change: \"name\", \"note\"");

  mask.add_paths("note");
  mask.add_paths("note");
  paths = ValidateUpdateMask(mask, {"name", "note"});
  ASSERT_TRUE(paths.ok()) << paths.status();
  EXPECT_EQ(*paths, absl::flat_hash_set<std::string>({"note"}));

  mask.add_paths("owner_account_id");
  paths = ValidateUpdateMask(mask, {"name", "note"});
  EXPECT_EQ(paths.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(paths.status().message(),
            "update_mask: unknown path \"owner_account_id\"; use \"name\", \"note\"");
}

}  // namespace
}  // namespace controlplane
