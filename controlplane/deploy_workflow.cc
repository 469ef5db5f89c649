#include "controlplane/deploy_workflow.h"

#include <algorithm>
#include <map>
#include <thread>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/workflow_checkpoint.pb.h"
#include "controlplane/workflow_util.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;
using internal::DeployCheckpoint;
using internal::DeployInstance;

namespace {

std::string Quoted(absl::string_view text) {
  return absl::StrCat("\"", text, "\"");
}

// cloud-init NoCloud meta-data.
std::string MetaData(const DeployInstance& instance, absl::string_view domain) {
  std::string out = absl::StrCat("instance-id: ", instance.server_id(), "\n",
                                 "local-hostname: ", instance.hostname(), "\n");
  if (!domain.empty()) {
    absl::StrAppend(&out, "hostname: ", instance.hostname(), ".", domain, "\n");
  }
  return out;
}

// Netplan-style network config version 2 for the server's first interface,
// matched by its (new) MAC address.
std::string NetworkConfig(const v1::NetworkInterface& nic, bool dhcp) {
  const std::string name = nic.name().empty() ? "eth0" : nic.name();
  std::string out =
      absl::StrCat("version: 2\nethernets:\n  ", name, ":\n",
                   "    match:\n      macaddress: ", Quoted(nic.mac_address()),
                   "\n", "    set-name: ", name, "\n");
  if (dhcp || nic.ip_address().empty()) {
    absl::StrAppend(&out, "    dhcp4: true\n");
    return out;
  }
  absl::StrAppend(&out, "    dhcp4: false\n    addresses:\n      - ",
                  nic.ip_address(), "\n");
  if (!nic.gateway().empty()) {
    // 0.0.0.0/0, not netplan's "default": cloud-init 22.4 (Debian 12)
    // rejects the keyword and then applies no network configuration at all.
    absl::StrAppend(&out, "    routes:\n      - to: 0.0.0.0/0\n        via: ",
                    nic.gateway(), "\n");
  }
  if (nic.dns_servers_size() > 0) {
    absl::StrAppend(&out, "    nameservers:\n      addresses: [",
                    absl::StrJoin(nic.dns_servers(), ", "), "]\n");
  }
  return out;
}

}  // namespace

absl::StatusOr<v1::Operation> DeployWorkflow::Begin(
    const Caller& caller, const v1::DeployImageTemplateRequest& request,
    const v1::ImageTemplate& t, int64_t now_micros) {
  RETURN_IF_ERROR(deps_.nodes->CheckDatacenter(request.datacenter()));
  const int quantity = request.quantity();
  ProvisionPlan plan;
  plan.account_id = caller.account_id;
  plan.datacenter = request.datacenter();
  plan.source_image_template_id = t.id();
  plan.any_template = caller.is_operator;
  plan.domain = request.domain();
  plan.configuration = t.configuration();
  for (int i = 0; i < quantity; ++i) {
    plan.server_ids.push_back(NewUuid());
    plan.hostnames.push_back(
        request.hostnames_size() > 0
            ? request.hostnames(i)
            : absl::StrCat(request.hostname_prefix(), "-", i + 1));
  }
  ASSIGN_OR_RETURN(std::vector<ImageReplica> replicas,
                   deps_.templates->ListImageReplicas(t.id()));
  std::map<std::string, std::string> image_of_disk;
  std::vector<bool> used(16, false);
  for (const v1::ImageTemplateDisk& disk : t.disks()) {
    ProvisionDisk need;
    need.device_index = disk.device_index();
    need.boot = disk.boot();
    need.min_size_bytes = disk.logical_size_bytes();
    for (const v1::DeployDiskSize& size : request.disk_sizes()) {
      if (size.device_index() == disk.device_index()) {
        need.min_size_bytes = std::max(need.min_size_bytes, size.size_bytes());
      }
    }
    const std::string image_id =
        absl::StrCat(t.id(), "-disk", disk.device_index());
    for (const ImageReplica& replica : replicas) {
      if (replica.image_id == image_id && !replica.manifest_digest.empty()) {
        need.preferred_san_hosts.push_back(replica.node_id);
      }
    }
    if (disk.device_index() >= 0 && disk.device_index() < 16)
      used[disk.device_index()] = true;
    plan.disks.push_back(std::move(need));
  }
  plan.config_drive_index = 15;
  while (plan.config_drive_index > 0 && used[plan.config_drive_index])
    --plan.config_drive_index;
  // Credentials stay inside the account that recorded them. The template's
  // snapshot from its create, never the source server's current ones.
  if (t.owner_account_id() == caller.account_id) {
    plan.credentials_from_template_id = t.id();
  }
  if (!caller.is_operator && !caller.all_servers)
    plan.grant_user_id = caller.user_id;
  plan.address_pools.resize(quantity);
  for (int i = 0; i < quantity; ++i) {
    if (request.networks_size() == 0) {
      plan.address_pools[i] = "";
    } else if (i < request.networks_size() &&
               request.networks(i).address_case() ==
                   v1::InstanceNetwork::kIpPoolId) {
      plan.address_pools[i] = request.networks(i).ip_pool_id();
    }
  }
  if (request.networks_size() > 0) {
    plan.static_addresses.resize(quantity);
    for (int i = 0; i < request.networks_size() && i < quantity; ++i) {
      if (request.networks(i).address_case() ==
          v1::InstanceNetwork::kStaticAddress) {
        plan.static_addresses[i] = request.networks(i).static_address();
      }
    }
  }

  v1::Operation op;
  auto build = [&](const std::vector<v1::Server>& servers)
      -> absl::StatusOr<std::pair<v1::Operation, OperationInternals>> {
    op.set_id(NewUuid());
    op.set_kind(v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE);
    op.set_account_id(caller.account_id);
    op.set_user_id(caller.user_id);
    op.set_request_id(request.request_id());
    op.set_state(v1::OPERATION_STATE_PENDING);
    op.mutable_target()->set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
    op.mutable_target()->set_id(t.id());
    *op.mutable_create_time() = ToTimestamp(now_micros);
    *op.mutable_update_time() = ToTimestamp(now_micros);
    v1::OperationStep* step = op.add_finished_steps();
    step->set_name("allocate_volumes");
    step->set_state(v1::OPERATION_STATE_SUCCEEDED);
    step->set_attempt_count(1);
    *step->mutable_start_time() = ToTimestamp(now_micros);
    *step->mutable_end_time() = ToTimestamp(NowMicros());
    DeployCheckpoint checkpoint;
    checkpoint.set_template_id(t.id());
    checkpoint.set_datacenter(request.datacenter());
    checkpoint.set_domain(request.domain());
    checkpoint.set_user_data(request.user_data());
    for (size_t i = 0; i < servers.size(); ++i) {
      const v1::Server& server = servers[i];
      op.mutable_deployed_servers()->add_server_ids(server.id());
      DeployInstance* instance = checkpoint.add_instances();
      instance->set_server_id(server.id());
      instance->set_hostname(server.hostname());
      for (const v1::ServerDisk& disk : server.disks()) {
        if (disk.config_drive()) {
          instance->set_config_drive_volume_id(disk.san_volume_id());
          continue;
        }
        for (const v1::ImageTemplateDisk& source : t.disks()) {
          if (source.device_index() != disk.device_index()) continue;
          internal::RestoreDisk* restore = instance->add_disks();
          restore->set_device_index(disk.device_index());
          restore->set_volume_id(disk.san_volume_id());
          restore->set_image_id(
              absl::StrCat(t.id(), "-disk", disk.device_index()));
          restore->set_manifest_digest(source.manifest_digest());
        }
      }
      if (request.networks_size() > 0) {
        const v1::InstanceNetwork& network =
            request.networks(static_cast<int>(i));
        switch (network.address_case()) {
          case v1::InstanceNetwork::kIpPoolId:
            instance->set_ip_pool_id(network.ip_pool_id());
            break;
          case v1::InstanceNetwork::kStaticAddress: {
            // As ProvisionServers reserved it: gateway and DNS servers
            // filled from its pool where the request left them empty.
            const v1::NetworkInterface& nic =
                server.configuration().network_interfaces(0);
            instance->set_static_address(nic.ip_address());
            instance->set_static_gateway(nic.gateway());
            for (const std::string& dns : nic.dns_servers()) {
              instance->add_static_dns_servers(dns);
            }
            break;
          }
          default:
            instance->set_dhcp(true);
        }
      }
    }
    OperationInternals internals;
    internals.params = request.SerializeAsString();
    internals.checkpoint = checkpoint.SerializeAsString();
    return std::make_pair(op, internals);
  };
  RETURN_IF_ERROR(deps_.inventory->ProvisionServers(plan, build).status());
  return op;
}

// One deploy in flight: its checkpoint under a lock, shared by the parallel
// steps.
class DeployRun {
 public:
  DeployRun(DeployWorkflow& workflow, OperationContext& context)
      : workflow_(workflow), deps_(workflow.deps_), context_(context) {}

  absl::Status Load() { return LoadCheckpoint("deploy", context_, &mu_, &checkpoint_); }

  absl::Status Run() {
    absl::Status status = RecordedFailure(Snapshot());
    if (!status.ok()) {
      // Never deploy again: released volumes may be another deploy's by now.
      common::LogInfo("operation %s: resuming the release of a failed deploy: %s",
                      context_.id(), status.ToString());
    } else {
      status = context_.cancelled() ? absl::CancelledError("the operation was cancelled")
                                    : Forward();
      if (status.ok() || context_.stopping()) return status;
      // Should this save and the first release_server step's both fail, the
      // stores' guards refuse to build on a released server.
      RecordFailure(status, context_, &mu_, &checkpoint_);
    }
    // No half-built server stays: every server of the deploy is released.
    const DeployCheckpoint cp = Snapshot();
    common::LogInfo("operation %s: releasing %d servers: %s", context_.id(),
                    cp.instances_size(), status.ToString());
    for (const DeployInstance& instance : cp.instances()) {
      absl::Status released =
          context_.RunStep("release_server", instance.server_id(),
                           [&] { return ReleaseServer(instance.server_id()); },
                           OperationContext::StepKind::kUndo);
      if (!released.ok()) {
        common::LogError("operation %s: releasing server %s: %s", context_.id(),
                         instance.server_id(), released.ToString());
      }
    }
    if (context_.stopping()) return absl::AbortedError("stopping during undo");
    return status;
  }

 private:
  // Powers the server off, then frees its volumes and addresses. Repeatable:
  // a server released already (by this step before a restart) is left as
  // it is, since powering off a server without disks fails on some drivers.
  // A failed power-off is UNAVAILABLE so the step retries it: the volumes
  // are freed only once nothing runs on them.
  absl::Status ReleaseServer(const std::string& server_id) {
    absl::StatusOr<v1::Server> server = deps_.inventory->ReadServer(server_id);
    if (absl::IsNotFound(server.status())) return absl::OkStatus();
    if (!server.ok()) {
      return absl::UnavailableError(
          absl::StrCat("reading server ", server_id, ": ", server.status().ToString()));
    }
    if (server->state() == v1::SERVER_STATE_FAILED && server->disks_size() == 0) {
      return absl::OkStatus();
    }
    absl::Status off = deps_.compute->PowerOff(server_id, deps_.compute_timeout);
    if (!off.ok() && !absl::IsNotFound(off)) {
      return absl::UnavailableError(absl::StrCat("powering off server ", server_id,
                                                 " before releasing it: ", off.ToString()));
    }
    return deps_.inventory->ReleaseServer(server_id);
  }

  absl::Status Forward() {
    const DeployCheckpoint cp = Snapshot();
    std::vector<absl::Status> results(cp.instances_size());
    std::vector<std::thread> threads;
    // Progress of every restore, finished ones included.
    std::vector<std::vector<int>> slots(cp.instances_size());
    for (int i = 0; i < cp.instances_size(); ++i) {
      for (const internal::RestoreDisk& disk : cp.instances(i).disks()) {
        absl::StatusOr<v1::SanVolume> volume =
            deps_.inventory->ReadSanVolumeWithSecret(disk.volume_id());
        uint64_t size =
            volume.ok() ? static_cast<uint64_t>(volume->size_bytes()) : 0;
        slots[i].push_back(
            context_.progress().Add(size, disk.done() ? size : 0));
      }
    }
    for (int i = 0; i < cp.instances_size(); ++i) {
      threads.emplace_back(
          [this, i, &results, &slots] { results[i] = Instance(i, slots[i]); });
    }
    for (std::thread& thread : threads) thread.join();
    return FirstError(results);
  }

  // Restore, network, activate for one server.
  absl::Status Instance(int i, const std::vector<int>& slots) {
    DeployInstance instance = Snapshot().instances(i);
    std::vector<absl::Status> results(instance.disks_size());
    std::vector<std::thread> threads;
    for (int d = 0; d < instance.disks_size(); ++d) {
      if (instance.disks(d).done()) continue;
      threads.emplace_back([this, i, d, &instance, &results, &slots] {
        Acquire();
        results[d] = context_.RunStep(
            absl::StrCat("restore_disk_", instance.disks(d).device_index()),
            instance.server_id(), [&] { return Restore(i, d, slots[d]); });
        Release();
      });
    }
    for (std::thread& thread : threads) thread.join();
    RETURN_IF_ERROR(FirstError(results));
    if (!instance.network_done()) {
      RETURN_IF_ERROR(context_.RunStep("configure_network",
                                       instance.server_id(),
                                       [&] { return ConfigureNetwork(i); }));
    }
    if (!instance.active()) {
      RETURN_IF_ERROR(context_.RunStep("activate", instance.server_id(),
                                       [&] { return Activate(i); }));
    }
    return absl::OkStatus();
  }

  absl::Status Restore(int i, int d, int slot) {
    const DeployCheckpoint cp = Snapshot();
    const internal::RestoreDisk& disk = cp.instances(i).disks(d);
    ASSIGN_OR_RETURN(v1::SanVolume volume,
                     deps_.inventory->ReadAttachedVolumeWithSecret(
                         disk.volume_id(), cp.instances(i).server_id()));
    ASSIGN_OR_RETURN(
        StorageNodeHandle node,
        deps_.nodes->ForPortal(cp.datacenter(), volume.iscsi().portal()));
    RETURN_IF_ERROR(EnsureImage(cp.template_id(), node, disk.image_id(),
                                disk.manifest_digest()));
    CallOptions options;
    options.cancelled = context_.interrupt_flag();
    options.on_progress = context_.progress().Callback(slot);
    options.max_attempts = deps_.call_attempts;
    RETURN_IF_ERROR(node.client
                        ->Restore(disk.image_id(), IscsiUrl(volume),
                                  disk.manifest_digest(), options)
                        .status());
    context_.progress().Complete(slot);
    absl::MutexLock lock(&mu_);
    checkpoint_.mutable_instances(i)->mutable_disks(d)->set_done(true);
    return absl::OkStatus();
  }

  // Makes sure `node` holds the image, copying it from a live node that
  // does. DATA_LOSS if the node holds it with another digest.
  absl::Status EnsureImage(const std::string& template_id,
                           const StorageNodeHandle& node,
                           const std::string& image_id,
                           const std::string& digest) {
    const std::string key = absl::StrCat(node.node_id, "/", image_id);
    {
      absl::MutexLock lock(&workflow_.copy_mu_);
      auto free = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(workflow_.copy_mu_) {
        return !workflow_.copying_.contains(key);
      };
      while (!free()) {
        // Another deploy's copy may take long: a cancel stops the wait.
        if (context_.interrupt_flag()->load()) {
          return absl::CancelledError("the operation was cancelled");
        }
        workflow_.copy_mu_.AwaitWithTimeout(absl::Condition(&free), absl::Milliseconds(100));
      }
      workflow_.copying_.insert(key);
    }
    absl::Cleanup done = [&] {
      absl::MutexLock lock(&workflow_.copy_mu_);
      workflow_.copying_.erase(key);
    };
    CallOptions options;
    options.cancelled = context_.interrupt_flag();
    options.max_attempts = deps_.call_attempts;
    absl::StatusOr<imagetemplates::storagenode::v1::ImageManifestSummary>
        present = node.client->GetImage(image_id, options);
    if (present.ok()) {
      if (present->manifest_digest() != digest) {
        return absl::DataLossError(
            absl::StrCat("storage node ", node.node_id, " holds image ",
                         image_id, " with digest ", present->manifest_digest(),
                         ", the template recorded ", digest));
      }
      // A copy whose record was lost (the control plane died between
      // SendImage and AddImageReplica) would never be deleted with the
      // template: record it now.
      ASSIGN_OR_RETURN(std::vector<ImageReplica> known,
                       deps_.templates->ListImageReplicas(template_id));
      for (const ImageReplica& replica : known) {
        if (replica.image_id == image_id && replica.node_id == node.node_id &&
            replica.manifest_digest == digest) {
          return absl::OkStatus();
        }
      }
      return deps_.templates->AddImageReplica(
          {template_id, image_id, node.node_id, digest});
    }
    if (!absl::IsNotFound(present.status())) return present.status();
    ASSIGN_OR_RETURN(std::vector<ImageReplica> replicas,
                     deps_.templates->ListImageReplicas(template_id));
    absl::Status last = absl::UnavailableError(
        absl::StrCat("no live storage node holds image ", image_id,
                     " to copy to ", node.node_id));
    for (const ImageReplica& replica : replicas) {
      if (replica.image_id != image_id || replica.node_id == node.node_id ||
          replica.manifest_digest != digest) {
        continue;
      }
      absl::StatusOr<StorageNodeHandle> source =
          deps_.nodes->ById(replica.node_id);
      if (!source.ok()) {
        last = source.status();
        continue;
      }
      common::LogInfo("operation %s: copying image %s from %s to %s",
                      context_.id(), image_id, source->node_id, node.node_id);
      absl::StatusOr<imagetemplates::storagenode::v1::SendImageSummary> sent =
          source->client->SendImage(image_id, node.address, options);
      if (!sent.ok()) {
        last = sent.status();
        continue;
      }
      return deps_.templates->AddImageReplica(
          {template_id, image_id, node.node_id, sent->manifest_digest()});
    }
    return last;
  }

  absl::Status ConfigureNetwork(int i) {
    const DeployCheckpoint cp = Snapshot();
    const DeployInstance& instance = cp.instances(i);
    if (!instance.dhcp() && instance.static_address().empty()) {
      RETURN_IF_ERROR(
          deps_.inventory
              ->AllocateAddress(instance.server_id(), instance.ip_pool_id())
              .status());
    }
    ASSIGN_OR_RETURN(v1::Server server,
                     deps_.inventory->ReadServer(instance.server_id()));
    if (server.configuration().network_interfaces_size() == 0) {
      return absl::InternalError(
          absl::StrCat("server ", server.id(), " has no interface"));
    }
    v1::NetworkInterface nic = server.configuration().network_interfaces(0);
    if (!instance.static_address().empty()) {
      nic.set_ip_address(instance.static_address());
      nic.set_gateway(instance.static_gateway());
      nic.clear_dns_servers();
      for (const std::string& dns : instance.static_dns_servers())
        nic.add_dns_servers(dns);
    }
    ASSIGN_OR_RETURN(v1::SanVolume volume,
                     deps_.inventory->ReadAttachedVolumeWithSecret(
                         instance.config_drive_volume_id(), instance.server_id()));
    ASSIGN_OR_RETURN(
        StorageNodeHandle node,
        deps_.nodes->ForPortal(cp.datacenter(), volume.iscsi().portal()));
    imagetemplates::storagenode::v1::WriteConfigDriveRequest request;
    request.set_target_url(IscsiUrl(volume));
    request.set_meta_data(MetaData(instance, cp.domain()));
    request.set_user_data(cp.user_data());
    request.set_network_config(NetworkConfig(nic, instance.dhcp()));
    CallOptions options;
    options.cancelled = context_.interrupt_flag();
    options.max_attempts = deps_.call_attempts;
    RETURN_IF_ERROR(node.client->WriteConfigDrive(request, options));
    absl::MutexLock lock(&mu_);
    checkpoint_.mutable_instances(i)->set_network_done(true);
    return absl::OkStatus();
  }

  absl::Status Activate(int i) {
    const std::string server_id = Snapshot().instances(i).server_id();
    // Checked before powering on too: a released server must not boot.
    ASSIGN_OR_RETURN(v1::Server server, deps_.inventory->ReadServer(server_id));
    if (server.state() != v1::SERVER_STATE_PROVISIONING &&
        server.state() != v1::SERVER_STATE_ACTIVE) {
      return absl::FailedPreconditionError(
          absl::StrCat("server ", server_id, " is ", v1::ServerState_Name(server.state()),
                       "; only a PROVISIONING server is activated"));
    }
    // A cancel stops the wait for the boot; the release powers it off.
    RETURN_IF_ERROR(
        deps_.compute->PowerOn(server_id, deps_.compute_timeout, context_.interrupt_flag()));
    RETURN_IF_ERROR(
        deps_.inventory->SetServerState(server_id, v1::SERVER_STATE_ACTIVE));
    absl::MutexLock lock(&mu_);
    checkpoint_.mutable_instances(i)->set_active(true);
    return absl::OkStatus();
  }

  void Acquire() {
    absl::MutexLock lock(&slots_mu_);
    auto free = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(slots_mu_) {
      return running_ < std::max(1, deps_.max_parallel_restores);
    };
    slots_mu_.Await(absl::Condition(&free));
    ++running_;
  }
  void Release() {
    absl::MutexLock lock(&slots_mu_);
    --running_;
  }

  DeployCheckpoint Snapshot() {
    absl::MutexLock lock(&mu_);
    return checkpoint_;
  }

  DeployWorkflow& workflow_;
  const DeployWorkflow::Dependencies& deps_;
  OperationContext& context_;
  absl::Mutex mu_;
  DeployCheckpoint checkpoint_ ABSL_GUARDED_BY(mu_);
  absl::Mutex slots_mu_;
  int running_ ABSL_GUARDED_BY(slots_mu_) = 0;
};

absl::Status DeployWorkflow::Run(OperationContext& context) {
  DeployRun run(*this, context);
  RETURN_IF_ERROR(run.Load());
  return run.Run();
}

}  // namespace controlplane
