// Everything the create, deploy, delete and copy workflows run on, in one
// process: the SQLite stores in memory, three fake storage nodes (n0 and n1,
// each serving one SAN portal of datacenter dc1, and n2 in dc2; each can send
// images to the others), the inventory compute driver,
// the workflows, an operation runner with short backoffs, and the template
// manager for deletes. Helpers add volumes, servers and an IP pool.
#ifndef CONTROLPLANE_TESTING_WORKFLOW_TEST_ENVIRONMENT_H_
#define CONTROLPLANE_TESTING_WORKFLOW_TEST_ENVIRONMENT_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "controlplane/copy_workflow.h"
#include "controlplane/create_workflow.h"
#include "controlplane/credential_cipher.h"
#include "controlplane/delete_workflow.h"
#include "controlplane/deploy_workflow.h"
#include "controlplane/ids.h"
#include "controlplane/image_template_manager.h"
#include "controlplane/inventory_compute_driver.h"
#include "controlplane/operation_runner.h"
#include "controlplane/sqlite_inventory_store.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/sqlite_request_id_store.h"
#include "controlplane/sqlite_template_store.h"
#include "controlplane/storage_node_directory.h"
#include "controlplane/testing/account_directory_fake.h"
#include "controlplane/testing/audit_log_fake.h"
#include "controlplane/testing/storage_node_client_fake.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {

// The inventory compute driver with switches that fail PowerOn or make it
// wait as for a slow boot, and a hook in front of PowerOff.
class SwitchableComputeDriver final : public ComputeDriver {
 public:
  explicit SwitchableComputeDriver(InventoryStore* inventory) : driver_(inventory) {}
  void FailPowerOn(absl::Status status) {
    absl::MutexLock lock(&mu_);
    power_on_ = std::move(status);
  }
  // PowerOn waits, as for a guest that never finishes booting, until its
  // cancel flag is set (then CANCELLED), and counts how many wait.
  void HangPowerOn(bool hang) {
    absl::MutexLock lock(&mu_);
    hang_power_on_ = hang;
  }
  int power_ons_waiting() {
    absl::MutexLock lock(&mu_);
    return power_ons_waiting_;
  }
  // Runs (under no lock) before every PowerOff; an error it returns is
  // PowerOff's result instead. Empty: none.
  void SetPowerOffHook(std::function<absl::Status(const std::string& server_id)> hook) {
    absl::MutexLock lock(&mu_);
    power_off_hook_ = std::move(hook);
  }
  absl::StatusOr<imagetemplates::v1::PowerState> GetPowerState(const std::string& server_id,
                                                                absl::Duration timeout) override {
    return driver_.GetPowerState(server_id, timeout);
  }
  absl::Status PowerOn(const std::string& server_id, absl::Duration timeout,
                       const std::atomic<bool>* cancelled) override {
    bool hang;
    {
      absl::MutexLock lock(&mu_);
      if (!power_on_.ok()) return power_on_;
      hang = hang_power_on_;
      if (hang) ++power_ons_waiting_;
    }
    if (hang) {
      while (cancelled == nullptr || !cancelled->load()) absl::SleepFor(absl::Milliseconds(10));
      absl::MutexLock lock(&mu_);
      --power_ons_waiting_;
      return absl::CancelledError("power on cancelled while booting");
    }
    return driver_.PowerOn(server_id, timeout, cancelled);
  }
  absl::Status PowerOff(const std::string& server_id, absl::Duration timeout) override {
    std::function<absl::Status(const std::string&)> hook;
    {
      absl::MutexLock lock(&mu_);
      hook = power_off_hook_;
    }
    if (hook) {
      absl::Status status = hook(server_id);
      if (!status.ok()) return status;
    }
    return driver_.PowerOff(server_id, timeout);
  }

 private:
  InventoryComputeDriver driver_;
  absl::Mutex mu_;
  absl::Status power_on_ ABSL_GUARDED_BY(mu_);
  bool hang_power_on_ ABSL_GUARDED_BY(mu_) = false;
  int power_ons_waiting_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<absl::Status(const std::string&)> power_off_hook_ ABSL_GUARDED_BY(mu_);
};

class WorkflowTestEnvironment : public ::testing::Test {
 protected:
  // Disks of sources and deploy targets; config drives are 1 MiB, so
  // neither kind of volume fits the other's place.
  static constexpr int64_t kDiskSize = 4 << 20;
  static constexpr char kAccount[] = "00000000-0000-4000-8000-00000000000a";

  void SetUp() override {
    db_ = *OpenTemplateTestDatabase();
    ASSERT_TRUE(AddTestAccount(*db_, kAccount).ok());
    accounts_.AddAccount(kAccount);
    cipher_ = *CredentialCipher::Create(std::string(32, 'k'));
    inventory_ = std::make_unique<SqliteInventoryStore>(db_.get(), cipher_.get());
    templates_ = std::make_unique<SqliteTemplateStore>(db_.get(), cipher_.get());
    operations_ = std::make_unique<SqliteOperationStore>(db_.get());
    request_ids_ = std::make_unique<SqliteRequestIdStore>(db_.get());
    operator_.is_operator = true;
    operator_.user_id = "operator";
    owner_.user_id = "owner";
    owner_.account_id = kAccount;
    owner_.all_servers = true;
    for (auto p : {imagetemplates::v1::PERMISSION_IMAGE_TEMPLATE_MANAGE,
                   imagetemplates::v1::PERMISSION_SERVER_PROVISION,
                   imagetemplates::v1::PERMISSION_SERVER_VIEW}) {
      owner_.permissions.insert(p);
    }
    imagetemplates::v1::CreateDatacenterRequest dc;
    dc.set_name("dc1");
    ASSERT_TRUE(inventory_->CreateDatacenter(operator_, dc).ok());
    dc.set_name("dc2");
    ASSERT_TRUE(inventory_->CreateDatacenter(operator_, dc).ok());
    for (int i = 0; i < kNodes; ++i) {
      nodes_.push_back(std::make_unique<FakeStorageNodeClient>(NodeId(i), kDiskSize));
      ASSERT_TRUE(inventory_->UpsertStorageNode(Node(i)).ok());
    }
    for (int i = 0; i < kNodes; ++i) {
      for (int j = 0; j < kNodes; ++j) {
        if (i != j) nodes_[i]->SetPeer(Node(j).address(), nodes_[j].get());
      }
    }
    directory_ = std::make_unique<StorageNodeDirectory>(
        inventory_.get(),
        [this](const std::string& address) {
          for (int i = 0; i < kNodes; ++i) {
            if (address == Node(i).address()) return nodes_[i]->Borrow();
          }
          return nodes_[0]->Borrow();
        },
        absl::Hours(1));
    compute_ = std::make_unique<SwitchableComputeDriver>(inventory_.get());
    CreateWorkflow::Dependencies create{templates_.get(), inventory_.get(),
                                        directory_.get(),  compute_.get(),
                                        absl::Seconds(5),  /*call_attempts=*/1};
    create.before_record_for_test = [this](OperationContext& context) {
      std::function<void(OperationContext&)> hook;
      {
        absl::MutexLock lock(&hook_mu_);
        hook = before_record_;
      }
      if (hook) hook(context);
    };
    create_ = std::make_unique<CreateWorkflow>(create);
    DeployWorkflow::Dependencies deploy;
    deploy.templates = templates_.get();
    deploy.inventory = inventory_.get();
    deploy.nodes = directory_.get();
    deploy.compute = compute_.get();
    deploy.call_attempts = 1;
    deploy_ = std::make_unique<DeployWorkflow>(deploy);
    delete_ = std::make_unique<DeleteWorkflow>(templates_.get(), directory_.get());
    CopyWorkflow::Dependencies copy;
    copy.templates = templates_.get();
    copy.inventory = inventory_.get();
    copy.nodes = directory_.get();
    copy.call_attempts = 1;
    copy_ = std::make_unique<CopyWorkflow>(copy);
    ImageTemplateManager::Dependencies manager;
    manager.templates = templates_.get();
    manager.operations = operations_.get();
    manager.request_ids = request_ids_.get();
    manager.audit = &audit_;
    manager.quotas = &accounts_;
    manager.accounts = &accounts_;
    manager.create = create_.get();
    manager.deploy = deploy_.get();
    manager.copy = copy_.get();
    manager_ = std::make_unique<ImageTemplateManager>(manager);

    StartRunner();
  }

  // A new runner on the same stores and workflows, as after a control-plane
  // restart (after runner_->Stop()).
  void StartRunner() {
    OperationRunnerOptions options;
    options.poll_interval = absl::Milliseconds(20);
    options.step_max_attempts = 4;
    options.step_initial_backoff = absl::Milliseconds(10);
    options.step_max_backoff = absl::Milliseconds(40);
    options.progress_interval = absl::Milliseconds(20);
    runner_ = std::make_unique<OperationRunner>(operations_.get(), options);
    runner_->Register(imagetemplates::v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, create_.get());
    runner_->Register(imagetemplates::v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE, deploy_.get());
    runner_->Register(imagetemplates::v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE, delete_.get());
    runner_->Register(imagetemplates::v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE, copy_.get());
    runner_->Start();
  }

  // Runs inside every create's record_template, before the template is
  // written; empty: nothing.
  void SetBeforeRecord(std::function<void(OperationContext&)> hook) {
    absl::MutexLock lock(&hook_mu_);
    before_record_ = std::move(hook);
  }

  void TearDown() override {
    for (auto& node : nodes_) {
      for (auto call : {FakeStorageNodeClient::kCapture, FakeStorageNodeClient::kRestore,
                        FakeStorageNodeClient::kConfigDrive, FakeStorageNodeClient::kSend}) {
        node->Release(call);
      }
    }
    runner_->Stop();
  }

  // n0 and n1 in dc1, n2 in dc2.
  static constexpr int kNodes = 3;
  static std::string NodeId(int i) { return absl::StrCat("n", i); }
  static std::string Portal(int i) { return absl::StrCat("10.0.0.", i + 1, ":3260"); }

  static imagetemplates::v1::StorageNode Node(int i) {
    imagetemplates::v1::StorageNode node;
    node.set_id(NodeId(i));
    node.set_datacenter(i < 2 ? "dc1" : "dc2");
    node.set_address(absl::StrCat("fake-", NodeId(i), ":7000"));
    node.add_served_portals(Portal(i));
    return node;
  }

  // Takes node `i` down (as the sweeper would after missed heartbeats) or
  // back up.
  void SetNodeUp(int i, bool up) {
    if (up) {
      ASSERT_TRUE(inventory_->RecordHeartbeat(NodeId(i), 1 << 30, 1 << 30, NowMicros()).ok());
      return;
    }
    ASSERT_TRUE(inventory_->MarkStorageNodesDown(NowMicros() + 1).ok());
    for (int other = 0; other < static_cast<int>(nodes_.size()); ++other) {
      if (other != i) SetNodeUp(other, true);
    }
  }

  // A FREE volume on node `i`'s SAN.
  std::string AddVolume(int i, int64_t size = kDiskSize) {
    imagetemplates::v1::CreateSanVolumeRequest request;
    request.set_datacenter(Node(i).datacenter());
    request.set_san_host(NodeId(i));
    request.mutable_iscsi()->set_portal(Portal(i));
    request.mutable_iscsi()->set_iqn(absl::StrCat("iqn.2026-11.test:v", ++volumes_));
    request.mutable_iscsi()->set_lun(1);
    request.set_size_bytes(size);
    auto response = inventory_->CreateSanVolume(operator_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->san_volume().id() : "";
  }

  // An ACTIVE virtual server of the account in `power`, with a boot disk on
  // node 0 and, if `data_disk`, a data disk (index 1) on node 1.
  std::string AddServer(imagetemplates::v1::PowerState power, bool data_disk = true) {
    imagetemplates::v1::CreateServerRequest request;
    request.set_account_id(kAccount);
    request.set_type(imagetemplates::v1::SERVER_TYPE_VIRTUAL);
    request.set_hostname(absl::StrCat("source", ++servers_));
    request.set_domain("example.com");
    request.set_datacenter("dc1");
    request.mutable_configuration()->set_cpu_count(2);
    request.mutable_configuration()->set_memory_mib(2048);
    request.mutable_configuration()->set_os_reference("UBUNTU_22_64");
    auto* nic = request.mutable_configuration()->add_network_interfaces();
    nic->set_name("eth0");
    nic->set_mac_address("02:00:00:00:00:01");
    std::vector<std::string> volumes = {AddVolume(0)};
    if (data_disk) volumes.push_back(AddVolume(1));
    for (size_t i = 0; i < volumes.size(); ++i) {
      auto* disk = request.add_disks();
      disk->set_device_index(static_cast<int>(i));
      disk->set_boot(i == 0);
      disk->set_san_volume_id(volumes[i]);
    }
    request.set_power_state(power);
    auto* cred = request.add_credentials();
    cred->set_software("os");
    cred->set_username("root");
    cred->set_password("secret");
    auto response = inventory_->CreateServer(operator_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->server().id() : "";
  }

  // An IP pool of `datacenter` with `count` addresses.
  std::string AddIpPool(int count = 10, const std::string& datacenter = "dc1") {
    imagetemplates::v1::CreateIpPoolRequest request;
    request.set_datacenter(datacenter);
    request.set_subnet("10.20.0.0/24");
    request.set_gateway("10.20.0.1");
    request.add_ranges()->set_start("10.20.0.10");
    request.mutable_ranges(0)->set_end(absl::StrCat("10.20.0.", 9 + count));
    auto response = inventory_->CreateIpPool(operator_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    pool_id_ = response.ok() ? response->ip_pool().id() : "";
    return pool_id_;
  }

  int64_t AllocatedAddresses() {
    imagetemplates::v1::GetIpPoolRequest request;
    request.set_id(pool_id_);
    auto response = inventory_->GetIpPool(operator_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->ip_pool().allocated_count() : -1;
  }

  std::vector<imagetemplates::v1::SanVolume> Volumes() {
    imagetemplates::v1::ListSanVolumesRequest request;
    request.set_page_size(500);
    auto response = inventory_->ListSanVolumes(operator_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    if (!response.ok()) return {};
    return {response->san_volumes().begin(), response->san_volumes().end()};
  }

  // Starts a create of `server_id` with its data disk if it has one.
  imagetemplates::v1::Operation BeginCreate(const std::string& server_id,
                                            const std::string& name) {
    imagetemplates::v1::CreateImageTemplateRequest request;
    request.set_server_id(server_id);
    request.set_name(name);
    if (inventory_->ReadServer(server_id)->disks_size() > 1) request.add_data_disk_indexes(1);
    auto op = create_->Begin(owner_, request, name, {}, NowMicros());
    EXPECT_TRUE(op.ok()) << op.status();
    return op.ok() ? *op : imagetemplates::v1::Operation();
  }

  // An ACTIVE template captured from a new RUNNING server (disk 0 on n0,
  // disk 1 on n1).
  imagetemplates::v1::ImageTemplate ActiveTemplate(const std::string& name) {
    imagetemplates::v1::Operation op =
        WaitTerminal(BeginCreate(AddServer(imagetemplates::v1::POWER_STATE_RUNNING), name).id());
    EXPECT_EQ(op.state(), imagetemplates::v1::OPERATION_STATE_SUCCEEDED) << op.DebugString();
    auto t = templates_->GetTemplate(op.image_template_id());
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : imagetemplates::v1::ImageTemplate();
  }

  // Volumes for `count` deployed servers of a two-disk template, plus
  // config drives.
  void AddDeployVolumes(int count) {
    for (int i = 0; i < count; ++i) {
      AddVolume(0);
      AddVolume(1);
      AddVolume(i % 2, 1 << 20);
    }
  }

  imagetemplates::v1::Operation BeginDeploy(const imagetemplates::v1::ImageTemplate& t,
                                            int quantity, const std::string& prefix) {
    imagetemplates::v1::DeployImageTemplateRequest request;
    request.set_image_template_id(t.id());
    request.set_datacenter("dc1");
    request.set_quantity(quantity);
    request.set_hostname_prefix(prefix);
    request.set_domain("example.com");
    auto op = deploy_->Begin(owner_, request, t, NowMicros());
    EXPECT_TRUE(op.ok()) << op.status();
    return op.ok() ? *op : imagetemplates::v1::Operation();
  }

  void RequestCancel(const std::string& id) {
    ASSERT_TRUE(operations_
                    ->UpdateOperation(id,
                                      [](imagetemplates::v1::Operation& op,
                                         OperationInternals& internals) {
                                        internals.cancel_requested = true;
                                        op.set_state(
                                            imagetemplates::v1::OPERATION_STATE_CANCELLING);
                                        return absl::OkStatus();
                                      })
                    .ok());
  }

  // Waits until `ready` holds (up to 10 s).
  template <typename Predicate>
  bool WaitFor(Predicate ready) {
    const absl::Time deadline = absl::Now() + absl::Seconds(10);
    while (absl::Now() < deadline) {
      if (ready()) return true;
      absl::SleepFor(absl::Milliseconds(5));
    }
    return ready();
  }

  imagetemplates::v1::Operation WaitTerminal(const std::string& id) {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      auto op = operations_->GetOperation(id);
      if (op.ok() && IsTerminal(op->state())) return *op;
      absl::SleepFor(absl::Milliseconds(5));
    }
    ADD_FAILURE() << "operation " << id << " did not end";
    return *operations_->GetOperation(id);
  }

  // The finished step named `name` (the last one), or an empty step.
  static imagetemplates::v1::OperationStep Step(const imagetemplates::v1::Operation& op,
                                                const std::string& name) {
    imagetemplates::v1::OperationStep found;
    for (const auto& step : op.finished_steps()) {
      if (step.name() == name) found = step;
    }
    return found;
  }

  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<CredentialCipher> cipher_;
  std::unique_ptr<SqliteInventoryStore> inventory_;
  std::unique_ptr<SqliteTemplateStore> templates_;
  std::unique_ptr<SqliteOperationStore> operations_;
  std::unique_ptr<SqliteRequestIdStore> request_ids_;
  FakeAccountDirectory accounts_;
  RecordingAuditLog audit_;
  std::vector<std::unique_ptr<FakeStorageNodeClient>> nodes_;
  std::unique_ptr<StorageNodeDirectory> directory_;
  std::unique_ptr<SwitchableComputeDriver> compute_;
  std::unique_ptr<CreateWorkflow> create_;
  std::unique_ptr<DeployWorkflow> deploy_;
  std::unique_ptr<DeleteWorkflow> delete_;
  std::unique_ptr<CopyWorkflow> copy_;
  std::unique_ptr<ImageTemplateManager> manager_;
  std::unique_ptr<OperationRunner> runner_;
  Caller operator_;
  Caller owner_;
  std::string pool_id_;
  absl::Mutex hook_mu_;
  std::function<void(OperationContext&)> before_record_ ABSL_GUARDED_BY(hook_mu_);
  int volumes_ = 0;
  int servers_ = 0;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_WORKFLOW_TEST_ENVIRONMENT_H_
