// imagectl op ... (long-running operations) and imagectl server ... (the
// servers your user may see, shaped after `slcli vs`).
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/imagectl/cli.h"
#include "common/status_macros.h"

namespace imagectl {

namespace v1 = imagetemplates::v1;
using Args = std::vector<std::string>;

namespace {

constexpr char kExampleOp[] = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
constexpr char kExampleServer[] = "0d3c1f9e-8a7b-4c2d-9e1f-2a3b4c5d6e7f";

std::string OpState(v1::OperationState state) {
  return ShortEnum(v1::OperationState_Name(state), "OPERATION_STATE_");
}

int OpList(Context& ctx, const Args& args) {
  std::string states, kinds, target, account;
  common::FlagSet flags(
      "imagectl op list [flags]\n"
      "Lists operations (creates, deploys, deletes, copies) of your account, newest first.\n"
      "Example:\n"
      "  imagectl op list --states=running,pending --kinds=deploy_image_template");
  flags.String("states", &states,
               "comma-separated: pending, running, cancelling, succeeded, failed, cancelled");
  flags.String("kinds", &kinds,
               "comma-separated: create_image_template, deploy_image_template, "
               "delete_image_template, copy_image_template");
  flags.String("target", &target, "only operations acting on this resource id");
  flags.String("account", &account, "operators: the account to list");
  return RunList(
      ctx, "op list", flags, args, &v1::OperationService::Stub::ListOperations,
      [&](v1::ListOperationsRequest* request) {
        for (const auto& s : SplitList(states)) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListOperationsRequest::add_states,
                                  "OPERATION_STATE_", "states", s));
        }
        for (const auto& k : SplitList(kinds)) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListOperationsRequest::add_kinds, "OPERATION_KIND_",
                                  "kinds", k));
        }
        request->set_target_id(target);
        request->set_account_id(account);
        return absl::OkStatus();
      },
      [](const v1::ListOperationsResponse& response) {
        Table table({"ID", "KIND", "STATE", "STEP", "PROGRESS", "TARGET", "CREATED"});
        for (const auto& op : response.operations()) {
          table.Add({op.id(), ShortEnum(v1::OperationKind_Name(op.kind()), "OPERATION_KIND_"),
                     OpState(op.state()), op.step(),
                     absl::StrFormat("%.0f%%", op.progress().percent()), op.target().id(),
                     FormatTime(op.create_time())});
        }
        table.Print(stdout);
      });
}

int OpWatch(Context& ctx, const Args& args) {
  common::FlagSet flags(absl::StrCat(
      "imagectl op watch OPERATION_ID\n"
      "Follows an operation to its end with a progress bar; exits 4 if it fails.\n"
      "Example:\n  imagectl op watch ",
      kExampleOp));
  Args pos;
  if (auto rc = ParseArgs(ctx, "op watch", flags, args, 1, 1, &pos)) return *rc;
  v1::Operation op;
  op.set_id(pos[0]);
  return FollowOperation(ctx, op, /*no_wait=*/false);
}

}  // namespace

void PrintServerDetail(const v1::Server& s) {
  const v1::ServerConfiguration& c = s.configuration();
  PrintFields({
      {"id", s.id()},
      {"hostname", s.domain().empty() ? s.hostname() : s.hostname() + "." + s.domain()},
      {"type", ShortEnum(v1::ServerType_Name(s.type()), "SERVER_TYPE_")},
      {"state", ShortEnum(v1::ServerState_Name(s.state()), "SERVER_STATE_")},
      {"power", ShortEnum(v1::PowerState_Name(s.power_state()), "POWER_STATE_")},
      {"datacenter", s.datacenter()},
      {"account", s.account_id()},
      {"cpus", absl::StrCat(c.cpu_count())},
      {"memory", absl::StrCat(c.memory_mib(), " MiB")},
      {"os", c.os_reference()},
      {"boot mode", ShortEnum(v1::BootMode_Name(c.boot_mode()), "BOOT_MODE_")},
      {"credentials", s.has_credentials() ? "recorded" : "none"},
      {"image template", s.source_image_template_id()},
      {"created", FormatTime(s.create_time())},
  });
  if (c.network_interfaces_size() > 0) {
    std::printf("\n");
    Table nics({"NIC", "MAC", "ADDRESS", "GATEWAY", "DNS", "IP POOL"});
    for (const auto& n : c.network_interfaces()) {
      nics.Add({n.name(), n.mac_address(), n.ip_address(), n.gateway(),
                absl::StrJoin(n.dns_servers(), ","), n.ip_pool_id()});
    }
    nics.Print(stdout);
  }
  if (s.disks_size() > 0) {
    std::printf("\n");
    Table disks({"DISK", "ROLE", "SIZE", "SAN VOLUME", "SAN HOST", "ISCSI"});
    for (const auto& d : s.disks()) {
      disks.Add({absl::StrCat(d.device_index()),
                 d.boot() ? "boot" : (d.config_drive() ? "config-drive" : "data"),
                 FormatBytes(d.size_bytes()), d.san_volume_id(), d.san_host(),
                 IscsiText(d.iscsi())});
    }
    disks.Print(stdout);
  }
}

void PrintServer(Context& ctx, const v1::Server& server) {
  Print(ctx, server, [&] { PrintServerDetail(server); });
}

std::string IscsiText(const v1::IscsiAddress& a) {
  return absl::StrCat(a.portal(), "/", a.iqn(), "/", a.lun());
}

int ServerList(Context& ctx, const Args& args, const std::string& command) {
  std::string datacenter, type, state, hostname, image, account;
  common::FlagSet flags(absl::StrCat(
      "imagectl ", command,
      " [flags]\n"
      "Lists the servers you may see (operators: of every account), by hostname.\n"
      "Example:\n  imagectl ",
      command, " --datacenter=dal10 --hostname-contains=web"));
  flags.String("datacenter", &datacenter, "only this datacenter");
  flags.String("type", &type, "virtual or bare_metal");
  flags.String("state", &state, "provisioning, active, failed or reclaiming");
  flags.String("hostname-contains", &hostname, "case-insensitive substring of the hostname");
  flags.String("image", &image, "only servers deployed from this image template id");
  flags.String("account", &account, "operators: only this account");
  return RunList(
      ctx, command, flags, args, &v1::InventoryService::Stub::ListServers,
      [&](v1::ListServersRequest* request) {
        request->set_datacenter(datacenter);
        request->set_hostname_contains(hostname);
        request->set_source_image_template_id(image);
        request->set_account_id(account);
        if (!type.empty()) {
          RETURN_IF_ERROR(
              SetEnum(request, &v1::ListServersRequest::set_type, "SERVER_TYPE_", "type", type));
        }
        if (!state.empty()) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListServersRequest::set_state, "SERVER_STATE_",
                                  "state", state));
        }
        return absl::OkStatus();
      },
      [](const v1::ListServersResponse& response) {
        Table table({"ID", "HOSTNAME", "DOMAIN", "DATACENTER", "STATE", "POWER", "ADDRESS",
                     "IMAGE TEMPLATE"});
        for (const auto& s : response.servers()) {
          std::string address;
          if (s.configuration().network_interfaces_size() > 0) {
            address = s.configuration().network_interfaces(0).ip_address();
          }
          table.Add({s.id(), s.hostname(), s.domain(), s.datacenter(),
                     ShortEnum(v1::ServerState_Name(s.state()), "SERVER_STATE_"),
                     ShortEnum(v1::PowerState_Name(s.power_state()), "POWER_STATE_"), address,
                     s.source_image_template_id()});
        }
        table.Print(stdout);
      });
}

namespace {

void CredentialsTable(const google::protobuf::RepeatedPtrField<v1::SoftwareCredential>& all) {
  Table table({"SOFTWARE", "USERNAME", "PASSWORD"});
  for (const auto& c : all) table.Add({c.software(), c.username(), c.password()});
  table.Print(stdout);
}

int CredentialsSet(Context& ctx, const Args& args) {
  bool clear = false;
  common::FlagSet flags(absl::StrCat(
      "imagectl server credentials set SERVER_ID (SOFTWARE:USER:PASSWORD... | --clear)\n"
      "Replaces a server's software credentials with the ones given (server_credentials_view\n"
      "with device access, or operators). Creating an image template needs them.\n"
      "Example:\n  imagectl server credentials set ",
      kExampleServer, " os:root:s3cret mysql:admin:'pa:ss'"));
  flags.Bool("clear", &clear, "remove every credential");
  Args pos;
  if (auto rc = ParseArgs(ctx, "server credentials set", flags, args, 1, -1, &pos)) return *rc;
  if (clear == (pos.size() > 1)) {
    return ctx.UsageError("server credentials set",
                          "give SOFTWARE:USER:PASSWORD arguments, or --clear alone");
  }
  v1::SetServerCredentialsRequest request;
  request.set_server_id(pos[0]);
  for (size_t i = 1; i < pos.size(); ++i) {
    if (!ParseCredential(pos[i], request.add_credentials())) {
      return ctx.UsageError("server credentials set",
                            absl::StrCat("\"", pos[i], "\" is not SOFTWARE:USER:PASSWORD"));
    }
  }
  return RunCall(ctx, &v1::InventoryService::Stub::SetServerCredentials, request,
                 [&](const auto& response) { PrintServer(ctx, response.server()); });
}

int Console(Context& ctx, const Args& args) {
  int64_t lines = 100;
  common::FlagSet flags(absl::StrCat(
      "imagectl server console SERVER_ID [--lines=N]\n"
      "Prints the last lines of a server's serial console, oldest first (server_view with\n"
      "device access, or operators). UNAVAILABLE when the compute driver cannot read it.\n"
      "Example:\n  imagectl server console ",
      kExampleServer, " --lines=50"));
  flags.Int("lines", &lines, "how many lines, 1..10000");
  Args pos;
  if (auto rc = ParseArgs(ctx, "server console", flags, args, 1, 1, &pos)) return *rc;
  v1::GetServerConsoleRequest request;
  request.set_server_id(pos[0]);
  request.set_line_count(static_cast<int32_t>(lines));
  return RunCall(ctx, &v1::InventoryService::Stub::GetServerConsole, request, [&](const auto& r) {
    Print(ctx, r, [&] {
      for (const std::string& line : r.lines()) std::printf("%s\n", line.c_str());
    });
  });
}

}  // namespace

std::vector<Command> OperationCommands() {
  using Stub = v1::OperationService::Stub;
  return {
      {"op list", "list operations", OpList},
      IdCommand({"op get", "show an operation", "OPERATION_ID",
                 "Shows an operation: state, step, progress, finished steps, result or error.",
                 kExampleOp},
                "id", &Stub::GetOperation, PrintResponse(PrintOperation)),
      {"op watch", "follow an operation to its end", OpWatch},
      IdCommand({"op cancel", "cancel a running operation", "OPERATION_ID",
                 "Asks a running operation to stop and undo its work; it ends CANCELLED.",
                 kExampleOp},
                "id", &Stub::CancelOperation, PrintResponse(PrintOperation)),
  };
}

std::vector<Command> ServerCommands() {
  return {
      {"server list", "list the servers you may see",
       [](Context& ctx, const Args& args) { return ServerList(ctx, args, "server list"); }},
      IdCommand({"server detail", "show a server", "SERVER_ID",
                 "Shows a server: state, configuration, network interfaces and disks.",
                 kExampleServer},
                "id", &v1::InventoryService::Stub::GetServer,
                PrintPart(&v1::GetServerResponse::server, PrintServerDetail)),
      IdCommand({"server credentials get", "show a server's software credentials", "SERVER_ID",
                 "Shows a server's software credentials with passwords (server_credentials_view\n"
                 "with device access, or operators). The read is audited.",
                 kExampleServer},
                "server_id", &v1::InventoryService::Stub::GetServerCredentials,
                PrintResponse([](const v1::GetServerCredentialsResponse& r) {
                  CredentialsTable(r.credentials());
                })),
      {"server credentials set", "replace a server's software credentials", CredentialsSet},
      {"server console", "print a server's serial console", Console},
  };
}

}  // namespace imagectl
