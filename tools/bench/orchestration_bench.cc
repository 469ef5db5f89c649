// orchestration_bench: what the control plane adds to storaged's own capture
// and restore time (issue 5, "Benchmark"). Not a test; run through
// orchestration_bench.sh, which builds the binaries and the guest disk.
//
//   orchestration_bench --controlplane=PATH --storaged=PATH --source=DISK
//       --dir=DIR [--runs=3] [--deploys=4]
//
// Starts a private tgtd serving DISK as a thick LUN plus blank thin targets,
// the controlplane, one storaged registered with it (node n0, datacenter
// dc1) and a second storaged of its own, unregistered, for the raw calls.
// Every run, on stores emptied (delete + garbage collection) before each
// capture, measures:
//   raw capture   CaptureVolume of DISK on the unregistered storaged;
//   raw restore   RestoreVolume of that image onto a blank thin LUN;
//   API create    CreateImageTemplate of a server whose boot disk is DISK,
//                 from the call until the operation SUCCEEDED (power off,
//                 capture, record, power restore);
//   API deploy 1  DeployImageTemplate of one server until SUCCEEDED (volume
//                 allocation, restore, address, config drive, activate);
//   raw restore N N RestoreVolume calls at once onto N blank thin LUNs;
//   API deploy N  N DeployImageTemplate calls at once, until all SUCCEEDED;
//   API deploy xN one DeployImageTemplate of quantity N until SUCCEEDED.
// Beside the N-server rows: the storaged's CPU seconds (user + system) over
// the row, which shows whether the N restores shared their decoding (the
// store's frame cache), and for API deploy N how far apart the N restore
// steps started.
// Odd runs measure the raw side first, even runs the API side. Prints one
// line per run and a markdown table of medians with the issue's goals:
// API create and deploy 1 at most 10% over raw capture and restore, N
// concurrent deploys at most 2.5x one.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iterator>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "common/internal_token.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/process.h"
#include "tests/san.h"

namespace {

namespace v1 = imagetemplates::v1;
namespace pb = imagetemplates::storagenode::v1;

struct Config {
  std::string controlplane;
  std::string storaged;
  std::string source;
  std::string dir;
  int64_t runs = 3;
  int64_t deploys = 4;
};

// Stops the SAN on the way out of Die: tgtd ignores SIGTERM, and one left
// running keeps the benchmark lock (flock /tmp/itbench.lock) it inherited.
tests::San* g_san = nullptr;

[[noreturn]] void Die(const std::string& what) {
  std::fprintf(stderr, "orchestration_bench: %s\n", what.c_str());
  if (tests::San* san = std::exchange(g_san, nullptr)) delete san;
  std::exit(1);
}

void Check(const grpc::Status& status, const std::string& what) {
  if (!status.ok()) {
    Die(absl::StrCat(what, ": ", status.error_code(), " ",
                     status.error_message()));
  }
}

double Seconds(absl::Time start) {
  return absl::ToDoubleSeconds(absl::Now() - start);
}

// Calls `rpc` with the API key and a deadline.
template <typename Stub, typename Request, typename Response>
grpc::Status Call(Stub& stub,
                  grpc::Status (Stub::*rpc)(grpc::ClientContext*,
                                            const Request&, Response*),
                  const std::string& key, const Request& request,
                  Response* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() +
                       std::chrono::seconds(60));
  if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
  return (stub.*rpc)(&context, request, response);
}

class Bench {
 public:
  explicit Bench(Config config) : config_(std::move(config)) {}
  ~Bench() { g_san = nullptr; }  // san_ stops it

  void Setup() {
    auto san = tests::San::Start();
    if (!san.ok()) Die(san.status().ToString());
    san_ = *std::move(san);
    g_san = san_.get();
    std::ifstream in(config_.source, std::ios::binary | std::ios::ate);
    if (!in) Die("cannot open " + config_.source);
    size_ = static_cast<uint64_t>(in.tellg());
    tests::LunOptions thick;
    thick.backing_path = config_.source;
    auto source = san_->CreateLun("source", size_, thick);
    if (!source.ok()) Die(source.status().ToString());
    source_url_ = source->url;
    raw_target_ = Target("raw-target", size_);

    // The internal API's shared secret, for the controlplane and node n0.
    const std::string token_file = config_.dir + "/internal.token";
    {
      std::ifstream random("/dev/urandom", std::ios::binary);
      char bytes[24];
      if (!random.read(bytes, sizeof(bytes))) Die("cannot read /dev/urandom");
      internal_token_ = absl::BytesToHexString(absl::string_view(bytes, sizeof(bytes)));
      ::unlink(token_file.c_str());
      std::ofstream(token_file) << internal_token_ << "\n";
      if (::chmod(token_file.c_str(), 0600) != 0) Die("cannot chmod " + token_file);
    }
    auto cp = tests::Process::StartServer(
        {config_.controlplane, "--listen=127.0.0.1:0",
         "--db=" + config_.dir + "/cp.db",
         "--admin-key-file=" + config_.dir + "/admin.key",
         "--internal-token-file=" + token_file,
         "--node-heartbeat-ms=1000"},
        config_.dir + "/controlplane.log");
    if (!cp.ok()) Die(cp.status().ToString());
    cp_ = std::make_unique<tests::Process>(*std::move(cp));
    auto channel = grpc::CreateChannel(cp_->address(),
                                       grpc::InsecureChannelCredentials());
    identity_ = v1::IdentityService::NewStub(channel);
    inventory_ = v1::InventoryService::NewStub(channel);
    templates_ = v1::ImageTemplateService::NewStub(channel);
    operations_ = v1::OperationService::NewStub(channel);
    std::ifstream key_file(config_.dir + "/admin.key");
    std::getline(key_file, admin_);

    v1::CreateDatacenterRequest dc;
    dc.set_name("dc1");
    v1::CreateDatacenterResponse dc_response;
    Check(Call(*inventory_, &v1::InventoryService::Stub::CreateDatacenter,
               admin_, dc, &dc_response),
          "CreateDatacenter");
    node_ = StartStoraged(
        "store-cp",
        {"--controlplane=" + cp_->address(), "--datacenter=dc1",
         "--node-id=n0", absl::StrCat("--portals=127.0.0.1:", san_->port()),
         "--internal-token-file=" + token_file});
    raw_node_ = StartStoraged("store-raw",
                              {"--datacenter=raw", "--node-id=raw"});
    node_stub_ = pb::StorageNode::NewStub(
        common::CreateInternalChannel(node_->address(), internal_token_));
    raw_stub_ = pb::StorageNode::NewStub(grpc::CreateChannel(
        raw_node_->address(), grpc::InsecureChannelCredentials()));
    WaitNodeUp();

    v1::CreateIpPoolRequest pool;
    pool.set_datacenter("dc1");
    pool.set_subnet("10.20.0.0/24");
    pool.set_gateway("10.20.0.1");
    pool.add_dns_servers("10.20.0.2");
    pool.add_ranges()->set_start("10.20.0.10");
    pool.mutable_ranges(0)->set_end("10.20.0.250");
    v1::CreateIpPoolResponse pool_response;
    Check(Call(*inventory_, &v1::InventoryService::Stub::CreateIpPool, admin_,
               pool, &pool_response),
          "CreateIpPool");
    NewUser();
    const std::string source_volume =
        AddVolume("source", source_url_, size_);
    for (int i = 0; i < std::max<int64_t>(1, config_.deploys); ++i) {
      targets_.push_back(Target(absl::StrCat("t", i), size_));
      AddVolume(absl::StrCat("t", i), san_url(absl::StrCat("t", i)), size_);
      Target(absl::StrCat("cfg", i), 4 << 20);
      AddVolume(absl::StrCat("cfg", i), san_url(absl::StrCat("cfg", i)),
                4 << 20);
    }
    server_id_ = AddServer(source_volume);
  }

  // CPU seconds (user + system) `process` has used so far.
  static double CpuSeconds(const tests::Process& process) {
    std::ifstream in(absl::StrCat("/proc/", process.pid(), "/stat"));
    std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // Fields after the command name, which is in parentheses and may hold spaces.
    std::vector<std::string> fields =
        absl::StrSplit(stat.substr(stat.rfind(')') + 2), ' ');
    if (fields.size() < 13) Die("cannot read /proc/PID/stat of " + process.address());
    return static_cast<double>(std::stoll(fields[11]) + std::stoll(fields[12])) /
           static_cast<double>(::sysconf(_SC_CLK_TCK));
  }

  void Run(int run) {
    Row row;
    if (run % 2) {
      Raw(run, row);
      Api(run, row);
    } else {
      Api(run, row);
      Raw(run, row);
    }
    std::printf(
        "run %d: raw capture %.2f s, API create %.2f s (capture step %.2f s); "
        "raw restore %.2f s, API deploy 1 %.2f s (restore step %.2f s); "
        "%lld concurrent deploys %.2f s (storaged %.2f CPU-s, restores started "
        "within %.3f s), raw restores %.2f s (%.2f CPU-s), one deploy of %lld "
        "%.2f s (%.2f CPU-s)\n",
        run, row.raw_capture, row.api_create, row.create_capture_step,
        row.raw_restore, row.api_deploy1, row.deploy_restore_step,
        static_cast<long long>(config_.deploys), row.api_deployn, row.api_deployn_cpu,
        row.api_deployn_spread, row.raw_restoren, row.raw_restoren_cpu,
        static_cast<long long>(config_.deploys), row.api_deployq, row.api_deployq_cpu);
    std::fflush(stdout);
    rows_.push_back(row);
  }

  void Report() {
    auto median = [&](double Row::*field) {
      std::vector<double> values;
      for (const Row& row : rows_) values.push_back(row.*field);
      std::sort(values.begin(), values.end());
      return values[(values.size() - 1) / 2];
    };
    const double raw_capture = median(&Row::raw_capture);
    const double api_create = median(&Row::api_create);
    const double raw_restore = median(&Row::raw_restore);
    const double api_deploy1 = median(&Row::api_deploy1);
    const double api_deployn = median(&Row::api_deployn);
    const double create_over = api_create / raw_capture - 1;
    const double deploy_over = api_deploy1 / raw_restore - 1;
    const double concurrency = api_deployn / api_deploy1;
    const double raw_restoren = median(&Row::raw_restoren);
    const double api_deployq = median(&Row::api_deployq);
    auto pass = [](bool ok) { return ok ? "pass" : "FAIL"; };
    std::printf(
        "\nOrchestration benchmark, %s, %u cores, %.2f GiB disk (%s), medians "
        "of %zu runs\n\n",
        absl::FormatTime("%Y-%m-%dT%H:%MZ", absl::Now(), absl::UTCTimeZone())
            .c_str(),
        std::thread::hardware_concurrency(),
        static_cast<double>(size_) / (1 << 30), config_.source.c_str(),
        rows_.size());
    std::printf("| row | storaged alone | through the API | ratio | goal | result |\n");
    std::printf("| --- | --- | --- | --- | --- | --- |\n");
    std::printf(
        "| capture vs create (call to SUCCEEDED) | %.2f s | %.2f s (capture "
        "step %.2f s) | %+.1f%% | <= +10%% | %s |\n",
        raw_capture, api_create, median(&Row::create_capture_step),
        100 * create_over, pass(create_over <= 0.10));
    std::printf(
        "| restore vs deploy of 1 server | %.2f s | %.2f s (restore step "
        "%.2f s) | %+.1f%% | <= +10%% | %s |\n",
        raw_restore, api_deploy1, median(&Row::deploy_restore_step),
        100 * deploy_over, pass(deploy_over <= 0.10));
    std::printf(
        "| %lld concurrent deploys vs 1 | %.2f s vs %.2f s (%.2fx) | %.2f s vs "
        "%.2f s | %.2fx | <= 2.5x | %s |\n",
        static_cast<long long>(config_.deploys), raw_restoren, raw_restore,
        raw_restoren / raw_restore, api_deployn, api_deploy1, concurrency,
        pass(concurrency <= 2.5));
    std::printf(
        "| one deploy of %lld servers vs 1 | - | %.2f s vs %.2f s | %.2fx | <= 2.5x | %s |\n",
        static_cast<long long>(config_.deploys), api_deployq, api_deploy1,
        api_deployq / api_deploy1, pass(api_deployq / api_deploy1 <= 2.5));
    std::printf(
        "\nstoraged CPU seconds (medians): raw %lld restores %.2f, %lld deploys "
        "%.2f, one deploy of %lld %.2f; the %lld deploys' restore steps started "
        "within %.3f s of each other\n",
        static_cast<long long>(config_.deploys), median(&Row::raw_restoren_cpu),
        static_cast<long long>(config_.deploys), median(&Row::api_deployn_cpu),
        static_cast<long long>(config_.deploys), median(&Row::api_deployq_cpu),
        static_cast<long long>(config_.deploys), median(&Row::api_deployn_spread));
  }

 private:
  struct Row {
    double raw_capture = 0;
    double raw_restore = 0;
    double api_create = 0;
    double create_capture_step = 0;
    double api_deploy1 = 0;
    double deploy_restore_step = 0;
    double api_deployn = 0;
    double api_deployn_cpu = 0;
    double api_deployn_spread = 0;  // last restore step start - first
    double api_deployq = 0;
    double api_deployq_cpu = 0;
    double raw_restoren = 0;
    double raw_restoren_cpu = 0;
  };

  std::string san_url(const std::string& name) {
    return absl::StrCat("iscsi://127.0.0.1:", san_->port(),
                        "/iqn.2026-11.test:", name, "/1");
  }

  // A blank thin LUN; returns its backing file.
  std::string Target(const std::string& name, uint64_t size) {
    tests::LunOptions thin;
    thin.thin = true;
    auto lun = san_->CreateLun(name, size, thin);
    if (!lun.ok()) Die(lun.status().ToString());
    return lun->backing_path;
  }

  void Blank(const std::string& path) {
    if (::truncate(path.c_str(), 0) != 0 ||
        ::truncate(path.c_str(), static_cast<off_t>(size_)) != 0) {
      Die("cannot blank " + path);
    }
  }

  std::unique_ptr<tests::Process> StartStoraged(
      const std::string& store, std::vector<std::string> flags) {
    std::vector<std::string> argv = {config_.storaged, "--listen=127.0.0.1:0",
                                     "--store=" + config_.dir + "/" + store};
    argv.insert(argv.end(), flags.begin(), flags.end());
    auto process =
        tests::Process::StartServer(argv, config_.dir + "/" + store + ".log");
    if (!process.ok()) Die(process.status().ToString());
    return std::make_unique<tests::Process>(*std::move(process));
  }

  void WaitNodeUp() {
    const absl::Time deadline = absl::Now() + absl::Seconds(20);
    while (absl::Now() < deadline) {
      v1::ListStorageNodesRequest request;
      request.set_state(v1::STORAGE_NODE_STATE_UP);
      v1::ListStorageNodesResponse response;
      if (Call(*inventory_, &v1::InventoryService::Stub::ListStorageNodes,
               admin_, request, &response)
              .ok() &&
          response.storage_nodes_size() == 1) {
        return;
      }
      absl::SleepFor(absl::Milliseconds(100));
    }
    Die("storaged did not register");
  }

  void NewUser() {
    v1::CreateAccountRequest account;
    account.set_name("bench");
    v1::CreateAccountResponse account_response;
    Check(Call(*identity_, &v1::IdentityService::Stub::CreateAccount, admin_,
               account, &account_response),
          "CreateAccount");
    account_id_ = account_response.account().id();
    v1::CreateUserRequest user;
    user.set_account_id(account_id_);
    user.set_username("bench");
    for (auto p : {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE,
                   v1::PERMISSION_SERVER_VIEW,
                   v1::PERMISSION_SERVER_PROVISION}) {
      user.add_permissions(p);
    }
    user.mutable_device_access()->set_all_servers(true);
    v1::CreateUserResponse created;
    Check(Call(*identity_, &v1::IdentityService::Stub::CreateUser, admin_,
               user, &created),
          "CreateUser");
    v1::CreateApiKeyRequest key;
    key.set_user_id(created.user().id());
    v1::CreateApiKeyResponse key_response;
    Check(Call(*identity_, &v1::IdentityService::Stub::CreateApiKey, admin_,
               key, &key_response),
          "CreateApiKey");
    key_ = key_response.secret();
  }

  std::string AddVolume(const std::string& name, const std::string& url,
                        uint64_t size) {
    v1::CreateSanVolumeRequest request;
    request.set_datacenter("dc1");
    request.set_san_host("n0");
    request.mutable_iscsi()->set_portal(
        absl::StrCat("127.0.0.1:", san_->port()));
    request.mutable_iscsi()->set_iqn(absl::StrCat("iqn.2026-11.test:", name));
    request.mutable_iscsi()->set_lun(1);
    request.set_size_bytes(static_cast<int64_t>(size));
    request.set_thin(name != "source");
    v1::CreateSanVolumeResponse response;
    Check(Call(*inventory_, &v1::InventoryService::Stub::CreateSanVolume,
               admin_, request, &response),
          "CreateSanVolume " + url);
    return response.san_volume().id();
  }

  std::string AddServer(const std::string& volume) {
    v1::CreateServerRequest request;
    request.set_account_id(account_id_);
    request.set_type(v1::SERVER_TYPE_VIRTUAL);
    request.set_hostname("golden");
    request.set_domain("example.com");
    request.set_datacenter("dc1");
    request.mutable_configuration()->set_cpu_count(2);
    request.mutable_configuration()->set_memory_mib(2048);
    request.mutable_configuration()->set_os_reference("DEBIAN_12_64");
    auto* nic = request.mutable_configuration()->add_network_interfaces();
    nic->set_name("eth0");
    nic->set_mac_address("02:00:00:00:00:01");
    auto* disk = request.add_disks();
    disk->set_device_index(0);
    disk->set_boot(true);
    disk->set_san_volume_id(volume);
    request.set_power_state(v1::POWER_STATE_RUNNING);
    auto* cred = request.add_credentials();
    cred->set_software("os");
    cred->set_username("root");
    cred->set_password("bench");
    v1::CreateServerResponse response;
    Check(Call(*inventory_, &v1::InventoryService::Stub::CreateServer, admin_,
               request, &response),
          "CreateServer");
    return response.server().id();
  }

  // Watches the operation to its end (the server pushes every change, as
  // imagectl sees it; polling from N threads would take CPU from the
  // restores being timed); dies unless it SUCCEEDED.
  v1::Operation Wait(const std::string& id) {
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::minutes(10));
    context.AddMetadata("authorization", "Bearer " + key_);
    v1::WatchOperationRequest request;
    request.set_id(id);
    auto reader = operations_->WatchOperation(&context, request);
    v1::Operation op;
    v1::Operation last;
    while (reader->Read(&op)) last = op;
    Check(reader->Finish(), "WatchOperation");
    if (last.state() != v1::OPERATION_STATE_SUCCEEDED) {
      Die("operation did not succeed: " + last.DebugString());
    }
    return last;
  }

  // "name 0.12 s, ..." for every finished step, and the time from the
  // operation's creation to its first step (the runner picking it up).
  static std::string Steps(const v1::Operation& op) {
    std::string out;
    auto micros = [](const google::protobuf::Timestamp& t) {
      return t.seconds() * 1000000 + t.nanos() / 1000;
    };
    if (op.finished_steps_size() > 0) {
      const auto& first = op.finished_steps(op.finished_steps(0).name() ==
                                                    "allocate_volumes" &&
                                                op.finished_steps_size() > 1
                                            ? 1
                                            : 0);
      absl::StrAppendFormat(
          &out, "queued %.3f s",
          static_cast<double>(micros(first.start_time()) -
                              micros(op.create_time())) /
              1e6);
    }
    for (const auto& step : op.finished_steps()) {
      absl::StrAppendFormat(
          &out, ", %s %.3f s", step.name(),
          static_cast<double>(micros(step.end_time()) -
                              micros(step.start_time())) /
              1e6);
    }
    return out;
  }

  static double StepSeconds(const v1::Operation& op, const std::string& name) {
    for (const auto& step : op.finished_steps()) {
      if (step.name() != name) continue;
      const int64_t micros =
          (step.end_time().seconds() - step.start_time().seconds()) * 1000000 +
          (step.end_time().nanos() - step.start_time().nanos()) / 1000;
      return static_cast<double>(micros) / 1e6;
    }
    return 0;
  }

  void EmptyStore(pb::StorageNode::Stub& stub) {
    grpc::ClientContext context;
    pb::CollectGarbageRequest request;
    pb::CollectGarbageResponse response;
    Check(stub.CollectGarbage(&context, request, &response), "CollectGarbage");
    grpc::ClientContext status_context;
    pb::GetNodeStatusRequest status_request;
    pb::GetNodeStatusResponse status;
    Check(stub.GetNodeStatus(&status_context, status_request, &status),
          "GetNodeStatus");
    if (status.status().image_count() != 0 ||
        status.status().chunk_count() != 0) {
      Die("store not empty after delete and garbage collection: " +
          status.ShortDebugString());
    }
  }

  void Raw(int run, Row& row) {
    const std::string image = absl::StrCat("raw-", run);
    EmptyStore(*raw_stub_);
    ::sync();
    {
      grpc::ClientContext context;
      pb::CaptureVolumeRequest request;
      request.set_image_id(image);
      request.set_source_url(source_url_);
      const absl::Time start = absl::Now();
      auto reader = raw_stub_->CaptureVolume(&context, request);
      pb::CaptureVolumeProgress progress;
      while (reader->Read(&progress)) {
      }
      Check(reader->Finish(), "raw CaptureVolume");
      row.raw_capture = Seconds(start);
    }
    Blank(raw_target_);
    ::sync();
    {
      grpc::ClientContext context;
      pb::RestoreVolumeRequest request;
      request.set_image_id(image);
      request.set_target_url(san_url("raw-target"));
      const absl::Time start = absl::Now();
      auto reader = raw_stub_->RestoreVolume(&context, request);
      pb::RestoreVolumeProgress progress;
      while (reader->Read(&progress)) {
      }
      Check(reader->Finish(), "raw RestoreVolume");
      row.raw_restore = Seconds(start);
    }
    // N restores at once onto the deploy targets (FREE in the inventory,
    // blanked again after).
    std::vector<std::thread> threads;
    const double cpu = CpuSeconds(*raw_node_);
    const absl::Time start = absl::Now();
    for (int i = 0; i < config_.deploys; ++i) {
      threads.emplace_back([&, i] {
        grpc::ClientContext context;
        pb::RestoreVolumeRequest request;
        request.set_image_id(image);
        request.set_target_url(san_url(absl::StrCat("t", i)));
        auto reader = raw_stub_->RestoreVolume(&context, request);
        pb::RestoreVolumeProgress progress;
        while (reader->Read(&progress)) {
        }
        Check(reader->Finish(), "raw RestoreVolume");
      });
    }
    for (std::thread& thread : threads) thread.join();
    row.raw_restoren = Seconds(start);
    row.raw_restoren_cpu = CpuSeconds(*raw_node_) - cpu;
    for (const std::string& target : targets_) Blank(target);
    ::sync();
    grpc::ClientContext context;
    pb::DeleteImageRequest request;
    request.set_image_id(image);
    pb::DeleteImageResponse response;
    Check(raw_stub_->DeleteImage(&context, request, &response), "DeleteImage");
  }

  std::string Deploy(const std::string& template_id, const std::vector<std::string>& hosts) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(template_id);
    request.set_datacenter("dc1");
    request.set_quantity(static_cast<int32_t>(hosts.size()));
    for (const std::string& host : hosts) request.add_hostnames(host);
    request.set_domain("example.com");
    v1::Operation op;
    Check(Call(*templates_,
               &v1::ImageTemplateService::Stub::DeployImageTemplate, key_,
               request, &op),
          "DeployImageTemplate");
    return op.id();
  }

  void DeleteServers(const std::vector<v1::Operation>& deploys) {
    for (const v1::Operation& op : deploys) {
      for (const std::string& id : op.deployed_servers().server_ids()) {
        v1::DeleteServerRequest request;
        request.set_id(id);
        v1::DeleteServerResponse response;
        Check(Call(*inventory_, &v1::InventoryService::Stub::DeleteServer,
                   admin_, request, &response),
              "DeleteServer");
      }
    }
    for (const std::string& target : targets_) Blank(target);
    ::sync();
  }

  void Api(int run, Row& row) {
    EmptyStore(*node_stub_);
    ::sync();
    v1::CreateImageTemplateRequest create;
    create.set_server_id(server_id_);
    create.set_name(absl::StrCat("bench-", run));
    v1::Operation op;
    absl::Time start = absl::Now();
    Check(Call(*templates_,
               &v1::ImageTemplateService::Stub::CreateImageTemplate, key_,
               create, &op),
          "CreateImageTemplate");
    op = Wait(op.id());
    row.api_create = Seconds(start);
    row.create_capture_step = StepSeconds(op, "capture_disk_0");
    std::printf("run %d create steps: %s\n", run, Steps(op).c_str());
    const std::string template_id = op.image_template_id();

    start = absl::Now();
    v1::Operation one = Wait(Deploy(template_id, {absl::StrCat("one-", run)}));
    row.api_deploy1 = Seconds(start);
    row.deploy_restore_step = StepSeconds(one, "restore_disk_0");
    std::printf("run %d deploy steps: %s\n", run, Steps(one).c_str());
    DeleteServers({one});

    std::vector<std::string> ids(config_.deploys);
    std::vector<v1::Operation> many(config_.deploys);
    std::vector<std::thread> threads;
    double cpu = CpuSeconds(*node_);
    start = absl::Now();
    for (int i = 0; i < config_.deploys; ++i) {
      threads.emplace_back([&, i] {
        many[i] = Wait(Deploy(template_id, {absl::StrCat("many-", run, "-", i)}));
      });
    }
    for (std::thread& thread : threads) thread.join();
    row.api_deployn = Seconds(start);
    row.api_deployn_cpu = CpuSeconds(*node_) - cpu;
    for (int i = 0; i < config_.deploys; ++i) {
      std::printf("run %d concurrent deploy %d steps: %s\n", run, i, Steps(many[i]).c_str());
    }
    std::vector<double> starts;
    for (const v1::Operation& op : many) {
      for (const auto& step : op.finished_steps()) {
        if (step.name() != "restore_disk_0") continue;
        starts.push_back(static_cast<double>(step.start_time().seconds()) +
                         step.start_time().nanos() / 1e9);
      }
    }
    if (!starts.empty()) {
      row.api_deployn_spread = *std::max_element(starts.begin(), starts.end()) -
                               *std::min_element(starts.begin(), starts.end());
    }
    DeleteServers(many);

    std::vector<std::string> hosts;
    for (int i = 0; i < config_.deploys; ++i) hosts.push_back(absl::StrCat("q-", run, "-", i));
    cpu = CpuSeconds(*node_);
    start = absl::Now();
    v1::Operation quantity = Wait(Deploy(template_id, hosts));
    row.api_deployq = Seconds(start);
    row.api_deployq_cpu = CpuSeconds(*node_) - cpu;
    std::printf("run %d deploy of %lld steps: %s\n", run,
                static_cast<long long>(config_.deploys), Steps(quantity).c_str());
    DeleteServers({quantity});

    v1::DeleteImageTemplateRequest del;
    del.set_id(template_id);
    Check(Call(*templates_,
               &v1::ImageTemplateService::Stub::DeleteImageTemplate, key_, del,
               &op),
          "DeleteImageTemplate");
    Wait(op.id());
  }

  const Config config_;
  std::unique_ptr<tests::San> san_;
  uint64_t size_ = 0;
  std::string source_url_;
  std::string raw_target_;
  std::vector<std::string> targets_;
  std::unique_ptr<tests::Process> cp_;
  std::unique_ptr<tests::Process> node_;
  std::unique_ptr<tests::Process> raw_node_;
  std::unique_ptr<pb::StorageNode::Stub> node_stub_;
  std::string internal_token_;
  std::unique_ptr<pb::StorageNode::Stub> raw_stub_;
  std::unique_ptr<v1::IdentityService::Stub> identity_;
  std::unique_ptr<v1::InventoryService::Stub> inventory_;
  std::unique_ptr<v1::ImageTemplateService::Stub> templates_;
  std::unique_ptr<v1::OperationService::Stub> operations_;
  std::string admin_;
  std::string key_;
  std::string account_id_;
  std::string server_id_;
  std::vector<Row> rows_;
};

}  // namespace

int main(int argc, char** argv) {
  Config config;
  common::FlagSet flags(
      "orchestration_bench --controlplane=PATH --storaged=PATH --source=DISK "
      "--dir=DIR [--runs=3] [--deploys=4]\n"
      "Times create and deploy through the API beside storaged's own capture "
      "and restore of the same disk. See orchestration_bench.sh.");
  flags.String("controlplane", &config.controlplane, "controlplane binary");
  flags.String("storaged", &config.storaged, "storaged binary");
  flags.String("source", &config.source,
               "disk image served as the source server's thick boot LUN");
  flags.String("dir", &config.dir, "work directory (stores, database, logs)");
  flags.Int("runs", &config.runs, "measured runs; the table shows medians");
  flags.Int("deploys", &config.deploys, "concurrent deploys to time");
  flags.ParseFlagsOnlyOrExit(argc, argv, "orchestration_bench");
  if (config.controlplane.empty() || config.storaged.empty() ||
      config.source.empty() || config.dir.empty() || config.runs < 1 ||
      config.deploys < 1) {
    std::fprintf(stderr, "orchestration_bench: missing or bad flags\n");
    return 2;
  }
  Bench bench(config);
  bench.Setup();
  for (int run = 1; run <= config.runs; ++run) bench.Run(run);
  bench.Report();
  return 0;
}
