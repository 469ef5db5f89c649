// SqliteTemplateStore's list pages (ListTemplates, ListEncodedTemplates) and
// the list memo they read through; the rest of the store is in
// sqlite_template_store.cc.
#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/internal/sqlite_template_list_parts.h"
#include "controlplane/sql_where.h"
#include "controlplane/sqlite_template_store.h"
#include "controlplane/validation.h"

namespace controlplane {
namespace {

using imagetemplates::v1::ImageTemplate;
using internal::ListMemo;
using internal::PageKey;

// A JSON array of strings, for `IN (SELECT value FROM json_each(?))`.
std::string JsonStringArray(const std::vector<const std::string*>& ids) {
  std::string out = "[";
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i > 0) out += ',';
    out += '"';
    for (char c : *ids[i]) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (static_cast<unsigned char>(c) < 0x20) {
        absl::StrAppend(&out, "\\u00", absl::Hex(static_cast<unsigned char>(c), absl::kZeroPad2));
      } else {
        out += c;
      }
    }
    out += '"';
  }
  return out + "]";
}

// Reads tags, disks and locations of `templates` with one query per table,
// so a page costs three statements, not 150.
absl::Status LoadChildren(SqliteConnection& conn, const std::vector<ImageTemplate*>& templates) {
  if (templates.empty()) return absl::OkStatus();
  absl::flat_hash_map<std::string, ImageTemplate*> by_id;
  for (ImageTemplate* t : templates) by_id[t->id()] = t;
  std::vector<const std::string*> id_list;
  for (ImageTemplate* t : templates) id_list.push_back(&t->id());
  const std::string ids = JsonStringArray(id_list);
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT template_id, tag FROM image_template_tags WHERE "
                                  "template_id IN (SELECT value FROM json_each(?1)) "
                                  "ORDER BY template_id, position"));
    s.Bind(1, ids);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      by_id[s.ColumnText(0)]->add_tags(s.ColumnText(1));
    }
  }
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT template_id, device_index, boot, logical_size_bytes, "
                                  "stored_size_bytes, manifest_digest FROM image_template_disks "
                                  "WHERE template_id IN (SELECT value FROM json_each(?1)) "
                                  "ORDER BY template_id, device_index"));
    s.Bind(1, ids);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      auto* disk = by_id[s.ColumnText(0)]->add_disks();
      disk->set_device_index(static_cast<int32_t>(s.ColumnInt(1)));
      disk->set_boot(s.ColumnInt(2) != 0);
      disk->set_logical_size_bytes(s.ColumnInt(3));
      disk->set_stored_size_bytes(s.ColumnInt(4));
      disk->set_manifest_digest(s.ColumnText(5));
    }
  }
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT template_id, datacenter, status, operation_id, "
                                  "create_time_us FROM image_template_locations "
                                  "WHERE template_id IN (SELECT value FROM json_each(?1)) "
                                  "ORDER BY template_id, rowid"));
    s.Bind(1, ids);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      auto* location = by_id[s.ColumnText(0)]->add_locations();
      location->set_datacenter(s.ColumnText(1));
      location->set_status(
          static_cast<imagetemplates::v1::ImageTemplateLocationStatus>(s.ColumnInt(2)));
      location->set_operation_id(s.ColumnText(3));
      *location->mutable_create_time() = ToTimestamp(s.ColumnInt(4));
    }
  }
  return absl::OkStatus();
}

// The filters every visible template must pass, and every value they bind,
// in order and length-prefixed (`values_key`, for memo keys).
struct Filters {
  SqlWhere where;
  std::string values_key;
};

// `others_only`: for a branch of other accounts' templates only, where
// "not deprecated unless the viewer's" is just "not deprecated"; its SQL
// and values then do not depend on the viewer.
Filters BuildFilters(const TemplateQuery& q, bool others_only) {
  Filters f;
  auto add = [&f](const char* fragment, std::vector<SqlWhere::Value> values = {}) {
    for (const SqlWhere::Value& v : values) {
      std::string text = std::holds_alternative<int64_t>(v)
                             ? absl::StrCat("i", std::get<int64_t>(v))
                             : absl::StrCat("s", std::get<std::string>(v));
      absl::StrAppend(&f.values_key, text.size(), ":", text);
    }
    f.where.Add(fragment, std::move(values));
  };
  if (q.include_deprecated) {
    // Any.
  } else if (others_only) {
    add("t.deprecated = 0");
  } else {
    add("t.deprecated = 0 OR t.owner_account_id = ?", {q.viewer_account_id});
  }
  if (q.status == imagetemplates::v1::IMAGE_TEMPLATE_STATUS_UNSPECIFIED) {
    add("t.status <> 5");
  } else {
    add("t.status = ?", {static_cast<int64_t>(q.status)});
  }
  if (!q.name_contains.empty()) {
    add("instr(t.name_folded, ?) > 0", {LowercaseUtf8(q.name_contains)});
  }
  if (!q.owner_account_id.empty()) add("t.owner_account_id = ?", {q.owner_account_id});
  if (q.visibility != imagetemplates::v1::VISIBILITY_UNSPECIFIED) {
    add("t.visibility = ?", {static_cast<int64_t>(q.visibility)});
  }
  if (!q.tag.empty() && q.tag.find(internal::kTagSeparator) == std::string::npos) {
    // A test on the row (and on the covering indexes), not a probe per row.
    const std::string separator(1, internal::kTagSeparator);
    add("instr(t.tag_list, ?) > 0", {absl::StrCat(separator, q.tag, separator)});
  } else if (!q.tag.empty()) {
    add("EXISTS (SELECT 1 FROM image_template_tags g WHERE g.template_id = t.id AND g.tag = ?)",
        {q.tag});
  }
  return f;
}

// This connection's memo, emptied first when a template, child row or share changed
// since it was filled. The test is (template_list_generation, total_changes()),
// read inside the page's own read transaction: the generation is bumped by
// triggers in the transaction of every such change, by any connection or
// process (migration 9), so a memo is never older than the snapshot that
// reads it, while commits to other tables (audit rows, heartbeats,
// operations) keep it. total_changes() counts this connection's own writes,
// rolled back ones too: reads run on the writer for an in-memory database,
// where a read inside an uncommitted write could otherwise memoize rows a
// rollback then takes back under a generation a later commit reuses.
absl::StatusOr<ListMemo::Connection*> MemoOf(ListMemo& memo, SqliteConnection& conn) {
  ListMemo::Connection* c;
  {
    absl::MutexLock lock(&memo.mu);
    std::unique_ptr<ListMemo::Connection>& slot = memo.connections[&conn];
    if (slot == nullptr) slot = std::make_unique<ListMemo::Connection>();
    c = slot.get();
  }
  ASSIGN_OR_RETURN(SqliteStatement s,
                   conn.Prepare("SELECT value, total_changes() FROM template_list_generation "
                                "WHERE id = 1"));
  ASSIGN_OR_RETURN(bool row, s.Step());
  if (!row) return absl::InternalError("template_list_generation has no row");
  const int64_t generation = s.ColumnInt(0), total_changes = s.ColumnInt(1);
  if (generation != c->generation || total_changes != c->total_changes) {
    c->rows.clear();
    c->total_rows = 0;
    c->generation = generation;
    c->total_changes = total_changes;
    c->previous_pages = c->pages;
    c->pages = 0;
  }
  ++c->pages;
  return c;
}

// A branch whose rows are memoized: all of them in page order, no cursor.
struct MemoQuery {
  std::string key;  // the SQL and every value it binds
  std::string sql;  // selects id, version, create_time_us [, name] [, owner_account_id]
  SqlWhere where;
  bool with_name = false;
  bool with_owner = false;
  // Reads at most kMaxRowsPerQuery + 1 rows (`sql` ends with "LIMIT ?") and
  // answers null past kMaxRowsPerQuery; otherwise reads and answers every
  // row, keeping only up to kMaxRowsPerQuery.
  bool bounded = false;
  // Whether rows not in the memo may be read into it; if not, answers null
  // (only for bounded queries, whose callers have another way).
  bool may_read = true;
};

absl::StatusOr<std::shared_ptr<const std::vector<PageKey>>> MemoRows(
    ListMemo& memo, ListMemo::Connection& c, SqliteConnection& conn, const MemoQuery& q) {
  auto it = c.rows.find(q.key);
  if (it != c.rows.end()) {
    memo.hits.fetch_add(1, std::memory_order_relaxed);
    return it->second;
  }
  if (q.bounded && !q.may_read) return nullptr;
  memo.misses.fetch_add(1, std::memory_order_relaxed);
  auto rows = std::make_shared<std::vector<PageKey>>();
  {
    ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(q.sql));
    const int next = q.where.Bind(s, 1);
    if (q.bounded) s.Bind(next, static_cast<int64_t>(ListMemo::kMaxRowsPerQuery + 1));
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      PageKey& key = rows->emplace_back();
      key.id = s.ColumnText(0);
      key.version = s.ColumnInt(1);
      key.create_time_us = s.ColumnInt(2);
      int column = 3;
      if (q.with_name) key.name = s.ColumnText(column++);
      if (q.with_owner) key.owner_account_id = s.ColumnText(column++);
    }
  }
  std::shared_ptr<const std::vector<PageKey>> result = std::move(rows);
  const bool too_many = result->size() > ListMemo::kMaxRowsPerQuery;
  if (too_many && !q.bounded) return result;  // used, not kept
  if (too_many) result = nullptr;             // kept as "too many" for this version
  // Each key counts its rows plus one, so empty results are bounded too.
  const size_t cost = (result ? result->size() : 0) + 1;
  if (c.total_rows + cost > ListMemo::kMaxRows) {
    c.rows.clear();
    c.total_rows = 0;
  }
  c.total_rows += cost;
  c.rows[q.key] = result;
  return result;
}

// One source of a page's rows, in page order: a statement, or memoized rows.
struct Branch {
  std::optional<SqliteStatement> statement;
  std::shared_ptr<const std::vector<PageKey>> memo;
  size_t next = 0;  // in memo
  // Memo rows of this owner are skipped.
  const std::string* skip_owner = nullptr;
  const PageKey* head = nullptr;  // null: no more rows
};

}  // namespace

int64_t SqliteTemplateStore::list_memo_hits() const {
  return list_memo_->hits.load(std::memory_order_relaxed);
}
int64_t SqliteTemplateStore::list_memo_misses() const {
  return list_memo_->misses.load(std::memory_order_relaxed);
}

absl::StatusOr<std::vector<ImageTemplate>> SqliteTemplateStore::ListTemplates(
    const TemplateQuery& q) {
  ASSIGN_OR_RETURN(std::vector<std::shared_ptr<const EncodedTemplate>> encoded,
                   ListEncodedTemplates(q));
  std::vector<ImageTemplate> result;
  result.reserve(encoded.size());
  for (const auto& t : encoded) result.push_back(t->image_template);
  return result;
}

absl::StatusOr<std::vector<std::shared_ptr<const EncodedTemplate>>>
SqliteTemplateStore::ListEncodedTemplates(const TemplateQuery& q) {
  const Filters filters = BuildFilters(q, /*others_only=*/false);
  const bool by_name = q.order == TemplateOrder::kName;
  // Where the page starts; kept apart from the filters because memoized
  // branches hold their rows from the first on.
  SqlWhere cursor;
  std::optional<PageKey> cursor_key;
  if (q.after) {
    SqlWhere::Value key = by_name ? SqlWhere::Value(q.after->name)
                                  : SqlWhere::Value(q.after->create_time_us);
    if (by_name) {
      cursor.Add(q.descending ? "(t.name, t.id) < (?, ?)" : "(t.name, t.id) > (?, ?)",
                 {key, q.after->id});
    } else {
      cursor.Add(q.descending ? "(t.create_time_us, t.id) < (?, ?)"
                              : "(t.create_time_us, t.id) > (?, ?)",
                 {key, q.after->id});
    }
    cursor_key = PageKey{q.after->id, 0, q.after->create_time_us, q.after->name, "", nullptr};
  }
  const char* const dir = q.descending ? " DESC" : "";
  const std::string order =
      absl::StrCat(" ORDER BY t.", by_name ? "name" : "create_time_us", dir, ", t.id", dir);
  // Only what orders and identifies the page: the covering indexes answer
  // it without table rows, and TemplateCache supplies the templates. The
  // name only when it orders the page (one string copy less per row).
  const std::string columns =
      absl::StrCat("SELECT t.id, t.version, t.create_time_us", by_name ? ", t.name" : "");
  // A branch read by a statement: its rows after the cursor, at most `limit`.
  auto statement_sql = [&](const char* from, SqlWhere where) {
    where.AddAll(filters.where);
    where.AddAll(cursor);
    return std::make_pair(absl::StrCat(columns, from, where.Sql(), order, " LIMIT ?"),
                          std::move(where));
  };

  // Operators see everything: one ordered scan. Everybody else sees three
  // disjoint sets (own; shared with them; public), each in page order, so a
  // page costs the same whether 10 or 10,000 public templates exist: own
  // from the owner's covering index; shared and public from the list memo,
  // each read in full once per query while no template changes (public
  // ones by their partial covering index, for every viewer at once; past
  // kMaxRowsPerQuery public rows, by that index page by page).
  std::vector<std::pair<std::string, SqlWhere>> statements;
  std::vector<MemoQuery> memo_queries;
  memo_queries.reserve(2);
  std::optional<std::pair<std::string, SqlWhere>> public_fallback;
  const std::string& viewer = q.viewer_account_id;
  if (q.all_accounts) {
    statements.push_back(statement_sql(" FROM image_templates t", SqlWhere()));
  } else {
    SqlWhere own;
    own.Add("t.owner_account_id = ?", {viewer});
    statements.push_back(statement_sql(" FROM image_templates t", std::move(own)));

    MemoQuery& shared = memo_queries.emplace_back();
    shared.where.Add("s.account_id = ?", {viewer});
    shared.where.Add("t.owner_account_id <> ? AND t.visibility <> 3", {viewer});
    shared.where.Add("t.disabled = 0 AND t.status NOT IN (4, 5)");
    shared.where.AddAll(filters.where);
    shared.sql = absl::StrCat(columns,
                              " FROM image_template_shares s JOIN image_templates t "
                              "INDEXED BY image_templates_id_cover ON t.id = s.template_id",
                              shared.where.Sql(), order);
    // The viewer (twice) and the filters' values.
    shared.key = absl::StrCat(shared.sql.size(), ":", shared.sql, viewer.size(), ":", viewer,
                              filters.values_key);
    shared.with_name = by_name;

    const Filters others = BuildFilters(q, /*others_only=*/true);
    MemoQuery& public_rows = memo_queries.emplace_back();
    public_rows.where.Add("t.visibility = 3");
    public_rows.where.Add("t.disabled = 0 AND t.status NOT IN (4, 5)");
    public_rows.where.AddAll(others.where);
    public_rows.sql = absl::StrCat(columns, ", t.owner_account_id FROM image_templates t",
                                   public_rows.where.Sql(), order, " LIMIT ?");
    // Not the viewer: one entry serves every account.
    public_rows.key = absl::StrCat(public_rows.sql.size(), ":", public_rows.sql,
                                   others.values_key);
    public_rows.with_name = by_name;
    public_rows.with_owner = true;
    public_rows.bounded = true;

    SqlWhere public_others;
    public_others.Add("t.visibility = 3 AND t.owner_account_id <> ?", {viewer});
    public_others.Add("t.disabled = 0 AND t.status NOT IN (4, 5)");
    public_fallback = statement_sql(" FROM image_templates t", std::move(public_others));
  }
  // Whether `a` comes before `b` on a page: SQLite's order above (integers,
  // then BINARY text, which is what std::string::compare does).
  auto before = [&](const PageKey& a, const PageKey& b) {
    int c = by_name ? a.name.compare(b.name)
                    : (a.create_time_us < b.create_time_us    ? -1
                       : a.create_time_us > b.create_time_us ? 1
                                                             : 0);
    if (c == 0) c = a.id.compare(b.id);
    return q.descending ? c > 0 : c < 0;
  };
  const size_t limit = q.limit < 0 ? SIZE_MAX : static_cast<size_t>(q.limit);

  std::vector<std::shared_ptr<const EncodedTemplate>> result;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    // The page's keys; they point into `read` or into memoized rows.
    std::vector<const PageKey*> rows;
    std::deque<PageKey> read;
    std::vector<Branch> branches(statements.size() + memo_queries.size() + 1);
    size_t used = 0;
    auto add_statement = [&](const std::pair<std::string, SqlWhere>& sql) -> absl::Status {
      ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql.first));
      const int index = sql.second.Bind(s, 1);
      s.Bind(index, q.limit);
      branches[used++].statement.emplace(std::move(s));
      return absl::OkStatus();
    };
    for (const auto& sql : statements) RETURN_IF_ERROR(add_statement(sql));
    if (!memo_queries.empty()) {
      ASSIGN_OR_RETURN(ListMemo::Connection * memo, MemoOf(*list_memo_, conn));
      const bool build_public = memo->pages > public_memo_after_pages_ ||
                                memo->previous_pages >= public_memo_after_pages_;
      for (MemoQuery& mq : memo_queries) {
        if (mq.bounded) mq.may_read = build_public;
        ASSIGN_OR_RETURN(std::shared_ptr<const std::vector<PageKey>> memo_rows,
                         MemoRows(*list_memo_, *memo, conn, mq));
        if (memo_rows == nullptr) {
          // Too many public templates to keep, or not worth keeping yet:
          // read them page by page.
          RETURN_IF_ERROR(add_statement(*public_fallback));
          continue;
        }
        Branch& b = branches[used++];
        if (mq.with_owner) b.skip_owner = &viewer;
        if (cursor_key) {
          b.next = static_cast<size_t>(
              std::partition_point(memo_rows->begin(), memo_rows->end(),
                                   [&](const PageKey& r) { return !before(*cursor_key, r); }) -
              memo_rows->begin());
        }
        b.memo = std::move(memo_rows);
      }
    }
    branches.resize(used);
    auto advance = [&](Branch& b) -> absl::Status {
      if (b.memo != nullptr) {
        const std::vector<PageKey>& m = *b.memo;
        while (b.next < m.size() && b.skip_owner != nullptr &&
               m[b.next].owner_account_id == *b.skip_owner) {
          ++b.next;
        }
        b.head = b.next < m.size() ? &m[b.next++] : nullptr;
        return absl::OkStatus();
      }
      ASSIGN_OR_RETURN(bool row, b.statement->Step());
      if (!row) {
        b.head = nullptr;
        return absl::OkStatus();
      }
      const SqliteStatement& s = *b.statement;
      read.push_back(PageKey{s.ColumnText(0), s.ColumnInt(1), s.ColumnInt(2),
                             by_name ? s.ColumnText(3) : std::string(), "", nullptr});
      b.head = &read.back();
      return absl::OkStatus();
    };
    for (Branch& b : branches) RETURN_IF_ERROR(advance(b));
    // The branches are merged here one row at a time, not by a UNION ALL ...
    // ORDER BY, so each statement is read only as far as the page takes rows
    // from it (not `limit` matches each) and no temporary b-tree sorts them
    // again.
    rows.reserve(std::min<size_t>(limit, 1024));
    while (rows.size() < limit) {
      Branch* next = nullptr;
      for (Branch& b : branches) {
        if (b.head != nullptr && (next == nullptr || before(*b.head, *next->head))) next = &b;
      }
      if (next == nullptr) break;
      rows.push_back(next->head);
      RETURN_IF_ERROR(advance(*next));
    }

    result.resize(rows.size());
    // The rows the cache lacks at the version this snapshot holds.
    absl::flat_hash_map<std::string, size_t> missing;
    std::vector<const std::string*> missing_ids;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (rows[i]->resolved != nullptr) {
        result[i] = rows[i]->resolved;
      } else if (auto cached = cache_.Find(rows[i]->id, rows[i]->version)) {
        rows[i]->resolved = cached;
        result[i] = std::move(cached);
      } else {
        missing[rows[i]->id] = i;
        missing_ids.push_back(&rows[i]->id);
      }
    }
    if (missing.empty()) return absl::OkStatus();
    std::vector<ImageTemplate> loaded(missing.size());
    std::vector<size_t> loaded_index;
    {
      ASSIGN_OR_RETURN(
          SqliteStatement s,
          conn.Prepare(absl::StrCat("SELECT ", internal::kTemplateColumns,
                                    " FROM image_templates t "
                                    "WHERE t.id IN (SELECT value FROM json_each(?1))")));
      s.Bind(1, JsonStringArray(missing_ids));
      while (true) {
        ASSIGN_OR_RETURN(bool row, s.Step());
        if (!row) break;
        ImageTemplate t = internal::TemplateFromRow(s);
        auto it = missing.find(t.id());
        if (it == missing.end() || loaded_index.size() == loaded.size()) continue;
        loaded[loaded_index.size()] = std::move(t);
        loaded_index.push_back(it->second);
      }
    }
    if (loaded_index.size() != missing.size()) {
      return absl::InternalError("image template rows changed inside one read snapshot");
    }
    std::vector<ImageTemplate*> to_fill;
    for (ImageTemplate& t : loaded) to_fill.push_back(&t);
    RETURN_IF_ERROR(LoadChildren(conn, to_fill));
    for (size_t j = 0; j < loaded.size(); ++j) {
      const size_t i = loaded_index[j];
      auto encoded = std::make_shared<const EncodedTemplate>(std::move(loaded[j]));
      cache_.Put(rows[i]->version, encoded);
      rows[i]->resolved = encoded;
      result[i] = std::move(encoded);
    }
    return absl::OkStatus();
  }));
  // Two branches yielding one id would leave a slot unfilled; callers
  // dereference every entry.
  for (const auto& entry : result) {
    if (entry == nullptr) {
      return absl::InternalError("image template list page has an unfilled entry");
    }
  }
  return result;
}

}  // namespace controlplane
