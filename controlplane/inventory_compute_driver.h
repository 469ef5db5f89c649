// The embedded compute driver: a server's power state is the inventory's
// power_state column and nothing else. The default, used by the tests and the
// quick start, where no hypervisor runs the servers.
#ifndef CONTROLPLANE_INVENTORY_COMPUTE_DRIVER_H_
#define CONTROLPLANE_INVENTORY_COMPUTE_DRIVER_H_

#include "controlplane/compute_driver.h"
#include "controlplane/inventory_store.h"

namespace controlplane {

// Thread-safe. Does not own `inventory`, which must outlive it.
class InventoryComputeDriver final : public ComputeDriver {
 public:
  explicit InventoryComputeDriver(InventoryStore* inventory)
      : inventory_(inventory) {}
  InventoryComputeDriver(const InventoryComputeDriver&) = delete;
  InventoryComputeDriver& operator=(const InventoryComputeDriver&) = delete;

  absl::StatusOr<imagetemplates::v1::PowerState> GetPowerState(
      const std::string& server_id, absl::Duration timeout) override;
  absl::Status PowerOn(const std::string& server_id, absl::Duration timeout,
                       const std::atomic<bool>* cancelled) override;
  absl::Status PowerOff(const std::string& server_id,
                        absl::Duration timeout) override;

 private:
  InventoryStore* const inventory_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_INVENTORY_COMPUTE_DRIVER_H_
