#include "controlplane/sqlite_template_store.h"
// List pages and the list memo: sqlite_template_store_list.cc.

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <openssl/crypto.h>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/internal/sqlite_template_list_parts.h"
#include "controlplane/sql_where.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/validation.h"

namespace controlplane {
namespace {

using imagetemplates::v1::ImageTemplate;
using imagetemplates::v1::ImageTemplateShare;

}  // namespace

namespace internal {

const char kTemplateColumns[] =
    "t.id, t.owner_account_id, t.name, t.note, t.visibility, t.status, t.source_server_id, "
    "t.configuration, t.deprecated, t.disabled, t.delete_protected, t.create_operation_id, "
    "t.create_time_us, t.update_time_us, t.deprecate_time_us";

ImageTemplate TemplateFromRow(const SqliteStatement& s) {
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

}  // namespace internal

namespace {

using internal::kTagSeparator;

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
                     conn.Prepare(absl::StrCat("SELECT ", internal::kTemplateColumns,
                                               " FROM image_templates t WHERE t.id = ?")));
    s.Bind(1, id);
    ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return absl::NotFoundError(absl::StrCat("image template ", id, " not found"));
    t = internal::TemplateFromRow(s);
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

// Copies the source server's software credentials, re-sealed for the
// template, in the transaction that records the template: deploys hand out
// these, never what the server holds later (a rotated password, or none once
// the server is gone). The plaintext never leaves this function.
absl::Status SnapshotCredentials(SqliteConnection& conn, const CredentialCipher* cipher,
                                 const ImageTemplate& t) {
  if (t.source_server_id().empty()) return absl::OkStatus();
  ASSIGN_OR_RETURN(SqliteStatement read,
                   conn.Prepare("SELECT position, software, username, password "
                                "FROM server_credentials WHERE server_id = ? ORDER BY position"));
  read.Bind(1, t.source_server_id());
  while (true) {
    ASSIGN_OR_RETURN(bool row, read.Step());
    if (!row) break;
    if (cipher == nullptr) {
      return absl::InternalError(
          "the template store has no credential key to keep the server's credentials");
    }
    const int position = static_cast<int>(read.ColumnInt(0));
    ASSIGN_OR_RETURN(std::string password,
                     cipher->Decrypt(read.ColumnBlob(3),
                                     ServerCredentialContext(t.source_server_id(), position)));
    absl::StatusOr<std::string> sealed =
        cipher->Encrypt(password, TemplateCredentialContext(t.id(), position));
    OPENSSL_cleanse(&password[0], password.size());
    RETURN_IF_ERROR(sealed.status());
    ASSIGN_OR_RETURN(SqliteStatement insert,
                     conn.Prepare("INSERT INTO template_credentials (template_id, position, "
                                  "software, username, password) VALUES (?, ?, ?, ?, ?)"));
    insert.Bind(1, t.id()).Bind(2, position).Bind(3, read.ColumnText(1));
    RETURN_IF_ERROR(insert.Bind(4, read.ColumnText(2)).BindBlob(5, *sealed).Run());
  }
  return absl::OkStatus();
}

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

SqliteTemplateStore::SqliteTemplateStore(SqliteDatabase* db, size_t cache_entries,
                                         int public_memo_after_pages)
    : SqliteTemplateStore(db, nullptr, cache_entries, public_memo_after_pages) {}

SqliteTemplateStore::SqliteTemplateStore(SqliteDatabase* db, const CredentialCipher* cipher,
                                         size_t cache_entries, int public_memo_after_pages)
    : db_(db),
      cipher_(cipher),
      public_memo_after_pages_(public_memo_after_pages),
      cache_(cache_entries), list_memo_(std::make_unique<internal::ListMemo>()) {
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
    if (after.status() == imagetemplates::v1::IMAGE_TEMPLATE_STATUS_DELETED) {
      // The record is gone for every purpose; so is its credential snapshot.
      ASSIGN_OR_RETURN(SqliteStatement forget,
                       conn.Prepare("DELETE FROM template_credentials WHERE template_id = ?"));
      RETURN_IF_ERROR(forget.Bind(1, std::string(id)).Run());
    }
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
    RETURN_IF_ERROR(SnapshotCredentials(conn, cipher_, t));
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
