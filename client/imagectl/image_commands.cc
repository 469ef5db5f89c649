// imagectl image ...: templates, their shares, visibility and locations, and
// deploys (shaped after `slcli image`).
#include <fstream>
#include <sstream>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/imagectl/cli.h"
#include "common/status_macros.h"

namespace imagectl {

namespace v1 = imagetemplates::v1;
using Args = std::vector<std::string>;

namespace {

constexpr char kExampleId[] = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";

std::string Status(v1::ImageTemplateStatus status) {
  return ShortEnum(v1::ImageTemplateStatus_Name(status), "IMAGE_TEMPLATE_STATUS_");
}

std::string Visibility(v1::Visibility visibility) {
  return ShortEnum(v1::Visibility_Name(visibility), "VISIBILITY_");
}

// A template's locations (image detail, image datacenter list).
void LocationsTable(
    const google::protobuf::RepeatedPtrField<v1::ImageTemplateLocation>& locations) {
  Table table({"DATACENTER", "STATUS", "OPERATION", "SINCE"});
  for (const auto& l : locations) {
    table.Add({l.datacenter(),
               ShortEnum(v1::ImageTemplateLocationStatus_Name(l.status()),
                         "IMAGE_TEMPLATE_LOCATION_STATUS_"),
               l.operation_id(), FormatTime(l.create_time())});
  }
  table.Print(stdout);
}

int64_t StoredBytes(const v1::ImageTemplate& t) {
  int64_t total = 0;
  for (const auto& disk : t.disks()) total += disk.stored_size_bytes();
  return total;
}

void PrintTemplateDetail(const v1::ImageTemplate& t) {
  std::vector<std::string> flags;
  if (t.deprecated()) flags.push_back("deprecated");
  if (t.disabled()) flags.push_back("disabled");
  if (t.delete_protected()) flags.push_back("delete-protected");
  const v1::ServerConfiguration& config = t.configuration();
  PrintFields({
      {"id", t.id()},
      {"name", t.name()},
      {"status", Status(t.status())},
      {"visibility", Visibility(t.visibility())},
      {"flags", absl::StrJoin(flags, ", ")},
      {"owner account", t.owner_account_id()},
      {"note", t.note()},
      {"tags", absl::StrJoin(t.tags(), ", ")},
      {"source server", t.source_server_id()},
      {"configuration",
       config.cpu_count() == 0
           ? std::string()
           : absl::StrCat(config.cpu_count(), " CPU, ", config.memory_mib(), " MiB, ",
                          config.os_reference())},
      {"stored", FormatBytes(StoredBytes(t))},
      {"create operation", t.create_operation_id()},
      {"created", FormatTime(t.create_time())},
      {"updated", FormatTime(t.update_time())},
  });
  if (t.disks_size() > 0) {
    std::printf("\n");
    Table disks({"DISK", "BOOT", "SIZE", "STORED", "MANIFEST DIGEST"});
    for (const auto& d : t.disks()) {
      disks.Add({absl::StrCat(d.device_index()), d.boot() ? "yes" : "no",
                 FormatBytes(d.logical_size_bytes()), FormatBytes(d.stored_size_bytes()),
                 d.manifest_digest()});
    }
    disks.Print(stdout);
  }
  if (t.locations_size() > 0) {
    std::printf("\n");
    LocationsTable(t.locations());
  }
}

void PrintTemplate(Context& ctx, const v1::ImageTemplate& t) {
  Print(ctx, t, [&] { PrintTemplateDetail(t); });
}

// For RunCall on a call that answers with the changed template: prints it.
auto TemplateOf(Context& ctx) {
  return [&ctx](const auto& response) { PrintTemplate(ctx, response.image_template()); };
}

int List(Context& ctx, const Args& args) {
  std::string name_contains, tag, owner, visibility, status, order_by;
  bool include_deprecated = false, descending = false;
  common::FlagSet flags(
      "imagectl image list [flags]\n"
      "Lists the image templates your account can see: its own, those shared with it and\n"
      "public ones (deleted and deprecated ones only when asked).\n"
      "Example:\n"
      "  imagectl image list --name-contains=web --visibility=public -o json");
  flags.String("name-contains", &name_contains, "case-insensitive substring of the name");
  flags.String("tag", &tag, "only templates carrying this tag");
  flags.String("owner", &owner, "only templates owned by this account id");
  flags.String("visibility", &visibility, "private, shared or public");
  flags.String("status", &status, "creating, active, failed, deleting or deleted");
  flags.Bool("include-deprecated", &include_deprecated, "also list deprecated templates");
  flags.String("order-by", &order_by, "name or create_time");
  flags.Bool("descending", &descending, "reverse the order");
  return RunList(
      ctx, "image list", flags, args, &v1::ImageTemplateService::Stub::ListImageTemplates,
      [&](v1::ListImageTemplatesRequest* request) {
        request->set_name_contains(name_contains);
        request->set_tag(tag);
        request->set_owner_account_id(owner);
        request->set_include_deprecated(include_deprecated);
        request->set_descending(descending);
        if (!visibility.empty()) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListImageTemplatesRequest::set_visibility,
                                  "VISIBILITY_", "visibility", visibility));
        }
        if (!status.empty()) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListImageTemplatesRequest::set_status,
                                  "IMAGE_TEMPLATE_STATUS_", "status", status));
        }
        if (!order_by.empty()) {
          RETURN_IF_ERROR(SetEnum(request, &v1::ListImageTemplatesRequest::set_order_by,
                                  "IMAGE_TEMPLATE_ORDER_BY_", "order-by", order_by));
        }
        return absl::OkStatus();
      },
      [](const v1::ListImageTemplatesResponse& response) {
        Table table({"ID", "NAME", "STATUS", "VISIBILITY", "DISKS", "STORED", "DATACENTERS",
                     "CREATED"});
        for (const auto& t : response.image_templates()) {
          std::vector<std::string> dcs;
          for (const auto& l : t.locations()) dcs.push_back(l.datacenter());
          std::string status_text = Status(t.status());
          if (t.deprecated()) status_text += ",deprecated";
          if (t.disabled()) status_text += ",disabled";
          table.Add({t.id(), t.name(), status_text, Visibility(t.visibility()),
                     absl::StrCat(t.disks_size()), FormatBytes(StoredBytes(t)),
                     absl::StrJoin(dcs, ","), FormatTime(t.create_time())});
        }
        table.Print(stdout);
      });
}

absl::Status ParseIndexes(const std::string& value, std::vector<int>* out) {
  for (const std::string& item : SplitList(value)) {
    int index = 0;
    if (!absl::SimpleAtoi(item, &index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--data-disks: \"", item, "\" is not a disk index"));
    }
    out->push_back(index);
  }
  return absl::OkStatus();
}

int Create(Context& ctx, const Args& args) {
  std::string server, name, note, tags, data_disks;
  bool no_wait = false;
  common::FlagSet flags(
      "imagectl image create --server=SERVER_ID --name=NAME [flags]\n"
      "Captures a virtual server into a new image template: the server goes offline, its\n"
      "boot disk (and the chosen data disks) are copied, and it returns to its power state.\n"
      "Waits with a progress bar unless --no-wait.\n"
      "Example:\n"
      "  imagectl image create --server=0d3c1f9e-8a7b-4c2d-9e1f-2a3b4c5d6e7f --name=web-golden "
      "--tags=web,prod --data-disks=1");
  flags.String("server", &server, "id of the virtual server to capture (required)");
  flags.String("name", &name, "template name, unique in your account (required)");
  flags.String("note", &note, "free text, up to 1000 characters");
  flags.String("tags", &tags, "comma-separated tags");
  flags.String("data-disks", &data_disks,
               "comma-separated device indexes of data disks to capture besides the boot disk");
  flags.Bool("no-wait", &no_wait, "print the operation id at once instead of waiting");
  Args pos;
  if (auto rc = ParseArgs(ctx, "image create", flags, args, 0, 0, &pos)) return *rc;
  if (server.empty() || name.empty()) {
    return ctx.UsageError("image create", "--server and --name are required");
  }
  v1::CreateImageTemplateRequest request;
  request.set_server_id(server);
  request.set_name(name);
  request.set_note(note);
  for (const std::string& tag : SplitList(tags)) request.add_tags(tag);
  std::vector<int> indexes;
  if (absl::Status s = ParseIndexes(data_disks, &indexes); !s.ok()) {
    return ctx.UsageError("image create", std::string(s.message()));
  }
  for (int index : indexes) request.add_data_disk_indexes(index);
  return RunOperation(ctx, &v1::ImageTemplateService::Stub::CreateImageTemplate, request, no_wait,
                      [](const v1::Operation& op) {
                        std::fprintf(stderr, "creating image template %s (operation %s)\n",
                                     op.image_template_id().c_str(), op.id().c_str());
                      });
}

int Edit(Context& ctx, const Args& args) {
  std::string name, note, tags;
  common::FlagSet flags(absl::StrCat(
      "imagectl image edit IMAGE_ID [--name=NAME] [--note=TEXT] [--tags=a,b]\n"
      "Changes the name, note or tags (tags are replaced; --tags= clears them).\n"
      "Example:\n  imagectl image edit ",
      kExampleId, " --note=\"nginx 1.24, patched\" --tags=web"));
  flags.String("name", &name, "new name");
  flags.String("note", &note, "new note");
  flags.String("tags", &tags, "comma-separated tags, replacing the current ones");
  Args pos;
  if (auto rc = ParseArgs(ctx, "image edit", flags, args, 1, 1, &pos)) return *rc;
  v1::UpdateImageTemplateRequest request;
  request.set_id(pos[0]);
  for (const char* field : {"name", "note", "tags"}) {
    if (FlagGiven(args, field)) request.mutable_update_mask()->add_paths(field);
  }
  if (request.update_mask().paths_size() == 0) {
    return ctx.UsageError("image edit", "give at least one of --name, --note, --tags");
  }
  request.set_name(name);
  request.set_note(note);
  for (const std::string& tag : SplitList(tags)) request.add_tags(tag);
  return RunCall(ctx, &v1::ImageTemplateService::Stub::UpdateImageTemplate, request,
                 TemplateOf(ctx));
}

int Delete(Context& ctx, const Args& args) {
  bool no_wait = false;
  common::FlagSet flags(absl::StrCat(
      "imagectl image delete IMAGE_ID [--no-wait]\n"
      "Deletes a template and its data in every datacenter; shares end at once.\n"
      "Example:\n  imagectl image delete ",
      kExampleId));
  flags.Bool("no-wait", &no_wait, "print the operation id at once instead of waiting");
  Args pos;
  if (auto rc = ParseArgs(ctx, "image delete", flags, args, 1, 1, &pos)) return *rc;
  v1::DeleteImageTemplateRequest request;
  request.set_id(pos[0]);
  return RunOperation(ctx, &v1::ImageTemplateService::Stub::DeleteImageTemplate, request, no_wait);
}

int Deploy(Context& ctx, const Args& args) {
  std::string datacenter, hostnames, prefix, domain, disk_sizes, ip_pool, statics,
      user_data_file;
  int64_t quantity = 0;
  bool dhcp = false, no_wait = false;
  common::FlagSet flags(absl::StrCat(
      "imagectl image deploy IMAGE_ID --datacenter=DC (--hostnames=a,b | "
      "--hostname-prefix=P --quantity=N) [flags]\n"
      "Builds new servers from a template: fresh SAN volumes get the template's data, then\n"
      "each server's config drive gets its hostname and network configuration.\n"
      "Waits with a progress bar unless --no-wait.\n"
      "Example:\n  imagectl image deploy ",
      kExampleId,
      " --datacenter=dal10 --hostnames=web1,web2 --domain=example.com "
      "--disk-sizes=0:20G"));
  flags.String("datacenter", &datacenter, "where to build the servers (required)");
  flags.String("hostnames", &hostnames, "comma-separated hostnames, one per server");
  flags.String("hostname-prefix", &prefix, "name servers PREFIX-1..PREFIX-N instead");
  flags.Int("quantity", &quantity,
            "number of servers (default: the number of --hostnames, else 1)");
  flags.String("domain", &domain, "DNS domain of every server");
  flags.String("disk-sizes", &disk_sizes,
               "larger disks, comma-separated DEVICE_INDEX:SIZE (for example 0:20G,1:100G)");
  flags.String("ip-pool", &ip_pool,
               "give every server an address from this IP pool (default: any pool of the "
               "datacenter with free addresses)");
  flags.String("static-addresses", &statics,
               "comma-separated fixed addresses with prefix length, one per server "
               "(10.0.0.5/24)");
  flags.Bool("dhcp", &dhcp, "servers configure their interface by DHCP");
  flags.String("user-data-file", &user_data_file, "cloud-init user-data for every server");
  flags.Bool("no-wait", &no_wait, "print the operation id at once instead of waiting");
  Args pos;
  if (auto rc = ParseArgs(ctx, "image deploy", flags, args, 1, 1, &pos)) return *rc;
  if (datacenter.empty()) return ctx.UsageError("image deploy", "--datacenter is required");
  v1::DeployImageTemplateRequest request;
  request.set_image_template_id(pos[0]);
  request.set_datacenter(datacenter);
  for (const std::string& h : SplitList(hostnames)) request.add_hostnames(h);
  request.set_hostname_prefix(prefix);
  if (request.hostnames_size() == 0 && prefix.empty()) {
    return ctx.UsageError("image deploy", "give --hostnames or --hostname-prefix");
  }
  if (quantity == 0) quantity = request.hostnames_size() > 0 ? request.hostnames_size() : 1;
  request.set_quantity(static_cast<int32_t>(quantity));
  request.set_domain(domain);
  for (const std::string& item : SplitList(disk_sizes)) {
    std::vector<std::string> parts = absl::StrSplit(item, ':');
    int index = 0;
    absl::StatusOr<int64_t> size =
        parts.size() == 2 ? ParseSize(parts[1]) : absl::InvalidArgumentError("");
    if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &index) || !size.ok()) {
      return ctx.UsageError("image deploy", absl::StrCat("--disk-sizes: \"", item,
                                                         "\" is not DEVICE_INDEX:SIZE"));
    }
    auto* disk = request.add_disk_sizes();
    disk->set_device_index(index);
    disk->set_size_bytes(*size);
  }
  if (int(!ip_pool.empty()) + int(!statics.empty()) + int(dhcp) > 1) {
    return ctx.UsageError("image deploy", "give only one of --ip-pool, --static-addresses, --dhcp");
  }
  std::vector<std::string> addresses = SplitList(statics);
  if (!statics.empty() && static_cast<int64_t>(addresses.size()) != quantity) {
    return ctx.UsageError("image deploy", "--static-addresses needs one address per server");
  }
  for (int64_t i = 0; i < quantity && (!ip_pool.empty() || dhcp || !statics.empty()); ++i) {
    v1::InstanceNetwork* network = request.add_networks();
    if (!ip_pool.empty()) network->set_ip_pool_id(ip_pool);
    if (dhcp) network->mutable_dhcp();
    if (!statics.empty()) network->mutable_static_address()->set_address(addresses[i]);
  }
  if (!user_data_file.empty()) {
    std::ifstream in(user_data_file);
    if (!in) return ctx.UsageError("image deploy", "cannot read " + user_data_file);
    std::stringstream data;
    data << in.rdbuf();
    request.set_user_data(data.str());
  }
  return RunOperation(ctx, &v1::ImageTemplateService::Stub::DeployImageTemplate, request, no_wait,
                      [&](const v1::Operation& op) {
                        std::fprintf(stderr, "deploying %lld server(s) (operation %s)\n",
                                     static_cast<long long>(quantity), op.id().c_str());
                      });
}

int ShareOrUnshare(Context& ctx, const Args& args, bool share) {
  const std::string command = share ? "image share" : "image unshare";
  std::string accounts;
  common::FlagSet flags(absl::StrCat(
      "imagectl ", command, " IMAGE_ID --accounts=ACCOUNT_ID[,ACCOUNT_ID...]\n",
      share ? "Shares a template with other accounts (a private template becomes shared)."
            : "Stops sharing a template with accounts; servers already deployed stay.",
      "\nExample:\n  imagectl ", command, " ", kExampleId,
      " --accounts=5f0c6b2a-1d3e-4f5a-8b9c-0d1e2f3a4b5c"));
  flags.String("accounts", &accounts, "comma-separated account ids (required)");
  Args pos;
  if (auto rc = ParseArgs(ctx, command, flags, args, 1, 1, &pos)) return *rc;
  std::vector<std::string> ids = SplitList(accounts);
  if (ids.empty()) return ctx.UsageError(command, "--accounts is required");
  // The share and unshare requests and responses have the same fields.
  auto call = [&](auto rpc, auto request) {
    request.set_id(pos[0]);
    for (const auto& id : ids) request.add_account_ids(id);
    return RunCall(ctx, rpc, std::move(request), TemplateOf(ctx));
  };
  if (share) {
    return call(&v1::ImageTemplateService::Stub::ShareImageTemplate,
                v1::ShareImageTemplateRequest());
  }
  return call(&v1::ImageTemplateService::Stub::UnshareImageTemplate,
              v1::UnshareImageTemplateRequest());
}

// Commands that take a template id and answer with the changed template.
template <typename Request, typename Response>
Command TemplateAction(const std::string& verb, const std::string& summary,
                       const std::string& description,
                       grpc::Status (v1::ImageTemplateService::Stub::*rpc)(
                           grpc::ClientContext*, const Request&, Response*)) {
  return IdCommand({"image " + verb, summary, "IMAGE_ID", description, kExampleId}, "id", rpc,
                   [](Context& ctx, const std::string&, const Response& response) {
                     PrintTemplate(ctx, response.image_template());
                   });
}

int Protect(Context& ctx, const Args& args, bool protect) {
  const std::string command = protect ? "image protect" : "image unprotect";
  common::FlagSet flags(absl::StrCat(
      "imagectl ", command, " IMAGE_ID\n",
      protect ? "Sets delete protection: image delete fails until it is cleared."
              : "Clears delete protection.",
      "\nExample:\n  imagectl ", command, " ", kExampleId));
  Args pos;
  if (auto rc = ParseArgs(ctx, command, flags, args, 1, 1, &pos)) return *rc;
  v1::SetDeleteProtectionRequest request;
  request.set_id(pos[0]);
  request.set_delete_protected(protect);
  return RunCall(ctx, &v1::ImageTemplateService::Stub::SetDeleteProtection, request,
                 TemplateOf(ctx));
}

// Parses the arguments of image datacenter add and remove (`datacenters` is
// the variable of their --datacenters flag) and fills `request` with IMAGE_ID
// and the datacenters, which are required. Returns an exit code when the
// command stops here.
template <typename Request>
std::optional<int> ParseLocations(Context& ctx, const std::string& command, common::FlagSet& flags,
                                  const Args& args, const std::string& datacenters,
                                  Request* request) {
  Args pos;
  if (auto rc = ParseArgs(ctx, command, flags, args, 1, 1, &pos)) return rc;
  request->set_id(pos[0]);
  for (const auto& dc : SplitList(datacenters)) request->add_datacenters(dc);
  if (request->datacenters_size() == 0) return ctx.UsageError(command, "--datacenters is required");
  return std::nullopt;
}

int DatacenterAdd(Context& ctx, const Args& args) {
  std::string datacenters;
  bool no_wait = false;
  common::FlagSet flags(absl::StrCat(
      "imagectl image datacenter add IMAGE_ID --datacenters=DC[,DC...] [--no-wait]\n"
      "Copies a template to more datacenters (only chunks they lack are sent).\n"
      "Example:\n  imagectl image datacenter add ",
      kExampleId, " --datacenters=fra02,tok05"));
  flags.String("datacenters", &datacenters, "comma-separated datacenter names (required)");
  flags.Bool("no-wait", &no_wait, "print the operation id at once instead of waiting");
  v1::AddImageTemplateLocationsRequest request;
  if (auto rc = ParseLocations(ctx, "image datacenter add", flags, args, datacenters, &request)) {
    return *rc;
  }
  return RunOperation(ctx, &v1::ImageTemplateService::Stub::AddImageTemplateLocations, request,
                      no_wait);
}

int DatacenterRemove(Context& ctx, const Args& args) {
  std::string datacenters;
  common::FlagSet flags(absl::StrCat(
      "imagectl image datacenter remove IMAGE_ID --datacenters=DC[,DC...]\n"
      "Removes locations; their data is deleted there in the background.\n"
      "Example:\n  imagectl image datacenter remove ",
      kExampleId, " --datacenters=tok05"));
  flags.String("datacenters", &datacenters, "comma-separated datacenter names (required)");
  v1::RemoveImageTemplateLocationsRequest request;
  if (auto rc =
          ParseLocations(ctx, "image datacenter remove", flags, args, datacenters, &request)) {
    return *rc;
  }
  return RunCall(ctx, &v1::ImageTemplateService::Stub::RemoveImageTemplateLocations, request,
                 TemplateOf(ctx));
}

}  // namespace

std::vector<Command> ImageCommands() {
  using Stub = v1::ImageTemplateService::Stub;
  return {
      {"image list", "list the image templates you can see", List},
      IdCommand({"image detail", "show one image template", "IMAGE_ID",
                 "Shows one image template: status, visibility, disks, configuration, locations.",
                 absl::StrCat(kExampleId, " -o json")},
                "id", &Stub::GetImageTemplate,
                PrintPart(&v1::GetImageTemplateResponse::image_template, PrintTemplateDetail)),
      {"image create", "capture a virtual server into a new image template", Create},
      {"image edit", "change a template's name, note or tags", Edit},
      {"image delete", "delete a template and its data", Delete},
      {"image deploy", "build new servers from a template", Deploy},
      {"image share", "share a template with accounts",
       [](Context& ctx, const Args& args) { return ShareOrUnshare(ctx, args, true); }},
      {"image unshare", "stop sharing a template with accounts",
       [](Context& ctx, const Args& args) { return ShareOrUnshare(ctx, args, false); }},
      IdListCommand({"image shares", "list the accounts a template is shared with", "IMAGE_ID",
                     "Lists the accounts a template is shared with (owner or operator).",
                     kExampleId},
                    "id", &Stub::ListImageTemplateShares,
                    PrintResponse([](const v1::ListImageTemplateSharesResponse& response) {
                      Table table({"ACCOUNT", "SHARED SINCE"});
                      for (const auto& s : response.shares()) {
                        table.Add({s.account_id(), FormatTime(s.create_time())});
                      }
                      table.Print(stdout);
                    })),
      TemplateAction("publish", "make a template public",
                     "Makes a template PUBLIC: every account can see and deploy it.",
                     &Stub::PublishImageTemplate),
      TemplateAction("unpublish", "make a public template shared or private again",
                     "Makes a PUBLIC template SHARED or PRIVATE again, by its shares.",
                     &Stub::UnpublishImageTemplate),
      TemplateAction("deprecate", "hide a template from default lists (still deployable)",
                     "Marks a template deprecated: still deployable, hidden from default lists.",
                     &Stub::DeprecateImageTemplate),
      TemplateAction("undeprecate", "clear deprecation", "Clears deprecated.",
                     &Stub::UndeprecateImageTemplate),
      TemplateAction("disable", "stop all deploys of a template",
                     "Disables a template: nobody can deploy it and other accounts no longer "
                     "see it.",
                     &Stub::DisableImageTemplate),
      TemplateAction("enable", "enable a disabled template", "Enables a disabled template.",
                     &Stub::EnableImageTemplate),
      {"image protect", "protect a template from deletion",
       [](Context& ctx, const Args& args) { return Protect(ctx, args, true); }},
      {"image unprotect", "clear delete protection",
       [](Context& ctx, const Args& args) { return Protect(ctx, args, false); }},
      IdListCommand({"image datacenter list", "list the datacenters holding a template",
                     "IMAGE_ID", "Lists the datacenters holding a template's data.", kExampleId},
                    "id", &Stub::ListImageTemplateLocations,
                    PrintResponse([](const v1::ListImageTemplateLocationsResponse& response) {
                      LocationsTable(response.locations());
                    })),
      {"image datacenter add", "copy a template to more datacenters", DatacenterAdd},
      {"image datacenter remove", "remove a template from datacenters", DatacenterRemove},
  };
}

}  // namespace imagectl
