// Checks on what an iSCSI target answers, as pure functions so that tests can
// feed them the replies a misbehaving target would send (tgtd never does).
#ifndef STORAGED_INTERNAL_SCSI_CHECKS_H_
#define STORAGED_INTERNAL_SCSI_CHECKS_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace storaged {
namespace internal {

// The volume size READ CAPACITY(16) describes: (returned_lba + 1) blocks of
// `block_length` bytes. FAILED_PRECONDITION naming the values (and
// `target`) for a block length that is not a power of two in 512..65536, or
// a size that does not fit in 64 bits (it would wrap to a small or zero size,
// and an empty capture would commit as a success).
absl::StatusOr<uint64_t> VolumeSizeFromCapacity(uint64_t returned_lba, uint32_t block_length,
                                                absl::string_view target);

// A command that completed GOOD but moved fewer bytes than it asked for
// (`underflow` with `residual` bytes missing): the rest of its buffer was
// never written. DATA_LOSS naming `what` (the command and its LBA) and
// `target`; OK otherwise.
absl::Status CheckFullTransfer(absl::string_view what, absl::string_view target,
                               bool underflow, uint64_t residual);

// A reply (parameter data) of `received` bytes to a command whose parsing
// needs at least `needed`: INTERNAL naming both and `target` when short.
absl::Status CheckReplyLength(absl::string_view what, absl::string_view target,
                              uint64_t received, uint64_t needed);

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_SCSI_CHECKS_H_
