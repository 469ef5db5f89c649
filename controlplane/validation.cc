#include "controlplane/validation.h"

#include <locale.h>
#include <wctype.h>

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "controlplane/ids.h"
#include "google/protobuf/util/time_util.h"

namespace controlplane {
namespace {

// Decodes one code point at `*i`; -1 on malformed, overlong or surrogate input.
int32_t NextCodePoint(absl::string_view s, size_t* i) {
  unsigned char c = static_cast<unsigned char>(s[*i]);
  int len;
  int32_t cp;
  if (c < 0x80) {
    ++*i;
    return c;
  } else if ((c & 0xe0) == 0xc0) {
    len = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    len = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    len = 4;
    cp = c & 0x07;
  } else {
    return -1;
  }
  if (*i + len > s.size()) return -1;
  for (int k = 1; k < len; ++k) {
    unsigned char cc = static_cast<unsigned char>(s[*i + k]);
    if ((cc & 0xc0) != 0x80) return -1;
    cp = (cp << 6) | (cc & 0x3f);
  }
  static const int32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return -1;
  *i += len;
  return cp;
}

bool IsControl(int32_t cp) { return cp < 0x20 || (cp >= 0x7f && cp <= 0x9f); }

absl::Status Invalid(absl::string_view field, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(field, ": ", what));
}

// Checks UTF-8 and control characters; returns the length or an error.
absl::StatusOr<int> CheckChars(absl::string_view field, absl::string_view value,
                               bool allow_newlines) {
  int count = 0;
  size_t i = 0;
  while (i < value.size()) {
    int32_t cp = NextCodePoint(value, &i);
    if (cp < 0) return Invalid(field, "must be valid UTF-8");
    if (IsControl(cp) && !(allow_newlines && (cp == '\n' || cp == '\t' || cp == '\r'))) {
      return Invalid(field, "must not contain control characters");
    }
    ++count;
  }
  return count;
}

}  // namespace

std::string LowercaseUtf8(absl::string_view value) {
  // C.UTF-8 maps all of Unicode whatever the process's own locale is.
  static const locale_t utf8 = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(0));
  std::string out;
  out.reserve(value.size());
  size_t i = 0;
  while (i < value.size()) {
    const size_t start = i;
    int32_t cp = NextCodePoint(value, &i);
    if (cp < 0) {
      out += value[start];
      i = start + 1;
      continue;
    }
    if (cp < 0x80) {
      out += absl::ascii_tolower(static_cast<unsigned char>(cp));
      continue;
    }
    if (utf8 != static_cast<locale_t>(0)) {
      cp = static_cast<int32_t>(towlower_l(static_cast<wint_t>(cp), utf8));
    }
    if (cp < 0x80) {  // İ (U+0130) -> i, K (U+212A) -> k
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xc0 | (cp >> 6));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xe0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    } else {
      out += static_cast<char>(0xf0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    }
    if (cp >= 0x80) out += static_cast<char>(0x80 | (cp & 0x3f));
  }
  return out;
}

int Utf8Length(absl::string_view value) {
  int count = 0;
  size_t i = 0;
  while (i < value.size()) {
    if (NextCodePoint(value, &i) < 0) return -1;
    ++count;
  }
  return count;
}

absl::StatusOr<std::string> ValidateName(absl::string_view field, absl::string_view value,
                                         int max_chars) {
  absl::string_view trimmed = absl::StripAsciiWhitespace(value);
  if (trimmed.empty()) return Invalid(field, "must not be empty");
  auto count = CheckChars(field, trimmed, /*allow_newlines=*/false);
  if (!count.ok()) return count.status();
  if (*count > max_chars) {
    return Invalid(field, absl::StrCat("must be at most ", max_chars, " characters (got ",
                                       *count, ")"));
  }
  return std::string(trimmed);
}

absl::Status ValidateText(absl::string_view field, absl::string_view value, int max_chars) {
  auto count = CheckChars(field, value, /*allow_newlines=*/true);
  if (!count.ok()) return count.status();
  if (*count > max_chars) {
    return Invalid(field, absl::StrCat("must be at most ", max_chars, " characters"));
  }
  return absl::OkStatus();
}

absl::Status ValidateToken(absl::string_view field, absl::string_view value, int max_chars,
                           absl::string_view extra) {
  if (value.empty()) return Invalid(field, "must not be empty");
  if (static_cast<int>(value.size()) > max_chars) {
    return Invalid(field, absl::StrCat("must be at most ", max_chars, " characters"));
  }
  for (char c : value) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) &&
        extra.find(c) == absl::string_view::npos) {
      return Invalid(field, absl::StrCat("may contain only letters, digits and \"", extra,
                                         "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateUuid(absl::string_view field, absl::string_view value) {
  if (value.empty()) return Invalid(field, "must not be empty");
  if (!IsUuid(value)) return Invalid(field, "must be a lowercase UUID");
  return absl::OkStatus();
}

absl::StatusOr<int64_t> ValidateTimestamp(absl::string_view field,
                                          const google::protobuf::Timestamp& value) {
  using google::protobuf::util::TimeUtil;
  if (value.seconds() < TimeUtil::kTimestampMinSeconds ||
      value.seconds() > TimeUtil::kTimestampMaxSeconds || value.nanos() < 0 ||
      value.nanos() >= 1000000000) {
    return Invalid(field, "must lie between 0001-01-01 and 9999-12-31, nanos in [0, 1e9)");
  }
  return FromTimestamp(value);
}

absl::StatusOr<absl::flat_hash_set<std::string>> ValidateUpdateMask(
    const google::protobuf::FieldMask& mask, std::initializer_list<absl::string_view> allowed) {
  const std::string choices =
      absl::StrJoin(allowed, ", ", [](std::string* out, absl::string_view path) {
        absl::StrAppend(out, "\"", path, "\"");
      });
  if (mask.paths().empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("update_mask: name the fields to change: ", choices));
  }
  absl::flat_hash_set<std::string> paths;
  for (const std::string& path : mask.paths()) {
    if (std::find(allowed.begin(), allowed.end(), path) == allowed.end()) {
      return absl::InvalidArgumentError(
          absl::StrCat("update_mask: unknown path \"", path, "\"; use ", choices));
    }
    paths.insert(path);
  }
  return paths;
}

absl::Status ValidateRequestId(absl::string_view value) {
  if (value.empty()) return absl::OkStatus();
  return ValidateToken("request_id", value, 64, "_-");
}

absl::Status ValidateEnum(absl::string_view field, int value, bool (*is_valid)(int),
                          bool allow_unspecified) {
  if (!is_valid(value)) return Invalid(field, absl::StrCat("unknown value ", value));
  if (value == 0 && !allow_unspecified) return Invalid(field, "must be set");
  return absl::OkStatus();
}

}  // namespace controlplane
