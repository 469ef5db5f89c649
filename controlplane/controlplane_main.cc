// controlplane: the public gRPC API (templates, deploys, identity, inventory,
// audit) and the registry the storaged daemons report to.
#include <cstdio>
#include <string>

#include "common/flags.h"
#include "common/grpc_server.h"
#include "common/log.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "imagetemplates/v1/audit.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"

namespace {

struct Config {
  std::string listen = "127.0.0.1:7443";
  std::string db = "controlplane.db";
  std::string admin_key_file;
  std::string port_file;
};

}  // namespace

int main(int argc, char** argv) {
  common::BlockTerminationSignals();
  common::SetLogComponent("controlplane");
  Config config;
  common::FlagSet flags(
      "controlplane --listen=HOST:PORT --db=PATH [--admin-key-file=PATH]\n"
      "Serves the image templates API. Example:\n"
      "  controlplane --listen=127.0.0.1:7443 --db=/var/lib/imagetemplates/cp.db "
      "--admin-key-file=/var/lib/imagetemplates/admin.key");
  flags.String("listen", &config.listen, "address to serve gRPC on; port 0 picks one");
  flags.String("db", &config.db, "SQLite database file (created if missing)");
  flags.String("admin-key-file", &config.admin_key_file,
               "where the first start writes the operator's API key (mode 0600)");
  flags.String("port-file", &config.port_file,
               "write the bound port here once listening (for scripts and tests)");
  bool help = false;
  auto positional = flags.Parse(argc, argv, &help);
  if (help) {
    std::fputs(flags.Help().c_str(), stdout);
    return 0;
  }
  if (!positional.ok() || !positional->empty()) {
    std::fprintf(stderr, "controlplane: %s\n%s",
                 positional.ok() ? "unexpected argument" 
                                 : std::string(positional.status().message()).c_str(),
                 flags.Help().c_str());
    return 2;
  }

  // Until their issues land every RPC answers UNIMPLEMENTED.
  imagetemplates::v1::ImageTemplateService::Service image_templates;
  imagetemplates::v1::OperationService::Service operations;
  imagetemplates::v1::IdentityService::Service identity;
  imagetemplates::v1::InventoryService::Service inventory;
  imagetemplates::v1::AuditService::Service audit;
  imagetemplates::storagenode::v1::NodeRegistry::Service node_registry;

  common::ServeOptions options;
  options.listen = config.listen;
  options.port_file = config.port_file;
  absl::Status status = common::ServeUntilSignal(
      options,
      {&image_templates, &operations, &identity, &inventory, &audit, &node_registry},
      nullptr, nullptr);
  if (!status.ok()) {
    common::LogError("%s", status.ToString());
    return 1;
  }
  return 0;
}
