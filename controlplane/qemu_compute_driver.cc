#include "controlplane/qemu_compute_driver.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <sstream>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/qmp_client.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

namespace {

constexpr char kSocket[] = "qmp.sock";
constexpr char kPidFile[] = "qemu.pid";
constexpr char kQemuLog[] = "qemu.log";
constexpr char kConsole[] = "console.log";
// Longest socket path a sockaddr_un holds.
constexpr size_t kMaxSocketPath = 107;
// A UUID: 36 characters.
constexpr size_t kServerIdLength = 36;

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat(path, ": cannot open"));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// Reads [offset, end) of a file; empty if it is missing.
std::string ReadFrom(const std::string& path, int64_t offset) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "";
  std::string data;
  char buf[65536];
  while (true) {
    ssize_t n = pread(fd, buf, sizeof(buf), offset);
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
    offset += n;
  }
  close(fd);
  return data;
}

int64_t FileSize(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return 0;
  return st.st_size;
}

// True while `pid` is a live (not zombie) process whose command line names
// `server_id`: a recycled pid is not mistaken for the server's QEMU.
bool IsLiveQemu(int pid, const std::string& server_id) {
  if (pid <= 0) return false;
  absl::StatusOr<std::string> stat = ReadFile(absl::StrCat("/proc/", pid, "/stat"));
  if (!stat.ok()) return false;
  size_t paren = stat->rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat->size()) return false;
  char state = (*stat)[paren + 2];
  if (state == 'Z' || state == 'X') return false;
  absl::StatusOr<std::string> cmdline =
      ReadFile(absl::StrCat("/proc/", pid, "/cmdline"));
  return cmdline.ok() && absl::StrContains(*cmdline, server_id);
}

// Console text for people: no escape sequences, no CRs, no other controls.
std::string CleanLine(absl::string_view line) {
  std::string out;
  out.reserve(line.size());
  for (size_t i = 0; i < line.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(line[i]);
    if (c == 0x1b) {
      if (i + 1 < line.size() && line[i + 1] == '[') {
        i += 2;
        while (i < line.size() &&
               !(line[i] >= 0x40 && line[i] <= 0x7e)) {
          ++i;
        }
      } else {
        ++i;
      }
      continue;
    }
    if (c < 0x20 && c != '\t') continue;
    if (c >= 0x80) {
      // Proto strings must be UTF-8: keep whole valid sequences only.
      size_t n = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c < 0xe0 ? 2 : 0;
      bool valid = n > 0 && i + n <= line.size();
      for (size_t k = 1; valid && k < n; ++k) {
        valid = (static_cast<unsigned char>(line[i + k]) & 0xc0) == 0x80;
      }
      if (valid && n == 3) {
        unsigned char c1 = static_cast<unsigned char>(line[i + 1]);
        valid = !(c == 0xe0 && c1 < 0xa0) && !(c == 0xed && c1 >= 0xa0);
      }
      if (valid && n == 4) {
        unsigned char c1 = static_cast<unsigned char>(line[i + 1]);
        valid = !(c == 0xf0 && c1 < 0x90) && !(c == 0xf4 && c1 >= 0x90);
      }
      if (!valid) {
        out.push_back('?');
        continue;
      }
      out.append(line.data() + i, n);
      i += n - 1;
      continue;
    }
    out.push_back(static_cast<char>(c));
  }
  return out;
}

std::vector<std::string> ConsoleLines(const std::string& text) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    lines.push_back(CleanLine(line));
  }
  if (!lines.empty() && lines.back().empty()) lines.pop_back();
  return lines;
}

// The console lines that tell why a guest did not boot, else the last ones.
std::string WhyNoBoot(const std::string& console) {
  static const char* const kTelling[] = {
      "Kernel panic", "Cannot open root device", "Gave up waiting", "ALERT!",
      "No bootable device", "Boot failed", "not syncing", "Unable to mount"};
  std::vector<std::string> lines = ConsoleLines(console);
  std::vector<std::string> telling;
  for (const std::string& line : lines) {
    for (const char* word : kTelling) {
      if (absl::StrContains(line, word)) {
        telling.push_back(std::string(absl::StripAsciiWhitespace(line)));
        break;
      }
    }
  }
  if (telling.empty()) {
    for (auto it = lines.rbegin(); it != lines.rend() && telling.size() < 3; ++it) {
      std::string line(absl::StripAsciiWhitespace(*it));
      if (!line.empty()) telling.insert(telling.begin(), line);
    }
  }
  if (telling.size() > 4) telling.erase(telling.begin(), telling.end() - 4);
  if (telling.empty()) return "(the console is empty)";
  return absl::StrJoin(telling, " | ");
}

// QEMU's option syntax doubles commas inside a value.
std::string QemuEscape(absl::string_view value) {
  return absl::StrReplaceAll(value, {{",", ",,"}});
}

// The QEMU secret object holding drive `index`'s CHAP secret.
std::string SecretId(size_t index) { return absl::StrCat("chap", index); }
std::string SecretFile(const std::string& dir, size_t index) {
  return absl::StrCat(dir, "/", SecretId(index), ".secret");
}

// `-object` (CHAP only) and `-drive` options of drive `index`.
std::vector<std::string> DriveArgs(const QemuDrive& drive, size_t index,
                                   const std::string& dir) {
  if (!drive.path.empty()) {
    return {"-drive", absl::StrCat("file=", QemuEscape(drive.path),
                                   ",if=virtio,format=raw,cache=writeback")};
  }
  std::vector<std::string> args;
  // The SAN is shared storage: no host cache between the guest and the LUN.
  std::string option = absl::StrCat(
      "file.driver=iscsi,file.transport=tcp,file.portal=", QemuEscape(drive.portal),
      ",file.target=", QemuEscape(drive.iqn), ",file.lun=", drive.lun,
      ",if=virtio,format=raw,cache=none");
  if (!drive.chap_user.empty()) {
    args.insert(args.end(), {"-object", absl::StrCat("secret,id=", SecretId(index),
                                                     ",format=raw,file=",
                                                     QemuEscape(SecretFile(dir, index)))});
    absl::StrAppend(&option, ",file.user=", QemuEscape(drive.chap_user),
                    ",file.password-secret=", SecretId(index));
  }
  args.insert(args.end(), {"-drive", option});
  return args;
}

QemuDrive LunDrive(const v1::SanVolume& volume) {
  const v1::IscsiAddress& iscsi = volume.iscsi();
  QemuDrive drive;
  drive.portal = iscsi.portal();
  drive.iqn = iscsi.iqn();
  drive.lun = iscsi.lun();
  drive.chap_user = iscsi.chap_user();
  drive.chap_secret = iscsi.chap_secret();
  return drive;
}

// Writes `secret` to a new file only its owner can read.
absl::Status WriteSecret(const std::string& path, const std::string& secret) {
  unlink(path.c_str());
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) return absl::InternalError(absl::StrCat(path, ": ", strerror(errno)));
  bool ok = write(fd, secret.data(), secret.size()) == static_cast<ssize_t>(secret.size());
  close(fd);
  if (!ok) return absl::InternalError(absl::StrCat(path, ": short write"));
  return absl::OkStatus();
}

// Every drive of `spec` in QEMU's order: disks, then the config drive.
std::vector<const QemuDrive*> AllDrives(const QemuMachineSpec& spec) {
  std::vector<const QemuDrive*> drives;
  for (const QemuDrive& d : spec.disks) drives.push_back(&d);
  if (spec.config_drive.has_value()) drives.push_back(&*spec.config_drive);
  return drives;
}

std::string Seconds(absl::Duration d) {
  return absl::StrFormat("%.1f s", absl::ToDoubleSeconds(d));
}

}  // namespace

absl::StatusOr<std::unique_ptr<QemuComputeDriver>> QemuComputeDriver::Create(
    QemuOptions options, QemuSpecSource specs, InventoryStore* inventory) {
  if (options.state_dir.empty()) {
    return absl::InvalidArgumentError("qemu state directory: must be set");
  }
  while (options.state_dir.size() > 1 && options.state_dir.back() == '/') {
    options.state_dir.pop_back();
  }
  size_t socket_path = options.state_dir.size() + 1 + kServerIdLength + 1 +
                       strlen(kSocket);
  if (socket_path > kMaxSocketPath) {
    return absl::InvalidArgumentError(absl::StrCat(
        "qemu state directory: ", options.state_dir, " is too long for QMP "
        "socket paths (at most ",
        kMaxSocketPath - (socket_path - options.state_dir.size()),
        " characters)"));
  }
  if (mkdir(options.state_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InvalidArgumentError(absl::StrCat(
        "qemu state directory: ", options.state_dir, ": ", strerror(errno)));
  }
  if (!options.kernel.empty() && access(options.kernel.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("qemu kernel: cannot read ", options.kernel));
  }
  if (!options.initrd.empty() && access(options.initrd.c_str(), R_OK) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("qemu initrd: cannot read ", options.initrd));
  }
  return std::unique_ptr<QemuComputeDriver>(
      new QemuComputeDriver(std::move(options), std::move(specs), inventory));
}

QemuSpecSource QemuComputeDriver::InventorySpecs(InventoryStore* inventory) {
  return [inventory](const std::string& server_id)
             -> absl::StatusOr<QemuMachineSpec> {
    ASSIGN_OR_RETURN(v1::Server server, inventory->ReadServer(server_id));
    if (server.type() != v1::SERVER_TYPE_VIRTUAL) {
      return absl::FailedPreconditionError(
          absl::StrCat("server ", server_id, " is not a virtual server"));
    }
    std::vector<v1::ServerDisk> disks(server.disks().begin(),
                                      server.disks().end());
    std::sort(disks.begin(), disks.end(),
              [](const v1::ServerDisk& a, const v1::ServerDisk& b) {
                // The boot disk first (it is /dev/vda), then by index.
                if (a.boot() != b.boot()) return a.boot();
                return a.device_index() < b.device_index();
              });
    QemuMachineSpec spec;
    spec.server_id = server_id;
    for (const v1::ServerDisk& disk : disks) {
      ASSIGN_OR_RETURN(v1::SanVolume volume,
                       inventory->ReadSanVolumeWithSecret(disk.san_volume_id()));
      if (disk.config_drive()) {
        spec.config_drive = LunDrive(volume);
      } else {
        spec.disks.push_back(LunDrive(volume));
      }
    }
    if (spec.disks.empty()) {
      return absl::FailedPreconditionError(
          absl::StrCat("server ", server_id, " has no disk to boot from"));
    }
    if (server.configuration().network_interfaces_size() > 0) {
      spec.mac = server.configuration().network_interfaces(0).mac_address();
    }
    return spec;
  };
}

std::string QemuComputeDriver::ServerDir(const std::string& server_id) const {
  return absl::StrCat(options_.state_dir, "/", server_id);
}

int QemuComputeDriver::LivePid(const std::string& server_id) const {
  absl::StatusOr<std::string> text =
      ReadFile(absl::StrCat(ServerDir(server_id), "/", kPidFile));
  int pid = 0;
  if (!text.ok() ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &pid)) {
    return 0;
  }
  return IsLiveQemu(pid, server_id) ? pid : 0;
}

absl::Mutex* QemuComputeDriver::ServerMutex(const std::string& server_id) {
  absl::MutexLock lock(&mu_);
  auto& slot = server_mu_[server_id];
  if (slot == nullptr) slot = std::make_unique<absl::Mutex>();
  return slot.get();
}

void QemuComputeDriver::Record(const std::string& server_id,
                               v1::PowerState state) {
  if (inventory_ == nullptr) return;
  absl::Status status = inventory_->SetPowerState(server_id, state);
  if (!status.ok() && !absl::IsNotFound(status)) {
    common::LogWarning("qemu: server %s: recording power state: %s", server_id,
                       status.ToString());
  }
}

void QemuComputeDriver::AppendConsoleNote(const std::string& server_id,
                                          const std::string& note) {
  std::string path = absl::StrCat(ServerDir(server_id), "/", kConsole);
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (fd < 0) return;
  std::string line = absl::StrCat(
      "[imagetemplates ",
      absl::FormatTime("%Y-%m-%dT%H:%M:%E6SZ", absl::Now(), absl::UTCTimeZone()),
      "] ", note, "\n");
  ssize_t ignored = write(fd, line.data(), line.size());
  (void)ignored;
  close(fd);
}

absl::StatusOr<std::unique_ptr<QmpClient>> QemuComputeDriver::ConnectLive(
    const std::string& server_id, int pid, absl::Time deadline) {
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(
      absl::StrCat(ServerDir(server_id), "/", kSocket), deadline);
  if (!qmp.ok()) {
    return absl::UnavailableError(absl::StrCat(
        "server ", server_id, ": QEMU pid ", pid,
        " runs but QMP does not answer: ", qmp.status().message()));
  }
  return qmp;
}

absl::StatusOr<v1::PowerState> QemuComputeDriver::GetPowerState(
    const std::string& server_id, absl::Duration timeout) {
  RETURN_IF_ERROR(specs_(server_id).status());
  int pid = LivePid(server_id);
  if (pid == 0) return v1::POWER_STATE_STOPPED;
  absl::Time deadline = absl::Now() + std::min(timeout, absl::Seconds(30));
  ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp,
                   ConnectLive(server_id, pid, deadline));
  ASSIGN_OR_RETURN(google::protobuf::Value status,
                   qmp->Execute("query-status", "", deadline));
  auto it = status.struct_value().fields().find("status");
  if (it != status.struct_value().fields().end() &&
      it->second.string_value() == "running") {
    return v1::POWER_STATE_RUNNING;
  }
  return v1::POWER_STATE_STOPPED;
}

std::vector<std::string> QemuComputeDriver::QemuArgs(
    const QemuMachineSpec& spec) const {
  const std::string dir = ServerDir(spec.server_id);
  std::vector<std::string> args = {
      options_.qemu_binary,
      // The name also makes QEMU's iSCSI initiator name unique per server.
      "-name", spec.server_id, "-uuid", spec.server_id,
      "-nodefaults", "-no-user-config", "-display", "none",
      // A guest that reboots or panics (panic=-1) ends the process.
      "-no-reboot",
      "-accel", options_.accel, "-cpu", options_.cpu,
      "-smp", absl::StrCat(options_.smp), "-m", absl::StrCat(options_.memory_mib),
      "-chardev",
      absl::StrCat("file,id=console,append=on,path=", QemuEscape(dir), "/", kConsole),
      "-serial", "chardev:console",
      "-qmp", absl::StrCat("unix:", QemuEscape(dir), "/", kSocket, ",server=on,wait=off"),
      "-pidfile", absl::StrCat(dir, "/", kPidFile),
      "-daemonize",
      "-object", "rng-random,id=rng0,filename=/dev/urandom",
      "-device", "virtio-rng-pci,rng=rng0"};
  if (!options_.kernel.empty()) {
    args.insert(args.end(), {"-kernel", options_.kernel});
    if (!options_.initrd.empty()) {
      args.insert(args.end(), {"-initrd", options_.initrd});
    }
    args.insert(args.end(), {"-append", options_.kernel_cmdline});
  }
  const std::vector<const QemuDrive*> drives = AllDrives(spec);
  for (size_t i = 0; i < drives.size(); ++i) {
    std::vector<std::string> drive = DriveArgs(*drives[i], i, dir);
    args.insert(args.end(), drive.begin(), drive.end());
  }
  if (!spec.mac.empty()) {
    // restrict=on: the guest reaches nothing outside this process.
    args.insert(args.end(),
                {"-netdev", "user,id=n0,restrict=on", "-device",
                 absl::StrCat("virtio-net-pci,netdev=n0,mac=", spec.mac)});
  }
  return args;
}

absl::StatusOr<int> QemuComputeDriver::Start(const QemuMachineSpec& spec,
                                             absl::Time deadline) {
  const std::string dir = ServerDir(spec.server_id);
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat(dir, ": ", strerror(errno)));
  }
  const std::string socket_path = absl::StrCat(dir, "/", kSocket);
  const std::string pid_path = absl::StrCat(dir, "/", kPidFile);
  const std::string log_path = absl::StrCat(dir, "/", kQemuLog);
  unlink(socket_path.c_str());
  unlink(pid_path.c_str());

  // CHAP secrets for QEMU to read at start; gone once it has started.
  std::vector<std::string> secret_files;
  auto remove_secrets = absl::MakeCleanup([&secret_files] {
    for (const std::string& f : secret_files) unlink(f.c_str());
  });
  const std::vector<const QemuDrive*> drives = AllDrives(spec);
  for (size_t i = 0; i < drives.size(); ++i) {
    if (drives[i]->chap_user.empty()) continue;
    secret_files.push_back(SecretFile(dir, i));
    RETURN_IF_ERROR(WriteSecret(secret_files.back(), drives[i]->chap_secret));
  }

  std::vector<std::string> args = QemuArgs(spec);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (log_fd < 0) {
    return absl::InternalError(absl::StrCat(log_path, ": ", strerror(errno)));
  }
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  absl::Time started = absl::Now();
  // Only async-signal-safe calls between fork and exec.
  pid_t child = fork();
  if (child < 0) {
    close(log_fd);
    close(null_fd);
    return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  }
  if (child == 0) {
    // The control plane blocks SIGTERM/SIGINT in its threads; QEMU must not
    // inherit that (an operator's `kill` should reach it).
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);
    dup2(null_fd, 0);
    dup2(log_fd, 1);
    dup2(log_fd, 2);
    setsid();
    execvp(argv[0], argv.data());
    _exit(127);
  }
  close(log_fd);
  close(null_fd);
  // With -daemonize the first process exits once the machine is set up
  // (disks opened, sockets listening).
  int wstatus = 0;
  while (waitpid(child, &wstatus, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0) {
    std::string log = ReadFile(log_path).value_or("");
    std::string why(absl::StripAsciiWhitespace(log));
    if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 127) {
      why = absl::StrCat("cannot run ", options_.qemu_binary);
    }
    std::string message = absl::StrCat("server ", spec.server_id,
                                       ": QEMU did not start: ", why);
    // The SAN not answering is worth a retry; anything else (a CHAP
    // secret the target refuses included) is not.
    if (!absl::StrContains(log, "Authentication failure") &&
        (absl::StrContains(log, "iSCSI") || absl::StrContains(log, "iscsi"))) {
      return absl::UnavailableError(message);
    }
    return absl::FailedPreconditionError(message);
  }
  int pid = 0;
  absl::StatusOr<std::string> pid_text = ReadFile(pid_path);
  if (!pid_text.ok() ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(*pid_text), &pid)) {
    return absl::InternalError(
        absl::StrCat("server ", spec.server_id, ": QEMU wrote no pid file"));
  }
  absl::Time qmp_deadline = std::min(deadline, absl::Now() + absl::Seconds(30));
  ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp,
                   QmpClient::Connect(socket_path, qmp_deadline));
  ASSIGN_OR_RETURN(google::protobuf::Value status,
                   qmp->Execute("query-status", "", qmp_deadline));
  auto it = status.struct_value().fields().find("status");
  std::string state =
      it == status.struct_value().fields().end() ? "" : it->second.string_value();
  if (state != "running") {
    Kill(spec.server_id, pid);
    return absl::InternalError(absl::StrCat("server ", spec.server_id,
                                            ": QEMU started but is ", state));
  }
  common::LogInfo("qemu: server %s started: pid %d, running after %s",
                  spec.server_id, pid, Seconds(absl::Now() - started));
  return pid;
}

absl::Status QemuComputeDriver::WaitForBoot(const std::string& server_id,
                                            int pid, int64_t console_offset,
                                            absl::Time deadline,
                                            const std::atomic<bool>* cancelled) {
  const std::string console = absl::StrCat(ServerDir(server_id), "/", kConsole);
  const absl::Time started = absl::Now();
  int64_t scanned = console_offset;
  const std::string& marker = options_.boot_marker;
  while (true) {
    // Scan what arrived, keeping a marker's length of overlap.
    int64_t from = std::max<int64_t>(
        console_offset, scanned - static_cast<int64_t>(marker.size()));
    std::string fresh = ReadFrom(console, from);
    if (absl::StrContains(fresh, marker)) {
      common::LogInfo("qemu: server %s booted (\"%s\" on the console) %s after "
                      "QEMU started",
                      server_id, marker, Seconds(absl::Now() - started));
      return absl::OkStatus();
    }
    scanned = from + static_cast<int64_t>(fresh.size());
    if (!IsLiveQemu(pid, server_id)) {
      std::string why = WhyNoBoot(ReadFrom(console, console_offset));
      AppendConsoleNote(server_id, "QEMU exited before the guest booted");
      Record(server_id, v1::POWER_STATE_STOPPED);
      common::LogWarning("qemu: server %s did not boot: %s", server_id, why);
      return absl::FailedPreconditionError(absl::StrCat(
          "server ", server_id, " did not boot: QEMU exited ",
          Seconds(absl::Now() - started), " after starting; console: ", why));
    }
    if (absl::Now() >= deadline) {
      std::string why = WhyNoBoot(ReadFrom(console, console_offset));
      Kill(server_id, pid);
      AppendConsoleNote(server_id, "no boot in time; QEMU killed");
      Record(server_id, v1::POWER_STATE_STOPPED);
      return absl::DeadlineExceededError(absl::StrCat(
          "server ", server_id, " did not boot within ",
          Seconds(absl::Now() - started), " (no \"", marker,
          "\" on its console); QEMU was stopped; console: ", why));
    }
    if (cancelled != nullptr && cancelled->load()) {
      common::LogInfo("qemu: server %s: stopped waiting for its boot (cancelled) after %s",
                      server_id, Seconds(absl::Now() - started));
      return absl::CancelledError(absl::StrCat(
          "power on of server ", server_id, " cancelled while it booted; it keeps running"));
    }
    absl::SleepFor(absl::Milliseconds(500));
  }
}

absl::Status QemuComputeDriver::PowerOn(const std::string& server_id,
                                        absl::Duration timeout,
                                        const std::atomic<bool>* cancelled) {
  absl::MutexLock server_lock(ServerMutex(server_id));
  const absl::Time deadline = absl::Now() + timeout;
  ASSIGN_OR_RETURN(QemuMachineSpec spec, specs_(server_id));
  if (int pid = LivePid(server_id); pid != 0) {
    absl::Time qmp_deadline = std::min(deadline, absl::Now() + absl::Seconds(30));
    ASSIGN_OR_RETURN(std::unique_ptr<QmpClient> qmp,
                     ConnectLive(server_id, pid, qmp_deadline));
    ASSIGN_OR_RETURN(google::protobuf::Value status,
                     qmp->Execute("query-status", "", qmp_deadline));
    auto it = status.struct_value().fields().find("status");
    if (it == status.struct_value().fields().end() ||
        it->second.string_value() != "running") {
      RETURN_IF_ERROR(qmp->Execute("cont", "", qmp_deadline).status());
    }
    Record(server_id, v1::POWER_STATE_RUNNING);
    return absl::OkStatus();
  }
  const std::string dir = ServerDir(server_id);
  if (mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::InternalError(absl::StrCat(dir, ": ", strerror(errno)));
  }
  AppendConsoleNote(server_id, "power on");
  const int64_t offset = FileSize(absl::StrCat(dir, "/", kConsole));
  ASSIGN_OR_RETURN(int pid, Start(spec, deadline));
  Record(server_id, v1::POWER_STATE_RUNNING);
  if (options_.boot_marker.empty()) return absl::OkStatus();
  return WaitForBoot(server_id, pid, offset,
                     std::min(deadline, absl::Now() + options_.boot_timeout), cancelled);
}

absl::Status QemuComputeDriver::PowerOff(const std::string& server_id,
                                         absl::Duration timeout) {
  return PowerOffReportingForce(server_id, timeout).status();
}

absl::StatusOr<bool> QemuComputeDriver::PowerOffReportingForce(
    const std::string& server_id, absl::Duration timeout) {
  absl::MutexLock server_lock(ServerMutex(server_id));
  RETURN_IF_ERROR(specs_(server_id).status());
  const int pid = LivePid(server_id);
  if (pid == 0) {
    Record(server_id, v1::POWER_STATE_STOPPED);
    return false;
  }
  const absl::Time started = absl::Now();
  const absl::Time deadline =
      started + std::min(timeout, options_.power_off_timeout);
  std::vector<std::string> events;
  absl::StatusOr<std::unique_ptr<QmpClient>> qmp = QmpClient::Connect(
      absl::StrCat(ServerDir(server_id), "/", kSocket),
      std::min(deadline, started + absl::Seconds(30)));
  if (qmp.ok()) {
    absl::Status asked = (*qmp)->Execute("system_powerdown", "", deadline).status();
    if (asked.ok()) {
      // QEMU closes the socket as it exits once the guest powered off.
      (*qmp)->WaitUntilClosed(deadline);
    } else {
      common::LogWarning("qemu: server %s: system_powerdown: %s", server_id,
                         asked.ToString());
    }
    events = (*qmp)->events();
  } else {
    common::LogWarning("qemu: server %s: QMP: %s", server_id,
                       qmp.status().ToString());
  }
  // The process may take a moment to go after closing QMP.
  const bool closed = qmp.ok() && (*qmp)->closed();
  absl::Time exit_deadline = closed ? absl::Now() + absl::Seconds(10) : absl::Now();
  while (IsLiveQemu(pid, server_id) && absl::Now() < exit_deadline) {
    absl::SleepFor(absl::Milliseconds(100));
  }
  bool forced = false;
  if (IsLiveQemu(pid, server_id)) {
    Kill(server_id, pid);
    forced = true;
    AppendConsoleNote(server_id,
                      absl::StrCat("powered off hard: no guest shutdown within ",
                                   Seconds(absl::Now() - started),
                                   " of the ACPI request; QEMU killed"));
    common::LogWarning(
        "qemu: server %s ignored the ACPI shutdown for %s; killed QEMU pid %d",
        server_id, Seconds(absl::Now() - started), pid);
  } else {
    AppendConsoleNote(server_id, "powered off: the guest shut down, QEMU exited");
    common::LogInfo(
        "qemu: server %s powered off: guest shut down and QEMU pid %d exited "
        "%s after the ACPI request (QMP events: %s)",
        server_id, pid, Seconds(absl::Now() - started),
        events.empty() ? "none" : absl::StrJoin(events, ","));
  }
  Record(server_id, v1::POWER_STATE_STOPPED);
  return forced;
}

void QemuComputeDriver::Kill(const std::string& server_id, int pid) {
  if (!IsLiveQemu(pid, server_id)) return;
  kill(pid, SIGKILL);
  absl::Time until = absl::Now() + absl::Seconds(10);
  while (IsLiveQemu(pid, server_id) && absl::Now() < until) {
    absl::SleepFor(absl::Milliseconds(50));
  }
}

absl::StatusOr<std::vector<std::string>> QemuComputeDriver::ReadConsole(
    const std::string& server_id, int line_count) {
  const std::string path = absl::StrCat(ServerDir(server_id), "/", kConsole);
  // The tail is enough for 10000 lines of any sane console.
  constexpr int64_t kTail = 8 << 20;
  int64_t size = FileSize(path);
  int64_t from = std::max<int64_t>(0, size - kTail);
  std::string text = ReadFrom(path, from);
  if (from > 0) {
    size_t newline = text.find('\n');
    text.erase(0, newline == std::string::npos ? text.size() : newline + 1);
  }
  std::vector<std::string> lines = ConsoleLines(text);
  if (line_count > 0 && lines.size() > static_cast<size_t>(line_count)) {
    lines.erase(lines.begin(), lines.end() - line_count);
  }
  return lines;
}

}  // namespace controlplane
