// The business logic of ImageTemplateService: validation, visibility,
// permissions, request_id deduplication and auditing, over the stores.
#ifndef CONTROLPLANE_IMAGE_TEMPLATE_MANAGER_H_
#define CONTROLPLANE_IMAGE_TEMPLATE_MANAGER_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "controlplane/account_directory.h"
#include "controlplane/audit_log.h"
#include "controlplane/caller.h"
#include "controlplane/copy_workflow.h"
#include "controlplane/create_workflow.h"
#include "controlplane/deploy_workflow.h"
#include "controlplane/operation_store.h"
#include "controlplane/quota_provider.h"
#include "controlplane/request_id_store.h"
#include "controlplane/template_store.h"
#include "google/protobuf/message.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace controlplane {

// Thread-safe. Owns none of its dependencies; they must outlive it.
//
// Every method returns what the RPC of the same name returns, with the codes
// its comment in image_templates.proto lists. Templates the caller's account
// may not see are NOT_FOUND; visible templates the caller may not change are
// PERMISSION_DENIED. Mutating methods are audited, allowed or refused, and
// honour request_id.
class ImageTemplateManager {
 public:
  struct Dependencies {
    TemplateStore* templates = nullptr;
    OperationStore* operations = nullptr;
    RequestIdStore* request_ids = nullptr;
    AuditLog* audit = nullptr;
    QuotaProvider* quotas = nullptr;
    AccountDirectory* accounts = nullptr;
    // Microseconds since the epoch; defaults to the system clock.
    std::function<int64_t()> now_micros;
    // Where creates and deploys start; without them those calls end with
    // UNIMPLEMENTED after every check.
    CreateWorkflow* create = nullptr;
    DeployWorkflow* deploy = nullptr;
    // Where copies to other datacenters start and removed locations' data
    // is deleted; without it those calls end with UNIMPLEMENTED.
    CopyWorkflow* copy = nullptr;
  };
  explicit ImageTemplateManager(Dependencies deps);
  ImageTemplateManager(const ImageTemplateManager&) = delete;
  ImageTemplateManager& operator=(const ImageTemplateManager&) = delete;

  // Validates and checks permissions and quota, then starts the create
  // (CreateWorkflow::Begin: pre-flight, CREATING template, PENDING operation).
  absl::StatusOr<imagetemplates::v1::Operation> CreateImageTemplate(
      const Caller& caller, const imagetemplates::v1::CreateImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::GetImageTemplateResponse> GetImageTemplate(
      const Caller& caller, const imagetemplates::v1::GetImageTemplateRequest& request);
  // The template GetImageTemplate returns, as the store's immutable encoded
  // template: the service sends its cached wire bytes as they are.
  absl::StatusOr<std::shared_ptr<const EncodedTemplate>> GetEncodedImageTemplate(
      const Caller& caller, const imagetemplates::v1::GetImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::ListImageTemplatesResponse> ListImageTemplates(
      const Caller& caller, const imagetemplates::v1::ListImageTemplatesRequest& request);
  // The page ListImageTemplates returns, as the store's immutable encoded
  // templates: the service sends their cached wire bytes as they are.
  struct TemplatePage {
    std::vector<std::shared_ptr<const EncodedTemplate>> image_templates;
    std::string next_page_token;
  };
  absl::StatusOr<TemplatePage> ListImageTemplatePage(
      const Caller& caller, const imagetemplates::v1::ListImageTemplatesRequest& request);
  absl::StatusOr<imagetemplates::v1::UpdateImageTemplateResponse> UpdateImageTemplate(
      const Caller& caller, const imagetemplates::v1::UpdateImageTemplateRequest& request);
  // Moves the template to DELETING, ends its shares and public listing and
  // returns a PENDING delete operation (DeleteWorkflow removes the data).
  // A DELETING template whose last delete operation ended (failed: a storage
  // node holding its images was down) is accepted again, with a new
  // operation; while a delete operation runs, FAILED_PRECONDITION.
  absl::StatusOr<imagetemplates::v1::Operation> DeleteImageTemplate(
      const Caller& caller, const imagetemplates::v1::DeleteImageTemplateRequest& request);
  // Validates and checks visibility, permission and state, then reserves
  // volumes and servers and returns the PENDING deploy operation
  // (DeployWorkflow::Begin).
  absl::StatusOr<imagetemplates::v1::Operation> DeployImageTemplate(
      const Caller& caller, const imagetemplates::v1::DeployImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::ShareImageTemplateResponse> ShareImageTemplate(
      const Caller& caller, const imagetemplates::v1::ShareImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::UnshareImageTemplateResponse> UnshareImageTemplate(
      const Caller& caller, const imagetemplates::v1::UnshareImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::ListImageTemplateSharesResponse> ListImageTemplateShares(
      const Caller& caller, const imagetemplates::v1::ListImageTemplateSharesRequest& request);
  absl::StatusOr<imagetemplates::v1::PublishImageTemplateResponse> PublishImageTemplate(
      const Caller& caller, const imagetemplates::v1::PublishImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::UnpublishImageTemplateResponse> UnpublishImageTemplate(
      const Caller& caller, const imagetemplates::v1::UnpublishImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::ListImageTemplateLocationsResponse>
  ListImageTemplateLocations(
      const Caller& caller, const imagetemplates::v1::ListImageTemplateLocationsRequest& request);
  // Validates and checks, then starts the copy (CopyWorkflow::Begin: COPYING
  // locations and a PENDING copy operation, returned).
  absl::StatusOr<imagetemplates::v1::Operation> AddImageTemplateLocations(
      const Caller& caller, const imagetemplates::v1::AddImageTemplateLocationsRequest& request);
  // Validates and checks, removes the locations in one transaction, then
  // deletes their images from the nodes of those datacenters (a node that is
  // down keeps them until the template is deleted).
  absl::StatusOr<imagetemplates::v1::RemoveImageTemplateLocationsResponse>
  RemoveImageTemplateLocations(
      const Caller& caller,
      const imagetemplates::v1::RemoveImageTemplateLocationsRequest& request);
  absl::StatusOr<imagetemplates::v1::DeprecateImageTemplateResponse> DeprecateImageTemplate(
      const Caller& caller, const imagetemplates::v1::DeprecateImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::UndeprecateImageTemplateResponse> UndeprecateImageTemplate(
      const Caller& caller, const imagetemplates::v1::UndeprecateImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::DisableImageTemplateResponse> DisableImageTemplate(
      const Caller& caller, const imagetemplates::v1::DisableImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::EnableImageTemplateResponse> EnableImageTemplate(
      const Caller& caller, const imagetemplates::v1::EnableImageTemplateRequest& request);
  absl::StatusOr<imagetemplates::v1::SetDeleteProtectionResponse> SetDeleteProtection(
      const Caller& caller, const imagetemplates::v1::SetDeleteProtectionRequest& request);

  // Audits a mutating call refused before it reached the manager (no valid
  // API key): no caller, no account (operators see it), the target named by
  // the request's id field. `method` is the RPC's name.
  void AuditUnauthenticated(absl::string_view peer, absl::string_view method,
                            const google::protobuf::Message& request, const absl::Status& status);

 private:
  // Audits and deduplicates one mutating call around `body`. `body` may set
  // `audit_account` to the owner of the resource it found visible. For calls
  // that start an operation through a workflow (create, deploy, copy): the
  // request_id is claimed before `body` and its answer remembered after, so
  // a call that dies in between leaves a claim; the repeat takes it over
  // (at once in the next process) and answers with the operation the dead
  // call started, found by its request_id, or acts if it started none.
  template <typename Response>
  absl::StatusOr<Response> Mutation(
      const Caller& caller, absl::string_view method, const google::protobuf::Message& request,
      absl::string_view request_id, const imagetemplates::v1::ResourceReference& target,
      const std::function<absl::StatusOr<Response>(std::string& audit_account)>& body);

  // The request_id of a call whose whole effect is one template transaction
  // (ChangeTemplate): looked up and remembered inside it, so a crash leaves
  // the change and its remembered response both or neither.
  struct AtomicRequest {
    std::string account_id;
    std::string request_id;
    std::string fingerprint;
    // The call's serialized response, from the template as the transaction
    // leaves it. AtomicMutation sets it for responses holding the template.
    std::function<std::string(const imagetemplates::v1::ImageTemplate&)> encode;
    // Set by ChangeTemplate: an identical call committed first, and this is
    // its response (nothing was changed; the body returned an error).
    std::optional<std::string> replayed;
    // Set by ChangeTemplate once the response is remembered in its
    // transaction.
    bool remembered = false;
  };
  // Mutation for such calls: no claim; `body` passes `atomic` to the one
  // ChangeTemplate that makes its effect.
  template <typename Response>
  absl::StatusOr<Response> AtomicMutation(
      const Caller& caller, absl::string_view method, const google::protobuf::Message& request,
      absl::string_view request_id, const imagetemplates::v1::ResourceReference& target,
      const std::function<absl::StatusOr<Response>(std::string& audit_account,
                                                   AtomicRequest& atomic)>& body);
  // The answer to a repeated call: `stored` (an Operation as it is now),
  // unless the caller lost a permission the call needs.
  template <typename Response>
  absl::StatusOr<Response> Replay(const Caller& caller, absl::string_view method,
                                  const imagetemplates::v1::ResourceReference& target,
                                  const std::string& stored);
  // The operation an identical call of `method` that claimed request_id at
  // `since_micros` and then died had started, if it had.
  absl::StatusOr<std::optional<imagetemplates::v1::Operation>> FindStartedOperation(
      const Caller& caller, absl::string_view method, absl::string_view request_id,
      const imagetemplates::v1::ResourceReference& target, int64_t since_micros);

  // The template if the caller may see it; NOT_FOUND otherwise (the same
  // answer as for an id that does not exist). INVALID_ARGUMENT (`field`) if
  // the id is malformed.
  absl::StatusOr<imagetemplates::v1::ImageTemplate> LoadVisible(const Caller& caller,
                                                                absl::string_view id,
                                                                absl::string_view field);
  // The same check, answering with the store's encoded template.
  absl::StatusOr<std::shared_ptr<const EncodedTemplate>> LoadVisibleEncoded(
      const Caller& caller, absl::string_view id, absl::string_view field);

  // Runs `change` on a visible template the caller may manage (visibility
  // and IMAGE_TEMPLATE_MANAGE re-checked inside the transaction). `change`
  // returns whether it changed anything; update_time is set only then.
  using Change = std::function<absl::StatusOr<bool>(TemplateTransaction& txn)>;
  // With `atomic`, the request_id is looked up and the response remembered
  // in the same transaction.
  absl::StatusOr<imagetemplates::v1::ImageTemplate> ChangeTemplate(
      const Caller& caller, absl::string_view id, std::string& audit_account,
      AtomicRequest* atomic, const Change& change,
      imagetemplates::v1::Permission permission =
          imagetemplates::v1::PERMISSION_IMAGE_TEMPLATE_MANAGE);

  Dependencies deps_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_IMAGE_TEMPLATE_MANAGER_H_
