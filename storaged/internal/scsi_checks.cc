#include "storaged/internal/scsi_checks.h"

#include <limits>

#include "absl/strings/str_cat.h"

namespace storaged {
namespace internal {

absl::StatusOr<uint64_t> VolumeSizeFromCapacity(uint64_t returned_lba, uint32_t block_length,
                                                absl::string_view target) {
  if (block_length < 512 || block_length > 65536 ||
      (block_length & (block_length - 1)) != 0) {
    return absl::FailedPreconditionError(absl::StrCat(
        "READ CAPACITY(16) from ", target, " reports a block length of ", block_length,
        " bytes; storaged supports powers of two from 512 to 65536"));
  }
  constexpr uint64_t kMax = std::numeric_limits<uint64_t>::max();
  if (returned_lba == kMax || returned_lba + 1 > kMax / block_length) {
    return absl::FailedPreconditionError(absl::StrCat(
        "READ CAPACITY(16) from ", target, " reports last LBA ", returned_lba, " with ",
        block_length, "-byte blocks: the size does not fit in 64 bits"));
  }
  return (returned_lba + 1) * block_length;
}

absl::Status CheckFullTransfer(absl::string_view what, absl::string_view target,
                               bool underflow, uint64_t residual) {
  if (!underflow || residual == 0) return absl::OkStatus();
  return absl::DataLossError(absl::StrCat(what, " on ", target,
                                          " completed GOOD but ", residual,
                                          " bytes short (residual underflow)"));
}

absl::Status CheckReplyLength(absl::string_view what, absl::string_view target,
                              uint64_t received, uint64_t needed) {
  if (received >= needed) return absl::OkStatus();
  return absl::InternalError(absl::StrCat(what, " on ", target, " answered ", received,
                                          " bytes, fewer than the ", needed, " it needs"));
}

}  // namespace internal
}  // namespace storaged
