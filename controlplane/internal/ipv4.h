// IPv4 literals as the inventory stores them and the API takes them: strict
// dotted quads ("10.0.0.5", no leading zeros) and address/prefix pairs. One
// parser for the API edge (image_template_manager.cc) and the SQLite
// inventory (IP pools, static addresses), so both accept the same strings.
#ifndef CONTROLPLANE_INTERNAL_IPV4_H_
#define CONTROLPLANE_INTERNAL_IPV4_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace controlplane {
namespace internal {

// Strict dotted quad; returns the address as an integer.
std::optional<uint32_t> ParseIpv4(absl::string_view text);
std::string FormatIpv4(uint32_t a);
// An IPv4 address and prefix length: "10.0.0.5/24" (a host in its subnet, or
// with host bits zero, a network).
struct Cidr {
  uint32_t address;
  int prefix;
  uint32_t mask() const { return prefix == 0 ? 0 : 0xffffffffu << (32 - prefix); }
  uint32_t first() const { return address & mask(); }
  uint32_t last() const { return first() | ~mask(); }
  bool Contains(uint32_t a) const { return (a & mask()) == first(); }
};
// A strict dotted quad, "/" and 0..32 in one or two digits.
std::optional<Cidr> ParseCidr(absl::string_view text);

}  // namespace internal
}  // namespace controlplane

#endif  // CONTROLPLANE_INTERNAL_IPV4_H_
