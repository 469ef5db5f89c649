#include "controlplane/create_workflow.h"

#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/workflow_checkpoint.pb.h"
#include "controlplane/workflow_util.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;
using internal::CreateCheckpoint;

absl::StatusOr<v1::Operation> CreateWorkflow::Begin(
    const Caller& caller, const v1::CreateImageTemplateRequest& request,
    const std::string& name, const std::vector<std::string>& tags,
    int64_t now_micros) {
  absl::StatusOr<v1::Server> read =
      deps_.inventory->ReadServer(request.server_id());
  if (absl::IsNotFound(read.status()) ||
      (read.ok() && !caller.is_operator &&
       read->account_id() != caller.account_id)) {
    return absl::NotFoundError(
        absl::StrCat("server ", request.server_id(), " not found"));
  }
  RETURN_IF_ERROR(read.status());
  const v1::Server& server = *read;
  if (server.type() == v1::SERVER_TYPE_BARE_METAL) {
    return absl::FailedPreconditionError(
        absl::StrCat("server ", server.id(),
                     " is bare metal; image templates can be created only from "
                     "virtual servers"));
  }
  if (server.state() != v1::SERVER_STATE_ACTIVE) {
    return absl::FailedPreconditionError(absl::StrCat(
        "server ", server.id(), " is ", v1::ServerState_Name(server.state()),
        ", not healthy; only ACTIVE servers can be captured"));
  }
  if (!server.has_credentials()) {
    return absl::FailedPreconditionError(
        absl::StrCat("server ", server.id(),
                     " has no software credentials recorded; record them with "
                     "SetServerCredentials first"));
  }
  std::vector<const v1::ServerDisk*> selected;
  std::vector<std::string> known;
  for (const v1::ServerDisk& disk : server.disks()) {
    known.push_back(absl::StrCat(disk.device_index(),
                                 disk.boot() ? " (boot)" : "",
                                 disk.config_drive() ? " (config drive)" : ""));
    if (disk.boot()) selected.push_back(&disk);
  }
  if (selected.size() != 1) {
    return absl::FailedPreconditionError(
        absl::StrCat("server ", server.id(),
                     " has no boot disk; an operator must fix its disks"));
  }
  for (int index : request.data_disk_indexes()) {
    auto disk = std::find_if(
        server.disks().begin(), server.disks().end(),
        [&](const v1::ServerDisk& d) { return d.device_index() == index; });
    if (disk == server.disks().end()) {
      return absl::FailedPreconditionError(
          absl::StrCat("server ", server.id(), " has no disk ", index,
                       "; its disks are ", absl::StrJoin(known, ", ")));
    }
    if (disk->boot()) {
      return absl::InvalidArgumentError(
          absl::StrCat("data_disk_indexes: ", index,
                       " is the boot disk, which is always captured"));
    }
    if (disk->config_drive()) {
      return absl::InvalidArgumentError(
          absl::StrCat("data_disk_indexes: ", index,
                       " is the config drive, which is never captured"));
    }
    selected.push_back(&*disk);
  }
  // Refuse now rather than fail the operation later.
  for (const v1::ServerDisk* disk : selected) {
    RETURN_IF_ERROR(
        deps_.nodes->ForPortal(disk->datacenter(), disk->iscsi().portal())
            .status());
  }

  v1::ImageTemplate t;
  t.set_id(NewUuid());
  t.set_owner_account_id(server.account_id());
  t.set_name(name);
  t.set_note(request.note());
  for (const std::string& tag : tags) t.add_tags(tag);
  t.set_visibility(v1::VISIBILITY_PRIVATE);
  t.set_status(v1::IMAGE_TEMPLATE_STATUS_CREATING);
  t.set_source_server_id(server.id());
  *t.mutable_configuration() = TemplateConfiguration(server.configuration());
  *t.mutable_create_time() = ToTimestamp(now_micros);
  *t.mutable_update_time() = ToTimestamp(now_micros);

  v1::Operation op;
  op.set_id(NewUuid());
  op.set_kind(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE);
  op.set_account_id(server.account_id());
  op.set_user_id(caller.user_id);
  op.set_request_id(request.request_id());
  op.set_state(v1::OPERATION_STATE_PENDING);
  op.set_image_template_id(t.id());
  op.mutable_target()->set_type(v1::RESOURCE_TYPE_SERVER);
  op.mutable_target()->set_id(server.id());
  *op.mutable_create_time() = ToTimestamp(now_micros);
  *op.mutable_update_time() = ToTimestamp(now_micros);
  t.set_create_operation_id(op.id());

  CreateCheckpoint checkpoint;
  checkpoint.set_template_id(t.id());
  checkpoint.set_server_id(server.id());
  checkpoint.set_datacenter(server.datacenter());
  for (const v1::ServerDisk* disk : selected) {
    internal::CaptureDisk* c = checkpoint.add_disks();
    c->set_device_index(disk->device_index());
    c->set_boot(disk->boot());
    c->set_volume_id(disk->san_volume_id());
    c->set_image_id(absl::StrCat(t.id(), "-disk", disk->device_index()));
    c->set_size_bytes(disk->size_bytes());
  }
  OperationInternals internals;
  internals.params = request.SerializeAsString();
  internals.checkpoint = checkpoint.SerializeAsString();
  // The owner's quota, also when an operator captures the server.
  absl::MutexLock quota_lock(&quota_mu_);
  RETURN_IF_ERROR(CheckQuota(server.account_id(), 1, 0));
  RETURN_IF_ERROR(
      deps_.templates->InsertTemplateWithOperation(t, op, internals));
  return op;
}

absl::Status CheckTemplateQuota(QuotaProvider* quotas, TemplateStore& templates,
                                const std::string& account_id, int64_t new_templates,
                                int64_t new_stored_bytes) {
  if (quotas == nullptr) return absl::OkStatus();
  ASSIGN_OR_RETURN(TemplateQuota quota, quotas->GetQuota(account_id));
  if (quota.max_image_templates <= 0 && quota.max_stored_bytes <= 0) {
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(TemplateUsage usage, templates.GetUsage(account_id));
  if (new_templates > 0 && quota.max_image_templates > 0 &&
      usage.template_count + new_templates > quota.max_image_templates) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "account ", account_id, " has ", usage.template_count,
        " image templates, its quota is ", quota.max_image_templates,
        "; delete templates or ask an operator to raise it"));
  }
  if (quota.max_stored_bytes > 0) {
    const bool over =
        new_stored_bytes > 0
            ? usage.stored_bytes + new_stored_bytes > quota.max_stored_bytes
            : usage.stored_bytes >= quota.max_stored_bytes;
    if (over) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "account ", account_id, "'s templates store ", usage.stored_bytes,
          " bytes",
          new_stored_bytes > 0
              ? absl::StrCat(", this capture ", new_stored_bytes, " more")
              : "",
          ", its quota is ", quota.max_stored_bytes,
          " bytes; delete templates or ask an operator to raise it"));
    }
  }
  return absl::OkStatus();
}

namespace {

// The template holds exactly the checkpoint's captured disks, digest for
// digest.
bool RecordedDisksMatch(const v1::ImageTemplate& t, const CreateCheckpoint& cp) {
  if (t.disks_size() != cp.disks_size()) return false;
  for (const internal::CaptureDisk& d : cp.disks()) {
    auto it = std::find_if(t.disks().begin(), t.disks().end(),
                           [&](const v1::ImageTemplateDisk& disk) {
                             return disk.device_index() == d.device_index();
                           });
    if (it == t.disks().end() || d.manifest_digest().empty() ||
        it->manifest_digest() != d.manifest_digest()) {
      return false;
    }
  }
  return true;
}

// An earlier run of `operation_id` recorded the template: ACTIVE with the
// checkpoint's disks. Its step record may be lost (a crash between the two
// commits), so the checkpoint can still say not recorded.
bool RecordedBy(const v1::ImageTemplate& t, const std::string& operation_id,
                const CreateCheckpoint& cp) {
  return t.status() == v1::IMAGE_TEMPLATE_STATUS_ACTIVE &&
         t.create_operation_id() == operation_id && RecordedDisksMatch(t, cp);
}

}  // namespace

// One create in flight: its checkpoint under a lock, shared by the parallel
// capture steps.
class CreateRun {
 public:
  CreateRun(CreateWorkflow& workflow, OperationContext& context)
      : workflow_(workflow), deps_(workflow.deps_), context_(context) {}

  absl::Status Load() { return LoadCheckpoint("create", context_, &mu_, &checkpoint_); }

  absl::Status Run() {
    const CreateCheckpoint cp = Snapshot();
    absl::Status status = RecordedFailure(cp);
    bool delete_images = true;
    if (!status.ok()) {
      // Never go forward again: the undo may have deleted images of disks
      // the checkpoint lists as captured.
      common::LogInfo("operation %s: resuming the undo of a failed create: %s",
                      context_.id(), status.ToString());
    } else {
      if (!cp.recorded() && context_.cancelled()) {
        absl::StatusOr<bool> recorded = RecordedEarlier(cp);
        if (!recorded.ok()) {
          // Unknown: undo without deleting anything an ACTIVE template may
          // hold, and leave the decision to a later run (no cause saved).
          common::LogWarning(
              "operation %s: reading template %s before the undo: %s; its "
              "images stay",
              context_.id(), cp.template_id(), recorded.status().ToString());
          delete_images = false;
        } else if (*recorded) {
          common::LogInfo(
              "operation %s: cancelled after template %s became ACTIVE; "
              "keeping it",
              context_.id(), cp.template_id());
          absl::MutexLock lock(&mu_);
          checkpoint_.set_recorded(true);
        }
      }
      // Once ACTIVE the template stays: only the power state is left to do.
      if (Snapshot().recorded() || !context_.cancelled()) {
        status = Forward();
        if (status.ok() || context_.stopping()) return status;
        // Only power_restore failed after the template became ACTIVE: it
        // keeps its images; the operation reports the power failure.
        if (Snapshot().recorded()) return status;
      } else {
        status = absl::CancelledError("the operation was cancelled");
      }
      // Saved again by delete_images before it deletes anything.
      if (delete_images) RecordFailure(status, context_, &mu_, &checkpoint_);
    }
    Undo(status, delete_images);
    if (context_.stopping()) return absl::AbortedError("stopping during undo");
    return status;
  }

 private:
  absl::Status Forward() {
    CreateCheckpoint cp = Snapshot();
    if (!cp.recorded()) {
      if (!cp.powered_off()) {
        RETURN_IF_ERROR(context_.RunStep(
            "power_off", "", [&]() -> absl::Status { return PowerOff(); }));
        if (ForcedOff()) {
          // The operation's record says the guest was stopped hard.
          RETURN_IF_ERROR(context_.RunStep("power_off_forced", "",
                                           [] { return absl::OkStatus(); }));
        }
      }
      RETURN_IF_ERROR(CaptureAll());
      RETURN_IF_ERROR(
          context_.RunStep("record_template", "", [&] { return Record(); }));
    }
    return context_.RunStep(
        "power_restore", "", [&] { return RestorePower(); },
        OperationContext::StepKind::kUndo);
  }

  absl::Status PowerOff() {
    const std::string server_id = Snapshot().server_id();
    bool known;
    {
      absl::MutexLock lock(&mu_);
      known = checkpoint_.prior_power_state() != 0;
    }
    if (!known) {
      ASSIGN_OR_RETURN(
          v1::PowerState prior,
          deps_.compute->GetPowerState(server_id, deps_.compute_timeout));
      {
        absl::MutexLock lock(&mu_);
        checkpoint_.set_prior_power_state(prior);
      }
      // Durable before the server changes, so any later end restores it.
      RETURN_IF_ERROR(context_.SaveCheckpoint());
    }
    ASSIGN_OR_RETURN(bool forced, deps_.compute->PowerOffReportingForce(
                                      server_id, deps_.compute_timeout));
    if (forced) {
      common::LogWarning(
          "operation %s: server %s ignored the shutdown request and was "
          "stopped hard",
          context_.id(), server_id);
    }
    absl::MutexLock lock(&mu_);
    forced_off_ = forced;
    checkpoint_.set_powered_off(true);
    return absl::OkStatus();
  }

  absl::Status CaptureAll() {
    CreateCheckpoint cp = Snapshot();
    std::vector<std::thread> threads;
    std::vector<absl::Status> results(cp.disks_size());
    for (int i = 0; i < cp.disks_size(); ++i) {
      const internal::CaptureDisk& disk = cp.disks(i);
      int slot = context_.progress().Add(disk.size_bytes(),
                                         disk.done() ? disk.size_bytes() : 0);
      if (disk.done()) continue;
      threads.emplace_back([this, i, slot, disk, &results] {
        results[i] =
            context_.RunStep(absl::StrCat("capture_disk_", disk.device_index()),
                             "", [&] { return Capture(i, slot, disk); });
      });
    }
    for (std::thread& thread : threads) thread.join();
    return FirstError(results);
  }

  absl::Status Capture(int index, int slot, const internal::CaptureDisk& disk) {
    const CreateCheckpoint cp = Snapshot();
    ASSIGN_OR_RETURN(
        v1::SanVolume volume,
        deps_.inventory->ReadSanVolumeWithSecret(disk.volume_id()));
    ASSIGN_OR_RETURN(
        StorageNodeHandle node,
        deps_.nodes->ForPortal(cp.datacenter(), volume.iscsi().portal()));
    // Recorded before the capture, so an undo after a crash finds the image.
    RETURN_IF_ERROR(deps_.templates->AddImageReplica(
        {cp.template_id(), disk.image_id(), node.node_id, ""}));
    CallOptions options;
    options.cancelled = context_.interrupt_flag();
    options.on_progress = context_.progress().Callback(slot);
    options.max_attempts = deps_.call_attempts;
    ASSIGN_OR_RETURN(
        auto summary,
        node.client->Capture(disk.image_id(), IscsiUrl(volume), options));
    RETURN_IF_ERROR(deps_.templates->AddImageReplica(
        {cp.template_id(), disk.image_id(), node.node_id,
         summary.manifest_digest()}));
    context_.progress().Complete(slot);
    absl::MutexLock lock(&mu_);
    internal::CaptureDisk* d = checkpoint_.mutable_disks(index);
    d->set_done(true);
    d->set_node_id(node.node_id);
    d->set_size_bytes(static_cast<int64_t>(summary.volume_size_bytes()));
    d->set_stored_bytes(static_cast<int64_t>(summary.stored_bytes()));
    d->set_manifest_digest(summary.manifest_digest());
    return absl::OkStatus();
  }

  absl::Status Record() {
    const CreateCheckpoint cp = Snapshot();
    ASSIGN_OR_RETURN(v1::Server server,
                     deps_.inventory->ReadServer(cp.server_id()));
    if (deps_.before_record_for_test) deps_.before_record_for_test(context_);
    const int64_t now = NowMicros();
    int64_t new_stored_bytes = 0;
    for (const internal::CaptureDisk& d : cp.disks()) {
      new_stored_bytes += d.stored_bytes();
    }
    absl::MutexLock quota_lock(&workflow_.quota_mu_);
    {
      // The CREATING template counts already and has no disks yet: only its
      // bytes are new. Past max_stored_bytes the operation fails and its
      // images are deleted. (Usage is read outside the transaction: a read
      // may not run inside it; quota_mu_ keeps it current.)
      ASSIGN_OR_RETURN(v1::ImageTemplate before,
                       deps_.templates->GetTemplate(cp.template_id()));
      if (before.status() == v1::IMAGE_TEMPLATE_STATUS_CREATING) {
        RETURN_IF_ERROR(workflow_.CheckQuota(before.owner_account_id(), 0,
                                             new_stored_bytes));
      }
    }
    RETURN_IF_ERROR(
        deps_.templates
            ->MutateTemplate(
                cp.template_id(),
                [&](TemplateTransaction& txn) -> absl::Status {
                  v1::ImageTemplate& t = txn.image_template();
                  // Done, not an error, or the undo would delete an
                  // ACTIVE template's images.
                  if (RecordedBy(t, context_.id(), cp)) return absl::OkStatus();
                  if (t.status() != v1::IMAGE_TEMPLATE_STATUS_CREATING) {
                    return absl::FailedPreconditionError(
                        absl::StrCat("image template ", t.id(), " is ",
                                     v1::ImageTemplateStatus_Name(t.status()),
                                     ", no longer CREATING"));
                  }
                  t.clear_disks();
                  for (const internal::CaptureDisk& d : cp.disks()) {
                    if (!d.done() || d.manifest_digest().empty()) {
                      return absl::InternalError(absl::StrCat(
                          "disk ", d.device_index(), " is not captured"));
                    }
                    v1::ImageTemplateDisk* disk = t.add_disks();
                    disk->set_device_index(d.device_index());
                    disk->set_boot(d.boot());
                    disk->set_logical_size_bytes(d.size_bytes());
                    disk->set_stored_size_bytes(d.stored_bytes());
                    disk->set_manifest_digest(d.manifest_digest());
                  }
                  *t.mutable_configuration() =
                      TemplateConfiguration(server.configuration());
                  t.clear_locations();
                  v1::ImageTemplateLocation* location = t.add_locations();
                  location->set_datacenter(cp.datacenter());
                  location->set_status(
                      v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
                  *location->mutable_create_time() = ToTimestamp(now);
                  t.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
                  *t.mutable_update_time() = ToTimestamp(now);
                  return absl::OkStatus();
                })
            .status());
    absl::MutexLock lock(&mu_);
    checkpoint_.set_recorded(true);
    return absl::OkStatus();
  }

  absl::Status RestorePower() {
    const CreateCheckpoint cp = Snapshot();
    if (cp.prior_power_state() != v1::POWER_STATE_RUNNING)
      return absl::OkStatus();
    // An undo step: only a stop cuts its wait for the boot short.
    return deps_.compute->PowerOn(cp.server_id(), deps_.compute_timeout, context_.stop_flag());
  }

  // True if an earlier run recorded the template (see RecordedBy); a
  // template gone is not recorded.
  absl::StatusOr<bool> RecordedEarlier(const CreateCheckpoint& cp) {
    absl::StatusOr<v1::ImageTemplate> t =
        deps_.templates->GetTemplate(cp.template_id());
    if (absl::IsNotFound(t.status())) return false;
    RETURN_IF_ERROR(t.status());
    return RecordedBy(*t, context_.id(), cp);
  }

  // Deletes every image of the template (if `delete_images`), marks it
  // FAILED and restores the power state. Deleting is best effort: what
  // cannot be deleted now stays listed as a replica, and deleting the FAILED
  // template removes it later. Marking is not: the operation does not end
  // while its template is CREATING (see below).
  void Undo(const absl::Status& cause, bool delete_images) {
    const CreateCheckpoint cp = Snapshot();
    common::LogInfo("operation %s: undoing create of %s: %s", context_.id(),
                    cp.template_id(), cause.ToString());
    auto undo = OperationContext::StepKind::kUndo;
    if (delete_images) {
      absl::Status deleted = context_.RunStep(
          "delete_images", "",
          [&]() -> absl::Status {
            // The cause is durable before any image goes, so a rerun never
            // goes forward over deleted images.
            RETURN_IF_ERROR(context_.SaveCheckpoint());
            return DeleteReplicas(deps_.templates, deps_.nodes,
                                  cp.template_id(), context_.stop_flag());
          },
          undo);
      if (!deleted.ok()) {
        common::LogWarning(
            "operation %s: images of %s stay until the template is deleted: %s",
            context_.id(), cp.template_id(), deleted.ToString());
      }
    }
    absl::Status marked = MarkFailed(cp.template_id());
    absl::Status power = context_.RunStep(
        "power_restore", "", [&] { return RestorePower(); }, undo);
    if (!power.ok()) {
      common::LogError(
          "operation %s: server %s could not be powered back on: %s",
          context_.id(), cp.server_id(), power.ToString());
    }
    // A CREATING template under an ended operation could never be deleted
    // and would count against the quota: retried (1 s doubling to 30 s)
    // until it is written or the control plane stops (the next start
    // resumes this undo). The retries update the step's one record rather
    // than adding one each (about 120 an hour at the cap).
    if (!marked.ok() && !context_.stopping()) {
      common::LogWarning("operation %s: template %s stays CREATING: %s; retrying",
                         context_.id(), cp.template_id(), marked.ToString());
      marked = context_.RetryStepUntilDone(
          "mark_failed", [&] { return MarkFailedOnce(cp.template_id()); }, absl::Seconds(30));
    }
  }

  absl::Status MarkFailed(const std::string& template_id) {
    return context_.RunStep(
        "mark_failed", "", [&] { return MarkFailedOnce(template_id); },
        OperationContext::StepKind::kUndo);
  }

  absl::Status MarkFailedOnce(const std::string& template_id) {
    absl::Status status =
        deps_.templates
            ->MutateTemplate(template_id,
                             [&](TemplateTransaction& txn) {
                               v1::ImageTemplate& t = txn.image_template();
                               if (t.status() == v1::IMAGE_TEMPLATE_STATUS_CREATING) {
                                 t.set_status(v1::IMAGE_TEMPLATE_STATUS_FAILED);
                                 *t.mutable_update_time() = ToTimestamp(NowMicros());
                               }
                               return absl::OkStatus();
                             })
            .status();
    // A template gone is no longer CREATING.
    return absl::IsNotFound(status) ? absl::OkStatus() : status;
  }

  CreateCheckpoint Snapshot() {
    absl::MutexLock lock(&mu_);
    return checkpoint_;
  }
  bool ForcedOff() {
    absl::MutexLock lock(&mu_);
    return forced_off_;
  }

  CreateWorkflow& workflow_;
  const CreateWorkflow::Dependencies& deps_;
  OperationContext& context_;
  absl::Mutex mu_;
  CreateCheckpoint checkpoint_ ABSL_GUARDED_BY(mu_);
  // This run's power_off stopped the guest hard (not checkpointed: only
  // recorded as a step).
  bool forced_off_ ABSL_GUARDED_BY(mu_) = false;
};

absl::Status CreateWorkflow::Run(OperationContext& context) {
  CreateRun run(*this, context);
  RETURN_IF_ERROR(run.Load());
  return run.Run();
}

}  // namespace controlplane
