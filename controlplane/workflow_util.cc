#include "controlplane/workflow_util.h"

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

std::string IscsiUrl(const v1::SanVolume& volume) {
  const v1::IscsiAddress& iscsi = volume.iscsi();
  std::string credentials;
  if (!iscsi.chap_user().empty()) {
    credentials =
        absl::StrCat(iscsi.chap_user(), "%", iscsi.chap_secret(), "@");
  }
  return absl::StrCat("iscsi://", credentials, iscsi.portal(), "/", iscsi.iqn(),
                      "/", iscsi.lun());
}

v1::ServerConfiguration TemplateConfiguration(
    const v1::ServerConfiguration& server_configuration) {
  v1::ServerConfiguration config = server_configuration;
  for (v1::NetworkInterface& nic : *config.mutable_network_interfaces()) {
    std::string name = nic.name();
    nic.Clear();
    nic.set_name(name);
  }
  return config;
}

absl::Status FirstError(const std::vector<absl::Status>& results) {
  absl::Status first;
  for (const absl::Status& status : results) {
    if (status.ok()) continue;
    if (status.code() != absl::StatusCode::kCancelled) return status;
    if (first.ok()) first = status;
  }
  return first;
}

absl::Status DeleteReplicas(TemplateStore* templates,
                            StorageNodeDirectory* nodes,
                            const std::string& template_id,
                            const std::atomic<bool>* stop) {
  ASSIGN_OR_RETURN(std::vector<ImageReplica> replicas,
                   templates->ListImageReplicas(template_id));
  absl::Status result;
  for (const ImageReplica& replica : replicas) {
    absl::StatusOr<StorageNodeHandle> node = nodes->ById(replica.node_id);
    if (absl::IsNotFound(node.status())) {
      RETURN_IF_ERROR(
          templates->RemoveImageReplica(replica.image_id, replica.node_id));
      continue;
    }
    if (!node.ok()) {
      if (result.ok()) result = node.status();
      continue;
    }
    CallOptions options;
    options.cancelled = stop;
    options.max_attempts = 2;
    absl::Status deleted = node->client->DeleteImage(replica.image_id, options);
    // FAILED_PRECONDITION: a job still uses it (a cancelled capture winding
    // down); retried by the step.
    if (absl::IsFailedPrecondition(deleted)) {
      deleted = absl::UnavailableError(deleted.message());
    }
    if (!deleted.ok()) {
      if (result.ok()) result = deleted;
      continue;
    }
    RETURN_IF_ERROR(
        templates->RemoveImageReplica(replica.image_id, replica.node_id));
  }
  return result;
}

}  // namespace controlplane
