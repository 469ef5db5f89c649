#include "storaged/internal/lba_status.h"

#include <algorithm>

namespace storaged {
namespace internal {
namespace {

void AddMapped(uint64_t first, uint64_t end, std::vector<BlockRange>* mapped) {
  if (first >= end) return;
  if (!mapped->empty() && mapped->back().end == first) {
    mapped->back().end = end;
  } else {
    mapped->push_back({first, end});
  }
}

}  // namespace

uint64_t AddLbaStatus(absl::Span<const LbaStatus> answer, uint64_t lba, uint64_t end_lba,
                      uint64_t probe_blocks, std::vector<BlockRange>* mapped) {
  if (answer.empty()) {
    if (lba < end_lba) AddMapped(lba, end_lba, mapped);
    return std::max(lba, end_lba);
  }
  uint64_t cursor = lba;  // every block below it is accounted for
  for (const LbaStatus& d : answer) {
    if (d.lba > cursor || cursor >= end_lba) break;
    const uint64_t end = std::min(end_lba, d.lba + std::min(d.blocks, ~d.lba));
    if (d.mapped) AddMapped(cursor, end, mapped);
    cursor = std::max(cursor, end);
  }
  if (cursor == lba && lba < end_lba) {
    cursor = std::min(end_lba, lba + std::max<uint64_t>(1, probe_blocks));
    AddMapped(lba, cursor, mapped);
  }
  return cursor;
}

void CoarsenRanges(size_t max_ranges, uint64_t* gap_blocks, std::vector<BlockRange>* mapped) {
  if (mapped->size() <= max_ranges) return;
  while (mapped->size() > std::max<size_t>(1, max_ranges / 2)) {
    size_t kept = 0;
    for (size_t i = 1; i < mapped->size(); ++i) {
      BlockRange& last = (*mapped)[kept];
      const BlockRange& r = (*mapped)[i];
      if (r.first - last.end < *gap_blocks) {
        last.end = r.end;
      } else {
        (*mapped)[++kept] = r;
      }
    }
    mapped->resize(kept + 1);
    *gap_blocks = *gap_blocks >= (uint64_t{1} << 62) ? *gap_blocks : *gap_blocks * 2;
  }
}

}  // namespace internal
}  // namespace storaged
