// TemplateStore over the control plane's SQLite database (migration 2).
#ifndef CONTROLPLANE_SQLITE_TEMPLATE_STORE_H_
#define CONTROLPLANE_SQLITE_TEMPLATE_STORE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "controlplane/credential_cipher.h"
#include "controlplane/sql_where.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/template_cache.h"
#include "controlplane/template_store.h"

namespace controlplane {

namespace internal {
struct ListMemo;
}  // namespace internal

// Thread-safe. Does not own the database, which must outlive it. Gets and
// lists answer from a TemplateCache of decoded templates, each checked
// against its row's version in the reader's snapshot (migration 6); a get
// or a list page hands out the cached entries themselves
// (Get/ListEncodedTemplates). A list's rows shared with the viewer, and the
// public templates every list reads, are kept per read connection and
// query while no template, child row or share changes (internal::ListMemo,
// migration 9; lists are in sqlite_template_store_list.cc).
class SqliteTemplateStore final : public TemplateStore {
 public:
  // Templates kept decoded and encoded: about 1.5 KiB each.
  static constexpr size_t kDefaultCacheEntries = 50000;

  // A read connection builds its memo of public templates for a query only
  // after this many list pages since the last template change it saw, or
  // when at least this many came between the two changes before: where
  // changes come more often than list pages, rebuilding it after each would
  // cost more than reading the public rows page by page. 0: always.
  static constexpr int kDefaultPublicMemoAfterPages = 32;

  // Fills name_folded of rows migration 6 could not (non-ASCII names); a
  // failure is logged, not fatal.
  explicit SqliteTemplateStore(SqliteDatabase* db, size_t cache_entries = kDefaultCacheEntries,
                               int public_memo_after_pages = kDefaultPublicMemoAfterPages);
  // With `cipher` (not owned; the inventory store's, which must outlive it),
  // InsertTemplateWithOperation snapshots the source server's credentials
  // for deploys (migration 10). Without one it refuses to create a template
  // from a server that has credentials recorded.
  SqliteTemplateStore(SqliteDatabase* db, const CredentialCipher* cipher,
                      size_t cache_entries = kDefaultCacheEntries,
                      int public_memo_after_pages = kDefaultPublicMemoAfterPages);
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
  // List branches (shared, public) whose rows came from the list memo, or
  // were read; for tests.
  int64_t list_memo_hits() const;
  int64_t list_memo_misses() const;

 private:
  absl::Status FoldNames();

  SqliteDatabase* const db_;
  const CredentialCipher* const cipher_;
  const int64_t public_memo_after_pages_;
  TemplateCache cache_;
  std::unique_ptr<internal::ListMemo> list_memo_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_SQLITE_TEMPLATE_STORE_H_
