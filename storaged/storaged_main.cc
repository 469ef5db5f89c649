// storaged: the storage node on a SAN host. Captures guest volumes over iSCSI
// into its image store and restores them onto new volumes.
#include <atomic>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"

#include "common/flags.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "grpcpp/health_check_service_interface.h"
#include "storaged/image_store.h"
#include "storaged/iscsi_volume.h"
#include "storaged/node_registration.h"
#include "storaged/storage_node_service.h"

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
};

absl::Status OpenStore(const std::string& dir, const storaged::ImageStoreOptions& options,
                       std::unique_ptr<storaged::ImageStore>* out) {
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
  flags.Int("zstd-level", &config.zstd_level, "zstd level for new chunks (1..19)");
  flags.String("port-file", &config.port_file,
               "write the bound port here once listening (for scripts and tests)");
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

  storaged::ImageStoreOptions store_options;
  store_options.compression_level = static_cast<int>(config.zstd_level);
  std::unique_ptr<storaged::ImageStore> store;
  absl::Status store_status = OpenStore(config.store, store_options, &store);
  storaged::StorageNodeService storage_node(
      config.node_id, store.get(),
      [](const std::string& url) -> absl::StatusOr<std::unique_ptr<storaged::Volume>> {
        auto volume = storaged::IscsiVolume::Open(url);
        if (!volume.ok()) return volume.status();
        return std::unique_ptr<storaged::Volume>(std::move(*volume));
      });

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
      registration = std::make_unique<storaged::NodeRegistration>(
          reg, [&storage_node] { return storage_node.Status(); });
      registration->Start();
    }
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
