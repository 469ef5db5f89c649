#include "common/flags.h"

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/match.h"

namespace common {

void FlagSet::String(std::string name, std::string* target, std::string help) {
  flags_.push_back({std::move(name), Kind::kString, target, std::move(help), *target});
}

void FlagSet::Int(std::string name, int64_t* target, std::string help) {
  flags_.push_back({std::move(name), Kind::kInt, target, std::move(help),
                    absl::StrCat(*target)});
}

void FlagSet::Bool(std::string name, bool* target, std::string help) {
  flags_.push_back({std::move(name), Kind::kBool, target, std::move(help),
                    *target ? "true" : "false"});
}

const FlagSet::Flag* FlagSet::Find(const std::string& name) const {
  for (const Flag& flag : flags_) {
    if (flag.name == name) return &flag;
  }
  return nullptr;
}

absl::Status FlagSet::Assign(const Flag& flag, const std::string& value) {
  switch (flag.kind) {
    case Kind::kString:
      *static_cast<std::string*>(flag.target) = value;
      return absl::OkStatus();
    case Kind::kInt: {
      // Parse into a local: a failed parse must leave the default in place.
      int64_t parsed = 0;
      if (!absl::SimpleAtoi(value, &parsed)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--%s: \"%s\" is not an integer", flag.name, value));
      }
      *static_cast<int64_t*>(flag.target) = parsed;
      return absl::OkStatus();
    }
    case Kind::kBool: {
      bool parsed = false;
      if (!absl::SimpleAtob(value, &parsed)) {
        return absl::InvalidArgumentError(
            absl::StrFormat("--%s: \"%s\" is not true or false", flag.name, value));
      }
      *static_cast<bool*>(flag.target) = parsed;
      return absl::OkStatus();
    }
  }
  return absl::InternalError("unknown flag kind");
}

absl::StatusOr<std::vector<std::string>> FlagSet::Parse(
    int argc, const char* const* argv, bool* help_requested) {
  *help_requested = false;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) positional.push_back(argv[i]);
      break;
    }
    if (arg == "-h" || arg == "--help") {
      *help_requested = true;
      continue;
    }
    if (!absl::StartsWith(arg, "--") || arg.size() == 2) {
      positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    bool has_value = false;
    if (size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    const Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
    if (!has_value) {
      if (flag->kind == Kind::kBool) {
        value = "true";
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
    }
    absl::Status status = Assign(*flag, value);
    if (!status.ok()) return status;
  }
  return positional;
}

std::string FlagSet::Help() const {
  std::string out = absl::StrCat(usage_, "\n\nFlags:\n");
  for (const Flag& flag : flags_) {
    absl::StrAppendFormat(&out, "  --%-22s %s", flag.name, flag.help);
    if (!flag.default_value.empty()) {
      absl::StrAppendFormat(&out, " (default: %s)", flag.default_value);
    }
    out += "\n";
  }
  return out;
}

void FlagSet::ParseFlagsOnlyOrExit(int argc, const char* const* argv, const char* program) {
  bool help = false;
  absl::StatusOr<std::vector<std::string>> positional = Parse(argc, argv, &help);
  if (help) {
    std::fputs(Help().c_str(), stdout);
    std::exit(0);
  }
  if (!positional.ok() || !positional->empty()) {
    std::string problem = positional.ok()
                              ? absl::StrCat("unexpected argument \"", (*positional)[0], "\"")
                              : std::string(positional.status().message());
    std::fprintf(stderr, "%s: %s\n%s", program, problem.c_str(), Help().c_str());
    std::exit(2);
  }
}

}  // namespace common
