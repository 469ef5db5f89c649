// controlplane: the public gRPC API (templates, deploys, identity, inventory,
// audit) and the registry the storaged daemons report to.
#include <malloc.h>

#include <algorithm>
#include <cstdio>
#include <memory>
#include <string>

#include "common/flags.h"
#include "common/grpc_server.h"
#include "common/internal_token.h"
#include "common/log.h"
#include "common/process_lock.h"
#include "common/tls.h"
#include "controlplane/api_key_authenticator.h"
#include "controlplane/audit_service.h"
#include "controlplane/bootstrap.h"
#include "controlplane/copy_workflow.h"
#include "controlplane/create_workflow.h"
#include "controlplane/credential_cipher.h"
#include "controlplane/delete_workflow.h"
#include "controlplane/deploy_workflow.h"
#include "controlplane/identity_account_directory.h"
#include "controlplane/identity_service.h"
#include "controlplane/image_template_manager.h"
#include "controlplane/image_template_service.h"
#include "controlplane/inventory_compute_driver.h"
#include "controlplane/inventory_service.h"
#include "controlplane/qemu_compute_driver.h"
#include "controlplane/migrations.h"
#include "controlplane/node_registry_service.h"
#include "controlplane/operation_runner.h"
#include "controlplane/operation_service.h"
#include "controlplane/sqlite_audit_log.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_identity_store.h"
#include "controlplane/sqlite_inventory_store.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/sqlite_request_id_store.h"
#include "controlplane/sqlite_template_store.h"
#include "controlplane/storage_node_client.h"
#include "controlplane/storage_node_directory.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"

namespace {

struct Config {
  std::string listen = "127.0.0.1:7443";
  std::string db = "controlplane.db";
  std::string admin_key_file;       // default: <db>.admin-key
  std::string credential_key_file;  // default: <db>.credential-key
  std::string internal_token_file;  // required
  std::string port_file;
  int64_t node_heartbeat_ms = 5000;
  int64_t node_missed_heartbeats = 3;
  int64_t max_operations = 32;
  // OperationManager::Options' defaults.
  int64_t max_watches_per_account = 32;
  int64_t max_watches = 256;
  int64_t template_cache_entries = controlplane::SqliteTemplateStore::kDefaultCacheEntries;
  std::string compute_driver = "inventory";
  std::string qemu_state_dir;
  std::string qemu_binary = "qemu-system-x86_64";
  std::string qemu_kernel;
  std::string qemu_initrd;
  std::string qemu_kernel_cmdline = "root=/dev/vda1 ro console=ttyS0 panic=-1";
  std::string qemu_accel = "tcg,thread=multi";
  std::string qemu_boot_marker = "login:";
  int64_t qemu_cpus = 2;
  int64_t qemu_memory_mib = 1024;
  int64_t qemu_boot_timeout_s = 600;
  int64_t power_off_timeout_s = 120;
};

}  // namespace

int main(int argc, char** argv) {
  // glibc malloc, tuned for many small short-lived allocations on many
  // threads (each call's gRPC arena, response messages): without fastbins a
  // call's arena no longer triggers malloc_consolidate, and freed memory is
  // kept for the next call instead of being returned to the kernel and
  // faulted in again. Measured with tools/bench/controlplane_bench.sh: ~20%
  // less controlplane CPU per ListImageTemplates page. (storaged, which
  // moves 4 MiB buffers, tunes its own heap.)
  mallopt(M_MXFAST, 0);
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 128 << 20);
  common::BlockTerminationSignals();
  common::SetLogComponent("controlplane");
  Config config;
  common::FlagSet flags(
      "controlplane --listen=HOST:PORT --db=PATH --internal-token-file=PATH "
      "[--admin-key-file=PATH]\n"
      "Serves the image templates API. Example:\n"
      "  controlplane --listen=127.0.0.1:7443 --db=/var/lib/imagetemplates/cp.db "
      "--internal-token-file=/var/lib/imagetemplates/internal.token "
      "--admin-key-file=/var/lib/imagetemplates/admin.key");
  flags.String("listen", &config.listen, "address to serve gRPC on; port 0 picks one");
  flags.String("db", &config.db, "SQLite database file (created if missing)");
  flags.String("admin-key-file", &config.admin_key_file,
               "where the first start writes the operator's API key (mode 0600, never "
               "overwritten); default <db>.admin-key");
  flags.String("credential-key-file", &config.credential_key_file,
               "32-byte AES-256-GCM key for credentials at rest, created (mode 0600) if "
               "missing; default <db>.credential-key");
  flags.String("internal-token-file", &config.internal_token_file,
               "required: file whose first line is the shared secret of the internal API "
               "(at least 32 bytes, mode 0600); storage nodes must send it to NodeRegistry "
               "and it is sent on every call to them");
  flags.String("port-file", &config.port_file,
               "write the bound port here once listening (for scripts and tests)");
  flags.Int("node-heartbeat-ms", &config.node_heartbeat_ms,
            "how often storage nodes send heartbeats");
  flags.Int("node-missed-heartbeats", &config.node_missed_heartbeats,
            "heartbeats a storage node may miss before it is DOWN (at least 1)");
  flags.Int("max-operations", &config.max_operations,
            "operations (creates, deploys, deletes) running at once; others wait");
  flags.Int("max-watches-per-account", &config.max_watches_per_account,
            "open WatchOperation streams per account (each holds a server thread); more are "
            "RESOURCE_EXHAUSTED");
  flags.Int("max-watches", &config.max_watches,
            "open WatchOperation streams in all; more are RESOURCE_EXHAUSTED");
  flags.Int("template-cache-entries", &config.template_cache_entries,
            "templates kept decoded and encoded for Get and List (about 3 KiB each); lists "
            "walking more templates than this (an operator's) read rows again");
  flags.String("compute-driver", &config.compute_driver,
               "what runs the servers: inventory (power state is only recorded) or qemu "
               "(each virtual server is a qemu-system-x86_64 process on this host)");
  flags.String("qemu-state-dir", &config.qemu_state_dir,
               "qemu: one directory per server (QMP socket, pid, console.log); keep the "
               "path short (unix socket limit)");
  flags.String("qemu-binary", &config.qemu_binary, "qemu: the emulator to run");
  flags.String("qemu-kernel", &config.qemu_kernel,
               "qemu: kernel for direct kernel boot of every server (for example the "
               "vmlinuz of tools/make_boot_guest.sh); empty boots through the firmware");
  flags.String("qemu-initrd", &config.qemu_initrd, "qemu: initrd for --qemu-kernel");
  flags.String("qemu-kernel-cmdline", &config.qemu_kernel_cmdline,
               "qemu: kernel command line; the boot disk is /dev/vda");
  flags.String("qemu-accel", &config.qemu_accel, "qemu: -accel value (kvm where it works)");
  flags.Int("qemu-cpus", &config.qemu_cpus, "qemu: virtual CPUs per server");
  flags.Int("qemu-memory-mib", &config.qemu_memory_mib, "qemu: memory per server in MiB");
  flags.String("qemu-boot-marker", &config.qemu_boot_marker,
               "qemu: console text that means a server booted; power on waits for it "
               "(empty: only for QEMU to run)");
  flags.Int("qemu-boot-timeout", &config.qemu_boot_timeout_s,
            "qemu: seconds power on waits for the boot marker before failing and "
            "stopping the server");
  flags.Int("power-off-timeout", &config.power_off_timeout_s,
            "qemu: seconds a guest has to shut down after the ACPI request before it "
            "is stopped hard");
  common::TlsFiles tls;
  common::AddTlsFlags(flags, &tls);
  flags.ParseFlagsOnlyOrExit(argc, argv, "controlplane");
  if (config.compute_driver != "inventory" && config.compute_driver != "qemu") {
    common::LogError("--compute-driver: must be inventory or qemu, not %s",
                     config.compute_driver);
    return 2;
  }
  if (config.max_watches_per_account < 1 || config.max_watches < 1 ||
      config.max_watches_per_account > 100000 || config.max_watches > 100000) {
    common::LogError("--max-watches-per-account and --max-watches: must be 1..100000");
    return 2;
  }
  if (config.template_cache_entries < 1 || config.template_cache_entries > 10000000) {
    common::LogError("--template-cache-entries: must be 1..10000000");
    return 2;
  }
  if (config.internal_token_file.empty()) {
    common::LogError(
        "--internal-token-file is required: the storage nodes' shared secret (a 0600 file "
        "whose first line has at least 32 bytes, e.g. head -c 32 /dev/urandom | base64)");
    return 2;
  }
  absl::StatusOr<std::string> internal_token =
      common::ReadInternalTokenFile(config.internal_token_file);
  if (!internal_token.ok()) {
    common::LogError("--internal-token-file: %s", internal_token.status().message());
    return 2;
  }
  const common::InternalTokenVerifier internal_verifier(*internal_token);
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = common::SetUpTls(tls);
  if (!credentials.ok()) {
    common::LogError("%s", credentials.status().message());
    return 2;
  }
  if (config.admin_key_file.empty()) config.admin_key_file = config.db + ".admin-key";
  if (config.credential_key_file.empty()) {
    config.credential_key_file = config.db + ".credential-key";
  }

  // One controlplane per database: a request_id claim of another process is
  // taken over as a dead process's (controlplane/idempotency.h).
  if (absl::Status locked = common::LockForProcess(
          config.db + ".lock", absl::StrCat("database ", config.db), "controlplane");
      !locked.ok()) {
    common::LogError("%s", locked.ToString());
    return 1;
  }
  auto db = controlplane::SqliteDatabase::Open(config.db, controlplane::Migrations());
  if (!db.ok()) {
    common::LogError("%s", db.status().ToString());
    return 1;
  }
  auto cipher = controlplane::CredentialCipher::FromKeyFile(config.credential_key_file);
  if (!cipher.ok()) {
    common::LogError("%s", cipher.status().ToString());
    return 1;
  }
  auto bootstrap = controlplane::Bootstrap(db->get(), config.admin_key_file);
  if (!bootstrap.ok()) {
    common::LogError("%s", bootstrap.status().ToString());
    return 1;
  }
  if (bootstrap->created) {
    common::LogInfo("first start: operator account %s, user %s; API key written to %s",
                    bootstrap->account_id, bootstrap->user_id, config.admin_key_file);
  }

  controlplane::ApiKeyAuthenticator authenticator(db->get());
  controlplane::SqliteAuditLog audit_log(db->get());
  controlplane::SqliteIdentityStore identity_store(db->get(),
                                                   controlplane::SqliteTemplateStore::ReadUsage);
  controlplane::SqliteInventoryStore inventory_store(db->get(), cipher->get());
  controlplane::IdentityServiceImpl identity(&identity_store, &authenticator, &audit_log);
  controlplane::AuditServiceImpl audit(&audit_log, &authenticator);

  controlplane::SqliteTemplateStore template_store(
      db->get(), cipher->get(), static_cast<size_t>(config.template_cache_entries));
  controlplane::SqliteOperationStore operation_store(db->get());
  controlplane::SqliteRequestIdStore request_ids(db->get());
  controlplane::IdentityAccountDirectory account_directory(&identity_store);
  controlplane::NodeRegistryOptions registry_options;
  registry_options.heartbeat_interval =
      absl::Milliseconds(std::max<int64_t>(100, config.node_heartbeat_ms));
  registry_options.missed_heartbeats =
      static_cast<int>(std::clamp<int64_t>(config.node_missed_heartbeats, 1, 1000));
  controlplane::NodeRegistry registry(&inventory_store, registry_options);
  registry.StartSweeper();
  controlplane::NodeRegistryServiceImpl node_registry(&registry, &internal_verifier);
  controlplane::StorageNodeDirectory nodes(
      &inventory_store,
      [token = *internal_token](const std::string& address) {
        return controlplane::NewGrpcStorageNodeClient(address, token);
      },
      registry.liveness_window());
  controlplane::InventoryComputeDriver inventory_compute(&inventory_store);
  controlplane::ComputeDriver* compute = &inventory_compute;
  std::unique_ptr<controlplane::QemuComputeDriver> qemu_compute;
  absl::Duration compute_timeout = absl::Minutes(2);
  if (config.compute_driver == "qemu") {
    controlplane::QemuOptions qemu;
    qemu.state_dir = config.qemu_state_dir;
    qemu.qemu_binary = config.qemu_binary;
    qemu.kernel = config.qemu_kernel;
    qemu.initrd = config.qemu_initrd;
    qemu.kernel_cmdline = config.qemu_kernel_cmdline;
    qemu.accel = config.qemu_accel;
    qemu.smp = static_cast<int>(std::max<int64_t>(1, config.qemu_cpus));
    qemu.memory_mib = static_cast<int>(std::max<int64_t>(64, config.qemu_memory_mib));
    qemu.boot_marker = config.qemu_boot_marker;
    qemu.boot_timeout = absl::Seconds(std::max<int64_t>(1, config.qemu_boot_timeout_s));
    qemu.power_off_timeout = absl::Seconds(std::max<int64_t>(1, config.power_off_timeout_s));
    auto driver = controlplane::QemuComputeDriver::Create(
        qemu, controlplane::QemuComputeDriver::InventorySpecs(&inventory_store),
        &inventory_store);
    if (!driver.ok()) {
      common::LogError("--compute-driver=qemu: %s", driver.status().ToString());
      return 2;
    }
    qemu_compute = std::move(*driver);
    compute = qemu_compute.get();
    // Power on waits for the boot; power off for the guest's shutdown.
    compute_timeout = qemu.boot_timeout + qemu.power_off_timeout + absl::Minutes(1);
    common::LogInfo("compute driver: qemu (state in %s, kernel %s, boot timeout %ds)",
                    qemu.state_dir, qemu.kernel.empty() ? "from the disk" : qemu.kernel,
                    static_cast<int>(absl::ToInt64Seconds(qemu.boot_timeout)));
  }
  controlplane::InventoryServiceImpl inventory(&inventory_store, &authenticator, &audit_log,
                                               compute);
  controlplane::CreateWorkflow::Dependencies create_deps{&template_store, &inventory_store,
                                                         &nodes, compute};
  create_deps.compute_timeout = compute_timeout;
  controlplane::CreateWorkflow create_workflow(create_deps);
  controlplane::DeployWorkflow::Dependencies deploy_deps{&template_store, &inventory_store,
                                                         &nodes, compute};
  deploy_deps.compute_timeout = compute_timeout;
  controlplane::DeployWorkflow deploy_workflow(deploy_deps);
  controlplane::DeleteWorkflow delete_workflow(&template_store, &nodes);
  controlplane::CopyWorkflow copy_workflow({&template_store, &inventory_store, &nodes});
  controlplane::ImageTemplateManager::Dependencies manager_deps{
      &template_store, &operation_store, &request_ids, &audit_log, &account_directory,
      &account_directory, nullptr};
  manager_deps.create = &create_workflow;
  manager_deps.deploy = &deploy_workflow;
  manager_deps.copy = &copy_workflow;
  controlplane::ImageTemplateManager template_manager(manager_deps);
  controlplane::ImageTemplateServiceImpl image_templates(&authenticator, &template_manager);
  controlplane::OperationManager::Options operation_options;
  operation_options.max_watches_per_account = static_cast<int>(config.max_watches_per_account);
  operation_options.max_watches = static_cast<int>(config.max_watches);
  controlplane::OperationManager operation_manager(&operation_store, &request_ids, &audit_log,
                                                   operation_options);
  controlplane::OperationServiceImpl operations(&authenticator, &operation_manager);
  // Declared last: stopped (its workflows left to resume at the next start)
  // before anything it uses goes away.
  controlplane::OperationRunnerOptions runner_options;
  runner_options.max_concurrent = static_cast<int>(std::max<int64_t>(1, config.max_operations));
  controlplane::OperationRunner runner(&operation_store, runner_options);
  runner.Register(imagetemplates::v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, &create_workflow);
  runner.Register(imagetemplates::v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE, &deploy_workflow);
  runner.Register(imagetemplates::v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE, &delete_workflow);
  runner.Register(imagetemplates::v1::OPERATION_KIND_COPY_IMAGE_TEMPLATE, &copy_workflow);
  runner.Start();

  common::ServeOptions options;
  // The largest request is a deploy with 64 KiB of user-data; anyone who can
  // reach the port, key or not, could otherwise make each call hold 64 MiB.
  options.max_receive_bytes = 4 << 20;
  options.credentials = *credentials;
  options.listen = config.listen;
  options.port_file = config.port_file;
  absl::Status status = common::ServeUntilSignal(
      options,
      {&image_templates, &operations, &identity, &inventory, &audit, &node_registry},
      nullptr, nullptr);
  runner.Stop();
  if (!status.ok()) {
    common::LogError("%s", status.ToString());
    return 1;
  }
  return 0;
}
