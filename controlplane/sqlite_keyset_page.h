// The SQLite side of keyset paging (page_token.h): checking a decoded
// token's shape, binding its parts, and collecting one page of ids.
#ifndef CONTROLPLANE_SQLITE_KEYSET_PAGE_H_
#define CONTROLPLANE_SQLITE_KEYSET_PAGE_H_

#include <cstddef>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "controlplane/sqlite_database.h"

namespace controlplane {

// Collects the ids of a keyset page: fetches up to page_size + 1 rows of
// column 0, returns the first page_size and whether there were more.
absl::StatusOr<std::pair<std::vector<std::string>, bool>> PageIds(SqliteStatement& stmt,
                                                                  int page_size);
// INVALID_ARGUMENT (page_token) unless a decoded page token has `parts`
// parts (or none).
absl::Status CheckCursor(const std::vector<std::string>& after, size_t parts);
// Part `i` of a decoded page token; empty on the first page.
std::string Part(const std::vector<std::string>& after, size_t i);

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_KEYSET_PAGE_H_
