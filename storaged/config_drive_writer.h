// cloud-init NoCloud config drives: an ISO 9660 image labelled `cidata`
// holding meta-data, user-data and network-config, written to the start of a
// volume the new server boots with.
#ifndef STORAGED_CONFIG_DRIVE_WRITER_H_
#define STORAGED_CONFIG_DRIVE_WRITER_H_

#include <atomic>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "storaged/volume.h"

namespace storaged {

struct ConfigDrive {
  std::string meta_data;       // YAML, e.g. "instance-id: ...\nlocal-hostname: ...\n"
  std::string user_data;       // "#cloud-config ..." or a script
  std::string network_config;  // netplan v2 YAML; omitted from the image when empty
};

// The ISO 9660 image (Rock Ridge + Joliet, so names keep their case and
// dashes), built in memory with libisofs. Thread-safe. INTERNAL if libisofs
// fails.
absl::StatusOr<std::string> BuildConfigDriveImage(const ConfigDrive& drive);

// Builds the image and writes it to offset 0 of `volume`, zero-padded to the
// block size, makes the rest of the volume read as zeroes (a previous
// tenant's data must not survive past the image), then flushes. Returns the
// bytes of the padded image.
// FAILED_PRECONDITION (naming both sizes) when the volume is smaller than the
// image; CANCELLED soon after `*cancelled` (may be null) turns true (zeroing
// a large thick volume takes a while); otherwise the volume's errors.
absl::StatusOr<uint64_t> WriteConfigDrive(const ConfigDrive& drive, Volume& volume,
                                          const std::atomic<bool>* cancelled = nullptr);

}  // namespace storaged

#endif  // STORAGED_CONFIG_DRIVE_WRITER_H_
