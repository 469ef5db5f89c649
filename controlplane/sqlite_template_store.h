// TemplateStore over the control plane's SQLite database (migration 2).
#ifndef CONTROLPLANE_SQLITE_TEMPLATE_STORE_H_
#define CONTROLPLANE_SQLITE_TEMPLATE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "controlplane/sql_where.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/template_cache.h"
#include "controlplane/template_store.h"

namespace controlplane {

// Thread-safe. Does not own the database, which must outlive it. Gets and
// lists answer from a TemplateCache of decoded templates, each checked
// against its row's version in the reader's snapshot (migration 6); a get
// or a list page hands out the cached entries themselves
// (Get/ListEncodedTemplates). A list's shared-with-the-viewer rows are kept
// per read connection while nothing is committed (SharesMemo in the .cc).
class SqliteTemplateStore final : public TemplateStore {
 public:
  // Templates kept decoded and encoded: about 1.5 KiB each.
  static constexpr size_t kDefaultCacheEntries = 50000;

  // Fills name_folded of rows migration 6 could not (non-ASCII names); a
  // failure is logged, not fatal.
  explicit SqliteTemplateStore(SqliteDatabase* db, size_t cache_entries = kDefaultCacheEntries);
  SqliteTemplateStore(const SqliteTemplateStore&) = delete;
  SqliteTemplateStore& operator=(const SqliteTemplateStore&) = delete;
  ~SqliteTemplateStore() override;

  // Inside any unit of work: the account's templates not DELETED and the sum
  // of their disks' stored bytes. Matches SqliteIdentityStore::UsageReader.
  static absl::Status ReadUsage(SqliteConnection& conn, const std::string& account_id,
                                int64_t* image_template_count, int64_t* stored_bytes);

  absl::Status InsertTemplate(const imagetemplates::v1::ImageTemplate& image_template) override;
  absl::StatusOr<imagetemplates::v1::ImageTemplate> GetTemplate(absl::string_view id) override;
  absl::StatusOr<std::shared_ptr<const EncodedTemplate>> GetEncodedTemplate(
      absl::string_view id) override;
  absl::StatusOr<bool> IsSharedWith(absl::string_view template_id,
                                    absl::string_view account_id) override;
  absl::StatusOr<std::vector<imagetemplates::v1::ImageTemplate>> ListTemplates(
      const TemplateQuery& query) override;
  absl::StatusOr<std::vector<std::shared_ptr<const EncodedTemplate>>> ListEncodedTemplates(
      const TemplateQuery& query) override;
  absl::StatusOr<std::vector<imagetemplates::v1::ImageTemplateShare>> ListShares(
      absl::string_view template_id, absl::string_view after_account_id, int limit) override;
  absl::StatusOr<bool> NameInUse(absl::string_view owner_account_id,
                                 absl::string_view name) override;
  absl::StatusOr<TemplateUsage> GetUsage(absl::string_view account_id) override;
  absl::StatusOr<imagetemplates::v1::ImageTemplate> MutateTemplate(
      absl::string_view id, const Mutator& mutate) override;
  absl::Status InsertTemplateWithOperation(
      const imagetemplates::v1::ImageTemplate& image_template,
      const imagetemplates::v1::Operation& operation,
      const OperationInternals& internals) override;
  absl::Status AddImageReplica(const ImageReplica& replica) override;
  absl::StatusOr<std::vector<ImageReplica>> ListImageReplicas(
      absl::string_view template_id) override;
  absl::Status RemoveImageReplica(absl::string_view image_id,
                                  absl::string_view node_id) override;

  // The decoded-template cache, for tests.
  const TemplateCache& cache() const { return cache_; }
  // List pages whose shared rows came from the memo, or were read; for tests.
  int64_t shares_memo_hits() const;
  int64_t shares_memo_misses() const;

 private:
  struct PageKey;
  struct SharesMemo;
  absl::Status FoldNames();
  // The shared branch's rows in page order (`sql` with `where` bound), from
  // this connection's memo when nothing was committed since it was filled.
  absl::StatusOr<std::shared_ptr<const std::vector<PageKey>>> SharedRows(
      SqliteConnection& conn, const std::string& memo_key, const std::string& sql,
      const SqlWhere& where, bool with_name);

  SqliteDatabase* const db_;
  TemplateCache cache_;
  std::unique_ptr<SharesMemo> shares_memo_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_TEMPLATE_STORE_H_
