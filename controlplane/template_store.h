// Storage of image template records, their tags, disks, locations and shares.
#ifndef CONTROLPLANE_TEMPLATE_STORE_H_
#define CONTROLPLANE_TEMPLATE_STORE_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "controlplane/operation_store.h"
#include "imagetemplates/v1/image_templates.pb.h"
#include "imagetemplates/v1/operations.pb.h"

namespace controlplane {

enum class TemplateOrder { kCreateTime, kName };

// Where a list resumes: strictly after the row with this sort key and id.
// Only the field of the query's order is used.
struct TemplateCursor {
  std::string name;
  int64_t create_time_us = 0;
  std::string id;
};

struct TemplateQuery {
  // Whose view the list is. Non-owners see a template only if it is public
  // or shared with them, enabled, and not DELETING/DELETED. Ignored (every
  // template counts as visible) when all_accounts is set, for operators.
  std::string viewer_account_id;
  bool all_accounts = false;
  // Case-insensitive (Unicode lowercase) substring of the name; empty: any.
  std::string name_contains;
  // Empty: any owner.
  std::string owner_account_id;
  // UNSPECIFIED: any.
  imagetemplates::v1::Visibility visibility = imagetemplates::v1::VISIBILITY_UNSPECIFIED;
  // UNSPECIFIED: any but DELETED.
  imagetemplates::v1::ImageTemplateStatus status =
      imagetemplates::v1::IMAGE_TEMPLATE_STATUS_UNSPECIFIED;
  std::string tag;
  // Otherwise deprecated templates of other accounts than the viewer's are
  // left out.
  bool include_deprecated = false;
  TemplateOrder order = TemplateOrder::kCreateTime;
  bool descending = false;
  std::optional<TemplateCursor> after;
  int limit = 50;
};

// A template as a list page returns it: decoded, and encoded as an
// ImageTemplate message (`wire`), so a page is sent without serializing each
// template again. Immutable; shared with the store's cache.
struct EncodedTemplate {
  explicit EncodedTemplate(imagetemplates::v1::ImageTemplate t)
      : image_template(std::move(t)), wire(image_template.SerializeAsString()) {}
  const imagetemplates::v1::ImageTemplate image_template;
  const std::string wire;
};

// One stored copy of a captured disk image on a storage node.
struct ImageReplica {
  std::string template_id;
  std::string image_id;
  std::string node_id;
  std::string manifest_digest;
};

struct TemplateUsage {
  // Templates not DELETED.
  int64_t template_count = 0;
  // Sum of their disks' stored_size_bytes.
  int64_t stored_bytes = 0;
};

// One template, read and changed inside a single transaction. Valid only
// during the MutateTemplate callback.
class TemplateTransaction {
 public:
  virtual ~TemplateTransaction() = default;
  // The stored template. Changes to it (anything but id, owner and
  // create_time) are written back when the callback returns OK.
  virtual imagetemplates::v1::ImageTemplate& image_template() = 0;
  virtual absl::StatusOr<bool> IsSharedWith(absl::string_view account_id) = 0;
  virtual absl::StatusOr<int64_t> ShareCount() = 0;
  // No-op if already shared. FAILED_PRECONDITION if the account does not
  // exist.
  virtual absl::Status AddShare(absl::string_view account_id, int64_t create_time_us) = 0;
  // No-op if not shared.
  virtual absl::Status RemoveShare(absl::string_view account_id) = 0;
  virtual absl::Status RemoveAllShares() = 0;
  // Operations of `kinds` acting on this template that are not terminal.
  virtual absl::StatusOr<int64_t> CountUnfinishedOperations(
      const std::vector<imagetemplates::v1::OperationKind>& kinds) = 0;
  // Inserts an operation in the same transaction.
  virtual absl::Status InsertOperation(const imagetemplates::v1::Operation& operation,
                                       const OperationInternals& internals) = 0;
};

// Thread-safe. Visibility rules beyond TemplateQuery are the caller's.
class TemplateStore {
 public:
  virtual ~TemplateStore() = default;

  // Stores a complete record as given (the create path and tests seeding
  // ACTIVE templates). ALREADY_EXISTS if the id, or the name among the
  // owner's templates not DELETED, is taken; FAILED_PRECONDITION if the owner
  // account does not exist.
  virtual absl::Status InsertTemplate(const imagetemplates::v1::ImageTemplate& image_template) = 0;

  // NOT_FOUND if no template has this id.
  virtual absl::StatusOr<imagetemplates::v1::ImageTemplate> GetTemplate(absl::string_view id) = 0;
  // The same, encoded (SqliteTemplateStore answers from its cache without
  // copying or serializing it).
  virtual absl::StatusOr<std::shared_ptr<const EncodedTemplate>> GetEncodedTemplate(
      absl::string_view id) {
    absl::StatusOr<imagetemplates::v1::ImageTemplate> t = GetTemplate(id);
    if (!t.ok()) return t.status();
    return std::make_shared<const EncodedTemplate>(*std::move(t));
  }

  virtual absl::StatusOr<bool> IsSharedWith(absl::string_view template_id,
                                            absl::string_view account_id) = 0;

  // Up to query.limit templates in query order.
  virtual absl::StatusOr<std::vector<imagetemplates::v1::ImageTemplate>> ListTemplates(
      const TemplateQuery& query) = 0;
  // The same templates, encoded (SqliteTemplateStore answers from its cache
  // without copying or serializing them).
  virtual absl::StatusOr<std::vector<std::shared_ptr<const EncodedTemplate>>>
  ListEncodedTemplates(const TemplateQuery& query) {
    absl::StatusOr<std::vector<imagetemplates::v1::ImageTemplate>> rows = ListTemplates(query);
    if (!rows.ok()) return rows.status();
    std::vector<std::shared_ptr<const EncodedTemplate>> out;
    out.reserve(rows->size());
    for (auto& t : *rows) out.push_back(std::make_shared<const EncodedTemplate>(std::move(t)));
    return out;
  }

  // Up to `limit` shares ordered by account id, after `after_account_id`
  // (empty: from the start).
  virtual absl::StatusOr<std::vector<imagetemplates::v1::ImageTemplateShare>> ListShares(
      absl::string_view template_id, absl::string_view after_account_id, int limit) = 0;

  // Whether the owner has a template not DELETED with this exact name.
  virtual absl::StatusOr<bool> NameInUse(absl::string_view owner_account_id,
                                         absl::string_view name) = 0;

  virtual absl::StatusOr<TemplateUsage> GetUsage(absl::string_view account_id) = 0;

  // Runs `mutate` on the template in one transaction and writes the result
  // back. An error from `mutate` rolls everything back and is returned.
  // Returns the template as stored. NOT_FOUND if absent; ALREADY_EXISTS if
  // the new name is taken in the account.
  using Mutator = std::function<absl::Status(TemplateTransaction& txn)>;
  virtual absl::StatusOr<imagetemplates::v1::ImageTemplate> MutateTemplate(
      absl::string_view id, const Mutator& mutate) = 0;

  // The create path: stores a new template and the operation that captures
  // it in one transaction. FAILED_PRECONDITION if an operation that is not
  // terminal already targets operation.target().id() (the source server);
  // otherwise as InsertTemplate.
  virtual absl::Status InsertTemplateWithOperation(
      const imagetemplates::v1::ImageTemplate& image_template,
      const imagetemplates::v1::Operation& operation, const OperationInternals& internals) = 0;

  // Records that `replica.node_id` holds the image (idempotent).
  // FAILED_PRECONDITION if the node is not registered.
  virtual absl::Status AddImageReplica(const ImageReplica& replica) = 0;
  // Every replica of the template's images.
  virtual absl::StatusOr<std::vector<ImageReplica>> ListImageReplicas(
      absl::string_view template_id) = 0;
  // No-op if absent.
  virtual absl::Status RemoveImageReplica(absl::string_view image_id,
                                          absl::string_view node_id) = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_TEMPLATE_STORE_H_
