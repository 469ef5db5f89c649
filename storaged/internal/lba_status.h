// Folding GET LBA STATUS answers into mapped block ranges, safely against a
// target that wraps descriptor lengths.
#ifndef STORAGED_INTERNAL_LBA_STATUS_H_
#define STORAGED_INTERNAL_LBA_STATUS_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace storaged {
namespace internal {

// One descriptor of a GET LBA STATUS answer.
struct LbaStatus {
  uint64_t lba = 0;
  uint64_t blocks = 0;
  bool mapped = false;
};

// Blocks [first, end).
struct BlockRange {
  uint64_t first = 0;
  uint64_t end = 0;
  friend bool operator==(const BlockRange& a, const BlockRange& b) {
    return a.first == b.first && a.end == b.end;
  }
};

// Adds the mapped blocks of `answer`, asked at `lba`, below `end_lba` to
// `mapped` (ascending; a range touching the last one extends it) and returns
// the LBA to ask next (`end_lba` once everything is accounted for).
//
// An answer without descriptors breaks SBC (the first descriptor must cover
// `lba`): [lba, end_lba) all counts as mapped and is read, which costs reads
// of zeroes at worst, never data, and asks that target nothing more.
//
// tgt writes each length into the descriptor's 32-bit field modulo 2^32, so
// an extent of 2^32 blocks or more (2 TiB at 512 bytes) comes back short, or
// 0 blocks long. Descriptors are contiguous, so a descriptor starting past
// the end of the one before shows the shortened one: the answer is used up
// to there and the next question starts there. An answer that would make no
// progress (a 0-length first descriptor) counts `probe_blocks` as mapped:
// reading blocks that are not costs a read of zeroes, never data.
uint64_t AddLbaStatus(absl::Span<const LbaStatus> answer, uint64_t lba, uint64_t end_lba,
                      uint64_t probe_blocks, std::vector<BlockRange>* mapped);

// Bounds the memory of a thin volume's map: while `mapped` holds more than
// `max_ranges` ranges, ranges with gaps of fewer than `*gap_blocks` blocks
// between them are joined, doubling `*gap_blocks` (start it at 1) until at
// most half of `max_ranges` remain. The result covers every mapped block, and
// some unmapped ones: reading those costs reads of zeroes, zeroing them costs
// writes, never data. (A guest that wrote every other block of a 2 TiB disk
// would otherwise map to 268 million ranges, gigabytes.)
void CoarsenRanges(size_t max_ranges, uint64_t* gap_blocks, std::vector<BlockRange>* mapped);

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_LBA_STATUS_H_
