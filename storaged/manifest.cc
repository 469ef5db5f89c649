#include "storaged/manifest.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "storaged/internal/coding.h"

namespace storaged {
namespace {

constexpr absl::string_view kMagic = "STORMAN1";
constexpr uint32_t kVersion = 1;
constexpr uint8_t kZeroRun = 0;
constexpr uint8_t kDataChunk = 1;
constexpr size_t kMaxIdLength = 1024;

}  // namespace

ChunkTable::Run ChunkTable::run(size_t i) const {
  const RunStart& r = runs_[i];
  const uint64_t end_pos = i + 1 < runs_.size() ? runs_[i + 1].pos : data_count_;
  return Run{r.first, end_pos - r.pos};
}

size_t ChunkTable::FindRun(uint64_t index) const {
  // The last run starting at or before `index`, unless it ends before it.
  auto it = std::upper_bound(runs_.begin(), runs_.end(), index,
                             [](uint64_t i, const RunStart& r) { return i < r.first; });
  if (it == runs_.begin()) return 0;
  size_t r = static_cast<size_t>(it - runs_.begin()) - 1;
  return run(r).end() > index ? r : r + 1;
}

const Digest& ChunkTable::At(uint64_t index) const {
  static const Digest kZero;
  size_t r = FindRun(index);
  if (r == runs_.size() || index < runs_[r].first) return kZero;
  return DigestAt(runs_[r].pos + (index - runs_[r].first));
}

void ChunkTable::Append(uint64_t index, const Digest& digest) {
  if (runs_.empty() || run(runs_.size() - 1).end() != index) {
    runs_.push_back(RunStart{index, data_count_});
  }
  if (blocks_.empty() || blocks_.back().size() == kBlockDigests) blocks_.emplace_back();
  blocks_.back().push_back(digest);
  ++data_count_;
}

size_t ChunkTable::MemoryBytes() const {
  size_t bytes = blocks_.capacity() * sizeof(blocks_[0]) + runs_.capacity() * sizeof(RunStart);
  for (const std::vector<Digest>& b : blocks_) bytes += b.capacity() * sizeof(Digest);
  return bytes;
}

bool operator==(const ChunkTable& a, const ChunkTable& b) {
  if (a.size_ != b.size_ || a.blocks_ != b.blocks_ || a.runs_.size() != b.runs_.size()) {
    return false;
  }
  for (size_t i = 0; i < a.runs_.size(); ++i) {
    if (a.runs_[i].first != b.runs_[i].first || a.runs_[i].pos != b.runs_[i].pos) return false;
  }
  return true;
}

uint32_t Manifest::ChunkLength(uint64_t index) const {
  uint64_t start = index * chunk_size;
  uint64_t left = volume_size - start;
  return static_cast<uint32_t>(left < chunk_size ? left : chunk_size);
}

std::string EncodeManifest(const Manifest& m, Digest* digest) {
  using internal::PutFixed16;
  using internal::PutFixed32;
  using internal::PutFixed64;
  using internal::PutFixed8;
  std::string out(kMagic);
  PutFixed32(&out, kVersion);
  PutFixed32(&out, 0);
  PutFixed16(&out, static_cast<uint16_t>(m.image_id.size()));
  out.append(m.image_id);
  PutFixed64(&out, m.volume_size);
  PutFixed32(&out, m.block_size);
  PutFixed32(&out, m.chunk_size);
  PutFixed64(&out, static_cast<uint64_t>(absl::ToUnixMicros(m.create_time)));
  PutFixed64(&out, m.logical_bytes);
  PutFixed64(&out, m.new_stored_bytes);
  PutFixed64(&out, m.referenced_stored_bytes);
  PutFixed64(&out, m.new_chunks);
  PutFixed64(&out, m.chunks.size());
  out.reserve(out.size() + m.chunks.data_count() * 33 + (m.chunks.run_count() + 1) * 9 + 32);
  // Maximal zero runs between the runs of data chunks, as v1 always wrote.
  uint64_t next = 0;
  auto zero_run_to = [&](uint64_t index) {
    if (index <= next) return;
    PutFixed8(&out, kZeroRun);
    PutFixed64(&out, index - next);
  };
  m.chunks.ForEachData([&](uint64_t index, const Digest& d) {
    zero_run_to(index);
    PutFixed8(&out, kDataChunk);
    out.append(reinterpret_cast<const char*>(d.bytes.data()), 32);
    next = index + 1;
  });
  zero_run_to(m.chunks.size());
  Digest d = Sha256(out);
  out.append(reinterpret_cast<const char*>(d.bytes.data()), 32);
  if (digest != nullptr) *digest = d;
  return out;
}

absl::StatusOr<Manifest> DecodeManifest(absl::string_view data,
                                        Digest* digest) {
  auto corrupt = [](absl::string_view why) {
    return absl::DataLossError(absl::StrCat("manifest is corrupt: ", why));
  };
  if (data.size() < kMagic.size() + 32) return corrupt("truncated");
  absl::string_view body = data.substr(0, data.size() - 32);
  Digest stored = Digest::FromBytes(data.data() + body.size());
  Digest actual = Sha256(body);
  if (stored != actual) {
    return corrupt("digest mismatch (truncated or altered)");
  }
  if (digest != nullptr) *digest = actual;

  internal::Decoder in(body);
  if (in.Bytes(kMagic.size()) != kMagic) return corrupt("bad magic");
  uint32_t version = in.Fixed32();
  if (in.ok() && version != kVersion) {
    return corrupt(absl::StrCat("unsupported version ", version));
  }
  in.Fixed32();  // flags, none defined yet
  Manifest m;
  uint16_t id_len = in.Fixed16();
  if (id_len > kMaxIdLength) return corrupt("image id too long");
  m.image_id = std::string(in.Bytes(id_len));
  m.volume_size = in.Fixed64();
  m.block_size = in.Fixed32();
  m.chunk_size = in.Fixed32();
  m.create_time = absl::FromUnixMicros(static_cast<int64_t>(in.Fixed64()));
  m.logical_bytes = in.Fixed64();
  m.new_stored_bytes = in.Fixed64();
  m.referenced_stored_bytes = in.Fixed64();
  m.new_chunks = in.Fixed64();
  uint64_t count = in.Fixed64();
  if (!in.ok()) return corrupt("truncated header");
  if (m.chunk_size == 0 || m.block_size == 0 || m.volume_size == 0 ||
      count != ChunkCountFor(m.volume_size, m.chunk_size)) {
    return corrupt("inconsistent sizes");
  }
  // Bound the allocation by what the body could possibly hold.
  if (count > in.remaining() * (uint64_t{1} << 32)) {
    return corrupt("chunk count too large");
  }
  m.chunks = ChunkTable(count);
  uint64_t next = 0;  // chunk index of the next record
  while (next < count && in.ok()) {
    uint8_t tag = in.Fixed8();
    if (tag == kZeroRun) {
      uint64_t run = in.Fixed64();
      if (!in.ok()) break;
      if (run == 0 || run > count - next) return corrupt("bad zero run");
      next += run;
    } else if (tag == kDataChunk) {
      absl::string_view b = in.Bytes(32);
      if (!in.ok()) break;
      Digest d = Digest::FromBytes(b.data());
      if (d.IsZero()) return corrupt("zero digest");
      m.chunks.Append(next++, d);
    } else {
      return corrupt("bad chunk record");
    }
  }
  if (!in.ok() || next != count) return corrupt("truncated chunks");
  if (in.remaining() != 0) return corrupt("trailing bytes");
  return m;
}

}  // namespace storaged
