// The QEMU compute driver: every virtual server is a qemu-system-x86_64
// process whose disks are the server's SAN volumes, attached straight through
// QEMU's iSCSI driver, with the config drive as the last disk and one NIC
// carrying the server's MAC on user-mode networking with restrict=on (no
// traffic leaves the host).
//
// Each server has a directory <state_dir>/<server_id>/ with the QMP socket
// (qmp.sock), QEMU's pid file (qemu.pid), its stderr (qemu.log) and the serial
// console (console.log, appended across boots). QEMU runs daemonized, so
// servers keep running while the control plane restarts; the power state is
// always read from the process and QMP, never remembered.
//
// Boot: direct kernel boot with options.kernel/initrd, the same for every
// server, and "root=/dev/vda1" (the boot disk's first partition). With no
// kernel, the firmware boots from the boot disk.
#ifndef CONTROLPLANE_QEMU_COMPUTE_DRIVER_H_
#define CONTROLPLANE_QEMU_COMPUTE_DRIVER_H_

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "controlplane/compute_driver.h"
#include "controlplane/inventory_store.h"
#include "controlplane/qmp_client.h"

namespace controlplane {

// One raw disk of a server: a local file, or a LUN QEMU opens itself.
struct QemuDrive {
  std::string path;  // a local file (tests); empty for a LUN
  std::string portal;
  std::string iqn;
  uint32_t lun = 0;
  // CHAP, when the LUN needs it. The secret reaches QEMU through a 0600
  // file in the server's directory, removed once QEMU has started: never on
  // its command line, which every local user can read.
  std::string chap_user;
  std::string chap_secret;
};

// What QEMU needs to know of one server.
struct QemuMachineSpec {
  // The server's UUID: names its state directory and is the SMBIOS UUID.
  std::string server_id;
  // In device order, the boot disk first.
  std::vector<QemuDrive> disks;
  // The config drive; none if the server has none.
  std::optional<QemuDrive> config_drive;
  // The first NIC's MAC; empty for no NIC.
  std::string mac;
};

struct QemuOptions {
  std::string qemu_binary = "qemu-system-x86_64";
  // Holds one directory per server. Keep it short: unix socket paths are
  // limited to 107 bytes.
  std::string state_dir;
  // Direct kernel boot; empty kernel boots through the firmware instead.
  std::string kernel;
  std::string initrd;
  std::string kernel_cmdline = "root=/dev/vda1 ro console=ttyS0 panic=-1";
  // KVM is not usable on every host; TCG always is.
  std::string accel = "tcg,thread=multi";
  std::string cpu = "max";
  int smp = 2;
  int memory_mib = 1024;
  // How long a guest may take to shut down after the ACPI request before
  // QEMU is killed.
  absl::Duration power_off_timeout = absl::Minutes(2);
  // How long PowerOn waits for boot_marker on the console.
  absl::Duration boot_timeout = absl::Minutes(10);
  // A console line containing this text means the guest booted (a getty's
  // "login:" prompt by default); empty: PowerOn returns once QEMU runs.
  std::string boot_marker = "login:";
};

// Finds the spec of a server; NOT_FOUND for unknown servers.
using QemuSpecSource =
    std::function<absl::StatusOr<QemuMachineSpec>(const std::string& server_id)>;

// Thread-safe; power changes of one server are serialized. Does not own
// `inventory` (may be null), where it records the power states it observes.
class QemuComputeDriver final : public ComputeDriver {
 public:
  // INVALID_ARGUMENT if the state directory is missing or too long.
  static absl::StatusOr<std::unique_ptr<QemuComputeDriver>> Create(
      QemuOptions options, QemuSpecSource specs, InventoryStore* inventory);
  // Specs from the inventory: the server's disks by device index (config
  // drive last) as iSCSI URLs with CHAP, and its first NIC's MAC.
  static QemuSpecSource InventorySpecs(InventoryStore* inventory);

  QemuComputeDriver(const QemuComputeDriver&) = delete;
  QemuComputeDriver& operator=(const QemuComputeDriver&) = delete;

  // RUNNING if QEMU is alive and QMP says "running"; STOPPED if no QEMU runs
  // for the server (or it is paused). NOT_FOUND for unknown servers;
  // UNAVAILABLE if QEMU lives but QMP does not answer.
  absl::StatusOr<imagetemplates::v1::PowerState> GetPowerState(
      const std::string& server_id, absl::Duration timeout) override;
  // Starts QEMU, then waits for the boot marker on the console. A no-op if
  // it runs. FAILED_PRECONDITION "did not boot" with the console's telling
  // lines if QEMU exits first (a kernel panic with panic=-1 and -no-reboot);
  // DEADLINE_EXCEEDED (QEMU is then killed) if the marker does not come in
  // time; UNAVAILABLE if QEMU cannot reach a disk; CANCELLED (QEMU keeps
  // running) once `*cancelled` while waiting for the marker.
  absl::Status PowerOn(const std::string& server_id, absl::Duration timeout,
                       const std::atomic<bool>* cancelled) override;
  // ACPI shutdown (QMP system_powerdown); waits until QEMU closed QMP and
  // exited; after power_off_timeout (or `timeout`) kills it.
  absl::Status PowerOff(const std::string& server_id,
                        absl::Duration timeout) override;
  absl::StatusOr<bool> PowerOffReportingForce(const std::string& server_id,
                                              absl::Duration timeout) override;
  // The console log's last lines, escape sequences and CRs removed; empty if
  // the server never ran here.
  absl::StatusOr<std::vector<std::string>> ReadConsole(
      const std::string& server_id, int line_count) override;

  // Where a server's files live.
  std::string ServerDir(const std::string& server_id) const;
  // The pid of the server's live QEMU, or 0.
  int LivePid(const std::string& server_id) const;

 private:
  QemuComputeDriver(QemuOptions options, QemuSpecSource specs,
                    InventoryStore* inventory)
      : options_(std::move(options)),
        specs_(std::move(specs)),
        inventory_(inventory) {}

  absl::Mutex* ServerMutex(const std::string& server_id);
  // QMP of a live QEMU; UNAVAILABLE if it does not answer.
  absl::StatusOr<std::unique_ptr<QmpClient>> ConnectLive(
      const std::string& server_id, int pid, absl::Time deadline);
  std::vector<std::string> QemuArgs(const QemuMachineSpec& spec) const;
  // Starts the process; returns its pid once QMP says it runs.
  absl::StatusOr<int> Start(const QemuMachineSpec& spec, absl::Time deadline);
  absl::Status WaitForBoot(const std::string& server_id, int pid,
                           int64_t console_offset, absl::Time deadline,
                           const std::atomic<bool>* cancelled);
  // Kills QEMU and waits until it is gone.
  void Kill(const std::string& server_id, int pid);
  void AppendConsoleNote(const std::string& server_id, const std::string& note);
  void Record(const std::string& server_id, imagetemplates::v1::PowerState state);

  const QemuOptions options_;
  const QemuSpecSource specs_;
  InventoryStore* const inventory_;
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::unique_ptr<absl::Mutex>> server_mu_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_QEMU_COMPUTE_DRIVER_H_
