// storaged: the storage node on a SAN host. Captures guest volumes over iSCSI
// into its image store and restores them onto new volumes.
#include <fcntl.h>
#include <malloc.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

#include "common/flags.h"
#include "common/grpc_server.h"
#include "common/internal_token.h"
#include "common/log.h"
#include "common/process_lock.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "grpcpp/health_check_service_interface.h"
#include "storaged/image_store.h"
#include "storaged/iscsi_volume.h"
#include "storaged/node_registration.h"
#include "storaged/storage_node_service.h"
#include "storaged/store_maintenance.h"

namespace {

struct Config {
  std::string listen = "127.0.0.1:7444";
  std::string store;
  std::string datacenter;
  std::string node_id;
  std::string port_file;
  int64_t zstd_level = 2;
  std::string controlplane;
  std::string advertise;
  std::string portals;
  std::string internal_token_file;
  int64_t gc_after_delete_seconds = 60;
  int64_t gc_interval_seconds = 6 * 3600;
  int64_t scrub_interval_seconds = 7 * 24 * 3600;
};

// When the store's last scrub finished (a file of Unix seconds in the store
// directory, so the weekly scrub survives restarts); InfinitePast if unknown.
absl::Time LastScrub(const std::string& path) {
  std::ifstream in(path);
  int64_t seconds = 0;
  if (in >> seconds && seconds > 0) return absl::FromUnixSeconds(seconds);
  return absl::InfinitePast();
}

// Seconds from a flag; `off` and below mean never.
absl::Duration SecondsOrNever(int64_t seconds, int64_t off) {
  return seconds <= off ? absl::InfiniteDuration() : absl::Seconds(seconds);
}

// The store directory (owner-only: it holds every account's disks; an older
// version made it 0755) and its lock: two storaged writing one store would
// corrupt each other's view of it (packs, garbage collection).
// FAILED_PRECONDITION when another process holds it; UNAVAILABLE when the
// directory cannot be used (yet).
absl::Status LockStore(const std::string& dir, bool* locked) {
  if (*locked) return absl::OkStatus();
  if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return absl::UnavailableError(absl::StrCat("mkdir ", dir, ": ", std::strerror(errno)));
  }
  if (::chmod(dir.c_str(), 0700) != 0) {
    common::LogWarning("cannot make store %s owner-only: %s", dir, std::strerror(errno));
  }
  RETURN_IF_ERROR(
      common::LockForProcess(dir + "/.storaged.lock", absl::StrCat("store ", dir), "storaged"));
  *locked = true;
  return absl::OkStatus();
}

absl::Status OpenStore(const std::string& dir, const storaged::ImageStoreOptions& options,
                       std::unique_ptr<storaged::ImageStore>* out) {
  static bool store_locked = false;
  if (absl::Status locked = LockStore(dir, &store_locked); !locked.ok()) {
    common::LogError("image store %s unusable: %s", dir, locked.ToString());
    return locked;
  }
  auto store = storaged::ImageStore::Open(dir, options);
  if (!store.ok()) {
    common::LogError("image store %s unusable: %s", dir, store.status().ToString());
    return store.status();
  }
  common::LogInfo("image store %s open", dir);
  *out = *std::move(store);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  // Captures, restores and copies run on whichever gRPC and worker threads
  // are free; with glibc's default of 8 heaps per core each 4 MiB buffer
  // lands in another heap and freed memory stays stranded there: resident
  // memory grew by ~40 MiB per capture and reached 302 MiB in the capture
  // benchmark. Two heaps: 97-111 MiB peak over the same captures, no slower.
  mallopt(M_ARENA_MAX, 2);
  common::BlockTerminationSignals();
  common::SetLogComponent("storaged");
  Config config;
  common::FlagSet flags(
      "storaged --listen=HOST:PORT --store=DIR --datacenter=NAME --node-id=ID\n"
      "Serves the internal storage-node API on a SAN host. Example:\n"
      "  storaged --listen=127.0.0.1:7444 --store=/srv/images --datacenter=dal10 "
      "--node-id=san1");
  flags.String("listen", &config.listen, "address to serve gRPC on; port 0 picks one");
  flags.String("store", &config.store, "image store directory");
  flags.String("datacenter", &config.datacenter, "datacenter this node serves");
  flags.String("node-id", &config.node_id, "this node's unique id");
  flags.String("controlplane", &config.controlplane,
               "control plane HOST:PORT to register with and heartbeat to (optional)");
  flags.String("advertise", &config.advertise,
               "this node's address as the control plane reaches it (default: the "
               "listen host and bound port)");
  flags.String("portals", &config.portals,
               "comma-separated iSCSI portals (HOST:PORT) of the SAN host this node serves");
  flags.String("internal-token-file", &config.internal_token_file,
               "file whose first line is the shared secret of the internal API (at least "
               "32 bytes, mode 0600); every call must carry it, and it is sent to the "
               "control plane and peers. Required with --controlplane; without both, "
               "the node serves unauthenticated (standalone use)");
  flags.Int("zstd-level", &config.zstd_level, "zstd level for new chunks (1..19)");
  flags.Int("gc-after-delete-seconds", &config.gc_after_delete_seconds,
            "garbage collection this long after an image is deleted (deletes in between "
            "share it); negative: only every --gc-interval-seconds");
  flags.Int("gc-interval-seconds", &config.gc_interval_seconds,
            "garbage collection at this interval; 0: never");
  flags.Int("scrub-interval-seconds", &config.scrub_interval_seconds,
            "verify every image at this interval (damaged chunks are logged, and stored "
            "again by the next capture holding them); 0: never");
  flags.String("port-file", &config.port_file,
               "write the bound port here once listening (for scripts and tests)");
  common::TlsFiles tls;
  common::AddTlsFlags(flags, &tls);
  flags.ParseFlagsOnlyOrExit(argc, argv, "storaged");
  common::SetLogComponent(config.node_id.empty() ? "storaged"
                                                 : "storaged[" + config.node_id + "]");

  if (config.store.empty() || config.node_id.empty() || config.datacenter.empty()) {
    std::fprintf(stderr, "storaged: --store, --datacenter and --node-id are required\n%s",
                 flags.Help().c_str());
    return 2;
  }
  if (config.zstd_level < 1 || config.zstd_level > 19) {
    std::fprintf(stderr, "storaged: --zstd-level must be 1..19\n");
    return 2;
  }

  std::string internal_token;
  if (!config.internal_token_file.empty()) {
    absl::StatusOr<std::string> token = common::ReadInternalTokenFile(config.internal_token_file);
    if (!token.ok()) {
      std::fprintf(stderr, "storaged: --internal-token-file: %s\n",
                   std::string(token.status().message()).c_str());
      return 2;
    }
    internal_token = *std::move(token);
  } else if (!config.controlplane.empty()) {
    std::fprintf(stderr,
                 "storaged: --internal-token-file is required with --controlplane: the "
                 "shared secret of the internal API, the control plane's file (a 0600 file "
                 "whose first line has at least 32 bytes)\n");
    return 2;
  } else {
    common::LogWarning(
        "no --internal-token-file: serving the StorageNode API UNAUTHENTICATED to anyone "
        "who reaches %s (standalone use only)",
        config.listen);
  }

  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = common::SetUpTls(tls);
  if (!credentials.ok()) {
    std::fprintf(stderr, "storaged: %s\n", std::string(credentials.status().message()).c_str());
    return 2;
  }

  storaged::ImageStoreOptions store_options;
  store_options.compression_level = static_cast<int>(config.zstd_level);
  std::unique_ptr<storaged::ImageStore> store;
  absl::Status store_status = OpenStore(config.store, store_options, &store);
  if (absl::IsFailedPrecondition(store_status)) {
    // Another storaged owns the store: waiting would not help.
    std::fprintf(stderr, "storaged: %s\n", std::string(store_status.message()).c_str());
    return 1;
  }
  storaged::StorageNodeService storage_node(
      config.node_id, store.get(),
      [](const std::string& url) -> absl::StatusOr<std::unique_ptr<storaged::Volume>> {
        auto volume = storaged::IscsiVolume::Open(url);
        if (!volume.ok()) return volume.status();
        return std::unique_ptr<storaged::Volume>(std::move(*volume));
      });
  if (!internal_token.empty()) storage_node.RequireInternalToken(internal_token);
  storaged::StoreMaintenanceOptions upkeep;
  upkeep.gc_after_delete = SecondsOrNever(config.gc_after_delete_seconds, -1);
  upkeep.gc_interval = SecondsOrNever(config.gc_interval_seconds, 0);
  upkeep.scrub_interval = SecondsOrNever(config.scrub_interval_seconds, 0);
  const std::string scrub_stamp = config.store + "/last-scrub";
  upkeep.last_scrub = LastScrub(scrub_stamp);
  storaged::StoreMaintenance maintenance(
      upkeep, [&storage_node] { return storage_node.CollectGarbageNow(false).status(); },
      [&](const std::atomic<bool>& stop) {
        absl::Status scrubbed = storage_node.ScrubImages(stop);
        if (scrubbed.ok()) {
          common::WriteFileAtomically(scrub_stamp,
                                      absl::StrCat(absl::ToUnixSeconds(absl::Now()), "\n"), 0644)
              .IgnoreError();  // the next start scrubs an interval later then
        }
        return scrubbed;
      });
  storage_node.OnImageDeleted([&maintenance] { maintenance.ImageDeleted(); });

  // An unusable store (missing mount, bad permissions) does not stop the
  // process: health says NOT_SERVING and the store is retried until it opens.
  absl::Notification stopping;
  std::thread retry;
  std::unique_ptr<storaged::NodeRegistration> registration;
  auto on_started = [&](grpc::Server* server, int port) {
    if (!config.controlplane.empty()) {
      storaged::NodeRegistrationOptions reg;
      reg.controlplane = config.controlplane;
      reg.node_id = config.node_id;
      reg.datacenter = config.datacenter;
      reg.address = config.advertise.empty()
                        ? absl::StrCat(config.listen.substr(0, config.listen.rfind(':')), ":",
                                       port)
                        : config.advertise;
      reg.served_portals = absl::StrSplit(config.portals, ',', absl::SkipEmpty());
      reg.internal_token = internal_token;
      registration = std::make_unique<storaged::NodeRegistration>(
          reg, [&storage_node] { return storage_node.Status(); });
      registration->Start();
    }
    maintenance.Start();
    if (store != nullptr) return;
    server->GetHealthCheckService()->SetServingStatus(false);
    retry = std::thread([&, server] {
      while (!stopping.WaitForNotificationWithTimeout(absl::Seconds(2))) {
        if (OpenStore(config.store, store_options, &store).ok()) {
          storage_node.AttachStore(store.get());
          server->GetHealthCheckService()->SetServingStatus(true);
          return;
        }
      }
    });
  };
  common::ServeOptions options;
  options.credentials = *credentials;
  options.listen = config.listen;
  options.port_file = config.port_file;
  absl::Status status = common::ServeUntilSignal(options, {&storage_node}, on_started,
                                                 [&] {
                                                   stopping.Notify();
                                                   registration.reset();
                                                 });
  if (retry.joinable()) retry.join();
  if (!status.ok()) {
    common::LogError("%s", status.ToString());
    return 1;
  }
  return 0;
}
