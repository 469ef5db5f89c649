// A real iSCSI SAN for tests: one private tgtd (Debian's `tgt`) listening on
// 127.0.0.1:<free port>, with its control socket in a fresh temporary
// directory so that several tests (and Bazel's sandbox) never collide.
#ifndef TESTS_SAN_H_
#define TESTS_SAN_H_

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace tests {

struct LunOptions {
  // thin_provisioning=1: READ CAPACITY(16) reports LBPME/LBPRZ, GET LBA
  // STATUS and UNMAP work.
  bool thin = false;
  uint32_t block_size = 512;  // 512 or 4096
  // Backing file; empty = "<san dir>/<name>.img". Created sparse (or
  // extended) to the LUN size.
  std::string backing_path;
};

struct Lun {
  std::string url;           // iscsi://127.0.0.1:<port>/<iqn>/1
  std::string iqn;           // iqn.2026-11.test:<name>
  std::string backing_path;  // the LUN's bytes, readable by the test
  int tid = 0;
};

// True when IMAGETEMPLATES_KEEP_TEST_DATA=1: tests keep LUN files and
// stores for inspection instead of deleting them when they stop (a suite
// that keeps every test's gigabytes until it ends can fill the disk).
bool KeepTestData();

// Owns one tgtd process. Not thread-safe. The destructor stops tgtd.
class San {
 public:
  // Starts `tgtd -f --iscsi portal=127.0.0.1:<free port> -C <n>` with
  // TGT_IPC_SOCKET in a fresh directory under TEST_TMPDIR and waits until
  // tgtadm answers. UNAVAILABLE if tgtd does not come up within 10 s.
  static absl::StatusOr<std::unique_ptr<San>> Start();

  San(const San&) = delete;
  San& operator=(const San&) = delete;
  ~San();

  // Target iqn.2026-11.test:<name> with LUN 1 of `size_bytes` on a sparse
  // file, raised burst/segment limits, InitialR2T=No, bound to ALL
  // initiators. ALREADY_EXISTS if `name` is taken.
  absl::StatusOr<Lun> CreateLun(const std::string& name, uint64_t size_bytes,
                                const LunOptions& options = {});

  // Requires CHAP (incoming account `user`/`password`) on target `name`.
  absl::Status SetChap(const std::string& name, const std::string& user,
                       const std::string& password);

  // Closes every initiator connection to target `name` from the target side
  // (a transient connection loss as the initiator sees it).
  absl::Status DropConnections(const std::string& name);

  // Deletes the targets and shuts tgtd down (tgtd ignores SIGTERM); SIGKILL
  // as a last resort; then deletes the backing files CreateLun made in dir()
  // unless KeepTestData(). Idempotent.
  absl::Status Stop();

  int port() const { return port_; }
  // tgtd's process id (-1 once stopped): tests SIGSTOP it to hang the target.
  pid_t pid() const { return pid_; }
  const std::string& dir() const { return dir_; }

  // Runs `tgtadm -C <n> <args>` against this tgtd; returns its stdout.
  // INTERNAL with the output if tgtadm fails.
  absl::StatusOr<std::string> Admin(const std::vector<std::string>& args);

 private:
  San() = default;

  std::string dir_;
  std::string ipc_dir_;
  std::string ipc_socket_;
  int port_ = 0;
  int control_port_ = 0;
  pid_t pid_ = -1;
  int next_tid_ = 1;
  std::map<std::string, int> tids_;  // target name -> tid
  std::vector<std::string> created_files_;  // default backing files, in dir_
};

}  // namespace tests

#endif  // TESTS_SAN_H_
