// A small command-line flag parser for `--name=value` / `--name value` flags
// with dashes in their names (absl flags only accept underscores).
#ifndef COMMON_FLAGS_H_
#define COMMON_FLAGS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace common {

// Not thread-safe; used once from main(). Targets must outlive the FlagSet.
class FlagSet {
 public:
  explicit FlagSet(std::string usage) : usage_(std::move(usage)) {}
  FlagSet(const FlagSet&) = delete;
  FlagSet& operator=(const FlagSet&) = delete;

  void String(std::string name, std::string* target, std::string help);
  void Int(std::string name, int64_t* target, std::string help);
  // Accepts `--name`, `--name=true|false`.
  void Bool(std::string name, bool* target, std::string help);

  // Parses argv[1..]. Returns the positional arguments in order (everything
  // after "--" is positional). INVALID_ARGUMENT for an unknown flag, a missing
  // value or one that does not parse. Sets *help_requested on -h/--help.
  absl::StatusOr<std::vector<std::string>> Parse(int argc, const char* const* argv,
                                                 bool* help_requested);

  // Usage line followed by one line per flag with its default.
  std::string Help() const;

  // For daemons, which take flags only: prints help and exits 0 on --help,
  // prints the problem and help to stderr and exits 2 on a bad flag or any
  // positional argument.
  void ParseFlagsOnlyOrExit(int argc, const char* const* argv, const char* program);

 private:
  enum class Kind { kString, kInt, kBool };
  struct Flag {
    std::string name;
    Kind kind;
    void* target;
    std::string help;
    std::string default_value;
  };
  const Flag* Find(const std::string& name) const;
  static absl::Status Assign(const Flag& flag, const std::string& value);

  std::string usage_;
  std::vector<Flag> flags_;
};

}  // namespace common

#endif  // COMMON_FLAGS_H_
