#include "common/log.h"

#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "absl/strings/str_split.h"
#include "gtest/gtest.h"

namespace common {
namespace {

// What the calls in `log` write to stderr.
template <typename F>
std::string CaptureStderr(F log) {
  char path[] = "/tmp/log_test.XXXXXX";
  int fd = mkstemp(path);
  EXPECT_GE(fd, 0);
  int saved = dup(STDERR_FILENO);
  dup2(fd, STDERR_FILENO);
  log();
  dup2(saved, STDERR_FILENO);
  close(saved);
  std::string out;
  char buf[4096];
  lseek(fd, 0, SEEK_SET);
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, n);
  close(fd);
  unlink(path);
  return out;
}

TEST(LogTest, OneLinePerEventWhateverTheIdAndMessageHold) {
  SetLogComponent("test");
  std::string out = CaptureStderr([] {
    LogOp("img\nE forged op=admin", "name \"%s\" refused", "a\r\nb\x7f");
  });
  std::vector<std::string> lines = absl::StrSplit(out, '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 1u) << out;
  EXPECT_NE(lines[0].find(" I test op=img\\x0aE forged op=admin name \"a\\x0d\\x0ab\\x7f\" refused"),
            std::string::npos)
      << lines[0];
}

TEST(LogTest, LongIdsAreCutShort) {
  SetLogComponent("test");
  const std::string id(100000, 'x');
  std::string out = CaptureStderr([&] { LogOp(id, "done"); });
  EXPECT_LT(out.size(), 400u);
  EXPECT_NE(out.find(" op=" + std::string(200, 'x') + "...(100000 bytes) done\n"),
            std::string::npos)
      << out;
}

TEST(LogTest, PlainTextIsUnchanged) {
  SetLogComponent("test");
  std::string out = CaptureStderr([] { LogOp("op-1", "tab\there, 100%% done"); });
  EXPECT_NE(out.find(" I test op=op-1 tab\there, 100% done\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace common
