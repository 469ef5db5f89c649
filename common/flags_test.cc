#include "common/flags.h"

#include "gtest/gtest.h"

namespace common {
namespace {

TEST(FlagSetTest, ParsesAllFormsAndKeepsPositionals) {
  std::string listen = "127.0.0.1:0";
  int64_t level = 3;
  bool verbose = false;
  FlagSet flags("usage");
  flags.String("listen", &listen, "address");
  flags.Int("zstd-level", &level, "level");
  flags.Bool("verbose", &verbose, "chatty");
  const char* argv[] = {"prog", "--listen=0.0.0.0:80", "list", "--zstd-level", "7",
                        "--verbose", "--", "--not-a-flag"};
  bool help = true;
  auto positional = flags.Parse(8, argv, &help);
  ASSERT_TRUE(positional.ok()) << positional.status();
  EXPECT_FALSE(help);
  EXPECT_EQ(listen, "0.0.0.0:80");
  EXPECT_EQ(level, 7);
  EXPECT_TRUE(verbose);
  EXPECT_EQ(*positional, (std::vector<std::string>{"list", "--not-a-flag"}));
}

TEST(FlagSetTest, RejectsUnknownFlagsAndBadValues) {
  int64_t level = 3;
  FlagSet flags("usage");
  flags.Int("zstd-level", &level, "level");
  bool help = false;
  const char* unknown[] = {"prog", "--bogus=1"};
  auto r1 = flags.Parse(2, unknown, &help);
  EXPECT_EQ(r1.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r1.status().message().find("--bogus"), std::string::npos);
  const char* bad[] = {"prog", "--zstd-level=fast"};
  EXPECT_EQ(flags.Parse(2, bad, &help).status().code(),
            absl::StatusCode::kInvalidArgument);
  const char* missing[] = {"prog", "--zstd-level"};
  EXPECT_EQ(flags.Parse(2, missing, &help).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(level, 3);
}

TEST(FlagSetTest, HelpListsFlagsWithDefaults) {
  std::string db = "state.db";
  FlagSet flags("controlplane [flags]");
  flags.String("db", &db, "SQLite file");
  const char* argv[] = {"prog", "--help"};
  bool help = false;
  ASSERT_TRUE(flags.Parse(2, argv, &help).ok());
  EXPECT_TRUE(help);
  EXPECT_NE(flags.Help().find("--db"), std::string::npos);
  EXPECT_NE(flags.Help().find("(default: state.db)"), std::string::npos);
}

}  // namespace
}  // namespace common
