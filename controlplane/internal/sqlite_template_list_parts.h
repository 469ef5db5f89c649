// The parts of SqliteTemplateStore that its two source files share:
// sqlite_template_store.cc (records, children, shares, mutations) and
// sqlite_template_store_list.cc (list pages and the list memo). Defined in
// sqlite_template_store.cc unless noted.
#ifndef CONTROLPLANE_INTERNAL_SQLITE_TEMPLATE_LIST_PARTS_H_
#define CONTROLPLANE_INTERNAL_SQLITE_TEMPLATE_LIST_PARTS_H_

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/template_store.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {
namespace internal {

// Every column FromRow reads, in its order, of image_templates as `t`.
extern const char kTemplateColumns[];

// Separates the tags in image_templates.tag_list (migration 6).
inline constexpr char kTagSeparator = '\x1f';

// The template of a row selected with kTemplateColumns, without children.
imagetemplates::v1::ImageTemplate TemplateFromRow(const SqliteStatement& s);

// What orders and identifies a row of a list page.
struct PageKey {
  std::string id;
  int64_t version = 0;
  int64_t create_time_us = 0;
  std::string name;  // only when it orders the page
  // Only in the memo of public templates, which serves every viewer and
  // skips the viewer's own (they come from the owner's branch).
  std::string owner_account_id;
  // The template at `version`, once a page has looked it up: later pages
  // from the same memo skip the TemplateCache. Set only by the unit of work
  // holding the memo's connection.
  mutable std::shared_ptr<const EncodedTemplate> resolved;
};

// Rows of list branches that no index reads in page order cheaply (shared
// with the viewer: every share is looked up and sorted) or that every
// account's pages scan (public templates: all of them, filtered row by row),
// kept per read connection and query between pages while no template,
// child row or share changes (template_list_generation, migration 9); see
// sqlite_template_store_list.cc. Defined there.
struct ListMemo {
  // Bounds per connection: a query with more rows is not kept; past the
  // total, the connection's memo starts over. A row is about 150 bytes and
  // may keep its template (PageKey::resolved, ~3 KiB decoded and encoded)
  // alive after the TemplateCache dropped it: at most ~50 MiB a connection.
  static constexpr size_t kMaxRowsPerQuery = 4096;
  static constexpr size_t kMaxRows = 16384;
  struct Connection {
    int64_t generation = -1;
    int64_t total_changes = -1;
    size_t total_rows = 0;
    // List pages on this connection since (generation, total_changes)
    // last changed, and between the two changes before.
    int64_t pages = 0;
    int64_t previous_pages = 0;
    // Null: the query had more than kMaxRowsPerQuery rows at this version.
    absl::flat_hash_map<std::string, std::shared_ptr<const std::vector<PageKey>>> rows;
  };
  absl::Mutex mu;
  // Each Connection is used only by the unit of work holding its connection.
  absl::flat_hash_map<const SqliteConnection*, std::unique_ptr<Connection>> connections
      ABSL_GUARDED_BY(mu);
  // For tests.
  std::atomic<int64_t> hits{0}, misses{0};
};

}  // namespace internal
}  // namespace controlplane

#endif  // CONTROLPLANE_INTERNAL_SQLITE_TEMPLATE_LIST_PARTS_H_
