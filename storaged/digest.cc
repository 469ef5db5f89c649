#include "storaged/digest.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"

namespace storaged {

std::string Digest::ToHex() const { return absl::BytesToHexString(AsBytes()); }

Digest Sha256(absl::string_view data) {
  // Fetched once: OpenSSL 3 otherwise looks the algorithm up on every call.
  static EVP_MD* const md = EVP_MD_fetch(nullptr, "SHA256", nullptr);
  Digest d;
  unsigned int len = 0;
  EVP_Digest(data.data(), data.size(), d.bytes.data(), &len, md, nullptr);
  return d;
}

bool IsAllZero(absl::string_view data) {
  const char* p = data.data();
  size_t n = data.size();
  // Word at a time; chunks are 64 KiB so the tail loop is rare.
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    if (v != 0) return false;
    p += 8;
    n -= 8;
  }
  while (n > 0) {
    if (*p != 0) return false;
    ++p;
    --n;
  }
  return true;
}

}  // namespace storaged
