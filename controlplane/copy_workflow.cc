#include "controlplane/copy_workflow.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/workflow_checkpoint.pb.h"
#include "controlplane/workflow_util.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;
using internal::CopyCheckpoint;
using internal::CopyImage;

absl::StatusOr<v1::Operation> CopyWorkflow::Begin(
    const Caller& caller, const v1::AddImageTemplateLocationsRequest& request,
    const v1::ImageTemplate& t, int64_t now_micros) {
  for (const std::string& dc : request.datacenters()) {
    ASSIGN_OR_RETURN(std::vector<v1::StorageNode> nodes, deps_.inventory->ReadStorageNodes(dc));
    if (nodes.empty()) {
      return absl::NotFoundError(absl::StrCat(
          "datacenters: datacenter ", dc, " does not exist or has no storage node"));
    }
    RETURN_IF_ERROR(deps_.nodes->CheckDatacenter(dc));
  }
  v1::Operation op;
  op.set_id(NewUuid());
  op.set_kind(v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE);
  op.set_account_id(t.owner_account_id());
  op.set_user_id(caller.user_id);
  op.set_request_id(request.request_id());
  op.set_state(v1::OPERATION_STATE_PENDING);
  op.set_image_template_id(t.id());
  op.mutable_target()->set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
  op.mutable_target()->set_id(t.id());
  *op.mutable_create_time() = ToTimestamp(now_micros);
  *op.mutable_update_time() = ToTimestamp(now_micros);

  CopyCheckpoint checkpoint;
  checkpoint.set_template_id(t.id());
  for (const std::string& dc : request.datacenters()) {
    checkpoint.add_datacenters(dc);
    for (const v1::ImageTemplateDisk& disk : t.disks()) {
      CopyImage* image = checkpoint.add_images();
      image->set_datacenter(dc);
      image->set_image_id(absl::StrCat(t.id(), "-disk", disk.device_index()));
      image->set_manifest_digest(disk.manifest_digest());
      image->set_size_bytes(disk.logical_size_bytes());
    }
  }
  OperationInternals internals;
  internals.params = request.SerializeAsString();
  internals.checkpoint = checkpoint.SerializeAsString();
  RETURN_IF_ERROR(
      deps_.templates
          ->MutateTemplate(
              t.id(),
              [&](TemplateTransaction& txn) -> absl::Status {
                v1::ImageTemplate& current = txn.image_template();
                if (current.status() != v1::IMAGE_TEMPLATE_STATUS_ACTIVE) {
                  return absl::FailedPreconditionError(absl::StrCat(
                      "image template ", t.id(), " is ",
                      v1::ImageTemplateStatus_Name(current.status()),
                      "; only ACTIVE templates can be copied"));
                }
                for (const std::string& dc : request.datacenters()) {
                  v1::ImageTemplateLocation* location = nullptr;
                  for (v1::ImageTemplateLocation& l : *current.mutable_locations()) {
                    if (l.datacenter() == dc) location = &l;
                  }
                  if (location != nullptr &&
                      location->status() != v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED) {
                    return absl::AlreadyExistsError(
                        absl::StrCat("image template ", t.id(), " already has a location in ",
                                     dc, " (", v1::ImageTemplateLocationStatus_Name(
                                                   location->status()), ")"));
                  }
                  if (location == nullptr) location = current.add_locations();
                  location->set_datacenter(dc);
                  location->set_status(v1::IMAGE_TEMPLATE_LOCATION_STATUS_COPYING);
                  location->set_operation_id(op.id());
                  *location->mutable_create_time() = ToTimestamp(now_micros);
                }
                *current.mutable_update_time() = ToTimestamp(now_micros);
                return txn.InsertOperation(op, internals);
              })
          .status());
  return op;
}

// One copy in flight: its checkpoint under a lock.
class CopyRun {
 public:
  CopyRun(CopyWorkflow& workflow, OperationContext& context)
      : deps_(workflow.deps_), context_(context) {}

  absl::Status Load() { return LoadCheckpoint("copy", context_, &mu_, &checkpoint_); }

  absl::Status Run() {
    absl::Status status = RecordedFailure(Snapshot());
    if (!status.ok()) {
      // Its undo may already have deleted finished disks: never copy again.
      common::LogInfo("operation %s: resuming the undo of a failed copy: %s", context_.id(),
                      status.ToString());
    } else {
      status = context_.cancelled() ? absl::CancelledError("the operation was cancelled")
                                    : Forward();
      if (status.ok() || context_.stopping()) return status;
      if (Snapshot().recorded()) return status;  // AVAILABLE stays AVAILABLE.
      RecordFailure(status, context_, &mu_, &checkpoint_);
    }
    Undo(status);
    if (context_.stopping()) return absl::AbortedError("stopping during undo");
    return status;
  }

 private:
  CopyCheckpoint Snapshot() {
    absl::MutexLock lock(&mu_);
    return checkpoint_;
  }

  absl::Status Forward() {
    CopyCheckpoint cp = Snapshot();
    if (cp.recorded()) return absl::OkStatus();
    std::vector<int> slots;
    std::vector<int> todo;
    for (int i = 0; i < cp.images_size(); ++i) {
      const CopyImage& image = cp.images(i);
      slots.push_back(context_.progress().Add(
          static_cast<uint64_t>(image.size_bytes()), image.done() ? image.size_bytes() : 0));
      if (!image.done()) todo.push_back(i);
    }
    RETURN_IF_ERROR(CopyAll(cp, todo, slots));
    return context_.RunStep("record_locations", "", [&] { return Record(); });
  }

  // Runs the copy step of every image in `todo`, at most parallel_copies at
  // once. The first failure stops the rest (calls in flight are cancelled,
  // images not started are not started) and is returned.
  absl::Status CopyAll(const CopyCheckpoint& cp, const std::vector<int>& todo,
                       const std::vector<int>& slots) {
    if (todo.empty()) return absl::OkStatus();
    // Raised by a failed copy, or mirrored from the operation's cancel and
    // shutdown flag: the calls in flight watch this one.
    std::atomic<bool> abandon{false};
    absl::Notification finished;
    std::thread watcher([&] {
      while (!finished.WaitForNotificationWithTimeout(absl::Milliseconds(20))) {
        if (context_.interrupt_flag()->load()) {
          abandon = true;
          return;
        }
      }
    });
    std::atomic<size_t> next{0};
    std::vector<absl::Status> results(todo.size());
    auto worker = [&] {
      for (size_t k = next++; k < todo.size(); k = next++) {
        const int i = todo[k];
        if (abandon.load()) {
          results[k] = context_.stopping() ? absl::AbortedError("the control plane is stopping")
                       : context_.cancelled()
                           ? absl::CancelledError("the operation was cancelled")
                           : absl::CancelledError("not started: another disk's copy failed");
          continue;
        }
        const std::string disk = cp.images(i).image_id().substr(cp.template_id().size() + 1);
        results[k] = context_.RunStep(
            absl::StrCat("copy_", cp.images(i).datacenter(), "_", disk), "",
            [&]() -> absl::Status {
              if (abandon.load() && !context_.interrupt_flag()->load()) {
                return absl::CancelledError("stopped: another disk's copy failed");
              }
              absl::Status status = Copy(i, slots[i], &abandon);
              if (!status.ok() && abandon.load() && !context_.interrupt_flag()->load()) {
                return absl::CancelledError("stopped: another disk's copy failed");
              }
              return status;
            });
        if (!results[k].ok()) abandon = true;
      }
    };
    const int workers =
        std::min(static_cast<int>(todo.size()), std::max(1, deps_.parallel_copies));
    std::vector<std::thread> threads;
    for (int w = 1; w < workers; ++w) threads.emplace_back(worker);
    worker();
    for (std::thread& thread : threads) thread.join();
    finished.Notify();
    watcher.join();
    // The cause wins over the copies it stopped (CANCELLED).
    return FirstError(results);
  }

  // A live node of `datacenter`, the one with the most free space.
  absl::StatusOr<std::string> ChooseNode(const std::string& datacenter) {
    ASSIGN_OR_RETURN(std::vector<v1::StorageNode> nodes,
                     deps_.inventory->ReadStorageNodes(datacenter));
    const v1::StorageNode* best = nullptr;
    for (const v1::StorageNode& node : nodes) {
      if (!deps_.nodes->IsLive(node)) continue;
      if (best == nullptr || node.free_bytes() > best->free_bytes()) best = &node;
    }
    if (best == nullptr) {
      return absl::UnavailableError(
          absl::StrCat("no live storage node in datacenter ", datacenter));
    }
    return best->id();
  }

  // Copies image `i`; its calls stop once `abandon` is raised.
  absl::Status Copy(int i, int slot, const std::atomic<bool>* abandon) {
    CopyImage image = Snapshot().images(i);
    const std::string template_id = Snapshot().template_id();
    if (image.node_id().empty()) {
      // One choice per datacenter even with disks copied in parallel.
      absl::MutexLock choosing(&choose_mu_);
      image = Snapshot().images(i);
      if (image.node_id().empty()) {
        ASSIGN_OR_RETURN(std::string node_id, ChooseNode(image.datacenter()));
        {
          absl::MutexLock lock(&mu_);
          // Every disk of a datacenter goes to the same node.
          for (CopyImage& other : *checkpoint_.mutable_images()) {
            if (other.datacenter() == image.datacenter() && other.node_id().empty()) {
              other.set_node_id(node_id);
            }
          }
        }
        RETURN_IF_ERROR(context_.SaveCheckpoint());
        image = Snapshot().images(i);
      }
    }
    ASSIGN_OR_RETURN(StorageNodeHandle destination, deps_.nodes->ById(image.node_id()));
    CallOptions options;
    options.cancelled = abandon;
    options.max_attempts = deps_.call_attempts;
    absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary> present =
        destination.client->GetImage(image.image_id(), options);
    if (present.ok()) {
      if (present->manifest_digest() != image.manifest_digest()) {
        return absl::DataLossError(absl::StrCat(
            "storage node ", destination.node_id, " holds image ", image.image_id(),
            " with digest ", present->manifest_digest(), ", the template recorded ",
            image.manifest_digest()));
      }
    } else if (!absl::IsNotFound(present.status())) {
      return present.status();
    } else {
      if (!image.created()) {
        {
          absl::MutexLock lock(&mu_);
          checkpoint_.mutable_images(i)->set_created(true);
        }
        // Durable before the first byte lands, so an undo after a crash
        // finds the image.
        RETURN_IF_ERROR(context_.SaveCheckpoint());
      }
      RETURN_IF_ERROR(Send(template_id, image, destination, slot, options));
    }
    RETURN_IF_ERROR(deps_.templates->AddImageReplica(
        {template_id, image.image_id(), destination.node_id, image.manifest_digest()}));
    context_.progress().Complete(slot);
    absl::MutexLock lock(&mu_);
    checkpoint_.mutable_images(i)->set_done(true);
    return absl::OkStatus();
  }

  // Sends the image to `destination` from a live node holding it with the
  // recorded digest, trying the next holder if one fails.
  absl::Status Send(const std::string& template_id, const CopyImage& image,
                    const StorageNodeHandle& destination, int slot, CallOptions options) {
    const uint64_t size = static_cast<uint64_t>(image.size_bytes());
    options.on_progress = [this, slot, size](const TransferProgress& p) {
      // SendImage reports chunks; scale them onto the disk's bytes.
      uint64_t done = p.bytes_total == 0 ? 0 : size * p.bytes_done / p.bytes_total;
      context_.progress().Update(slot, done, size);
    };
    ASSIGN_OR_RETURN(std::vector<ImageReplica> replicas,
                     deps_.templates->ListImageReplicas(template_id));
    absl::Status last = absl::UnavailableError(absl::StrCat(
        "no live storage node holds image ", image.image_id(), " to copy it to ",
        destination.node_id));
    for (const ImageReplica& replica : replicas) {
      if (replica.image_id != image.image_id() || replica.node_id == destination.node_id ||
          replica.manifest_digest != image.manifest_digest()) {
        continue;
      }
      absl::StatusOr<StorageNodeHandle> source = deps_.nodes->ById(replica.node_id);
      if (!source.ok()) {
        last = source.status();
        continue;
      }
      common::LogInfo("operation %s: copying image %s from %s to %s (%s)", context_.id(),
                      image.image_id(), source->node_id, destination.node_id,
                      destination.address);
      absl::StatusOr<imagetemplates::storagenode::v1::SendImageSummary> sent =
          source->client->SendImage(image.image_id(), destination.address, options);
      if (sent.ok()) {
        if (sent->manifest_digest() != image.manifest_digest()) {
          return absl::DataLossError(absl::StrCat("storage node ", destination.node_id,
                                                  " committed image ", image.image_id(),
                                                  " with digest ", sent->manifest_digest()));
        }
        common::LogInfo("operation %s: image %s on %s: %u chunks sent (%u bytes), %u there",
                        context_.id(), image.image_id(), destination.node_id,
                        sent->chunks_sent(), sent->bytes_sent(), sent->chunks_skipped());
        return absl::OkStatus();
      }
      last = sent.status();
      if (absl::IsCancelled(last) || context_.cancelled()) return last;
    }
    return last;
  }

  absl::Status Record() {
    const CopyCheckpoint cp = Snapshot();
    RETURN_IF_ERROR(SetLocations(cp, v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE,
                                 /*remove=*/false, /*require_active=*/true));
    absl::MutexLock lock(&mu_);
    checkpoint_.set_recorded(true);
    return absl::OkStatus();
  }

  // Sets (or removes) the locations this operation added.
  absl::Status SetLocations(const CopyCheckpoint& cp, v1::ImageTemplateLocationStatus status,
                            bool remove, bool require_active) {
    const absl::flat_hash_set<std::string> mine(cp.datacenters().begin(),
                                                cp.datacenters().end());
    return deps_.templates
        ->MutateTemplate(
            cp.template_id(),
            [&](TemplateTransaction& txn) -> absl::Status {
              v1::ImageTemplate& t = txn.image_template();
              if (require_active && t.status() != v1::IMAGE_TEMPLATE_STATUS_ACTIVE) {
                return absl::FailedPreconditionError(absl::StrCat(
                    "image template ", t.id(), " became ",
                    v1::ImageTemplateStatus_Name(t.status()), " during the copy"));
              }
              auto* locations = t.mutable_locations();
              for (int k = locations->size() - 1; k >= 0; --k) {
                v1::ImageTemplateLocation& l = (*locations)[k];
                if (!mine.contains(l.datacenter()) || l.operation_id() != context_.id()) continue;
                if (remove) {
                  locations->DeleteSubrange(k, 1);
                } else {
                  l.set_status(status);
                }
              }
              *t.mutable_update_time() = ToTimestamp(NowMicros());
              return absl::OkStatus();
            })
        .status();
  }

  void Undo(const absl::Status& cause) {
    const auto kind = OperationContext::StepKind::kUndo;
    absl::Status undone = context_.RunStep(
        "undo_copies", "",
        [&]() -> absl::Status {
          const CopyCheckpoint cp = Snapshot();
          absl::Status first;
          for (const CopyImage& image : cp.images()) {
            if (!image.created() || image.node_id().empty()) continue;
            absl::StatusOr<StorageNodeHandle> node = deps_.nodes->ById(image.node_id());
            absl::Status s = node.status();
            if (node.ok()) {
              CallOptions options;
              options.cancelled = context_.stop_flag();
              options.max_attempts = deps_.call_attempts;
              s = node->client->DeleteImage(image.image_id(), options);
            }
            if (s.ok() || absl::IsNotFound(s)) {
              s = deps_.templates->RemoveImageReplica(image.image_id(), image.node_id());
            }
            if (!s.ok() && first.ok()) first = s;
          }
          return first;
        },
        kind);
    if (!undone.ok()) {
      common::LogWarning("operation %s: undoing copies: %s", context_.id(), undone.ToString());
    }
    const CopyCheckpoint cp = Snapshot();
    const bool cancelled = absl::IsCancelled(cause);
    absl::Status marked = context_.RunStep(
        cancelled ? "remove_locations" : "mark_locations_failed", "",
        [&] {
          absl::Status s = SetLocations(cp, v1::IMAGE_TEMPLATE_LOCATION_STATUS_FAILED, cancelled,
                                        /*require_active=*/false);
          return absl::IsNotFound(s) ? absl::OkStatus() : s;
        },
        kind);
    if (!marked.ok()) {
      common::LogWarning("operation %s: marking locations: %s", context_.id(), marked.ToString());
    }
  }

  const CopyWorkflow::Dependencies& deps_;
  OperationContext& context_;
  // Held while a destination node is chosen; before mu_.
  absl::Mutex choose_mu_;
  absl::Mutex mu_;
  CopyCheckpoint checkpoint_ ABSL_GUARDED_BY(mu_);
};

absl::Status CopyWorkflow::Run(OperationContext& context) {
  CopyRun run(*this, context);
  RETURN_IF_ERROR(run.Load());
  return run.Run();
}

absl::Status CopyWorkflow::RemoveLocationData(const std::string& template_id,
                                              const std::vector<std::string>& datacenters) {
  absl::flat_hash_set<std::string> in_removed;
  for (const std::string& dc : datacenters) {
    ASSIGN_OR_RETURN(std::vector<v1::StorageNode> nodes, deps_.inventory->ReadStorageNodes(dc));
    for (const v1::StorageNode& node : nodes) in_removed.insert(node.id());
  }
  ASSIGN_OR_RETURN(std::vector<ImageReplica> replicas,
                   deps_.templates->ListImageReplicas(template_id));
  absl::Status first;
  for (const ImageReplica& replica : replicas) {
    if (!in_removed.contains(replica.node_id)) continue;
    absl::StatusOr<StorageNodeHandle> node = deps_.nodes->ById(replica.node_id);
    absl::Status s = node.status();
    if (node.ok()) {
      CallOptions options;
      options.max_attempts = 1;
      s = node->client->DeleteImage(replica.image_id, options);
    }
    if (s.ok()) s = deps_.templates->RemoveImageReplica(replica.image_id, replica.node_id);
    if (!s.ok()) {
      common::LogWarning("image template %s: image %s stays on node %s until the template "
                         "is deleted: %s",
                         template_id, replica.image_id, replica.node_id, s.ToString());
      if (first.ok()) first = s;
    }
  }
  return first;
}

}  // namespace controlplane
