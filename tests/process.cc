#include "tests/process.h"

#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace tests {

std::string RunfilePath(const std::string& workspace_relative) {
  const char* srcdir = getenv("TEST_SRCDIR");
  const char* workspace = getenv("TEST_WORKSPACE");
  if (srcdir == nullptr) return workspace_relative;
  return absl::StrCat(srcdir, "/", workspace ? workspace : "imagetemplates", "/",
                      workspace_relative);
}

std::string MakeTempDir(const std::string& prefix) {
  const char* base = getenv("TEST_TMPDIR");
  std::string tmpl = absl::StrCat(base ? base : "/tmp", "/", prefix, "XXXXXX");
  char* made = mkdtemp(tmpl.data());
  return made ? std::string(made) : std::string();
}

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

absl::StatusOr<Process> Process::StartServer(std::vector<std::string> argv,
                                             const std::string& log_path,
                                             absl::Duration timeout) {
  std::string port_file = absl::StrCat(MakeTempDir("port"), "/port");
  argv.push_back(absl::StrCat("--port-file=", port_file));
  std::vector<char*> c_argv;
  for (std::string& arg : argv) c_argv.push_back(arg.data());
  c_argv.push_back(nullptr);

  int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat("open ", log_path, ": ", strerror(errno)));
  }
  pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    // Child: fresh signal state (the test runner may block some), own stderr.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(log_fd, STDERR_FILENO);
    execv(c_argv[0], c_argv.data());
    _exit(127);
  }
  ::close(log_fd);

  Process process;
  process.pid_ = pid;
  absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    std::ifstream in(port_file);
    std::string line;
    if (in && std::getline(in, line) &&
        absl::SimpleAtoi(absl::StripAsciiWhitespace(line), &process.port_) &&
        process.port_ > 0) {
      return process;
    }
    int wstatus = 0;
    if (waitpid(pid, &wstatus, WNOHANG) == pid) {
      process.pid_ = -1;
      return absl::FailedPreconditionError(absl::StrCat(
          argv[0], " exited before listening (wait status ", wstatus, "); see ", log_path));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError(
      absl::StrCat(argv[0], " did not start listening; see ", log_path));
}

Process::Process(Process&& other) noexcept : pid_(other.pid_), port_(other.port_) {
  other.pid_ = -1;
}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    if (pid_ > 0) Stop(SIGKILL).IgnoreError();
    pid_ = other.pid_;
    port_ = other.port_;
    other.pid_ = -1;
  }
  return *this;
}

Process::~Process() {
  if (pid_ > 0) Stop(SIGKILL).IgnoreError();
}

std::string Process::address() const { return absl::StrCat("127.0.0.1:", port_); }

absl::StatusOr<int> Process::Stop(int signal, absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("process not running");
  kill(pid_, signal);
  absl::Time deadline = absl::Now() + timeout;
  int wstatus = 0;
  while (true) {
    pid_t r = waitpid(pid_, &wstatus, WNOHANG);
    if (r == pid_) break;
    if (absl::Now() >= deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &wstatus, 0);
      pid_ = -1;
      return absl::DeadlineExceededError("process did not exit in time; killed");
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_ = -1;
  return wstatus;
}

absl::StatusOr<Process> StartControlPlane(const std::string& dir,
                                          const std::vector<std::string>& flags) {
  std::vector<std::string> argv = {RunfilePath("controlplane/controlplane"),
                                   "--listen=127.0.0.1:0", "--db=" + dir + "/cp.db",
                                   "--admin-key-file=" + dir + "/admin.key",
                                   "--internal-token-file=" + dir + "/internal.token"};
  argv.insert(argv.end(), flags.begin(), flags.end());
  return Process::StartServer(argv, dir + "/controlplane.log");
}

}  // namespace tests
