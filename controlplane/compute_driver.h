// The hypervisor side of a server: reads and changes its power state. The
// create workflow takes a server offline through it and restores its earlier
// state; the deploy workflow powers new servers on.
#ifndef CONTROLPLANE_COMPUTE_DRIVER_H_
#define CONTROLPLANE_COMPUTE_DRIVER_H_

#include <atomic>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "imagetemplates/v1/inventory.pb.h"

namespace controlplane {

// Implementations are thread-safe. Every call gives up after `timeout` with
// DEADLINE_EXCEEDED; UNAVAILABLE means the hypervisor could not be reached
// (retry); NOT_FOUND means it does not know the server.
class ComputeDriver {
 public:
  virtual ~ComputeDriver() = default;

  virtual absl::StatusOr<imagetemplates::v1::PowerState> GetPowerState(
      const std::string& server_id, absl::Duration timeout) = 0;
  // Returns once the server runs (a driver may wait for its guest to boot);
  // a no-op if it already does. Once `*cancelled` (may be null) is true it
  // stops waiting with CANCELLED and leaves the server running.
  virtual absl::Status PowerOn(const std::string& server_id, absl::Duration timeout,
                               const std::atomic<bool>* cancelled) = 0;
  // Returns once the server is stopped (its disks quiesced); a no-op if it
  // already is. Not cancellable: a guest asked to shut down keeps shutting
  // down, so the caller waits for it (bounded by `timeout`).
  virtual absl::Status PowerOff(const std::string& server_id,
                                absl::Duration timeout) = 0;
  // PowerOff that also says whether the guest ignored the request to shut
  // down and was stopped hard (the create workflow records that).
  virtual absl::StatusOr<bool> PowerOffReportingForce(
      const std::string& server_id, absl::Duration timeout) {
    absl::Status status = PowerOff(server_id, timeout);
    if (!status.ok()) return status;
    return false;
  }
  // The last `line_count` lines of the server's serial console, oldest
  // first. UNIMPLEMENTED when the driver keeps no console.
  virtual absl::StatusOr<std::vector<std::string>> ReadConsole(
      const std::string& server_id, int line_count) {
    return absl::UnimplementedError("this compute driver keeps no console");
  }
};

}  // namespace controlplane

#endif  // CONTROLPLANE_COMPUTE_DRIVER_H_
