// Runs the imagectl binary as a user would: a subprocess whose exit code,
// stdout and stderr come back whole.
#ifndef TESTS_IMAGECTL_RUNNER_H_
#define TESTS_IMAGECTL_RUNNER_H_

#include <string>
#include <vector>

namespace tests {

struct ImagectlResult {
  int code = -1;  // the exit code; -1 if it did not exit normally
  std::string out;
  std::string err;
};

// Runs imagectl (from the runfiles) with `args`. Its environment holds only
// HOME=`dir`/home (an empty directory, so no user config leaks in),
// PATH=/usr/bin:/bin and `env`; its output goes through files in `dir`.
// Not thread-safe.
ImagectlResult RunImagectl(const std::string& dir, const std::vector<std::string>& args,
                           const std::vector<std::string>& env = {});

}  // namespace tests

#endif  // TESTS_IMAGECTL_RUNNER_H_
