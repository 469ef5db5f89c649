// Input checks shared by the stores. Every error is INVALID_ARGUMENT and its
// message starts with the offending field's name.
#ifndef CONTROLPLANE_VALIDATION_H_
#define CONTROLPLANE_VALIDATION_H_

#include <cstdint>
#include <initializer_list>
#include <string>

#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/field_mask.pb.h"
#include "google/protobuf/timestamp.pb.h"

namespace controlplane {

// A display name: trimmed of surrounding whitespace, then 1..max_chars
// characters of valid UTF-8 without control characters. Returns the trimmed
// name; anything else (SQL, quotes, emoji) is kept literally.
absl::StatusOr<std::string> ValidateName(absl::string_view field, absl::string_view value,
                                         int max_chars);

// Free text (notes, descriptions): 0..max_chars characters of valid UTF-8;
// newlines and tabs allowed, other control characters not.
absl::Status ValidateText(absl::string_view field, absl::string_view value, int max_chars);

// 1..max_chars characters, each ASCII alphanumeric or in `extra`.
absl::Status ValidateToken(absl::string_view field, absl::string_view value, int max_chars,
                           absl::string_view extra);

// A lowercase UUID string.
absl::Status ValidateUuid(absl::string_view field, absl::string_view value);

// Empty, or 1..64 characters of [A-Za-z0-9_-] (common.proto).
absl::Status ValidateRequestId(absl::string_view value);

// A value of an enum: `is_valid` is the generated XXX_IsValid. UNSPECIFIED (0)
// is accepted only when `allow_unspecified`.
absl::Status ValidateEnum(absl::string_view field, int value, bool (*is_valid)(int),
                          bool allow_unspecified);

// The paths an update names, each one of `allowed`. INVALID_ARGUMENT
// ("update_mask: ...", listing the allowed paths) for an empty mask or any
// other path.
absl::StatusOr<absl::flat_hash_set<std::string>> ValidateUpdateMask(
    const google::protobuf::FieldMask& mask, std::initializer_list<absl::string_view> allowed);

// A timestamp in microseconds since the epoch: INVALID_ARGUMENT unless it
// lies in 0001-01-01..9999-12-31 with nanos in [0, 1e9) (outside that range
// the conversion would overflow).
absl::StatusOr<int64_t> ValidateTimestamp(absl::string_view field,
                                          const google::protobuf::Timestamp& value);

// Number of UTF-8 code points, or -1 if `value` is not valid UTF-8.
int Utf8Length(absl::string_view value);

// `value` with every code point lowercased by Unicode's simple mapping
// ("ÄPFEL" -> "äpfel", "ΔΕΛΤΑ" -> "δελτα"), for case-insensitive matching;
// bytes that are not valid UTF-8 are copied unchanged. Needs glibc's C.UTF-8
// locale (Debian's libc-bin); without it only ASCII is lowercased.
std::string LowercaseUtf8(absl::string_view value);

}  // namespace controlplane

#endif  // CONTROLPLANE_VALIDATION_H_
