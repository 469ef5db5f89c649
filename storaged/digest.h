// SHA-256 digests: the name of every chunk and the seal of every manifest.
#ifndef STORAGED_DIGEST_H_
#define STORAGED_DIGEST_H_

#include <array>
#include <cstdint>
#include <cstring>
#include <string>

#include "absl/strings/string_view.h"

namespace storaged {

struct Digest {
  std::array<uint8_t, 32> bytes{};

  // All 32 bytes zero: never a real SHA-256 output, so the manifest uses it to
  // mark an all-zero chunk.
  bool IsZero() const {
    for (uint8_t b : bytes) {
      if (b != 0) return false;
    }
    return true;
  }
  std::string ToHex() const;
  absl::string_view AsBytes() const {
    return absl::string_view(reinterpret_cast<const char*>(bytes.data()),
                             bytes.size());
  }
  static Digest FromBytes(const char* data) {
    Digest d;
    std::memcpy(d.bytes.data(), data, d.bytes.size());
    return d;
  }

  friend bool operator==(const Digest& a, const Digest& b) {
    return a.bytes == b.bytes;
  }
  friend bool operator!=(const Digest& a, const Digest& b) {
    return !(a == b);
  }
  friend bool operator<(const Digest& a, const Digest& b) {
    return a.bytes < b.bytes;
  }
};

// SHA-256 output is already uniform; hashing its first 8 bytes is enough and
// far cheaper than hashing all 32 for a table of millions of chunks.
struct DigestHash {
  size_t operator()(const Digest& d) const {
    uint64_t v;
    std::memcpy(&v, d.bytes.data(), sizeof(v));
    return static_cast<size_t>(v);
  }
};

Digest Sha256(absl::string_view data);

// True if every byte of `data` is zero.
bool IsAllZero(absl::string_view data);

}  // namespace storaged

#endif  // STORAGED_DIGEST_H_
