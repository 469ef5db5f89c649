#include "controlplane/sqlite_keyset_page.h"

#include "common/status_macros.h"

namespace controlplane {

absl::StatusOr<std::pair<std::vector<std::string>, bool>> PageIds(SqliteStatement& stmt,
                                                                  int page_size) {
  std::vector<std::string> ids;
  while (true) {
    ASSIGN_OR_RETURN(bool row, stmt.Step());
    if (!row) break;
    ids.push_back(stmt.ColumnText(0));
  }
  bool more = static_cast<int>(ids.size()) > page_size;
  if (more) ids.pop_back();
  return std::make_pair(std::move(ids), more);
}

absl::Status CheckCursor(const std::vector<std::string>& after, size_t parts) {
  if (!after.empty() && after.size() != parts) {
    return absl::InvalidArgumentError("page_token: malformed");
  }
  return absl::OkStatus();
}

std::string Part(const std::vector<std::string>& after, size_t i) {
  return after.empty() ? std::string() : after[i];
}

}  // namespace controlplane
