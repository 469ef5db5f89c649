#include "controlplane/inventory_compute_driver.h"

#include "common/status_macros.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

// The inventory answers in microseconds; the timeouts never bind here.
absl::StatusOr<v1::PowerState> InventoryComputeDriver::GetPowerState(
    const std::string& server_id, absl::Duration) {
  ASSIGN_OR_RETURN(v1::Server server, inventory_->ReadServer(server_id));
  return server.power_state();
}

absl::Status InventoryComputeDriver::PowerOn(const std::string& server_id, absl::Duration,
                                             const std::atomic<bool>*) {
  return inventory_->SetPowerState(server_id, v1::POWER_STATE_RUNNING);
}

absl::Status InventoryComputeDriver::PowerOff(const std::string& server_id,
                                              absl::Duration) {
  return inventory_->SetPowerState(server_id, v1::POWER_STATE_STOPPED);
}

}  // namespace controlplane
