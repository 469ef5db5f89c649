// Opaque page tokens for keyset pagination, shared by every List RPC.
//
// A token carries the sort key of the last row of the previous page and a
// hash of the list's filters. The next page asks for rows strictly after that
// key, so rows inserted or deleted between pages never shift the window: no
// row is returned twice and no surviving row is skipped.
//
// Typical use:
//   ASSIGN_OR_RETURN(int page_size, PageSize(request.page_size()));
//   std::string filters = FilterKey({account_id, request.name_contains()});
//   ASSIGN_OR_RETURN(std::vector<std::string> after,
//                    DecodePageToken(request.page_token(), filters));
//   // SELECT ... WHERE (?n = 0 OR (name, id) > (?a, ?b)) ORDER BY name, id
//   //   LIMIT page_size + 1
//   // if a (page_size+1)th row came back, drop it and set
//   //   next_page_token = EncodePageToken({last.name, last.id}, filters);
#ifndef CONTROLPLANE_PAGE_TOKEN_H_
#define CONTROLPLANE_PAGE_TOKEN_H_

#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace controlplane {

inline constexpr int kDefaultPageSize = 50;
inline constexpr int kMaxPageSize = 500;

// The page size to use: 0 means 50, values above 500 become 500.
// INVALID_ARGUMENT (page_size) if negative.
absl::StatusOr<int> PageSize(int64_t requested);

// Joins filter values unambiguously (length-prefixed), for EncodePageToken
// and DecodePageToken. Include everything that changes the result set,
// including the caller's scope (account id) where it does.
std::string FilterKey(std::initializer_list<absl::string_view> values);

// A token that resumes after the row whose sort key is `last_key`, valid only
// together with the same `filters`.
std::string EncodePageToken(const std::vector<std::string>& last_key,
                            absl::string_view filters);

// The sort key the previous page ended with; an empty vector for an empty
// token (the first page). INVALID_ARGUMENT (page_token) if the token is not
// one of ours, is damaged, or was issued for other filters.
absl::StatusOr<std::vector<std::string>> DecodePageToken(
    absl::string_view token, absl::string_view filters);

}  // namespace controlplane

#endif  // CONTROLPLANE_PAGE_TOKEN_H_
