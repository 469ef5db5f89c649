#include "controlplane/sqlite_template_store.h"

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/sql_where.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/validation.h"

namespace controlplane {
namespace {

using imagetemplates::v1::ImageTemplate;
using imagetemplates::v1::ImageTemplateShare;

constexpr char kColumns[] =
    "t.id, t.owner_account_id, t.name, t.note, t.visibility, t.status, t.source_server_id, "
    "t.configuration, t.deprecated, t.disabled, t.delete_protected, t.create_operation_id, "
    "t.create_time_us, t.update_time_us, t.deprecate_time_us";

// Separates the tags in image_templates.tag_list (migration 6).
constexpr char kTagSeparator = '\x1f';

// "\x1fa\x1fb\x1f" for tags a, b; "" for none.
std::string TagList(const ImageTemplate& t) {
  if (t.tags_size() == 0) return "";
  std::string out(1, kTagSeparator);
  for (const std::string& tag : t.tags()) {
    out += tag;
    out += kTagSeparator;
  }
  return out;
}

ImageTemplate FromRow(const SqliteStatement& s) {
  ImageTemplate t;
  t.set_id(s.ColumnText(0));
  t.set_owner_account_id(s.ColumnText(1));
  t.set_name(s.ColumnText(2));
  t.set_note(s.ColumnText(3));
  t.set_visibility(static_cast<imagetemplates::v1::Visibility>(s.ColumnInt(4)));
  t.set_status(static_cast<imagetemplates::v1::ImageTemplateStatus>(s.ColumnInt(5)));
  t.set_source_server_id(s.ColumnText(6));
  std::string configuration = s.ColumnBlob(7);
  if (!configuration.empty()) t.mutable_configuration()->ParseFromString(configuration);
  t.set_deprecated(s.ColumnInt(8) != 0);
  t.set_disabled(s.ColumnInt(9) != 0);
  t.set_delete_protected(s.ColumnInt(10) != 0);
  t.set_create_operation_id(s.ColumnText(11));
  *t.mutable_create_time() = ToTimestamp(s.ColumnInt(12));
  *t.mutable_update_time() = ToTimestamp(s.ColumnInt(13));
  if (!s.ColumnIsNull(14)) *t.mutable_deprecate_time() = ToTimestamp(s.ColumnInt(14));
  return t;
}

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

// Reads tags, disks and locations of `templates` with one query per table.
absl::Status LoadChildren(SqliteConnection& conn, const std::vector<ImageTemplate*>& templates) {
  if (templates.empty()) return absl::OkStatus();
  absl::flat_hash_map<std::string, ImageTemplate*> by_id;
  for (ImageTemplate* t : templates) by_id[t->id()] = t;
  // One template (every get) is a plain primary-key prefix lookup; more
  // are one json_each list, so a page costs three statements, not 150.
  const bool one = templates.size() == 1;
  std::vector<const std::string*> id_list;
  for (ImageTemplate* t : templates) id_list.push_back(&t->id());
  const std::string ids = one ? templates[0]->id() : JsonStringArray(id_list);
  const char* const in = one ? "template_id = ?1" : "template_id IN (SELECT value FROM json_each(?1))";
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare(absl::StrCat("SELECT template_id, tag FROM image_template_tags "
                                               "WHERE ", in, " ORDER BY template_id, position")));
    s.Bind(1, ids);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      by_id[s.ColumnText(0)]->add_tags(s.ColumnText(1));
    }
  }
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare(absl::StrCat(
                         "SELECT template_id, device_index, boot, logical_size_bytes, "
                         "stored_size_bytes, manifest_digest FROM image_template_disks WHERE ",
                         in, " ORDER BY template_id, device_index")));
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
                     conn.Prepare(absl::StrCat(
                         "SELECT template_id, datacenter, status, operation_id, create_time_us "
                         "FROM image_template_locations WHERE ",
                         in, " ORDER BY template_id, rowid")));
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

// The tags, disks and locations of one template in one statement (a get
// runs this instead of LoadChildren's three): rows tagged by table, in each
// table's order.
absl::Status LoadOneTemplatesChildren(SqliteConnection& conn, ImageTemplate& t) {
  ASSIGN_OR_RETURN(
      SqliteStatement s,
      conn.Prepare("SELECT 1 AS k, position AS o, tag, 0, 0, 0, '' FROM image_template_tags "
                   "WHERE template_id = ?1 "
                   "UNION ALL SELECT 2, device_index, manifest_digest, boot, logical_size_bytes, "
                   "stored_size_bytes, '' FROM image_template_disks WHERE template_id = ?1 "
                   "UNION ALL SELECT 3, rowid, datacenter, status, create_time_us, 0, "
                   "operation_id FROM image_template_locations WHERE template_id = ?1 "
                   "ORDER BY k, o"));
  s.Bind(1, t.id());
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    switch (s.ColumnInt(0)) {
      case 1:
        t.add_tags(s.ColumnText(2));
        break;
      case 2: {
        auto* disk = t.add_disks();
        disk->set_device_index(static_cast<int32_t>(s.ColumnInt(1)));
        disk->set_manifest_digest(s.ColumnText(2));
        disk->set_boot(s.ColumnInt(3) != 0);
        disk->set_logical_size_bytes(s.ColumnInt(4));
        disk->set_stored_size_bytes(s.ColumnInt(5));
        break;
      }
      default: {
        auto* location = t.add_locations();
        location->set_datacenter(s.ColumnText(2));
        location->set_status(
            static_cast<imagetemplates::v1::ImageTemplateLocationStatus>(s.ColumnInt(3)));
        *location->mutable_create_time() = ToTimestamp(s.ColumnInt(4));
        location->set_operation_id(s.ColumnText(6));
        break;
      }
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<ImageTemplate> ReadTemplate(SqliteConnection& conn, absl::string_view id) {
  ImageTemplate t;
  {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare(absl::StrCat("SELECT ", kColumns,
                                               " FROM image_templates t WHERE t.id = ?")));
    s.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("image template ", id, " not found"));
    t = FromRow(s);
  }
  RETURN_IF_ERROR(LoadOneTemplatesChildren(conn, t));
  return t;
}

absl::StatusOr<bool> NameTaken(SqliteConnection& conn, absl::string_view owner,
                               absl::string_view name, absl::string_view except_id) {
  ASSIGN_OR_RETURN(SqliteStatement s,
                   conn.Prepare("SELECT 1 FROM image_templates WHERE owner_account_id = ? AND "
                                "name = ? AND status <> 5 AND id <> ?"));
  s.Bind(1, owner).Bind(2, name).Bind(3, except_id);
  return s.Step();
}

absl::Status NameTakenError(absl::string_view name) {
  return absl::AlreadyExistsError(absl::StrCat(
      "name: the account already has an image template named \"", name,
      "\"; choose another name"));
}

// Replaces the tags, disks and locations of `t` with those in the message.
absl::Status WriteChildren(SqliteConnection& conn, const ImageTemplate& t) {
  for (const std::string& tag : t.tags()) {
    // tag_list could not tell such a tag from two (callers validate tags as
    // printable anyway).
    if (tag.find(kTagSeparator) != std::string::npos) {
      return absl::InvalidArgumentError("tags: must not contain control characters");
    }
  }
  for (const char* sql : {"DELETE FROM image_template_tags WHERE template_id = ?",
                          "DELETE FROM image_template_disks WHERE template_id = ?",
                          "DELETE FROM image_template_locations WHERE template_id = ?"}) {
    ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql));
    RETURN_IF_ERROR(s.Bind(1, t.id()).Run());
  }
  for (int i = 0; i < t.tags_size(); ++i) {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("INSERT INTO image_template_tags (template_id, position, tag) "
                                  "VALUES (?, ?, ?)"));
    RETURN_IF_ERROR(s.Bind(1, t.id()).Bind(2, i).Bind(3, t.tags(i)).Run());
  }
  for (const auto& disk : t.disks()) {
    ASSIGN_OR_RETURN(
        SqliteStatement s,
        conn.Prepare("INSERT INTO image_template_disks (template_id, device_index, boot, "
                     "logical_size_bytes, stored_size_bytes, manifest_digest) "
                     "VALUES (?, ?, ?, ?, ?, ?)"));
    s.Bind(1, t.id()).Bind(2, disk.device_index()).Bind(3, disk.boot());
    s.Bind(4, disk.logical_size_bytes()).Bind(5, disk.stored_size_bytes());
    RETURN_IF_ERROR(s.Bind(6, disk.manifest_digest()).Run());
  }
  for (const auto& location : t.locations()) {
    ASSIGN_OR_RETURN(
        SqliteStatement s,
        conn.Prepare("INSERT INTO image_template_locations (template_id, datacenter, status, "
                     "operation_id, create_time_us) VALUES (?, ?, ?, ?, ?)"));
    s.Bind(1, t.id()).Bind(2, location.datacenter()).Bind(3, static_cast<int>(location.status()));
    s.Bind(4, location.operation_id()).Bind(5, FromTimestamp(location.create_time()));
    RETURN_IF_ERROR(s.Run());
  }
  return absl::OkStatus();
}

// Binds the columns written by both INSERT and UPDATE as ?2..?17 (?1 = id).
void BindRow(SqliteStatement& s, const ImageTemplate& t) {
  s.Bind(1, t.id())
      .Bind(2, t.owner_account_id())
      .Bind(3, t.name())
      .Bind(4, t.note())
      .Bind(5, static_cast<int>(t.visibility()))
      .Bind(6, static_cast<int>(t.status()))
      .Bind(7, t.source_server_id());
  s.BindBlob(8, t.has_configuration() ? t.configuration().SerializeAsString() : std::string());
  s.Bind(9, t.deprecated()).Bind(10, t.disabled()).Bind(11, t.delete_protected());
  s.Bind(12, t.create_operation_id());
  s.Bind(13, FromTimestamp(t.create_time())).Bind(14, FromTimestamp(t.update_time()));
  if (t.has_deprecate_time()) {
    s.Bind(15, FromTimestamp(t.deprecate_time()));
  } else {
    s.BindNull(15);
  }
  s.Bind(16, TagList(t));
  s.Bind(17, LowercaseUtf8(t.name()));
}

class SqliteTemplateTransaction final : public TemplateTransaction {
 public:
  SqliteTemplateTransaction(SqliteConnection& conn, ImageTemplate t)
      : conn_(conn), template_(std::move(t)) {}

  ImageTemplate& image_template() override { return template_; }

  absl::StatusOr<bool> IsSharedWith(absl::string_view account_id) override {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn_.Prepare("SELECT 1 FROM image_template_shares WHERE template_id = ? "
                                   "AND account_id = ?"));
    s.Bind(1, template_.id()).Bind(2, account_id);
    return s.Step();
  }

  absl::StatusOr<int64_t> ShareCount() override {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn_.Prepare("SELECT COUNT(*) FROM image_template_shares "
                                   "WHERE template_id = ?"));
    s.Bind(1, template_.id());
    ASSIGN_OR_RETURN(bool row, s.Step());
    return row ? s.ColumnInt(0) : 0;
  }

  absl::Status AddShare(absl::string_view account_id, int64_t create_time_us) override {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn_.Prepare("INSERT INTO image_template_shares (template_id, account_id, "
                                   "create_time_us) VALUES (?, ?, ?) "
                                   "ON CONFLICT (template_id, account_id) DO NOTHING"));
    return s.Bind(1, template_.id()).Bind(2, account_id).Bind(3, create_time_us).Run();
  }

  absl::Status RemoveShare(absl::string_view account_id) override {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn_.Prepare("DELETE FROM image_template_shares WHERE template_id = ? "
                                   "AND account_id = ?"));
    return s.Bind(1, template_.id()).Bind(2, account_id).Run();
  }

  absl::Status RemoveAllShares() override {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn_.Prepare("DELETE FROM image_template_shares WHERE template_id = ?"));
    return s.Bind(1, template_.id()).Run();
  }

  absl::StatusOr<int64_t> CountUnfinishedOperations(
      const std::vector<imagetemplates::v1::OperationKind>& kinds) override {
    return ::controlplane::CountUnfinishedOperations(conn_, template_.id(), kinds);
  }

  absl::Status InsertOperation(const imagetemplates::v1::Operation& operation,
                               const OperationInternals& internals) override {
    return InsertOperationRow(conn_, operation, internals);
  }

 private:
  SqliteConnection& conn_;
  ImageTemplate template_;
};

}  // namespace

namespace {

absl::Status InsertTemplateRow(SqliteConnection& conn, const ImageTemplate& t) {
  if (t.status() != imagetemplates::v1::IMAGE_TEMPLATE_STATUS_DELETED) {
    ASSIGN_OR_RETURN(bool taken, NameTaken(conn, t.owner_account_id(), t.name(), t.id()));
    if (taken) return NameTakenError(t.name());
  }
  ASSIGN_OR_RETURN(
      SqliteStatement s,
      conn.Prepare("INSERT INTO image_templates (id, owner_account_id, name, note, visibility, "
                   "status, source_server_id, configuration, deprecated, disabled, "
                   "delete_protected, create_operation_id, create_time_us, update_time_us, "
                   "deprecate_time_us, tag_list, name_folded, version) VALUES (?1, ?2, ?3, ?4, "
                   "?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"));
  BindRow(s, t);
  // Rows are never deleted, so ids are not reused; starting at the insert
  // time keeps even a re-created id off the versions it had before.
  s.Bind(18, NowMicros());
  absl::Status status = s.Run();
  if (absl::IsAlreadyExists(status)) {
    return absl::AlreadyExistsError(absl::StrCat("image template ", t.id(), " already exists"));
  }
  if (absl::IsFailedPrecondition(status)) {
    return absl::FailedPreconditionError(
        absl::StrCat("owner account ", t.owner_account_id(), " does not exist"));
  }
  RETURN_IF_ERROR(status);
  return WriteChildren(conn, t);
}

}  // namespace

SqliteTemplateStore::SqliteTemplateStore(SqliteDatabase* db, size_t cache_entries)
    : db_(db), cache_(cache_entries), shares_memo_(std::make_unique<SharesMemo>()) {
  absl::Status folded = FoldNames();
  if (!folded.ok()) {
    common::LogError("name_contains may miss templates with non-ASCII names: %s",
                     folded.ToString());
  }
}

SqliteTemplateStore::~SqliteTemplateStore() = default;

absl::Status SqliteTemplateStore::FoldNames() {
  int64_t count = 0;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    std::vector<std::pair<std::string, std::string>> rows;
    {
      ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare("SELECT id, name FROM image_templates "
                                                       "WHERE name_folded IS NULL"));
      while (true) {
        ASSIGN_OR_RETURN(bool row, s.Step());
        if (!row) break;
        rows.emplace_back(s.ColumnText(0), s.ColumnText(1));
      }
    }
    for (const auto& [id, name] : rows) {
      // Not a change of the template: version (and the cache) stay.
      ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare("UPDATE image_templates SET "
                                                       "name_folded = ? WHERE id = ?"));
      RETURN_IF_ERROR(s.Bind(1, LowercaseUtf8(name)).Bind(2, id).Run());
    }
    count = static_cast<int64_t>(rows.size());
    return absl::OkStatus();
  }));
  if (count > 0) common::LogInfo("lowercased %d non-ASCII template names", count);
  return absl::OkStatus();
}

absl::Status SqliteTemplateStore::InsertTemplate(const ImageTemplate& t) {
  return db_->Transaction(
      [&](SqliteConnection& conn) { return InsertTemplateRow(conn, t); });
}

absl::StatusOr<ImageTemplate> SqliteTemplateStore::GetTemplate(absl::string_view id) {
  ASSIGN_OR_RETURN(std::shared_ptr<const EncodedTemplate> t, GetEncodedTemplate(id));
  return t->image_template;
}

absl::StatusOr<std::shared_ptr<const EncodedTemplate>> SqliteTemplateStore::GetEncodedTemplate(
    absl::string_view id) {
  std::shared_ptr<const EncodedTemplate> t;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT version FROM image_templates WHERE id = ?"));
    s.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("image template ", id, " not found"));
    const int64_t version = s.ColumnInt(0);
    if ((t = cache_.Find(id, version))) return absl::OkStatus();
    // Same snapshot as the version read above.
    ASSIGN_OR_RETURN(ImageTemplate read, ReadTemplate(conn, id));
    t = std::make_shared<const EncodedTemplate>(std::move(read));
    cache_.Put(version, t);
    return absl::OkStatus();
  }));
  return t;
}

absl::StatusOr<bool> SqliteTemplateStore::IsSharedWith(absl::string_view template_id,
                                                       absl::string_view account_id) {
  bool shared = false;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT 1 FROM image_template_shares WHERE template_id = ? "
                                  "AND account_id = ?"));
    s.Bind(1, template_id).Bind(2, account_id);
    ASSIGN_OR_RETURN(shared, s.Step());
    return absl::OkStatus();
  }));
  return shared;
}

// What orders and identifies a row of a list page.
struct SqliteTemplateStore::PageKey {
  std::string id;
  int64_t version = 0;
  int64_t create_time_us = 0;
  std::string name;  // only when it orders the page
};

// The shared branch of a list (templates shared with the viewer) is the one
// branch no index reads in page order: SQLite looks up every share of the
// viewer and sorts them on every page. Its rows are the same from page to
// page while nothing is written, so each read connection keeps them per
// query (its SQL and every value bound) for as long as its
// (data_version, total_changes()) pair, read inside the page's own read
// transaction, stays the same: data_version changes when any other
// connection or process commits, total_changes() when this connection
// writes (reads run on the writer for an in-memory database). That is the
// test SQLite's own page cache relies on, so a memo is never older than the
// snapshot that reads it.
struct SqliteTemplateStore::SharesMemo {
  // Bounds per connection (about 100 bytes a row): a query with more rows
  // is not kept (they are still read and used); past the total, the
  // connection's memo starts over.
  static constexpr size_t kMaxRowsPerQuery = 4096;
  static constexpr size_t kMaxRows = 65536;
  struct Connection {
    int64_t data_version = -1;
    int64_t total_changes = -1;
    size_t total_rows = 0;
    absl::flat_hash_map<std::string, std::shared_ptr<const std::vector<PageKey>>> rows;
  };
  absl::Mutex mu;
  // Each Connection is used only by the unit of work holding its connection.
  absl::flat_hash_map<const SqliteConnection*, std::unique_ptr<Connection>> connections
      ABSL_GUARDED_BY(mu);
  // For tests.
  std::atomic<int64_t> hits{0}, misses{0};
};

absl::StatusOr<std::shared_ptr<const std::vector<SqliteTemplateStore::PageKey>>>
SqliteTemplateStore::SharedRows(
    SqliteConnection& conn, const std::string& memo_key, const std::string& sql,
    const SqlWhere& where, bool with_name) {
  SharesMemo::Connection* memo;
  {
    absl::MutexLock lock(&shares_memo_->mu);
    std::unique_ptr<SharesMemo::Connection>& slot = shares_memo_->connections[&conn];
    if (slot == nullptr) slot = std::make_unique<SharesMemo::Connection>();
    memo = slot.get();
  }
  {
    ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare("SELECT data_version, total_changes() "
                                                     "FROM pragma_data_version"));
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::InternalError("PRAGMA data_version returned no row");
    const int64_t data_version = s.ColumnInt(0), total_changes = s.ColumnInt(1);
    if (data_version != memo->data_version || total_changes != memo->total_changes) {
      memo->rows.clear();
      memo->total_rows = 0;
      memo->data_version = data_version;
      memo->total_changes = total_changes;
    }
  }
  auto it = memo->rows.find(memo_key);
  if (it != memo->rows.end()) {
    shares_memo_->hits.fetch_add(1, std::memory_order_relaxed);
    return it->second;
  }
  shares_memo_->misses.fetch_add(1, std::memory_order_relaxed);
  auto rows = std::make_shared<std::vector<PageKey>>();
  ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql));
  where.Bind(s, 1);
  while (true) {
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) break;
    rows->push_back(PageKey{s.ColumnText(0), s.ColumnInt(1), s.ColumnInt(2),
                            with_name ? s.ColumnText(3) : std::string()});
  }
  if (rows->size() <= SharesMemo::kMaxRowsPerQuery) {
    // Each key counts its rows plus one, so empty results are bounded too.
    if (memo->total_rows + rows->size() + 1 > SharesMemo::kMaxRows) {
      memo->rows.clear();
      memo->total_rows = 0;
    }
    memo->total_rows += rows->size() + 1;
    memo->rows[memo_key] = rows;
  }
  return std::shared_ptr<const std::vector<PageKey>>(std::move(rows));
}

int64_t SqliteTemplateStore::shares_memo_hits() const {
  return shares_memo_->hits.load(std::memory_order_relaxed);
}
int64_t SqliteTemplateStore::shares_memo_misses() const {
  return shares_memo_->misses.load(std::memory_order_relaxed);
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
  // The filters every visible template must pass. `values_key` gets every
  // value they bind, in order (length-prefixed), to key the shares memo.
  SqlWhere filters;
  std::string values_key;
  auto add = [&](const char* fragment, std::vector<SqlWhere::Value> values = {}) {
    for (const SqlWhere::Value& v : values) {
      std::string text = std::holds_alternative<int64_t>(v) ? absl::StrCat("i", std::get<int64_t>(v))
                                                            : absl::StrCat("s", std::get<std::string>(v));
      absl::StrAppend(&values_key, text.size(), ":", text);
    }
    filters.Add(fragment, std::move(values));
  };
  if (!q.include_deprecated) {
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
  if (!q.tag.empty() && q.tag.find(kTagSeparator) == std::string::npos) {
    // A test on the row (and on the covering indexes), not a probe per row.
    add("instr(t.tag_list, ?) > 0",
        {absl::StrCat(std::string(1, kTagSeparator), q.tag, std::string(1, kTagSeparator))});
  } else if (!q.tag.empty()) {
    add("EXISTS (SELECT 1 FROM image_template_tags g WHERE g.template_id = t.id AND g.tag = ?)",
        {q.tag});
  }
  const bool by_name = q.order == TemplateOrder::kName;
  // Where the page starts; kept apart from `filters` because the shares
  // memo holds the shared branch's rows before any cursor.
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
    cursor_key = PageKey{q.after->id, 0, q.after->create_time_us, q.after->name};
  }
  const std::string key = by_name ? "name" : "create_time_us";
  const std::string dir = q.descending ? " DESC" : "";
  const std::string order = absl::StrCat(" ORDER BY t.", key, dir, ", t.id", dir);

  // Operators see everything: one ordered scan. Everybody else sees three
  // disjoint sets (own; shared with them; public), each read in key order
  // from its own index, so a page costs the same whether 10 or 10,000 public
  // templates exist.
  std::vector<SqlWhere> branches;
  std::vector<std::string> from;
  // The branch whose rows come from the shares memo instead of a statement.
  size_t shared_branch = SIZE_MAX;
  if (q.all_accounts) {
    branches.push_back(filters);
    from.push_back(" FROM image_templates t");
  } else {
    const std::string& viewer = q.viewer_account_id;
    SqlWhere own;
    own.Add("t.owner_account_id = ?", {viewer});
    SqlWhere shared;
    shared.Add("s.account_id = ?", {viewer});
    shared.Add("t.owner_account_id <> ? AND t.visibility <> 3", {viewer});
    SqlWhere public_others;
    public_others.Add("t.visibility = 3 AND t.owner_account_id <> ?", {viewer});
    for (SqlWhere* w : {&shared, &public_others}) {
      w->Add("t.disabled = 0 AND t.status NOT IN (4, 5)");
    }
    branches = {own, shared, public_others};
    from = {" FROM image_templates t",
            " FROM image_template_shares s JOIN image_templates t "
            "INDEXED BY image_templates_id_cover ON t.id = s.template_id",
            " FROM image_templates t"};
    shared_branch = 1;
  }
  // Only what orders and identifies the page: the covering indexes answer
  // it without table rows, and TemplateCache supplies the templates. The
  // name only when it orders the page (one string copy less per row).
  const std::string columns =
      absl::StrCat("SELECT t.id, t.version, t.create_time_us", by_name ? ", t.name" : "");
  std::vector<std::string> sql;
  // Every row of the shared branch: no cursor, no limit.
  std::string shared_sql;
  SqlWhere shared_where;
  for (size_t i = 0; i < branches.size(); ++i) {
    branches[i].AddAll(filters);
    if (i == shared_branch) {
      shared_sql = absl::StrCat(columns, from[i], branches[i].Sql(), order);
      shared_where = branches[i];
    }
    branches[i].AddAll(cursor);
    sql.push_back(absl::StrCat(columns, from[i], branches[i].Sql(), order, " LIMIT ?"));
  }
  // The shared branch's SQL and every value it binds: the viewer (twice)
  // and the filters'.
  const std::string memo_key =
      shared_branch == SIZE_MAX
          ? std::string()
          : absl::StrCat(shared_sql.size(), ":", shared_sql, q.viewer_account_id.size(), ":",
                         q.viewer_account_id, values_key);
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
    std::vector<PageKey> rows;
    {
      // The shared branch's rows after the cursor, from the memo.
      std::shared_ptr<const std::vector<PageKey>> shared_rows;
      size_t shared_next = 0;
      if (shared_branch != SIZE_MAX) {
        ASSIGN_OR_RETURN(shared_rows,
                         SharedRows(conn, memo_key, shared_sql, shared_where, by_name));
        if (cursor_key) {
          while (shared_next < shared_rows->size() &&
                 !before(*cursor_key, (*shared_rows)[shared_next])) {
            ++shared_next;
          }
        }
      }
      // The branches are merged here one row at a time, not by a UNION ALL
      // ... ORDER BY, so each is read only as far as the page takes rows
      // from it (not `limit` matches each) and no temporary b-tree sorts
      // them again.
      std::vector<std::optional<SqliteStatement>> statements(branches.size());
      std::vector<std::optional<PageKey>> heads(branches.size());
      auto advance = [&](size_t i) -> absl::Status {
        if (i == shared_branch) {
          if (shared_next < shared_rows->size()) {
            heads[i] = (*shared_rows)[shared_next++];
          } else {
            heads[i].reset();
          }
          return absl::OkStatus();
        }
        ASSIGN_OR_RETURN(bool row, statements[i]->Step());
        if (!row) {
          heads[i].reset();
          return absl::OkStatus();
        }
        const SqliteStatement& s = *statements[i];
        heads[i] = PageKey{s.ColumnText(0), s.ColumnInt(1), s.ColumnInt(2),
                           by_name ? s.ColumnText(3) : std::string()};
        return absl::OkStatus();
      };
      for (size_t i = 0; i < branches.size(); ++i) {
        if (i != shared_branch) {
          ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql[i]));
          const int index = branches[i].Bind(s, 1);
          s.Bind(index, q.limit);
          statements[i].emplace(std::move(s));
        }
        RETURN_IF_ERROR(advance(i));
      }
      rows.reserve(std::min<size_t>(limit, 1024));
      while (rows.size() < limit) {
        size_t next = heads.size();
        for (size_t i = 0; i < heads.size(); ++i) {
          if (heads[i] && (next == heads.size() || before(*heads[i], *heads[next]))) next = i;
        }
        if (next == heads.size()) break;
        rows.push_back(std::move(*heads[next]));
        RETURN_IF_ERROR(advance(next));
      }
    }
    result.resize(rows.size());
    // The rows the cache lacks at the version this snapshot holds.
    absl::flat_hash_map<std::string, size_t> missing;
    std::vector<const std::string*> missing_ids;
    for (size_t i = 0; i < rows.size(); ++i) {
      if (auto cached = cache_.Find(rows[i].id, rows[i].version)) {
        result[i] = std::move(cached);
      } else {
        missing[rows[i].id] = i;
        missing_ids.push_back(&rows[i].id);
      }
    }
    if (missing.empty()) return absl::OkStatus();
    std::vector<ImageTemplate> loaded(missing.size());
    std::vector<size_t> loaded_index;
    {
      ASSIGN_OR_RETURN(
          SqliteStatement s,
          conn.Prepare(absl::StrCat("SELECT ", kColumns, " FROM image_templates t "
                                    "WHERE t.id IN (SELECT value FROM json_each(?1))")));
      s.Bind(1, JsonStringArray(missing_ids));
      while (true) {
        ASSIGN_OR_RETURN(bool row, s.Step());
        if (!row) break;
        ImageTemplate t = FromRow(s);
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
      cache_.Put(rows[i].version, encoded);
      result[i] = std::move(encoded);
    }
    return absl::OkStatus();
  }));
  // Two scans yielding one id would leave a slot unfilled; callers
  // dereference every entry.
  for (const auto& entry : result) {
    if (entry == nullptr) {
      return absl::InternalError("image template list page has an unfilled entry");
    }
  }
  return result;
}

absl::StatusOr<std::vector<ImageTemplateShare>> SqliteTemplateStore::ListShares(
    absl::string_view template_id, absl::string_view after_account_id, int limit) {
  std::vector<ImageTemplateShare> shares;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT account_id, create_time_us FROM image_template_shares "
                                  "WHERE template_id = ? AND account_id > ? "
                                  "ORDER BY account_id LIMIT ?"));
    s.Bind(1, template_id).Bind(2, after_account_id).Bind(3, limit);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ImageTemplateShare share;
      share.set_account_id(s.ColumnText(0));
      *share.mutable_create_time() = ToTimestamp(s.ColumnInt(1));
      shares.push_back(std::move(share));
    }
    return absl::OkStatus();
  }));
  return shares;
}

absl::StatusOr<bool> SqliteTemplateStore::NameInUse(absl::string_view owner_account_id,
                                                    absl::string_view name) {
  bool taken = false;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(taken, NameTaken(conn, owner_account_id, name, ""));
    return absl::OkStatus();
  }));
  return taken;
}

absl::Status SqliteTemplateStore::ReadUsage(SqliteConnection& conn,
                                            const std::string& account_id,
                                            int64_t* image_template_count,
                                            int64_t* stored_bytes) {
  ASSIGN_OR_RETURN(
      SqliteStatement s,
      conn.Prepare("SELECT COUNT(*), (SELECT COALESCE(SUM(d.stored_size_bytes), 0) FROM "
                   "image_template_disks d JOIN image_templates t2 ON t2.id = d.template_id "
                   "WHERE t2.owner_account_id = ?1 AND t2.status <> 5) "
                   "FROM image_templates t WHERE t.owner_account_id = ?1 AND t.status <> 5"));
  s.Bind(1, account_id);
  ASSIGN_OR_RETURN(bool row, s.Step());
  *image_template_count = row ? s.ColumnInt(0) : 0;
  *stored_bytes = row ? s.ColumnInt(1) : 0;
  return absl::OkStatus();
}

absl::StatusOr<TemplateUsage> SqliteTemplateStore::GetUsage(absl::string_view account_id) {
  TemplateUsage usage;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) {
    return ReadUsage(conn, std::string(account_id), &usage.template_count, &usage.stored_bytes);
  }));
  return usage;
}

absl::StatusOr<ImageTemplate> SqliteTemplateStore::MutateTemplate(absl::string_view id,
                                                                  const Mutator& mutate) {
  ImageTemplate result;
  RETURN_IF_ERROR(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(ImageTemplate before, ReadTemplate(conn, id));
    SqliteTemplateTransaction txn(conn, before);
    RETURN_IF_ERROR(mutate(txn));
    ImageTemplate& after = txn.image_template();
    // Identity and creation never change.
    after.set_id(before.id());
    after.set_owner_account_id(before.owner_account_id());
    *after.mutable_create_time() = before.create_time();
    if (after.name() != before.name() &&
        after.status() != imagetemplates::v1::IMAGE_TEMPLATE_STATUS_DELETED) {
      ASSIGN_OR_RETURN(bool taken, NameTaken(conn, after.owner_account_id(), after.name(), id));
      if (taken) return NameTakenError(after.name());
    }
    ASSIGN_OR_RETURN(
        SqliteStatement s,
        conn.Prepare("UPDATE image_templates SET owner_account_id = ?2, name = ?3, note = ?4, "
                     "visibility = ?5, status = ?6, source_server_id = ?7, configuration = ?8, "
                     "deprecated = ?9, disabled = ?10, delete_protected = ?11, "
                     "create_operation_id = ?12, create_time_us = ?13, update_time_us = ?14, "
                     "deprecate_time_us = ?15, tag_list = ?16, name_folded = ?17, "
                     "version = version + 1 WHERE id = ?1"));
    BindRow(s, after);
    RETURN_IF_ERROR(s.Run());
    RETURN_IF_ERROR(WriteChildren(conn, after));
    result = after;
    return absl::OkStatus();
  }));
  return result;
}

absl::Status SqliteTemplateStore::InsertTemplateWithOperation(
    const ImageTemplate& t, const imagetemplates::v1::Operation& operation,
    const OperationInternals& internals) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(int64_t running,
                     CountUnfinishedOperations(conn, operation.target().id(),
                                               {imagetemplates::v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE}));
    if (running > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "server ", operation.target().id(),
          " is busy: another operation is capturing it; wait for it to end or cancel it"));
    }
    RETURN_IF_ERROR(InsertTemplateRow(conn, t));
    return InsertOperationRow(conn, operation, internals);
  });
}

absl::Status SqliteTemplateStore::AddImageReplica(const ImageReplica& replica) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("INSERT INTO image_replicas (template_id, image_id, node_id, "
                                  "manifest_digest, create_time_us) VALUES (?, ?, ?, ?, ?) "
                                  "ON CONFLICT (image_id, node_id) DO UPDATE SET "
                                  "manifest_digest = excluded.manifest_digest"));
    s.Bind(1, replica.template_id).Bind(2, replica.image_id).Bind(3, replica.node_id);
    s.Bind(4, replica.manifest_digest).Bind(5, NowMicros());
    absl::Status status = s.Run();
    if (absl::IsFailedPrecondition(status)) {
      return absl::FailedPreconditionError(
          absl::StrCat("storage node ", replica.node_id, " is not registered"));
    }
    return status;
  });
}

absl::StatusOr<std::vector<ImageReplica>> SqliteTemplateStore::ListImageReplicas(
    absl::string_view template_id) {
  std::vector<ImageReplica> replicas;
  RETURN_IF_ERROR(db_->Read([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("SELECT template_id, image_id, node_id, manifest_digest "
                                  "FROM image_replicas WHERE template_id = ? "
                                  "ORDER BY image_id, create_time_us, node_id"));
    s.Bind(1, template_id);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      replicas.push_back({s.ColumnText(0), s.ColumnText(1), s.ColumnText(2), s.ColumnText(3)});
    }
    return absl::OkStatus();
  }));
  return replicas;
}

absl::Status SqliteTemplateStore::RemoveImageReplica(absl::string_view image_id,
                                                     absl::string_view node_id) {
  return db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(SqliteStatement s,
                     conn.Prepare("DELETE FROM image_replicas WHERE image_id = ? AND node_id = ?"));
    return s.Bind(1, image_id).Bind(2, node_id).Run();
  });
}

}  // namespace controlplane
