#include "controlplane/internal/ipv4.h"

#include <algorithm>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace controlplane {
namespace internal {

std::optional<uint32_t> ParseIpv4(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '.');
  if (parts.size() != 4) return std::nullopt;
  uint32_t address = 0;
  for (absl::string_view part : parts) {
    if (part.empty() || part.size() > 3 || (part.size() > 1 && part[0] == '0')) return std::nullopt;
    uint32_t octet = 0;
    for (char c : part) {
      if (c < '0' || c > '9') return std::nullopt;
      octet = octet * 10 + (c - '0');
    }
    if (octet > 255) return std::nullopt;
    address = (address << 8) | octet;
  }
  return address;
}

std::optional<Cidr> ParseCidr(absl::string_view text) {
  std::vector<absl::string_view> parts = absl::StrSplit(text, '/');
  if (parts.size() != 2) return std::nullopt;
  std::optional<uint32_t> address = ParseIpv4(parts[0]);
  int prefix = 0;
  if (!address || parts[1].empty() || parts[1].size() > 2 ||
      !std::all_of(parts[1].begin(), parts[1].end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(parts[1], &prefix) || prefix > 32) {
    return std::nullopt;
  }
  return Cidr{*address, prefix};
}

std::string FormatIpv4(uint32_t a) {
  return absl::StrCat(a >> 24, ".", (a >> 16) & 0xff, ".", (a >> 8) & 0xff, ".", a & 0xff);
}

}  // namespace internal
}  // namespace controlplane
