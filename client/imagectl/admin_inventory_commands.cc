// imagectl admin ... for the inventory operators keep: datacenters, the SAN
// volume pool, IP pools, servers and storage nodes.
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/imagectl/cli.h"
#include "common/status_macros.h"

namespace imagectl {

namespace v1 = imagetemplates::v1;
using Args = std::vector<std::string>;

namespace {

constexpr char kExampleAccount[] = "5f0c6b2a-1d3e-4f5a-8b9c-0d1e2f3a4b5c";
constexpr char kExampleServer[] = "0d3c1f9e-8a7b-4c2d-9e1f-2a3b4c5d6e7f";
constexpr char kExampleVolume[] = "6b1d2e3f-4a5b-4c6d-8e7f-8091a2b3c4d5";
constexpr char kExamplePool[] = "1e2d3c4b-5a69-4788-9a0b-c1d2e3f40516";

void SanVolumeFields(const v1::SanVolume& v) {
  PrintFields({{"id", v.id()},
               {"datacenter", v.datacenter()},
               {"san host", v.san_host()},
               {"iscsi", IscsiText(v.iscsi())},
               {"size", FormatBytes(v.size_bytes())},
               {"thin", v.thin() ? "yes" : "no"},
               {"state", ShortEnum(v1::SanVolumeState_Name(v.state()), "SAN_VOLUME_STATE_")},
               {"server", v.attached_server_id()},
               {"created", FormatTime(v.create_time())}});
}

void StorageNodeFields(const v1::StorageNode& n) {
  PrintFields({{"id", n.id()},
               {"datacenter", n.datacenter()},
               {"address", n.address()},
               {"portals", absl::StrJoin(n.served_portals(), ",")},
               {"state", ShortEnum(v1::StorageNodeState_Name(n.state()), "STORAGE_NODE_STATE_")},
               {"free", FormatBytes(n.free_bytes())},
               {"capacity", FormatBytes(n.capacity_bytes())},
               {"last heartbeat", FormatTime(n.last_heartbeat_time())},
               {"created", FormatTime(n.create_time())}});
}

int DatacenterCreate(Context& ctx, const Args& args) {
  std::string description;
  common::FlagSet flags(
      "imagectl admin datacenter create NAME [--description=TEXT]\n"
      "Adds a datacenter (operators); NAME is 1..32 characters of [a-z0-9-].\n"
      "Example:\n  imagectl admin datacenter create dal10 --description=\"Dallas 10\"");
  flags.String("description", &description, "up to 1000 characters");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin datacenter create", flags, args, 1, 1, &pos)) return *rc;
  v1::CreateDatacenterRequest request;
  request.set_name(pos[0]);
  request.set_description(description);
  return RunCall(ctx, &v1::InventoryService::Stub::CreateDatacenter, request, [&](const auto& r) {
    Print(ctx, r.datacenter(), [&] {
      PrintFields({{"name", r.datacenter().name()}, {"description", r.datacenter().description()}});
    });
  });
}

int DatacenterList(Context& ctx, const Args& args) {
  common::FlagSet flags(
      "imagectl admin datacenter list\n"
      "Lists datacenters (any authenticated caller).\n"
      "Example:\n  imagectl admin datacenter list -o json");
  return RunList(
      ctx, "admin datacenter list", flags, args, &v1::InventoryService::Stub::ListDatacenters,
      [&](v1::ListDatacentersRequest* request) { return absl::OkStatus(); },
      [](const v1::ListDatacentersResponse& response) {
        Table table({"NAME", "DESCRIPTION", "CREATED"});
        for (const auto& d : response.datacenters()) {
          table.Add({d.name(), d.description(), FormatTime(d.create_time())});
        }
        table.Print(stdout);
      });
}

int SanVolumeCreate(Context& ctx, const Args& args) {
  std::string datacenter, san_host, portal, iqn, size, chap_user, chap_secret;
  int64_t lun = 1;
  bool thin = false;
  common::FlagSet flags(
      "imagectl admin san-volume create --datacenter=DC --san-host=NODE_ID --portal=HOST:PORT "
      "--iqn=IQN --size=SIZE [flags]\n"
      "Adds an existing iSCSI LUN to a datacenter's volume pool as FREE "
      "(operators).\n"
      "Example:\n"
      "  imagectl admin san-volume create --datacenter=dal10 --san-host=san1 "
      "--portal=10.0.0.7:3260 --iqn=iqn.2003-01.org.example:vol-17 --size=10G "
      "--thin");
  flags.String("datacenter", &datacenter, "the datacenter (required)");
  flags.String("san-host", &san_host,
               "the storage node (storaged --node-id) serving it (required)");
  flags.String("portal", &portal, "iSCSI target portal HOST:PORT (required)");
  flags.String("iqn", &iqn, "target IQN (required)");
  flags.Int("lun", &lun, "logical unit number");
  flags.String("size", &size, "the LUN's size: bytes or with K/M/G/T (required)");
  flags.Bool("thin", &thin, "thin provisioned (unwritten blocks read as zeroes)");
  flags.String("chap-user", &chap_user, "CHAP user name, if the target needs CHAP");
  flags.String("chap-secret", &chap_secret, "CHAP secret");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin san-volume create", flags, args, 0, 0, &pos)) return *rc;
  if (datacenter.empty() || san_host.empty() || portal.empty() || iqn.empty() || size.empty()) {
    return ctx.UsageError("admin san-volume create",
                          "--datacenter, --san-host, --portal, --iqn and --size are required");
  }
  auto bytes = ParseSize(size);
  if (!bytes.ok()) {
    return ctx.UsageError("admin san-volume create",
                          "--size: " + std::string(bytes.status().message()));
  }
  v1::CreateSanVolumeRequest request;
  request.set_datacenter(datacenter);
  request.set_san_host(san_host);
  request.mutable_iscsi()->set_portal(portal);
  request.mutable_iscsi()->set_iqn(iqn);
  request.mutable_iscsi()->set_lun(static_cast<uint32_t>(lun));
  request.mutable_iscsi()->set_chap_user(chap_user);
  request.mutable_iscsi()->set_chap_secret(chap_secret);
  request.set_size_bytes(*bytes);
  request.set_thin(thin);
  return RunCall(ctx, &v1::InventoryService::Stub::CreateSanVolume, request, [&](const auto& r) {
    Print(ctx, r.san_volume(), [&] { SanVolumeFields(r.san_volume()); });
  });
}

int SanVolumeList(Context& ctx, const Args& args) {
  std::string datacenter, san_host, state, min_size;
  common::FlagSet flags(
      "imagectl admin san-volume list [flags]\n"
      "Lists the SAN volume pool (operators).\n"
      "Example:\n  imagectl admin san-volume list --datacenter=dal10 --state=free");
  flags.String("datacenter", &datacenter, "only this datacenter");
  flags.String("san-host", &san_host, "only this storage node");
  flags.String("state", &state, "free or attached");
  flags.String("min-size", &min_size, "only volumes at least this large");
  return RunList(
      ctx, "admin san-volume list", flags, args, &v1::InventoryService::Stub::ListSanVolumes,
      [&](v1::ListSanVolumesRequest* request) {
        request->set_datacenter(datacenter);
        request->set_san_host(san_host);
        if (!state.empty()) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListSanVolumesRequest::set_state,
                                  "SAN_VOLUME_STATE_", "state", state));
        }
        if (!min_size.empty()) {
          auto bytes = ParseSize(min_size);
          if (!bytes.ok()) return bytes.status();
          request->set_min_size_bytes(*bytes);
        }
        return absl::OkStatus();
      },
      [](const v1::ListSanVolumesResponse& response) {
        Table table({"ID", "DATACENTER", "SAN HOST", "ISCSI", "SIZE", "THIN", "STATE", "SERVER"});
        for (const auto& v : response.san_volumes()) {
          table.Add({v.id(), v.datacenter(), v.san_host(), IscsiText(v.iscsi()),
                     FormatBytes(v.size_bytes()), v.thin() ? "yes" : "no",
                     ShortEnum(v1::SanVolumeState_Name(v.state()), "SAN_VOLUME_STATE_"),
                     v.attached_server_id()});
        }
        table.Print(stdout);
      });
}

void PrintIpPoolRow(Table* table, const v1::IpPool& p) {
  std::vector<std::string> ranges;
  for (const auto& r : p.ranges()) ranges.push_back(r.start() + "-" + r.end());
  table->Add({p.id(), p.datacenter(), p.subnet(), p.gateway(), absl::StrJoin(p.dns_servers(), ","),
              absl::StrJoin(ranges, ","), absl::StrCat(p.allocated_count(), "/", p.total_count())});
}

const std::vector<std::string> kIpPoolHeaders = {"ID",  "DATACENTER", "SUBNET", "GATEWAY",
                                                 "DNS", "RANGES",     "USED"};

// One pool as a one-row table (ip-pool create and get).
void IpPoolTable(const v1::IpPool& p) {
  Table table(kIpPoolHeaders);
  PrintIpPoolRow(&table, p);
  table.Print(stdout);
}

int IpPoolCreate(Context& ctx, const Args& args) {
  std::string datacenter, subnet, gateway, dns, ranges;
  common::FlagSet flags(
      "imagectl admin ip-pool create --datacenter=DC --subnet=CIDR --gateway=IP "
      "--ranges=START-END[,START-END] [--dns=IP,IP]\n"
      "Adds addresses that deploys assign to new servers (operators).\n"
      "Example:\n"
      "  imagectl admin ip-pool create --datacenter=dal10 --subnet=10.20.0.0/24 "
      "--gateway=10.20.0.1 --dns=10.20.0.2 --ranges=10.20.0.10-10.20.0.99");
  flags.String("datacenter", &datacenter, "the datacenter (required)");
  flags.String("subnet", &subnet, "CIDR, for example 10.20.0.0/24 (required)");
  flags.String("gateway", &gateway, "gateway inside the subnet (required)");
  flags.String("dns", &dns, "comma-separated DNS servers, up to 4");
  flags.String("ranges", &ranges, "comma-separated START-END ranges (required)");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin ip-pool create", flags, args, 0, 0, &pos)) return *rc;
  if (datacenter.empty() || subnet.empty() || gateway.empty() || ranges.empty()) {
    return ctx.UsageError("admin ip-pool create",
                          "--datacenter, --subnet, --gateway and --ranges are required");
  }
  v1::CreateIpPoolRequest request;
  request.set_datacenter(datacenter);
  request.set_subnet(subnet);
  request.set_gateway(gateway);
  for (const auto& d : SplitList(dns)) request.add_dns_servers(d);
  for (const auto& r : SplitList(ranges)) {
    std::vector<std::string> ends = absl::StrSplit(r, '-');
    if (ends.size() != 2) {
      return ctx.UsageError("admin ip-pool create",
                            absl::StrCat("--ranges: \"", r, "\" is not START-END"));
    }
    auto* range = request.add_ranges();
    range->set_start(ends[0]);
    range->set_end(ends[1]);
  }
  return RunCall(ctx, &v1::InventoryService::Stub::CreateIpPool, request, [&](const auto& r) {
    Print(ctx, r.ip_pool(), [&] { IpPoolTable(r.ip_pool()); });
  });
}

int IpPoolList(Context& ctx, const Args& args) {
  std::string datacenter;
  common::FlagSet flags(
      "imagectl admin ip-pool list [--datacenter=DC]\n"
      "Lists IP pools (operators and server_provision users).\n"
      "Example:\n  imagectl admin ip-pool list --datacenter=dal10");
  flags.String("datacenter", &datacenter, "only this datacenter");
  return RunList(
      ctx, "admin ip-pool list", flags, args, &v1::InventoryService::Stub::ListIpPools,
      [&](v1::ListIpPoolsRequest* request) {
        request->set_datacenter(datacenter);
        return absl::OkStatus();
      },
      [](const v1::ListIpPoolsResponse& response) {
        Table table(kIpPoolHeaders);
        for (const auto& p : response.ip_pools()) PrintIpPoolRow(&table, p);
        table.Print(stdout);
      });
}

int ServerCreate(Context& ctx, const Args& args) {
  std::string account, type = "virtual", hostname, domain, datacenter, os, boot_mode, boot_volume,
                       data_volumes, config_drive, nic, credential, power;
  int64_t cpus = 1, memory_mib = 1024;
  common::FlagSet flags(
      absl::StrCat("imagectl admin server create --account=ACCOUNT_ID "
                   "--hostname=NAME --datacenter=DC --boot-volume=SAN_VOLUME_ID [flags]\n"
                   "Registers a server in an account's inventory (operators); "
                   "its disks are FREE SAN\n"
                   "volumes, which become ATTACHED. Image templates need --credential recorded.\n"
                   "Example:\n  imagectl admin server create --account=",
                   kExampleAccount,
                   " --hostname=web0 --domain=example.com --datacenter=dal10 "
                   "--cpus=2 --memory-mib=4096 "
                   "--os=DEBIAN_12_64 --boot-volume=VOLUME_ID "
                   "--nic=eth0,02:00:00:00:00:01,10.99.0.5/24 "
                   "--credential=os:root:s3cret"));
  flags.String("account", &account, "owning account (required)");
  flags.String("type", &type, "virtual or bare_metal");
  flags.String("hostname", &hostname, "RFC 1123 label (required)");
  flags.String("domain", &domain, "DNS domain");
  flags.String("datacenter", &datacenter, "the datacenter (required)");
  flags.Int("cpus", &cpus, "CPU count");
  flags.Int("memory-mib", &memory_mib, "memory in MiB");
  flags.String("os", &os, "operating system reference code, for example DEBIAN_12_64");
  flags.String("boot-mode", &boot_mode, "bios or uefi");
  flags.String("boot-volume", &boot_volume, "SAN volume id of the boot disk, device 0 (required)");
  flags.String("data-volumes", &data_volumes,
               "comma-separated SAN volume ids of data disks, devices 1, 2, ...");
  flags.String("config-drive-volume", &config_drive,
               "SAN volume id of a config drive (the next device index)");
  flags.String("nic", &nic, "one interface: NAME,MAC[,ADDRESS/PREFIX[,GATEWAY]]");
  flags.String("credential", &credential, "software credential SOFTWARE:USER:PASSWORD");
  flags.String("power", &power, "running (default) or stopped");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin server create", flags, args, 0, 0, &pos)) return *rc;
  if (account.empty() || hostname.empty() || datacenter.empty() || boot_volume.empty()) {
    return ctx.UsageError("admin server create",
                          "--account, --hostname, --datacenter and --boot-volume are required");
  }
  v1::CreateServerRequest request;
  // Every error while filling the request is a usage error.
  auto fill = [&]() -> absl::Status {
    request.set_account_id(account);
    RETURN_IF_ERROR(
        SetEnum(&request, &v1::CreateServerRequest::set_type, "SERVER_TYPE_", "type", type));
    request.set_hostname(hostname);
    request.set_domain(domain);
    request.set_datacenter(datacenter);
    v1::ServerConfiguration* config = request.mutable_configuration();
    config->set_cpu_count(static_cast<int32_t>(cpus));
    config->set_memory_mib(memory_mib);
    config->set_os_reference(os);
    if (!boot_mode.empty()) {
      RETURN_IF_ERROR(SetEnum(config, &v1::ServerConfiguration::set_boot_mode, "BOOT_MODE_",
                              "boot-mode", boot_mode));
    }
    if (!nic.empty()) {
      std::vector<std::string> parts = absl::StrSplit(nic, ',');
      if (parts.size() < 2 || parts.size() > 4) {
        return absl::InvalidArgumentError("--nic: want NAME,MAC[,ADDRESS/PREFIX[,GATEWAY]]");
      }
      v1::NetworkInterface* n = config->add_network_interfaces();
      n->set_name(parts[0]);
      n->set_mac_address(parts[1]);
      if (parts.size() > 2) n->set_ip_address(parts[2]);
      if (parts.size() > 3) n->set_gateway(parts[3]);
    }
    int index = 0;
    auto add_disk = [&](const std::string& volume, bool boot, bool cfg) {
      v1::ServerDisk* disk = request.add_disks();
      disk->set_device_index(index++);
      disk->set_boot(boot);
      disk->set_config_drive(cfg);
      disk->set_san_volume_id(volume);
    };
    add_disk(boot_volume, true, false);
    for (const auto& v : SplitList(data_volumes)) add_disk(v, false, false);
    if (!config_drive.empty()) add_disk(config_drive, false, true);
    if (!credential.empty() && !ParseCredential(credential, request.add_credentials())) {
      return absl::InvalidArgumentError("--credential: want SOFTWARE:USER:PASSWORD");
    }
    if (!power.empty()) {
      RETURN_IF_ERROR(SetEnum(&request, &v1::CreateServerRequest::set_power_state, "POWER_STATE_",
                              "power", power));
    }
    return absl::OkStatus();
  };
  if (absl::Status s = fill(); !s.ok()) {
    return ctx.UsageError("admin server create", std::string(s.message()));
  }
  return RunCall(ctx, &v1::InventoryService::Stub::CreateServer, request,
                 [&](const auto& response) { PrintServer(ctx, response.server()); });
}

int StorageNodeList(Context& ctx, const Args& args) {
  std::string datacenter, state;
  common::FlagSet flags(
      "imagectl admin storage-node list [--datacenter=DC] [--state=up|down]\n"
      "Lists the storaged daemons that registered (operators).\n"
      "Example:\n  imagectl admin storage-node list --state=up");
  flags.String("datacenter", &datacenter, "only this datacenter");
  flags.String("state", &state, "up or down");
  return RunList(
      ctx, "admin storage-node list", flags, args, &v1::InventoryService::Stub::ListStorageNodes,
      [&](v1::ListStorageNodesRequest* request) {
        request->set_datacenter(datacenter);
        if (!state.empty()) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListStorageNodesRequest::set_state,
                                  "STORAGE_NODE_STATE_", "state", state));
        }
        return absl::OkStatus();
      },
      [](const v1::ListStorageNodesResponse& response) {
        Table table({"ID", "DATACENTER", "ADDRESS", "PORTALS", "STATE", "FREE", "CAPACITY",
                     "LAST HEARTBEAT"});
        for (const auto& n : response.storage_nodes()) {
          table.Add({n.id(), n.datacenter(), n.address(), absl::StrJoin(n.served_portals(), ","),
                     ShortEnum(v1::StorageNodeState_Name(n.state()), "STORAGE_NODE_STATE_"),
                     FormatBytes(n.free_bytes()), FormatBytes(n.capacity_bytes()),
                     FormatTime(n.last_heartbeat_time())});
        }
        table.Print(stdout);
      });
}

// The API has no GetSanVolume: this pages through the pool for the id.
int SanVolumeGet(Context& ctx, const Args& args) {
  common::FlagSet flags(
      absl::StrCat("imagectl admin san-volume get SAN_VOLUME_ID\n"
                   "Shows one volume of the SAN volume pool (operators).\n"
                   "Example:\n  imagectl admin san-volume get ",
                   kExampleVolume));
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin san-volume get", flags, args, 1, 1, &pos)) return *rc;
  auto response = ListPages(ctx, &v1::InventoryService::Stub::ListSanVolumes,
                            v1::ListSanVolumesRequest(), /*one_page=*/false);
  if (!response.ok()) return ctx.Fail(response.status());
  for (const v1::SanVolume& v : response->san_volumes()) {
    if (v.id() != pos[0]) continue;
    Print(ctx, v, [&] { SanVolumeFields(v); });
    return kExitOk;
  }
  return ctx.Fail(absl::NotFoundError(absl::StrCat("no SAN volume ", pos[0], " in the pool")));
}

int ServerUpdate(Context& ctx, const Args& args) {
  std::string hostname, domain, state, power, os, boot_mode;
  int64_t cpus = 0, memory_mib = 0;
  common::FlagSet flags(
      absl::StrCat("imagectl admin server update SERVER_ID [flags]\n"
                   "Changes a server's record (operators); only the flags "
                   "given change. Configuration\n"
                   "flags (--cpus, --memory-mib, --os, --boot-mode) are "
                   "applied to the server's current\n"
                   "configuration, read first. Refused while an operation "
                   "holds the server.\n"
                   "Example:\n  imagectl admin server update ",
                   kExampleServer, " --power=stopped --memory-mib=8192"));
  flags.String("hostname", &hostname, "RFC 1123 label");
  flags.String("domain", &domain, "DNS domain");
  flags.String("state", &state, "provisioning, active, failed or reclaiming");
  flags.String("power", &power, "running or stopped");
  flags.Int("cpus", &cpus, "CPU count");
  flags.Int("memory-mib", &memory_mib, "memory in MiB");
  flags.String("os", &os, "operating system reference code, for example DEBIAN_12_64");
  flags.String("boot-mode", &boot_mode, "bios or uefi");
  Args pos;
  if (auto rc = ParseArgs(ctx, "admin server update", flags, args, 1, 1, &pos)) return *rc;
  v1::UpdateServerRequest request;
  request.set_id(pos[0]);
  auto mask = [&](const char* path) { request.mutable_update_mask()->add_paths(path); };
  if (FlagGiven(args, "hostname")) {
    request.set_hostname(hostname);
    mask("hostname");
  }
  if (FlagGiven(args, "domain")) {
    request.set_domain(domain);
    mask("domain");
  }
  if (FlagGiven(args, "state")) {
    auto v = ParseEnum(v1::ServerState_descriptor(), "SERVER_STATE_", "state", state);
    if (!v.ok()) return ctx.UsageError("admin server update", std::string(v.status().message()));
    request.set_state(static_cast<v1::ServerState>(*v));
    mask("state");
  }
  if (FlagGiven(args, "power")) {
    auto v = ParseEnum(v1::PowerState_descriptor(), "POWER_STATE_", "power", power);
    if (!v.ok()) return ctx.UsageError("admin server update", std::string(v.status().message()));
    request.set_power_state(static_cast<v1::PowerState>(*v));
    mask("power_state");
  }
  std::optional<v1::BootMode> mode;
  if (FlagGiven(args, "boot-mode")) {
    auto v = ParseEnum(v1::BootMode_descriptor(), "BOOT_MODE_", "boot-mode", boot_mode);
    if (!v.ok()) return ctx.UsageError("admin server update", std::string(v.status().message()));
    mode = static_cast<v1::BootMode>(*v);
  }
  const bool configure = FlagGiven(args, "cpus") || FlagGiven(args, "memory-mib") ||
                         FlagGiven(args, "os") || mode.has_value();
  if (request.update_mask().paths_size() == 0 && !configure) {
    return ctx.UsageError("admin server update", "give at least one field to change");
  }
  if (configure) {
    // The API replaces the configuration as a whole.
    v1::GetServerRequest get;
    get.set_id(pos[0]);
    auto current = ctx.Call(&v1::InventoryService::Stub::GetServer, get);
    if (!current.ok()) return ctx.Fail(current.status());
    v1::ServerConfiguration* config = request.mutable_configuration();
    *config = current->server().configuration();
    if (FlagGiven(args, "cpus")) config->set_cpu_count(static_cast<int32_t>(cpus));
    if (FlagGiven(args, "memory-mib")) config->set_memory_mib(memory_mib);
    if (FlagGiven(args, "os")) config->set_os_reference(os);
    if (mode) config->set_boot_mode(*mode);
    mask("configuration");
  }
  return RunCall(ctx, &v1::InventoryService::Stub::UpdateServer, request,
                 [&](const auto& response) { PrintServer(ctx, response.server()); });
}

}  // namespace

std::vector<Command> AdminInventoryCommands() {
  using Stub = v1::InventoryService::Stub;
  return {
      {"admin datacenter create", "add a datacenter", DatacenterCreate},
      {"admin datacenter list", "list datacenters", DatacenterList},
      IdCommand({"admin datacenter delete", "remove an empty datacenter", "NAME",
                 "Removes a datacenter (operators); refused while servers, SAN "
                 "volumes, storage\n"
                 "nodes, IP pools or template locations remain in it.",
                 "dal10"},
                "name", &Stub::DeleteDatacenter, PrintDeleted("datacenter")),
      {"admin san-volume create", "add an iSCSI LUN to the volume pool", SanVolumeCreate},
      {"admin san-volume list", "list the SAN volume pool", SanVolumeList},
      {"admin san-volume get", "show a SAN volume", SanVolumeGet},
      IdCommand({"admin san-volume delete", "remove a FREE volume from the pool", "SAN_VOLUME_ID",
                 "Removes a FREE volume from the pool (operators); the LUN "
                 "itself is untouched.\n"
                 "Refused while the volume is ATTACHED to a server.",
                 kExampleVolume},
                "id", &Stub::DeleteSanVolume, PrintDeleted("SAN volume")),
      {"admin ip-pool create", "add an IP pool", IpPoolCreate},
      {"admin ip-pool list", "list IP pools", IpPoolList},
      IdCommand({"admin ip-pool get", "show an IP pool", "IP_POOL_ID",
                 "Shows an IP pool and how many of its addresses are in use "
                 "(operators and\n"
                 "server_provision users).",
                 kExamplePool},
                "id", &Stub::GetIpPool,
                PrintPart(&v1::GetIpPoolResponse::ip_pool, IpPoolTable)),
      IdCommand({"admin ip-pool delete", "remove an IP pool", "IP_POOL_ID",
                 "Removes an IP pool (operators); refused while any of its "
                 "addresses is\n"
                 "allocated to a server.",
                 kExamplePool},
                "id", &Stub::DeleteIpPool, PrintDeleted("IP pool")),
      {"admin server create", "register a server in an account", ServerCreate},
      {"admin server list", "list servers of every account",
       [](Context& ctx, const Args& args) { return ServerList(ctx, args, "admin server list"); }},
      {"admin server update", "change a server's record", ServerUpdate},
      IdCommand({"admin server delete", "remove a server; its volumes become FREE", "SERVER_ID",
                 "Removes a server from the inventory (operators); its SAN "
                 "volumes return to\n"
                 "the pool as FREE and its pool addresses are released. The "
                 "LUNs keep their\n"
                 "data. Refused while an operation holds the server.",
                 kExampleServer},
                "id", &Stub::DeleteServer, PrintDeleted("server")),
      {"admin storage-node list", "list storage nodes", StorageNodeList},
      IdCommand({"admin storage-node get", "show a storage node", "NODE_ID",
                 "Shows a storaged daemon: address, portals, state, store "
                 "capacity (operators).",
                 "san1"},
                "id", &Stub::GetStorageNode,
                PrintPart(&v1::GetStorageNodeResponse::storage_node, StorageNodeFields)),
      IdCommand({"admin storage-node delete", "forget a storage node", "NODE_ID",
                 "Forgets a storage node (operators); a running storaged registers "
                 "again.\n"
                 "Refused while it holds a template location or serves volumes in "
                 "the pool.",
                 "san1"},
                "id", &Stub::DeleteStorageNode, PrintDeleted("storage node")),
  };
}

}  // namespace imagectl
