// Builds a WHERE clause from constant SQL fragments whose values are bound as
// parameters, for list queries with optional filters. The SQL text only ever
// contains fragments written in this codebase; caller values never enter it.
#ifndef CONTROLPLANE_SQL_WHERE_H_
#define CONTROLPLANE_SQL_WHERE_H_

#include <cstdint>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/strings/str_join.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

class SqlWhere {
 public:
  using Value = std::variant<int64_t, std::string>;

  // Adds `fragment` (with one `?` per value, in order) ANDed to the others.
  SqlWhere& Add(const char* fragment, std::vector<Value> values = {}) {
    fragments_.push_back(fragment);
    for (Value& v : values) values_.push_back(std::move(v));
    return *this;
  }
  // Adds every fragment and value of `other`, ANDed.
  SqlWhere& AddAll(const SqlWhere& other) {
    fragments_.insert(fragments_.end(), other.fragments_.begin(), other.fragments_.end());
    values_.insert(values_.end(), other.values_.begin(), other.values_.end());
    return *this;
  }
  // " WHERE a AND b" or "".
  std::string Sql() const {
    if (fragments_.empty()) return "";
    return " WHERE (" + absl::StrJoin(fragments_, ") AND (") + ")";
  }
  // Binds the values from parameter `first` on; returns the next free index.
  int Bind(SqliteStatement& stmt, int first = 1) const {
    int index = first;
    for (const Value& v : values_) {
      if (const int64_t* i = std::get_if<int64_t>(&v)) {
        stmt.Bind(index++, *i);
      } else {
        stmt.Bind(index++, std::get<std::string>(v));
      }
    }
    return index;
  }

 private:
  std::vector<std::string> fragments_;
  std::vector<Value> values_;
};

// "[1,2,3]", for `IN (SELECT value FROM json_each(?))` with one parameter.
template <typename Ints>
std::string JsonIntArray(const Ints& values) {
  return "[" + absl::StrJoin(values, ",") + "]";
}

}  // namespace controlplane

#endif  // CONTROLPLANE_SQL_WHERE_H_
