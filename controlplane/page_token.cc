#include "controlplane/page_token.h"

#include <openssl/sha.h>

#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace controlplane {
namespace {

constexpr char kVersion = '\x01';
constexpr size_t kHashBytes = 8;

std::string ShortHash(absl::string_view data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return std::string(reinterpret_cast<const char*>(digest), kHashBytes);
}

void PutLength(std::string* out, size_t n) {
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>((n >> shift) & 0xff));
}

absl::Status BadToken() {
  return absl::InvalidArgumentError(
      "page_token: not a token from the previous page of this list with these filters; "
      "start again with an empty page_token");
}

}  // namespace

absl::StatusOr<int> PageSize(int64_t requested) {
  if (requested < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_size: must not be negative (got ", requested, "); 0 means 50"));
  }
  if (requested == 0) return kDefaultPageSize;
  return requested > kMaxPageSize ? kMaxPageSize : static_cast<int>(requested);
}

std::string FilterKey(std::initializer_list<absl::string_view> values) {
  std::string key;
  for (absl::string_view value : values) {
    PutLength(&key, value.size());
    key.append(value.data(), value.size());
  }
  return key;
}

std::string EncodePageToken(const std::vector<std::string>& last_key,
                            absl::string_view filters) {
  std::string payload(1, kVersion);
  payload += ShortHash(filters);
  for (const std::string& part : last_key) {
    PutLength(&payload, part.size());
    payload += part;
  }
  // The checksum turns any damage into INVALID_ARGUMENT instead of a wrong page.
  payload += ShortHash(payload);
  return absl::WebSafeBase64Escape(payload);
}

absl::StatusOr<std::vector<std::string>> DecodePageToken(absl::string_view token,
                                                         absl::string_view filters) {
  std::vector<std::string> key;
  if (token.empty()) return key;
  std::string payload;
  if (token.size() > 4096 || !absl::WebSafeBase64Unescape(token, &payload)) return BadToken();
  if (payload.size() < 1 + 2 * kHashBytes || payload[0] != kVersion) return BadToken();
  absl::string_view body(payload.data(), payload.size() - kHashBytes);
  if (ShortHash(body) != payload.substr(payload.size() - kHashBytes)) return BadToken();
  if (body.substr(1, kHashBytes) != ShortHash(filters)) {
    return absl::InvalidArgumentError(
        "page_token: issued for other filters; send the same filters as the first page "
        "or start again with an empty page_token");
  }
  body.remove_prefix(1 + kHashBytes);
  while (!body.empty()) {
    if (body.size() < 4) return BadToken();
    size_t n = 0;
    for (int i = 0; i < 4; ++i) n = (n << 8) | static_cast<unsigned char>(body[i]);
    body.remove_prefix(4);
    if (n > body.size()) return BadToken();
    key.emplace_back(body.substr(0, n));
    body.remove_prefix(n);
  }
  if (key.empty()) return BadToken();
  return key;
}

}  // namespace controlplane
