// controlplane_bench: read throughput and latency of the control plane's
// template API (issue 3, "Benchmark"). Not a test; run it through
// controlplane_bench.sh, which builds, seeds once, runs and prints the table.
//
//   controlplane_bench --controlplane=PATH --dir=DIR [--accounts=1000]
//       [--templates-per-account=100] [--clients=16] [--seconds=10]
//       [--warmup-seconds=2] [--phases=get,list,op-get,op-list]
//       [--client-modes=parse-reuse,parse,raw] [--perf-dir=DIR]
//
// Seeding (only when DIR/cp.db does not exist): the real controlplane binary
// bootstraps an empty database (operator account, admin key file); over its
// public IdentityService the operator creates the accounts, one user per
// account (IMAGE_TEMPLATE_MANAGE, SERVER_VIEW, SERVER_PROVISION) and that
// user's API key (secrets kept in DIR/bench-keys.tsv). The controlplane is
// stopped and the templates are written straight into the same file with
// SqliteTemplateStore (InsertTemplate, shares through MutateTemplate): names,
// notes, tags, disks, configuration and locations; 1 public and 10 shared
// (with 3 other accounts each) per account, the rest private; mixed statuses,
// some deprecated, disabled and delete-protected.
//
// Run: the controlplane is started again on 127.0.0.1:0 over the seeded file.
// `--clients` threads, each with its own channel and the API key of a user in
// its own account (accounts spread over the range), run each phase closed
// loop: `--warmup-seconds` unmeasured, then `--seconds` measured.
//   get      GetImageTemplate of a random template the caller's account sees
//            (70% its own, 15% shared with it, 15% public).
//   list     ListImageTemplates, page_size 50, one of four filters (tag,
//            name_contains, tag + name_contains; by time or by name),
//            following next_page_token to the end, then the next filter.
//   op-get / op-list   the same with the operator's key (sees everything).
//   PHASE@RATE (e.g. get@5000) runs PHASE open loop: RATE calls/s offered on
//            a fixed schedule, latency from the scheduled start.
// Each phase runs once per client mode: "parse" calls through the generated
// stub and parses every response into a fresh message (a simple caller);
// "parse-reuse" does the same into one response message per thread that it
// clears and reuses (a careful C++ caller: parsing then barely allocates);
// "raw" sends pre-serialized
// requests as bytes and reads only a list response's top-level fields (its
// entry count and next_page_token, to follow the walk), parsing and checking
// one call in 100 in full. Both check every status and every page's size
// against its token. The bench shares the machine with the server, so raw
// shows the server's capacity without the client's parsing on the same cores.
// Every call is one sample. Prints a markdown table: calls/s, p50/p99/p99.9/
// max latency, errors, CPU of the controlplane and of this process (cores,
// and microseconds per call; they share the machine), and the issue's goal
// (> 5,000 calls/s and p99 < 5 ms).
//
// --unrelated-commits-per-second=N: while the phases run, a connection of
// this process commits N audit rows a second into the database (what a live
// control plane's audit log, heartbeats and operations do; they change no
// template), to show what the list memo does under commits.
//
// --perf-dir: runs `perf record -g` on the controlplane during each measured
// phase (DIR/<phase>.perf.data). perf costs throughput; use it for where the
// time goes, not for the numbers.
#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_template_store.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/impl/client_unary_call.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "tests/process.h"

namespace {

namespace v1 = imagetemplates::v1;

struct Config {
  std::string controlplane;
  std::string dir;
  int64_t accounts = 1000;
  int64_t templates_per_account = 100;
  int64_t clients = 16;
  int64_t seconds = 10;
  int64_t warmup_seconds = 2;
  int64_t page_size = 50;
  int64_t seed = 1;
  std::string phases = "get,list,op-get,op-list";
  std::string client_modes = "parse,raw";
  std::string perf_dir;
  int64_t unrelated_commits_per_second = 0;
};

void Log(const std::string& message) { std::fprintf(stderr, "bench: %s\n", message.c_str()); }

std::string ReadFirstLine(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  return line;
}

std::string Uuid(std::mt19937_64& rng) {
  uint64_t hi = rng(), lo = rng();
  hi = (hi & ~0xF000ull) | 0x4000ull;                      // version 4
  lo = (lo & ~(0xC000ull << 48)) | (0x8000ull << 48);     // RFC 4122 variant
  std::string hex = absl::StrFormat("%016x%016x", hi, lo);
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20));
}

google::protobuf::Timestamp Micros(int64_t us) {
  google::protobuf::Timestamp t;
  t.set_seconds(us / 1000000);
  t.set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
  return t;
}

// User + system CPU seconds of a process, from /proc/<pid>/stat.
double ProcessCpuSeconds(pid_t pid) {
  std::string stat = ReadFirstLine(absl::StrCat("/proc/", pid, "/stat"));
  size_t paren = stat.rfind(')');
  if (paren == std::string::npos) return 0;
  std::vector<std::string> fields = absl::StrSplit(stat.substr(paren + 2), ' ');
  // After "pid (comm) ": state is field 0, utime 11, stime 12.
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) / sysconf(_SC_CLK_TCK);
}

// CPU seconds the whole machine spent busy (every core), from /proc/stat.
double MachineBusySeconds() {
  std::vector<std::string> f =
      absl::StrSplit(ReadFirstLine("/proc/stat"), ' ', absl::SkipEmpty());
  // "cpu user nice system idle iowait irq softirq steal ..."
  if (f.size() < 9) return 0;
  double busy = 0;
  for (int i = 1; i <= 8; ++i) {
    if (i != 4 && i != 5) busy += std::stod(f[i]);
  }
  return busy / sysconf(_SC_CLK_TCK);
}

double SelfCpuSeconds() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_utime.tv_sec + usage.ru_stime.tv_sec +
         (usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6;
}

template <typename Stub, typename Request, typename Response>
grpc::Status Call(Stub& stub,
                  grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
                  const std::string& key, const Request& request, Response* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  context.AddMetadata("authorization", "Bearer " + key);
  return (stub.*rpc)(&context, request, response);
}

absl::Status ToStatus(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

// A channel of its own (no subchannel sharing with the other clients).
std::shared_ptr<grpc::Channel> NewChannel(const std::string& address, int index) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt("imagetemplates.bench_channel", index);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// Whether `binary --help` names `flag` (an older controlplane, such as an
// A/B baseline, may not take a newer flag).
bool TakesFlag(const std::string& binary, const std::string& flag) {
  FILE* help = popen(("'" + binary + "' --help 2>&1").c_str(), "r");
  if (help == nullptr) return false;
  std::string text;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof(buffer), help)) > 0) text.append(buffer, n);
  pclose(help);
  return absl::StrContains(text, flag);
}

absl::StatusOr<tests::Process> StartControlplane(const Config& config) {
  std::vector<std::string> argv = {config.controlplane, "--listen=127.0.0.1:0",
                                   "--db=" + config.dir + "/cp.db",
                                   "--admin-key-file=" + config.dir + "/admin.key"};
  if (TakesFlag(config.controlplane, "--internal-token-file")) {
    // The storage nodes' shared secret; no storage node joins here.
    const std::string path = config.dir + "/internal.token";
    struct stat st;
    if (stat(path.c_str(), &st) != 0) {
      std::random_device random;
      std::string token;
      for (int i = 0; i < 8; ++i) absl::StrAppend(&token, absl::Hex(random(), absl::kZeroPad8));
      int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
      if (fd < 0) return absl::InternalError("cannot create " + path);
      token += "\n";
      bool ok = write(fd, token.data(), token.size()) == static_cast<ssize_t>(token.size());
      close(fd);
      if (!ok) return absl::InternalError("cannot write " + path);
    }
    argv.push_back("--internal-token-file=" + path);
  }
  return tests::Process::StartServer(argv, config.dir + "/controlplane.log", absl::Seconds(60));
}

// --- Seeding ----------------------------------------------------------------

struct AccountKey {
  std::string account_id;
  std::string user_id;
  std::string secret;
};

std::string KeysPath(const Config& config) { return config.dir + "/bench-keys.tsv"; }

// Creates the accounts, one user each and its API key, through the public API
// with the operator's key, `threads` at a time.
absl::StatusOr<std::vector<AccountKey>> SeedIdentity(const Config& config,
                                                     const std::string& address,
                                                     const std::string& admin_key) {
  std::vector<AccountKey> keys(config.accounts);
  std::atomic<int64_t> next{0};
  absl::Mutex mu;
  absl::Status first_error;
  auto worker = [&](int index) {
    auto channel = NewChannel(address, index);
    auto identity = v1::IdentityService::NewStub(channel);
    while (true) {
      int64_t i = next.fetch_add(1);
      if (i >= config.accounts) return;
      absl::Status status = [&]() -> absl::Status {
        v1::CreateAccountRequest account_request;
        account_request.set_name(absl::StrFormat("bench-account-%04d", i));
        // Every 50th account refuses public sharing, as some customers do.
        account_request.set_block_public_sharing(i % 50 == 49);
        v1::CreateAccountResponse account;
        RETURN_IF_ERROR(ToStatus(Call(*identity, &v1::IdentityService::Stub::CreateAccount,
                                       admin_key, account_request, &account),
                                  "CreateAccount"));
        v1::CreateUserRequest user_request;
        user_request.set_account_id(account.account().id());
        user_request.set_username("builder");
        user_request.add_permissions(v1::PERMISSION_IMAGE_TEMPLATE_MANAGE);
        user_request.add_permissions(v1::PERMISSION_SERVER_VIEW);
        user_request.add_permissions(v1::PERMISSION_SERVER_PROVISION);
        user_request.mutable_device_access()->set_all_servers(true);
        v1::CreateUserResponse user;
        RETURN_IF_ERROR(ToStatus(Call(*identity, &v1::IdentityService::Stub::CreateUser,
                                       admin_key, user_request, &user),
                                  "CreateUser"));
        v1::CreateApiKeyRequest key_request;
        key_request.set_user_id(user.user().id());
        key_request.set_description("controlplane_bench");
        v1::CreateApiKeyResponse key;
        RETURN_IF_ERROR(ToStatus(Call(*identity, &v1::IdentityService::Stub::CreateApiKey,
                                       admin_key, key_request, &key),
                                  "CreateApiKey"));
        keys[i] = {account.account().id(), user.user().id(), key.secret()};
        return absl::OkStatus();
      }();
      if (!status.ok()) {
        absl::MutexLock lock(&mu);
        if (first_error.ok()) first_error = status;
        next = config.accounts;
        return;
      }
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) threads.emplace_back(worker, t);
  for (auto& t : threads) t.join();
  if (!first_error.ok()) return first_error;
  return keys;
}

// Deterministic, varied template records for account number `a`.
struct TemplateFactory {
  static constexpr const char* kOs[] = {"ubuntu-22.04", "ubuntu-20.04", "rhel-9",  "debian-12",
                                        "rocky-9",      "windows-2022", "sles-15", "alma-9"};
  static constexpr const char* kOsTag[] = {"ubuntu", "ubuntu", "rhel",    "debian",
                                           "rocky",  "windows", "sles",   "alma"};
  static constexpr const char* kOsRef[] = {"UBUNTU_22_64", "UBUNTU_20_64", "REDHAT_9_64",
                                           "DEBIAN_12_64", "ROCKY_9_64",   "WIN_2022-STD_64",
                                           "SLES_15_64",   "ALMALINUX_9_64"};
  static constexpr const char* kRole[] = {"web", "db", "cache", "worker", "gateway", "build",
                                          "ml",  "batch"};
  static constexpr const char* kEnv[] = {"prod", "staging", "dev"};
  static constexpr const char* kDc[] = {"dal10", "wdc07", "fra02", "lon06", "tok04", "syd05"};

  v1::ImageTemplate Make(std::mt19937_64& rng, const std::string& owner, int64_t a, int64_t j,
                         int64_t base_time_us) const {
    auto pick = [&](int n) { return static_cast<int>(rng() % n); };
    const int os = pick(8), role = pick(8), env = pick(3);
    v1::ImageTemplate t;
    t.set_id(Uuid(rng));
    t.set_owner_account_id(owner);
    t.set_name(absl::StrFormat("%s-%s-%s-%04d-%02d", kOs[os], kRole[role], kEnv[env], a, j));
    t.set_note(absl::StrFormat(
        "Golden %s image for the %s tier (%s), captured from %s-%02d; patched monthly.",
        kOs[os], kRole[role], kEnv[env], kRole[role], pick(40)));
    t.add_tags(kOsTag[os]);
    t.add_tags(os == 5 ? "windows" : "linux");
    t.add_tags(kRole[role]);
    t.add_tags(kEnv[env]);
    if (role == 6 || pick(20) == 0) t.add_tags("gpu");
    if (pick(4) == 0) t.add_tags("pci-dss");
    // One public and ten shared templates per account; the rest private.
    t.set_visibility(j == 0 ? v1::VISIBILITY_PUBLIC
                            : (j <= 10 ? v1::VISIBILITY_SHARED : v1::VISIBILITY_PRIVATE));
    int r = pick(100);
    v1::ImageTemplateStatus status = v1::IMAGE_TEMPLATE_STATUS_ACTIVE;
    if (j > 0) {
      if (r >= 99) {
        status = v1::IMAGE_TEMPLATE_STATUS_DELETED;
      } else if (r >= 97) {
        status = v1::IMAGE_TEMPLATE_STATUS_DELETING;
      } else if (r >= 94) {
        status = v1::IMAGE_TEMPLATE_STATUS_FAILED;
      } else if (r >= 90) {
        status = v1::IMAGE_TEMPLATE_STATUS_CREATING;
      }
    }
    t.set_status(status);
    t.set_source_server_id(Uuid(rng));
    t.set_create_operation_id(Uuid(rng));
    const int disks = 1 + pick(3);
    for (int d = 0; d < disks; ++d) {
      auto* disk = t.add_disks();
      disk->set_device_index(d);
      disk->set_boot(d == 0);
      disk->set_logical_size_bytes((int64_t{25} + pick(8) * 25) << 30);
      disk->set_stored_size_bytes(disk->logical_size_bytes() / (3 + pick(5)));
      disk->set_manifest_digest(absl::StrFormat("sha256:%016x%016x%016x%016x", rng(), rng(),
                                                rng(), rng()));
    }
    auto* config = t.mutable_configuration();
    config->set_cpu_count(2 << pick(5));
    config->set_memory_mib(int64_t{4096} << pick(5));
    config->set_os_reference(kOsRef[os]);
    config->set_boot_mode(pick(2) ? v1::BOOT_MODE_UEFI : v1::BOOT_MODE_BIOS);
    auto* nic = config->add_network_interfaces();
    nic->set_name("eth0");
    nic->set_mac_address(absl::StrFormat("02:00:00:%02x:%02x:%02x", pick(256), pick(256),
                                         pick(256)));
    nic->set_ip_address(absl::StrFormat("10.%d.%d.%d/24", pick(256), pick(256), 2 + pick(250)));
    nic->set_gateway("10.0.0.1");
    nic->add_dns_servers("10.0.0.53");
    // Created over the past year, oldest first within the account.
    const int64_t create_us = base_time_us + j * 3600LL * 1000000 + pick(3600) * 1000000LL;
    const int first_dc = pick(6);
    const int locations = 1 + (pick(4) == 0);
    for (int l = 0; l < locations; ++l) {
      auto* location = t.add_locations();
      location->set_datacenter(kDc[(first_dc + l) % 6]);
      location->set_status(status == v1::IMAGE_TEMPLATE_STATUS_CREATING
                               ? v1::IMAGE_TEMPLATE_LOCATION_STATUS_COPYING
                               : v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
      location->set_operation_id(Uuid(rng));
      *location->mutable_create_time() = Micros(create_us + l * 600000000LL);
    }
    t.set_deprecated(pick(20) == 0);
    if (t.deprecated()) *t.mutable_deprecate_time() = Micros(create_us + 86400000000LL);
    t.set_disabled(j > 0 && pick(50) == 0);
    t.set_delete_protected(pick(10) == 0);
    *t.mutable_create_time() = Micros(create_us);
    *t.mutable_update_time() = Micros(create_us + pick(86400) * 1000000LL);
    return t;
  }
};

absl::Status SeedTemplates(const Config& config, const std::vector<AccountKey>& keys) {
  ASSIGN_OR_RETURN(auto db, controlplane::SqliteDatabase::Open(config.dir + "/cp.db",
                                                                controlplane::Migrations()));
  controlplane::SqliteTemplateStore store(db.get());
  TemplateFactory factory;
  std::mt19937_64 rng(config.seed);
  const int64_t now_us = absl::ToUnixMicros(absl::Now());
  const int64_t year_us = 365LL * 86400 * 1000000;
  absl::Time start = absl::Now();
  int64_t inserted = 0, shares = 0;
  for (int64_t a = 0; a < static_cast<int64_t>(keys.size()); ++a) {
    const int64_t base = now_us - year_us + static_cast<int64_t>(rng() % (year_us / 2));
    for (int64_t j = 0; j < config.templates_per_account; ++j) {
      v1::ImageTemplate t = factory.Make(rng, keys[a].account_id, a, j, base);
      absl::Status status = store.InsertTemplate(t);
      if (!status.ok()) return absl::Status(status.code(), absl::StrCat("InsertTemplate: ", status.message()));
      ++inserted;
      if (t.visibility() == v1::VISIBILITY_SHARED) {
        std::vector<std::string> with;
        while (with.size() < 3) {
          int64_t other = static_cast<int64_t>(rng() % keys.size());
          if (other == a) continue;
          with.push_back(keys[other].account_id);
        }
        auto mutated = store.MutateTemplate(
            t.id(), [&](controlplane::TemplateTransaction& txn) -> absl::Status {
              for (const std::string& account : with) {
                absl::Status s = txn.AddShare(account, t.create_time().seconds() * 1000000);
                if (!s.ok()) return s;
              }
              return absl::OkStatus();
            });
        if (!mutated.ok()) return mutated.status();
        shares += 3;
      }
    }
    if ((a + 1) % 100 == 0) {
      Log(absl::StrFormat("seeded %d templates (%d shares) in %.1f s", inserted, shares,
                          absl::ToDoubleSeconds(absl::Now() - start)));
    }
  }
  return absl::OkStatus();
}

absl::Status WriteKeys(const Config& config, const std::vector<AccountKey>& keys) {
  std::ofstream out(KeysPath(config), std::ios::trunc);
  for (const AccountKey& k : keys) out << k.account_id << '\t' << k.user_id << '\t' << k.secret << '\n';
  out.close();
  if (!out) return absl::InternalError("cannot write " + KeysPath(config));
  chmod(KeysPath(config).c_str(), 0600);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<AccountKey>> ReadKeys(const Config& config) {
  std::ifstream in(KeysPath(config));
  if (!in) return absl::NotFoundError("no " + KeysPath(config));
  std::vector<AccountKey> keys;
  std::string line;
  while (std::getline(in, line)) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    if (f.size() != 3) return absl::DataLossError("bad line in " + KeysPath(config));
    keys.push_back({f[0], f[1], f[2]});
  }
  return keys;
}

absl::Status Seed(const Config& config) {
  Log("seeding " + config.dir + "/cp.db");
  absl::Time start = absl::Now();
  std::vector<AccountKey> keys;
  {
    ASSIGN_OR_RETURN(tests::Process cp, StartControlplane(config));
    std::string admin_key = ReadFirstLine(config.dir + "/admin.key");
    if (admin_key.empty()) return absl::FailedPreconditionError("no admin key was written");
    ASSIGN_OR_RETURN(keys, SeedIdentity(config, cp.address(), admin_key));
    Log(absl::StrFormat("%d accounts, users and API keys through IdentityService in %.1f s",
                        keys.size(), absl::ToDoubleSeconds(absl::Now() - start)));
    auto stopped = cp.Stop(SIGTERM);
    if (!stopped.ok()) return stopped.status();
  }
  RETURN_IF_ERROR(WriteKeys(config, keys));
  RETURN_IF_ERROR(SeedTemplates(config, keys));
  Log(absl::StrFormat("seeding done in %.1f s", absl::ToDoubleSeconds(absl::Now() - start)));
  return absl::OkStatus();
}

// --- Workload ---------------------------------------------------------------

// What one caller may ask for.
struct CallerWorkload {
  std::string label;
  std::string key;
  std::vector<std::string> own, shared, public_ids;  // for users
  std::vector<std::string> all;                      // for the operator
};

absl::StatusOr<std::vector<std::string>> QueryIds(controlplane::SqliteDatabase& db,
                                                  const char* sql, const std::string& param) {
  std::vector<std::string> ids;
  RETURN_IF_ERROR(db.Read([&](controlplane::SqliteConnection& conn) -> absl::Status {
    ASSIGN_OR_RETURN(controlplane::SqliteStatement s, conn.Prepare(sql));
    if (!param.empty()) s.Bind(1, param);
    while (true) {
      ASSIGN_OR_RETURN(bool row, s.Step());
      if (!row) break;
      ids.push_back(s.ColumnText(0));
    }
    return absl::OkStatus();
  }));
  return ids;
}

// The callers' visible ids, by the rules of ImageTemplateManager::LoadVisible.
// The migrations `path` already has (by its user_version): the workload is
// only read, and an A/B baseline's copy must keep the older schema its
// controlplane knows.
absl::StatusOr<std::vector<std::string>> StoredMigrations(const std::string& path) {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  int64_t version = -1;
  sqlite3_stmt* stmt = nullptr;
  if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &stmt, nullptr);
  if (rc == SQLITE_OK && sqlite3_step(stmt) == SQLITE_ROW) version = sqlite3_column_int64(stmt, 0);
  sqlite3_finalize(stmt);
  sqlite3_close(db);
  const std::vector<std::string>& all = controlplane::Migrations();
  if (version < 1 || version > static_cast<int64_t>(all.size())) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": schema version ", version, ", this bench knows 1..", all.size()));
  }
  return std::vector<std::string>(all.begin(), all.begin() + version);
}

absl::StatusOr<std::vector<CallerWorkload>> LoadWorkload(const Config& config,
                                                         const std::vector<AccountKey>& keys,
                                                         CallerWorkload* operator_workload) {
  ASSIGN_OR_RETURN(std::vector<std::string> migrations,
                   StoredMigrations(config.dir + "/cp.db"));
  ASSIGN_OR_RETURN(auto db,
                   controlplane::SqliteDatabase::Open(config.dir + "/cp.db", migrations));
  ASSIGN_OR_RETURN(std::vector<std::string> public_ids,
                    QueryIds(*db,
                             "SELECT id FROM image_templates WHERE visibility = 3 AND "
                             "disabled = 0 AND status NOT IN (4, 5)",
                             ""));
  std::vector<CallerWorkload> callers;
  for (int64_t c = 0; c < config.clients; ++c) {
    // Spread over the accounts: 0, N/clients, 2N/clients, ...
    const AccountKey& k = keys[c * keys.size() / config.clients];
    CallerWorkload w;
    w.label = k.account_id;
    w.key = k.secret;
    ASSIGN_OR_RETURN(w.own, QueryIds(*db,
                                      "SELECT id FROM image_templates WHERE owner_account_id = ? "
                                      "AND status <> 5",
                                      k.account_id));
    ASSIGN_OR_RETURN(w.shared,
                      QueryIds(*db,
                               "SELECT s.template_id FROM image_template_shares s JOIN "
                               "image_templates t ON t.id = s.template_id WHERE s.account_id = ? "
                               "AND t.disabled = 0 AND t.status NOT IN (4, 5)",
                               k.account_id));
    w.public_ids = public_ids;
    callers.push_back(std::move(w));
  }
  ASSIGN_OR_RETURN(operator_workload->all, QueryIds(*db, "SELECT id FROM image_templates", ""));
  operator_workload->label = "operator";
  operator_workload->key = ReadFirstLine(config.dir + "/admin.key");
  return callers;
}

// Commits an audit row --unrelated-commits-per-second times a second through
// its own connection until destroyed: the commits a live control plane makes all the
// time (audit rows, heartbeats, operations) that change no template.
class UnrelatedCommits {
 public:
  explicit UnrelatedCommits(const Config& config) {
    if (config.unrelated_commits_per_second <= 0) return;
    auto migrations = StoredMigrations(config.dir + "/cp.db");
    if (!migrations.ok()) {
      Log("unrelated commits: " + migrations.status().ToString());
      return;
    }
    auto db = controlplane::SqliteDatabase::Open(config.dir + "/cp.db", *migrations);
    if (!db.ok()) {
      Log("unrelated commits: " + db.status().ToString());
      return;
    }
    db_ = std::move(*db);
    const auto interval =
        std::chrono::nanoseconds(1000000000 / config.unrelated_commits_per_second);
    thread_ = std::thread([this, interval] {
      auto next = std::chrono::steady_clock::now();
      for (int64_t n = 0; !stop_.load(); ++n) {
        absl::Status s = db_->Transaction([&](controlplane::SqliteConnection& conn)
                                              -> absl::Status {
          ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
              "INSERT INTO audit_events (id, time, account_id, user_id, api_key_id, method, "
              "target_type, target_id, outcome_code, outcome_message, request_id, "
              "operation_id, peer) VALUES (?1, ?2, '', '', '', 'controlplane_bench', 0, '', 0, "
              "'unrelated commit', '', '', '')"));
          stmt.Bind(1, absl::StrCat("bench-", absl::ToUnixNanos(absl::Now()), "-", n));
          stmt.Bind(2, absl::ToUnixMicros(absl::Now()));
          return stmt.Run();
        });
        if (!s.ok()) {
          Log("unrelated commit: " + s.ToString());
        } else {
          ++commits_;
        }
        next += interval;
        std::this_thread::sleep_until(next);
      }
    });
  }
  ~UnrelatedCommits() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
    if (commits_ > 0) Log(absl::StrCat(commits_.load(), " unrelated commits made"));
  }

 private:
  std::unique_ptr<controlplane::SqliteDatabase> db_;
  std::atomic<bool> stop_{false};
  std::atomic<int64_t> commits_{0};
  std::thread thread_;
};

// --- Phases -----------------------------------------------------------------

struct ListFilter {
  const char* label;
  const char* tag;
  const char* name_contains;
  v1::ImageTemplateOrderBy order;
};
constexpr ListFilter kListFilters[] = {
    {"tag=linux", "linux", "", v1::IMAGE_TEMPLATE_ORDER_BY_CREATE_TIME},
    {"tag=prod by name", "prod", "", v1::IMAGE_TEMPLATE_ORDER_BY_NAME},
    {"name_contains=web", "", "web", v1::IMAGE_TEMPLATE_ORDER_BY_CREATE_TIME},
    {"tag=gpu name_contains=ubuntu", "gpu", "ubuntu", v1::IMAGE_TEMPLATE_ORDER_BY_CREATE_TIME},
};

// How a client thread calls.
enum class ClientMode {
  // Generated sync stub: serializes each request, parses each response into
  // a fresh message, as a simple caller does.
  kParse,
  // The same, but each thread parses into one response message it clears
  // and reuses (as a careful C++ caller polling a list would): the cleared
  // strings and repeated entries keep their memory, so a page parses with
  // few allocations. Every field is still parsed and checked as in kParse.
  kParseReuse,
  // Pre-serialized requests through the same blocking unary call path
  // (grpc::internal::BlockingUnaryCall, what generated stubs call) with
  // ByteBuffer in and out: the responses are not parsed. A list walk reads
  // only the response's top-level fields (entry count, next_page_token); one
  // call in kVerifyEvery is parsed in full and checked. The load generator
  // shares the 2 cores with the server, so this shows what the server does
  // when the client's parsing is not eating its CPU (like wrk).
  kRaw,
};
constexpr int kVerifyEvery = 100;

std::string ClientModeLabel(ClientMode mode) {
  switch (mode) {
    case ClientMode::kParse:
      return "client parses";
    case ClientMode::kParseReuse:
      return "client parses, reused response";
    case ClientMode::kRaw:
      break;
  }
  return absl::StrCat("raw client, ", 100 / kVerifyEvery, "% verified");
}

// --client-modes names.
const char* ClientModeName(ClientMode mode) {
  switch (mode) {
    case ClientMode::kParse:
      return "parse";
    case ClientMode::kParseReuse:
      return "parse-reuse";
    case ClientMode::kRaw:
      break;
  }
  return "raw";
}

// Pre-serialized GetImageTemplateRequests of one CallerWorkload, index for
// index beside its id lists.
struct RawGets {
  std::vector<grpc::ByteBuffer> own, shared, public_ids, all;
};

grpc::ByteBuffer BytesOf(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

std::vector<grpc::ByteBuffer> SerializeGets(const std::vector<std::string>& ids) {
  std::vector<grpc::ByteBuffer> out;
  out.reserve(ids.size());
  for (const std::string& id : ids) {
    v1::GetImageTemplateRequest request;
    request.set_id(id);
    out.push_back(BytesOf(request.SerializeAsString()));
  }
  return out;
}

RawGets SerializeGets(const CallerWorkload& w) {
  return {SerializeGets(w.own), SerializeGets(w.shared), SerializeGets(w.public_ids),
          SerializeGets(w.all)};
}

// The top-level fields of a ListImageTemplatesResponse, read from its wire
// bytes without parsing the templates: a varint tag and a length per field,
// the lengths skipped.
struct ListScan {
  int64_t entries = 0;
  std::string next_page_token;
};

absl::StatusOr<ListScan> ScanListResponse(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  if (!buffer.Dump(&slices).ok()) return absl::InternalError("cannot read the response");
  size_t slice = 0, offset = 0;
  auto at_end = [&] {
    while (slice < slices.size() && offset == slices[slice].size()) ++slice, offset = 0;
    return slice == slices.size();
  };
  auto read_byte = [&](uint8_t* b) {
    if (at_end()) return false;
    *b = slices[slice].begin()[offset++];
    return true;
  };
  auto read_varint = [&](uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!read_byte(&b)) return false;
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  };
  // Copies `n` bytes to *out (if not null), across slices.
  auto take = [&](uint64_t n, std::string* out) {
    while (n > 0) {
      if (at_end()) return false;
      size_t chunk = std::min<uint64_t>(n, slices[slice].size() - offset);
      if (out) out->append(reinterpret_cast<const char*>(slices[slice].begin()) + offset, chunk);
      offset += chunk;
      n -= chunk;
    }
    return true;
  };
  ListScan scan;
  while (!at_end()) {
    uint64_t tag, length;
    if (!read_varint(&tag) || (tag & 7) != 2 || !read_varint(&length)) {
      return absl::DataLossError("response: not a ListImageTemplatesResponse");
    }
    const uint64_t field = tag >> 3;
    if (field == v1::ListImageTemplatesResponse::kImageTemplatesFieldNumber) {
      ++scan.entries;
      if (!take(length, nullptr)) return absl::DataLossError("response: truncated entry");
    } else if (field == v1::ListImageTemplatesResponse::kNextPageTokenFieldNumber) {
      scan.next_page_token.clear();
      if (!take(length, &scan.next_page_token)) return absl::DataLossError("response: truncated token");
    } else {
      return absl::DataLossError(absl::StrCat("response: unexpected field ", field));
    }
  }
  return scan;
}

template <typename Message>
bool ParseBytes(const grpc::ByteBuffer& buffer, Message* message) {
  grpc::ByteBuffer copy(buffer);  // parsing consumes it
  return grpc::SerializationTraits<Message>::Deserialize(&copy, message).ok();
}

// One client thread's state.
struct Client {
  const CallerWorkload* workload = nullptr;
  ClientMode mode = ClientMode::kParse;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::ImageTemplateService::Stub> stub;
  // kRaw: the methods registered on `channel`, as a generated stub does.
  std::unique_ptr<grpc::internal::RpcMethod> raw_get, raw_list;
  const RawGets* raw_gets = nullptr;
  const std::vector<std::string>* list_prefixes = nullptr;  // per filter
  // kParseReuse: the responses each call clears and parses into.
  v1::GetImageTemplateResponse get_response;
  v1::ListImageTemplatesResponse list_response;
  std::mt19937_64 rng;
  int64_t calls = 0;  // every call, for kRaw's sampling
  // list walk
  size_t filter = 0;
  std::string page_token;
  int64_t items = 0;
  int64_t walks = 0;
  // results of the measured window
  std::vector<int64_t> latencies_ns;
  std::map<int, int64_t> errors;  // grpc code -> count
  std::string first_error;
  int64_t verified = 0;  // kRaw: responses parsed in full and checked
  bool just_verified = false;  // the last call was one of them
};

enum class Kind { kGet, kList };

constexpr size_t kFilterCount = sizeof(kListFilters) / sizeof(kListFilters[0]);

// The request of the walk's next page, without its page_token.
v1::ListImageTemplatesRequest ListRequest(const ListFilter& f, int page_size) {
  v1::ListImageTemplatesRequest request;
  request.set_tag(f.tag);
  request.set_name_contains(f.name_contains);
  request.set_order_by(f.order);
  request.set_page_size(page_size);
  return request;
}

// Checks a list page against the walk's rules: a full page when a token
// follows, at most a page otherwise.
grpc::Status CheckPage(int64_t entries, bool has_token, int page_size) {
  if (has_token ? entries != page_size : entries > page_size) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        absl::StrCat("page of ", entries, " entries, next_page_token ",
                                     has_token ? "present" : "absent"));
  }
  return grpc::Status::OK;
}

// Moves the walk on after a page: the next page, or the next filter.
void AdvanceWalk(Client& c, const grpc::Status& s, std::string next_page_token, bool* walk_done) {
  if (s.ok() && !next_page_token.empty()) {
    c.page_token = std::move(next_page_token);
  } else {
    c.page_token.clear();
    c.filter = (c.filter + 1) % kFilterCount;
    *walk_done = true;
  }
}

grpc::Status RawCall(Client& c, const grpc::internal::RpcMethod& method, const std::string& key,
                     const grpc::ByteBuffer& request, grpc::ByteBuffer* response) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
  context.AddMetadata("authorization", "Bearer " + key);
  return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      c.channel.get(), method, &context, request, response);
}

// One call of a kRaw client.
grpc::Status OneRawCall(Client& c, Kind kind, int page_size, int64_t* items, bool* walk_done) {
  const CallerWorkload& w = *c.workload;
  const bool verify = c.calls++ % kVerifyEvery == 0;
  c.just_verified = false;
  if (kind == Kind::kGet) {
    const std::vector<std::string>* ids = &w.all;
    const std::vector<grpc::ByteBuffer>* requests = &c.raw_gets->all;
    if (w.all.empty()) {
      int r = static_cast<int>(c.rng() % 100);
      if (r < 70) {
        ids = &w.own, requests = &c.raw_gets->own;
      } else if (r < 85 && !w.shared.empty()) {
        ids = &w.shared, requests = &c.raw_gets->shared;
      } else {
        ids = &w.public_ids, requests = &c.raw_gets->public_ids;
      }
    }
    const size_t i = c.rng() % ids->size();
    grpc::ByteBuffer response;
    grpc::Status s = RawCall(c, *c.raw_get, w.key, (*requests)[i], &response);
    if (s.ok() && response.Length() == 0) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "empty GetImageTemplateResponse");
    }
    if (s.ok() && verify) {
      v1::GetImageTemplateResponse parsed;
      if (!ParseBytes(response, &parsed) || parsed.image_template().id() != (*ids)[i]) {
        return grpc::Status(grpc::StatusCode::INTERNAL, "wrong template returned");
      }
      c.just_verified = true;
    }
    return s;
  }
  // The filter's request, serialized once; the page token appended as one
  // more field makes the same message.
  std::string bytes = (*c.list_prefixes)[c.filter];
  if (!c.page_token.empty()) {
    v1::ListImageTemplatesRequest token_only;
    token_only.set_page_token(c.page_token);
    token_only.AppendToString(&bytes);
  }
  grpc::ByteBuffer response;
  grpc::Status s = RawCall(c, *c.raw_list, w.key, BytesOf(bytes), &response);
  std::string next;
  if (s.ok()) {
    absl::StatusOr<ListScan> scan = ScanListResponse(response);
    if (!scan.ok()) {
      s = grpc::Status(grpc::StatusCode::INTERNAL, std::string(scan.status().message()));
    } else {
      *items = scan->entries;
      s = CheckPage(scan->entries, !scan->next_page_token.empty(), page_size);
      next = std::move(scan->next_page_token);
    }
    if (s.ok() && verify) {
      v1::ListImageTemplatesResponse parsed;
      if (!ParseBytes(response, &parsed)) {
        s = grpc::Status(grpc::StatusCode::INTERNAL, "response does not parse");
      } else if (parsed.image_templates_size() != scan->entries ||
                 parsed.next_page_token() != next) {
        s = grpc::Status(grpc::StatusCode::INTERNAL, "top-level scan disagrees with the parse");
      } else {
        for (const auto& t : parsed.image_templates()) {
          if (t.id().empty() || t.owner_account_id().empty()) {
            s = grpc::Status(grpc::StatusCode::INTERNAL, "entry without id or owner");
            break;
          }
        }
        c.just_verified = s.ok();
      }
    }
  }
  AdvanceWalk(c, s, std::move(next), walk_done);
  return s;
}

// One call. For lists, *walk_done says whether the walk through the pages of
// a filter ended with it.
grpc::Status OneCall(Client& c, Kind kind, int page_size, int64_t* items, bool* walk_done) {
  if (c.mode == ClientMode::kRaw) return OneRawCall(c, kind, page_size, items, walk_done);
  const CallerWorkload& w = *c.workload;
  if (kind == Kind::kGet) {
    const std::vector<std::string>* from = &w.all;
    if (w.all.empty()) {
      int r = static_cast<int>(c.rng() % 100);
      from = r < 70 ? &w.own : (r < 85 && !w.shared.empty() ? &w.shared : &w.public_ids);
    }
    v1::GetImageTemplateRequest request;
    request.set_id((*from)[c.rng() % from->size()]);
    v1::GetImageTemplateResponse fresh;
    v1::GetImageTemplateResponse& response =
        c.mode == ClientMode::kParseReuse ? c.get_response : fresh;
    response.Clear();  // a failed call parses nothing into it
    grpc::Status s = Call(*c.stub, &v1::ImageTemplateService::Stub::GetImageTemplate, w.key,
                          request, &response);
    if (s.ok() && response.image_template().id() != request.id()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "wrong template returned");
    }
    return s;
  }
  v1::ListImageTemplatesRequest request = ListRequest(kListFilters[c.filter], page_size);
  request.set_page_token(c.page_token);
  v1::ListImageTemplatesResponse fresh;
  v1::ListImageTemplatesResponse& response =
      c.mode == ClientMode::kParseReuse ? c.list_response : fresh;
  response.Clear();
  grpc::Status s = Call(*c.stub, &v1::ImageTemplateService::Stub::ListImageTemplates, w.key,
                        request, &response);
  *items = response.image_templates_size();
  if (s.ok()) s = CheckPage(*items, !response.next_page_token().empty(), page_size);
  if (s.ok()) {
    for (const auto& t : response.image_templates()) {
      if (t.id().empty() || t.owner_account_id().empty()) {
        s = grpc::Status(grpc::StatusCode::INTERNAL, "entry without id or owner");
        break;
      }
    }
  }
  AdvanceWalk(c, s, response.next_page_token(), walk_done);
  return s;
}

struct PhaseResult {
  std::string name;
  Kind kind;
  ClientMode mode = ClientMode::kParse;
  int64_t verified = 0;
  double rate = 0;  // offered calls/s; 0: closed loop
  int callers = 0;
  double seconds = 0;
  std::vector<int64_t> latencies_ns;  // sorted
  int64_t errors = 0;
  std::string first_error;
  double server_cpu = 0;  // cores
  double bench_cpu = 0;   // cores
  double other_cpu = 0;   // cores busy with anything else (other processes, kernel)
  double items_per_page = 0;
  int64_t walks = 0;
};

// Starts a system-wide `perf record` (perf -p misses the threads the gRPC
// server starts later); `perf report --pid` picks the controlplane out.
// Returns its pid or -1.
pid_t StartPerf(const std::string& out) {
  pid_t child = fork();
  if (child == 0) {
    int devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, STDOUT_FILENO);
    dup2(devnull, STDERR_FILENO);
    execlp("perf", "perf", "record", "-a", "-F", "999", "-g", "-o", out.c_str(),
           static_cast<char*>(nullptr));
    _exit(127);
  }
  return child;
}

// `rate` 0: closed loop, each client calls again as soon as it has an answer.
// Otherwise open loop: together the clients start `rate` calls per second on a
// fixed schedule, and latency counts from the scheduled start, so time spent
// waiting behind a slow call is not hidden (no coordinated omission).
PhaseResult RunPhase(const Config& config, const std::string& name, Kind kind, ClientMode mode,
                     double rate, const std::string& address,
                     const std::vector<const CallerWorkload*>& who, pid_t server_pid) {
  // kRaw: every request serialized before the phase starts.
  std::map<const CallerWorkload*, RawGets> raw_gets;
  std::vector<std::string> list_prefixes;
  if (mode == ClientMode::kRaw) {
    if (kind == Kind::kGet) {
      for (const CallerWorkload* w : who) {
        if (!raw_gets.count(w)) raw_gets[w] = SerializeGets(*w);
      }
    }
    for (const ListFilter& f : kListFilters) {
      list_prefixes.push_back(
          ListRequest(f, static_cast<int>(config.page_size)).SerializeAsString());
    }
  }
  std::vector<Client> clients(who.size());
  for (size_t i = 0; i < who.size(); ++i) {
    Client& c = clients[i];
    c.workload = who[i];
    c.mode = mode;
    c.channel = NewChannel(address, static_cast<int>(i));
    c.stub = v1::ImageTemplateService::NewStub(c.channel);
    if (mode == ClientMode::kRaw) {
      // The names the generated stub registers.
      c.raw_get = std::make_unique<grpc::internal::RpcMethod>(
          "/imagetemplates.v1.ImageTemplateService/GetImageTemplate",
          grpc::internal::RpcMethod::NORMAL_RPC, c.channel);
      c.raw_list = std::make_unique<grpc::internal::RpcMethod>(
          "/imagetemplates.v1.ImageTemplateService/ListImageTemplates",
          grpc::internal::RpcMethod::NORMAL_RPC, c.channel);
      c.raw_gets = kind == Kind::kGet ? &raw_gets[who[i]] : nullptr;
      c.list_prefixes = &list_prefixes;
    }
    c.rng.seed(config.seed * 1000 + i);
    c.filter = i % kFilterCount;
  }
  using Clock = std::chrono::steady_clock;
  std::atomic<bool> stop{false};
  std::atomic<int64_t> window_start_ns{INT64_MAX}, window_end_ns{INT64_MAX};
  auto ns = [](Clock::time_point t) {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  };
  const int64_t interval_ns =
      rate > 0 ? static_cast<int64_t>(1e9 * static_cast<double>(who.size()) / rate) : 0;
  const int64_t schedule_start_ns = ns(Clock::now());
  auto worker = [&](Client& c, int index) {
    int64_t next_ns = schedule_start_ns + interval_ns * index / static_cast<int64_t>(who.size());
    while (!stop.load(std::memory_order_relaxed)) {
      int64_t items = 0;
      bool walk_done = false;
      int64_t t0 = ns(Clock::now());
      if (interval_ns > 0) {
        if (next_ns > t0) {
          std::this_thread::sleep_for(std::chrono::nanoseconds(next_ns - t0));
        }
        t0 = next_ns;
        next_ns += interval_ns;
      }
      grpc::Status s = OneCall(c, kind, static_cast<int>(config.page_size), &items, &walk_done);
      const int64_t t1 = ns(Clock::now());
      // Closed loop: calls wholly inside the window. Open loop: calls that
      // end inside it (under overload the backlog is part of the answer).
      const int64_t from = window_start_ns.load(std::memory_order_relaxed);
      if ((interval_ns > 0 ? t1 < from : t0 < from) ||
          t1 > window_end_ns.load(std::memory_order_relaxed)) {
        continue;
      }
      c.latencies_ns.push_back(t1 - t0);
      c.items += items;
      c.walks += walk_done;
      c.verified += c.just_verified;
      if (!s.ok()) {
        if (c.errors.empty()) {
          c.first_error = absl::StrCat(s.error_code(), " ", s.error_message());
        }
        ++c.errors[s.error_code()];
      }
    }
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < clients.size(); ++i) {
    threads.emplace_back(worker, std::ref(clients[i]), static_cast<int>(i));
  }
  std::this_thread::sleep_for(std::chrono::seconds(config.warmup_seconds));

  pid_t perf = -1;
  if (!config.perf_dir.empty()) {
    perf = StartPerf(absl::StrCat(config.perf_dir, "/", name, ".perf.data"));
    std::ofstream(absl::StrCat(config.perf_dir, "/", name, ".pid")) << server_pid << "\n";
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // let perf attach
  }
  const double server_cpu0 = ProcessCpuSeconds(server_pid), self_cpu0 = SelfCpuSeconds(),
               machine_cpu0 = MachineBusySeconds();
  const Clock::time_point start = Clock::now();
  window_start_ns = ns(start);
  std::this_thread::sleep_for(std::chrono::seconds(config.seconds));
  const Clock::time_point end = Clock::now();
  window_end_ns = ns(end);
  const double server_cpu1 = ProcessCpuSeconds(server_pid), self_cpu1 = SelfCpuSeconds(),
               machine_cpu1 = MachineBusySeconds();
  stop = true;
  for (auto& t : threads) t.join();
  if (perf > 0) {
    kill(perf, SIGINT);
    waitpid(perf, nullptr, 0);
  }

  PhaseResult r;
  r.name = name;
  r.kind = kind;
  r.mode = mode;
  r.rate = rate;
  r.callers = static_cast<int>(who.size());
  r.seconds = std::chrono::duration<double>(end - start).count();
  r.server_cpu = (server_cpu1 - server_cpu0) / r.seconds;
  r.bench_cpu = (self_cpu1 - self_cpu0) / r.seconds;
  r.other_cpu =
      std::max(0.0, (machine_cpu1 - machine_cpu0) / r.seconds - r.server_cpu - r.bench_cpu);
  int64_t items = 0;
  for (Client& c : clients) {
    r.latencies_ns.insert(r.latencies_ns.end(), c.latencies_ns.begin(), c.latencies_ns.end());
    for (const auto& [code, n] : c.errors) r.errors += n;
    if (r.first_error.empty()) r.first_error = c.first_error;
    items += c.items;
    r.walks += c.walks;
    r.verified += c.verified;
  }
  std::sort(r.latencies_ns.begin(), r.latencies_ns.end());
  if (!r.latencies_ns.empty()) r.items_per_page = static_cast<double>(items) / r.latencies_ns.size();
  return r;
}

double PercentileMs(const std::vector<int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  size_t index = static_cast<size_t>(p / 100.0 * (sorted.size() - 1) + 0.5);
  return sorted[std::min(index, sorted.size() - 1)] / 1e6;
}

void PrintTable(const Config& config, const std::vector<PhaseResult>& results) {
  constexpr double kGoalRate = 5000, kGoalP99Ms = 5;
  absl::PrintF(
      "\n| Workload | Client | Callers | Calls | Calls/s | p50 ms | p99 ms | p99.9 ms | max ms "
      "| Errors | controlplane CPU (cores) | controlplane CPU us/call | bench CPU (cores) "
      "| bench CPU us/call | other CPU (cores) | Goal: > 5,000/s | Goal: p99 < 5 ms |\n"
      "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|\n");
  for (const PhaseResult& r : results) {
    const double rate = r.latencies_ns.size() / r.seconds;
    const double p99 = PercentileMs(r.latencies_ns, 99);
    std::string workload;
    std::string who = absl::StartsWith(r.name, "op-") ? "operator key" : "user keys";
    if (r.rate > 0) absl::StrAppend(&who, ", open loop at ", r.rate, "/s offered");
    if (r.kind == Kind::kGet) {
      workload = absl::StrCat("GetImageTemplate, ", who);
    } else {
      workload = absl::StrFormat(
          "ListImageTemplates page_size %d, filtered, %s (%.1f items/page, %d walks)",
          config.page_size, who, r.items_per_page, r.walks);
    }
    std::string client = ClientModeLabel(r.mode);
    if (r.mode == ClientMode::kRaw) absl::StrAppend(&client, " (", r.verified, " checked)");
    // CPU per call: the figure that stays comparable on a shared, busy machine.
    absl::PrintF(
        "| %s | %s | %d | %d | %.0f | %.2f | %.2f | %.2f | %.2f | %d | %.2f | %.0f | %.2f | %.0f "
        "| %.2f | %s | %s |\n",
        workload, client, r.callers, r.latencies_ns.size(), rate,
        PercentileMs(r.latencies_ns, 50), p99, PercentileMs(r.latencies_ns, 99.9),
        r.latencies_ns.empty() ? 0.0 : r.latencies_ns.back() / 1e6, r.errors, r.server_cpu,
        rate > 0 ? r.server_cpu / rate * 1e6 : 0.0, r.bench_cpu,
        rate > 0 ? r.bench_cpu / rate * 1e6 : 0.0, r.other_cpu,
        r.rate > 0 ? "n/a (open loop)" : (rate > kGoalRate ? "pass" : "**FAIL**"),
        p99 < kGoalP99Ms && r.errors == 0 ? "pass" : "**FAIL**");
  }
  absl::PrintF("\n");
  for (const PhaseResult& r : results) {
    if (r.errors > 0) absl::PrintF("%s: %d errors, first: %s\n", r.name, r.errors, r.first_error);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  common::FlagSet flags(
      "controlplane_bench --controlplane=PATH --dir=DIR [flags]\n"
      "Seeds DIR/cp.db once (if missing), then measures GetImageTemplate and "
      "ListImageTemplates against the real controlplane binary.");
  flags.String("controlplane", &config.controlplane, "the controlplane binary");
  flags.String("dir", &config.dir, "work directory: cp.db, admin.key, bench-keys.tsv, logs");
  flags.Int("accounts", &config.accounts, "accounts to seed");
  flags.Int("templates-per-account", &config.templates_per_account, "templates per account");
  flags.Int("clients", &config.clients, "concurrent callers, one channel and account each");
  flags.Int("seconds", &config.seconds, "measured seconds per phase");
  flags.Int("warmup-seconds", &config.warmup_seconds, "unmeasured seconds before each phase");
  flags.Int("page-size", &config.page_size, "ListImageTemplates page_size");
  flags.Int("seed", &config.seed, "random seed of the data and the callers");
  flags.String("phases", &config.phases,
               "comma-separated: get, list, op-get, op-list; PHASE@RATE for open loop");
  flags.String("client-modes", &config.client_modes,
               "comma-separated: parse (generated stub, every response parsed into a fresh "
               "message), parse-reuse (the same, into a response message each thread clears "
               "and reuses), raw "
               "(pre-serialized requests, responses not parsed, 1 in 100 parsed and checked); "
               "each phase runs once per mode");
  flags.Int("unrelated-commits-per-second", &config.unrelated_commits_per_second,
            "while phases run, another process's writer commits this many audit rows a "
            "second into the database (as a live control plane's audit log and heartbeats "
            "do); 0: the database is only read");
  flags.String("perf-dir", &config.perf_dir,
               "if set, perf record the controlplane in each measured phase into this directory");
  bool help = false;
  auto positional = flags.Parse(argc, argv, &help);
  if (help) {
    std::fputs(flags.Help().c_str(), stdout);
    return 0;
  }
  if (!positional.ok() || !positional->empty() || config.controlplane.empty() ||
      config.dir.empty() || config.clients < 1 || config.accounts < config.clients) {
    std::fprintf(stderr, "controlplane_bench: bad usage\n%s", flags.Help().c_str());
    return 2;
  }
  mkdir(config.dir.c_str(), 0700);
  signal(SIGPIPE, SIG_IGN);

  struct stat st;
  if (stat((config.dir + "/cp.db").c_str(), &st) != 0) {
    absl::Status seeded = Seed(config);
    if (!seeded.ok()) {
      Log("seeding failed: " + seeded.ToString());
      return 1;
    }
  } else {
    Log("reusing the seeded " + config.dir + "/cp.db");
  }
  auto keys = ReadKeys(config);
  if (!keys.ok()) {
    Log(keys.status().ToString());
    return 1;
  }
  CallerWorkload operator_workload;
  auto callers = LoadWorkload(config, *keys, &operator_workload);
  if (!callers.ok()) {
    Log(callers.status().ToString());
    return 1;
  }
  {
    size_t own = 0, shared = 0;
    for (const auto& c : *callers) own += c.own.size(), shared += c.shared.size();
    Log(absl::StrFormat(
        "%d templates in %d accounts; callers see on average %d own, %d shared, %d public",
        operator_workload.all.size(), keys->size(), own / callers->size(),
        shared / callers->size(), (*callers)[0].public_ids.size()));
  }

  auto cp = StartControlplane(config);
  if (!cp.ok()) {
    Log(cp.status().ToString());
    return 1;
  }
  Log(absl::StrFormat("controlplane pid %d on %s", cp->pid(), cp->address()));
  std::vector<const CallerWorkload*> users, operators;
  for (const CallerWorkload& c : *callers) users.push_back(&c);
  for (int64_t i = 0; i < config.clients; ++i) operators.push_back(&operator_workload);

  std::vector<ClientMode> modes;
  for (absl::string_view m : absl::StrSplit(config.client_modes, ',', absl::SkipEmpty())) {
    bool known = false;
    for (ClientMode mode : {ClientMode::kParse, ClientMode::kParseReuse, ClientMode::kRaw}) {
      if (m == ClientModeName(mode)) modes.push_back(mode), known = true;
    }
    if (!known) {
      Log(absl::StrCat("unknown client mode ", m, "; want parse, parse-reuse or raw"));
      return 2;
    }
  }
  std::vector<PhaseResult> results;
  std::optional<UnrelatedCommits> unrelated_commits;
  unrelated_commits.emplace(config);
  for (absl::string_view phase : absl::StrSplit(config.phases, ',', absl::SkipEmpty())) {
    // "get", "op-list", ...; "get@5000" offers 5,000 calls/s (open loop).
    std::vector<std::string> parts = absl::StrSplit(phase, '@');
    const std::string& what = parts[0];
    double rate = 0;
    if ((what != "get" && what != "list" && what != "op-get" && what != "op-list") ||
        parts.size() > 2 || (parts.size() == 2 && (!absl::SimpleAtod(parts[1], &rate) || rate <= 0))) {
      Log(absl::StrCat("unknown phase ", phase, "; want get, list, op-get or op-list, "
                       "optionally @CALLS_PER_SECOND"));
      return 2;
    }
    Kind kind = absl::EndsWith(what, "list") ? Kind::kList : Kind::kGet;
    bool op = absl::StartsWith(what, "op-");
    for (ClientMode mode : modes) {
      Log(absl::StrCat("phase ", phase, ", ", ClientModeLabel(mode), ": ",
                       config.warmup_seconds, " s warm-up, ", config.seconds, " s measured"));
      results.push_back(RunPhase(
          config,
          absl::StrCat(absl::StrReplaceAll(phase, {{"@", "-at-"}}),
                       mode == ClientMode::kParse ? "" : absl::StrCat("-", ClientModeName(mode))),
          kind, mode, rate, cp->address(), op ? operators : users, cp->pid()));
    }
  }
  unrelated_commits.reset();
  auto stopped = cp->Stop(SIGTERM);
  if (!stopped.ok()) Log(stopped.status().ToString());
  PrintTable(config, results);
  return 0;
}
