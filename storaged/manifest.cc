#include "storaged/manifest.h"

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
  out.reserve(out.size() + m.chunks.size() * 33 + 32);
  size_t i = 0;
  while (i < m.chunks.size()) {
    if (m.chunks[i].IsZero()) {
      size_t j = i;
      while (j < m.chunks.size() && m.chunks[j].IsZero()) ++j;
      PutFixed8(&out, kZeroRun);
      PutFixed64(&out, j - i);
      i = j;
    } else {
      PutFixed8(&out, kDataChunk);
      out.append(reinterpret_cast<const char*>(m.chunks[i].bytes.data()), 32);
      ++i;
    }
  }
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
  if (m.chunk_size == 0 || m.block_size == 0 ||
      count != ChunkCountFor(m.volume_size, m.chunk_size)) {
    return corrupt("inconsistent sizes");
  }
  // Bound the allocation by what the body could possibly hold.
  if (count > in.remaining() * (uint64_t{1} << 32)) {
    return corrupt("chunk count too large");
  }
  m.chunks.reserve(count < in.remaining() / 33 + 1 ? count
                                                   : in.remaining() / 33 + 1);
  while (m.chunks.size() < count && in.ok()) {
    uint8_t tag = in.Fixed8();
    if (tag == kZeroRun) {
      uint64_t run = in.Fixed64();
      if (run == 0 || run > count - m.chunks.size()) {
        return corrupt("bad zero run");
      }
      m.chunks.resize(m.chunks.size() + run);
    } else if (tag == kDataChunk) {
      absl::string_view b = in.Bytes(32);
      if (!in.ok()) break;
      m.chunks.push_back(Digest::FromBytes(b.data()));
      if (m.chunks.back().IsZero()) return corrupt("zero digest");
    } else {
      return corrupt("bad chunk record");
    }
  }
  if (!in.ok() || m.chunks.size() != count) return corrupt("truncated chunks");
  if (in.remaining() != 0) return corrupt("trailing bytes");
  return m;
}

}  // namespace storaged
