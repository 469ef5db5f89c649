// storaged: the storage node on a SAN host. Captures guest volumes over iSCSI
// into its image store and restores them onto new volumes.
#include <cstdio>
#include <string>

#include "common/flags.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"

namespace {

struct Config {
  std::string listen = "127.0.0.1:7444";
  std::string store;
  std::string datacenter;
  std::string node_id;
  std::string port_file;
};

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
  flags.String("port-file", &config.port_file,
               "write the bound port here once listening (for scripts and tests)");
  bool help = false;
  auto positional = flags.Parse(argc, argv, &help);
  if (help) {
    std::fputs(flags.Help().c_str(), stdout);
    return 0;
  }
  if (!positional.ok() || !positional->empty()) {
    std::fprintf(stderr, "storaged: %s\n%s",
                 positional.ok() ? "unexpected argument"
                                 : std::string(positional.status().message()).c_str(),
                 flags.Help().c_str());
    return 2;
  }
  common::SetLogComponent(config.node_id.empty() ? "storaged"
                                                 : "storaged[" + config.node_id + "]");

  // Until its issue lands every RPC answers UNIMPLEMENTED.
  imagetemplates::storagenode::v1::StorageNode::Service storage_node;

  common::ServeOptions options;
  options.listen = config.listen;
  options.port_file = config.port_file;
  absl::Status status =
      common::ServeUntilSignal(options, {&storage_node}, nullptr, nullptr);
  if (!status.ok()) {
    common::LogError("%s", status.ToString());
    return 1;
  }
  return 0;
}
