#include "tests/san.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

extern char** environ;

namespace tests {
namespace {

constexpr char kTgtd[] = "/usr/sbin/tgtd";
constexpr char kTgtadm[] = "/usr/sbin/tgtadm";

// A port the kernel just handed out; tgtd binds it moments later.
absl::StatusOr<int> FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("bind: ", strerror(errno)));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

// environ plus TGT_IPC_SOCKET, built before fork so the child only execs.
class ChildEnv {
 public:
  explicit ChildEnv(const std::string& ipc_socket) {
    for (char** e = environ; *e != nullptr; ++e) {
      if (!absl::StartsWith(*e, "TGT_IPC_SOCKET=")) strings_.push_back(*e);
    }
    strings_.push_back(absl::StrCat("TGT_IPC_SOCKET=", ipc_socket));
    for (std::string& s : strings_) pointers_.push_back(s.data());
    pointers_.push_back(nullptr);
  }
  char** envp() { return pointers_.data(); }

 private:
  std::vector<std::string> strings_;
  std::vector<char*> pointers_;
};

// Forks and execs argv with stdout+stderr going to `out_fd`.
pid_t Spawn(std::vector<std::string> argv, ChildEnv& env, int out_fd) {
  std::vector<char*> c_argv;
  for (std::string& arg : argv) c_argv.push_back(arg.data());
  c_argv.push_back(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0) dup2(devnull, STDIN_FILENO);
    dup2(out_fd, STDOUT_FILENO);
    dup2(out_fd, STDERR_FILENO);
    execve(c_argv[0], c_argv.data(), env.envp());
    _exit(127);
  }
  return pid;
}

// Runs argv to completion; returns (exit code, combined output).
std::pair<int, std::string> Run(const std::vector<std::string>& argv,
                                 ChildEnv& env) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return {-1, "pipe failed"};
  pid_t pid = Spawn(argv, env, fds[1]);
  close(fds[1]);
  std::string output;
  char buf[4096];
  ssize_t n;
  while ((n = read(fds[0], buf, sizeof(buf))) > 0 || (n < 0 && errno == EINTR)) {
    if (n > 0) output.append(buf, n);
  }
  close(fds[0]);
  if (pid < 0) return {-1, "fork failed"};
  int wstatus = 0;
  while (waitpid(pid, &wstatus, 0) < 0 && errno == EINTR) {
  }
  return {WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : -1, output};
}

std::string MakeTempDir(const char* base) {
  std::string tmpl = absl::StrCat(base, "/sanXXXXXX");
  char* made = mkdtemp(tmpl.data());
  return made ? std::string(made) : std::string();
}

}  // namespace

bool KeepTestData() {
  const char* keep = getenv("IMAGETEMPLATES_KEEP_TEST_DATA");
  return keep != nullptr && std::string(keep) == "1";
}

absl::StatusOr<std::unique_ptr<San>> San::Start() {
  std::unique_ptr<San> san(new San());
  const char* test_tmpdir = getenv("TEST_TMPDIR");
  san->dir_ = MakeTempDir(test_tmpdir ? test_tmpdir : "/tmp");
  // The control socket path must fit sockaddr_un (108 bytes); Bazel's
  // TEST_TMPDIR is often longer, so it gets a short directory of its own.
  san->ipc_dir_ = MakeTempDir("/tmp");
  if (san->dir_.empty() || san->ipc_dir_.empty()) {
    return absl::InternalError("mkdtemp failed");
  }
  san->ipc_socket_ = absl::StrCat(san->ipc_dir_, "/ipc");
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) return port.status();
  san->port_ = *port;
  // The control port only names the IPC socket, which lives in our own
  // directory; any number works, distinct ones ease reading `ps`.
  san->control_port_ = 1000 + san->port_ % 30000;

  std::string log_path = absl::StrCat(san->dir_, "/tgtd.log");
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
  if (log_fd < 0) return absl::InternalError(absl::StrCat("open ", log_path));
  ChildEnv env(san->ipc_socket_);
  san->pid_ = Spawn({kTgtd, "-f", "--iscsi",
                     absl::StrCat("portal=127.0.0.1:", san->port_), "-C",
                     absl::StrCat(san->control_port_)},
                    env, log_fd);
  close(log_fd);
  if (san->pid_ < 0) return absl::InternalError("fork failed");

  absl::Time deadline = absl::Now() + absl::Seconds(60);
  while (true) {
    int wstatus = 0;
    if (waitpid(san->pid_, &wstatus, WNOHANG) == san->pid_) {
      san->pid_ = -1;
      return absl::UnavailableError(
          absl::StrCat("tgtd exited (wait status ", wstatus, "); see ", log_path));
    }
    if (san->Admin({"--op", "show", "--mode", "system"}).ok()) break;
    if (absl::Now() > deadline) {
      return absl::UnavailableError(
          absl::StrCat("tgtd did not answer tgtadm within 60 s; see ", log_path));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return san;
}

San::~San() { Stop().IgnoreError(); }

absl::StatusOr<std::string> San::Admin(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {kTgtadm, "-C", absl::StrCat(control_port_)};
  argv.insert(argv.end(), args.begin(), args.end());
  ChildEnv env(ipc_socket_);
  auto [code, output] = Run(argv, env);
  if (code != 0) {
    return absl::InternalError(absl::StrCat("tgtadm ", absl::StrJoin(args, " "),
                                            " exited ", code, ": ", output));
  }
  return output;
}

absl::StatusOr<Lun> San::CreateLun(const std::string& name, uint64_t size_bytes,
                                   const LunOptions& options) {
  if (pid_ < 0) return absl::FailedPreconditionError("tgtd is not running");
  if (tids_.count(name) != 0) {
    return absl::AlreadyExistsError(absl::StrCat("target ", name, " exists"));
  }
  if (options.block_size != 512 && options.block_size != 4096) {
    return absl::InvalidArgumentError("block_size must be 512 or 4096");
  }
  Lun lun;
  lun.tid = next_tid_++;
  lun.iqn = absl::StrCat("iqn.2026-11.test:", name);
  lun.backing_path = options.backing_path.empty()
                         ? absl::StrCat(dir_, "/", name, ".img")
                         : options.backing_path;
  lun.url = absl::StrCat("iscsi://127.0.0.1:", port_, "/", lun.iqn, "/1");

  // Sparse: truncate only extends, so an existing image keeps its data.
  int fd = open(lun.backing_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("open ", lun.backing_path, ": ", strerror(errno)));
  }
  struct stat st;
  int rc = fstat(fd, &st);
  if (rc == 0 && static_cast<uint64_t>(st.st_size) < size_bytes) {
    rc = ftruncate(fd, static_cast<off_t>(size_bytes));
  }
  close(fd);
  if (rc != 0) return absl::InternalError(absl::StrCat("truncate ", lun.backing_path));

  const std::string tid = absl::StrCat(lun.tid);
  std::vector<std::vector<std::string>> steps = {
      {"--lld", "iscsi", "--op", "new", "--mode", "target", "--tid", tid, "-T", lun.iqn},
      {"--lld", "iscsi", "--op", "new", "--mode", "logicalunit", "--tid", tid, "--lun", "1",
       "-b", lun.backing_path, "--blocksize", absl::StrCat(options.block_size)},
  };
  if (options.thin) {
    steps.push_back({"--lld", "iscsi", "--op", "update", "--mode", "logicalunit", "--tid",
                     tid, "--lun", "1", "--params", "thin_provisioning=1"});
  }
  // tgt's defaults move writes in 8 KiB pieces with an R2T for each.
  for (const auto& [key, value] : std::vector<std::pair<std::string, std::string>>{
           {"MaxRecvDataSegmentLength", "262144"},
           {"FirstBurstLength", "262144"},
           {"MaxBurstLength", "1048576"},
           {"InitialR2T", "No"}}) {
    steps.push_back({"--lld", "iscsi", "--op", "update", "--mode", "target", "--tid", tid,
                     "-n", key, "-v", value});
  }
  steps.push_back({"--lld", "iscsi", "--op", "bind", "--mode", "target", "--tid", tid, "-I",
                   "ALL"});
  tids_[name] = lun.tid;
  if (options.backing_path.empty()) created_files_.push_back(lun.backing_path);
  for (const auto& step : steps) {
    absl::StatusOr<std::string> out = Admin(step);
    if (!out.ok()) return out.status();
  }
  return lun;
}

absl::Status San::SetChap(const std::string& name, const std::string& user,
                          const std::string& password) {
  auto it = tids_.find(name);
  if (it == tids_.end()) return absl::NotFoundError(absl::StrCat("no target ", name));
  absl::StatusOr<std::string> out = Admin({"--lld", "iscsi", "--op", "new", "--mode",
                                           "account", "--user", user, "--password",
                                           password});
  if (!out.ok()) return out.status();
  out = Admin({"--lld", "iscsi", "--op", "bind", "--mode", "account", "--tid",
               absl::StrCat(it->second), "--user", user});
  return out.status();
}

absl::Status San::DropConnections(const std::string& name) {
  auto it = tids_.find(name);
  if (it == tids_.end()) return absl::NotFoundError(absl::StrCat("no target ", name));
  const std::string tid = absl::StrCat(it->second);
  absl::StatusOr<std::string> out =
      Admin({"--lld", "iscsi", "--op", "show", "--mode", "conn", "--tid", tid});
  if (!out.ok()) return out.status();
  // Output: "Session: <sid>" followed by "    Connection: <cid>" lines.
  std::string sid;
  for (absl::string_view line : absl::StrSplit(*out, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (absl::ConsumePrefix(&line, "Session: ")) {
      sid = std::string(line);
    } else if (absl::ConsumePrefix(&line, "Connection: ") && !sid.empty()) {
      absl::StatusOr<std::string> del =
          Admin({"--lld", "iscsi", "--op", "delete", "--mode", "conn", "--tid", tid,
                 "--sid", sid, "--cid", std::string(line)});
      if (!del.ok()) return del.status();
    }
  }
  return absl::OkStatus();
}

absl::Status San::Stop() {
  if (pid_ < 0) return absl::OkStatus();
  for (const auto& [name, tid] : tids_) {
    Admin({"--lld", "iscsi", "--op", "delete", "--mode", "target", "--force", "--tid",
           absl::StrCat(tid)})
        .IgnoreError();
  }
  tids_.clear();
  absl::Status status = Admin({"--op", "delete", "--mode", "system"}).status();
  absl::Time deadline = absl::Now() + absl::Seconds(5);
  int wstatus = 0;
  while (waitpid(pid_, &wstatus, WNOHANG) != pid_) {
    if (absl::Now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &wstatus, 0);
      status = absl::DeadlineExceededError("tgtd did not exit; killed");
      break;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  pid_ = -1;
  for (const char* suffix : {"", ".lock"}) {
    unlink(absl::StrCat(ipc_socket_, ".", control_port_, suffix).c_str());
  }
  rmdir(ipc_dir_.c_str());
  if (!KeepTestData()) {
    for (const std::string& path : created_files_) unlink(path.c_str());
    created_files_.clear();
  }
  return status;
}

}  // namespace tests
