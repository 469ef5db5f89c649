// Starts one of the project's binaries as a real child process for
// multi-process tests, and stops it again.
#ifndef TESTS_PROCESS_H_
#define TESTS_PROCESS_H_

#include <sys/types.h>

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace tests {

// Path of a binary built by Bazel and listed in the test's `data`, e.g.
// RunfilePath("controlplane/controlplane").
std::string RunfilePath(const std::string& workspace_relative);

// A fresh directory under TEST_TMPDIR (or /tmp), removed by nobody: Bazel
// cleans its test directory.
std::string MakeTempDir(const std::string& prefix);

// The first line of a file without its newline ("" if unreadable), e.g. the
// API key a control plane writes to --admin-key-file.
std::string ReadFirstLine(const std::string& path);

// A child process. Not thread-safe. The destructor kills a process still
// running (SIGKILL) so a failing test never leaks one.
class Process {
 public:
  // Starts `argv` with `--port-file=<tmp>` appended and waits until the file
  // appears (the server listens), the child exits, or `timeout` passes.
  // stderr of the child goes to `log_path` (appended).
  static absl::StatusOr<Process> StartServer(std::vector<std::string> argv,
                                             const std::string& log_path,
                                             absl::Duration timeout = absl::Seconds(60));

  Process(Process&& other) noexcept;
  Process& operator=(Process&& other) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  ~Process();

  pid_t pid() const { return pid_; }
  int port() const { return port_; }
  std::string address() const;  // "127.0.0.1:<port>"

  // Sends `signal` and waits up to `timeout` for the exit. Returns the raw
  // wait status, or DEADLINE_EXCEEDED (and the process is SIGKILLed).
  absl::StatusOr<int> Stop(int signal, absl::Duration timeout = absl::Seconds(60));

 private:
  Process() = default;
  pid_t pid_ = -1;
  int port_ = 0;
};

// The controlplane binary alone on a free loopback port, its database
// (cp.db), admin key file (admin.key) and log (controlplane.log) in `dir`
// beside the internal token file (internal.token) the caller wrote, with
// `flags` added.
absl::StatusOr<Process> StartControlPlane(const std::string& dir,
                                          const std::vector<std::string>& flags = {});

}  // namespace tests

#endif  // TESTS_PROCESS_H_
