// Little-endian fixed-width encoding for the store's binary formats.
#ifndef STORAGED_INTERNAL_CODING_H_
#define STORAGED_INTERNAL_CODING_H_

#include <cstdint>
#include <cstring>
#include <string>

#include "absl/base/config.h"
#include "absl/strings/string_view.h"

namespace storaged {
namespace internal {

static_assert(ABSL_IS_LITTLE_ENDIAN, "formats are written little-endian");

inline void PutFixed8(std::string* out, uint8_t v) {
  out->push_back(static_cast<char>(v));
}
inline void PutFixed16(std::string* out, uint16_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}
inline void PutFixed32(std::string* out, uint32_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}
inline void PutFixed64(std::string* out, uint64_t v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

// Bounds-checked cursor; any read past the end sets !ok() and yields zeros,
// so decoders check ok() once at the end of a section.
class Decoder {
 public:
  explicit Decoder(absl::string_view data) : data_(data) {}

  bool ok() const { return ok_; }
  size_t remaining() const { return data_.size(); }

  uint8_t Fixed8() { return Read<uint8_t>(); }
  uint16_t Fixed16() { return Read<uint16_t>(); }
  uint32_t Fixed32() { return Read<uint32_t>(); }
  uint64_t Fixed64() { return Read<uint64_t>(); }
  absl::string_view Bytes(size_t n) {
    if (!ok_ || data_.size() < n) {
      ok_ = false;
      return absl::string_view();
    }
    absl::string_view out = data_.substr(0, n);
    data_.remove_prefix(n);
    return out;
  }

 private:
  template <typename T>
  T Read() {
    T v{};
    absl::string_view b = Bytes(sizeof(T));
    if (ok_) std::memcpy(&v, b.data(), sizeof(T));
    return v;
  }

  absl::string_view data_;
  bool ok_ = true;
};

}  // namespace internal
}  // namespace storaged

#endif  // STORAGED_INTERNAL_CODING_H_
