#include "client/imagectl/cli.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/key_file.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/timestamp.pb.h"
#include "google/protobuf/util/json_util.h"

namespace imagectl {

namespace v1 = imagetemplates::v1;

namespace {

std::string Getenv(const char* name) {
  const char* value = std::getenv(name);
  return value == nullptr ? std::string() : std::string(value);
}

std::string DefaultConfigPath() {
  if (std::string path = Getenv("IMAGECTL_CONFIG"); !path.empty()) return path;
  if (std::string xdg = Getenv("XDG_CONFIG_HOME"); !xdg.empty()) {
    return xdg + "/imagectl/config";
  }
  if (std::string home = Getenv("HOME"); !home.empty()) {
    return home + "/.config/imagectl/config";
  }
  return "";
}

// key=value lines; '#' starts a comment line.
absl::StatusOr<std::map<std::string, std::string>> ReadConfig(const std::string& path,
                                                              bool must_exist) {
  std::map<std::string, std::string> values;
  std::ifstream in(path);
  if (!in) {
    if (must_exist) {
      return absl::InvalidArgumentError(absl::StrCat("--config: cannot read ", path));
    }
    return values;
  }
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    absl::string_view text = absl::StripAsciiWhitespace(line);
    if (text.empty() || text[0] == '#') continue;
    size_t eq = text.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", number, ": want key=value, got \"", text, "\""));
    }
    values[std::string(absl::StripAsciiWhitespace(text.substr(0, eq)))] =
        std::string(absl::StripAsciiWhitespace(text.substr(eq + 1)));
  }
  return values;
}

bool IsTerminal(int fd) { return isatty(fd) == 1; }

}  // namespace

absl::StatusOr<GlobalOptions> ResolveGlobals(std::vector<std::string>* args) {
  std::map<std::string, std::string> given;  // global flag name -> value
  std::vector<std::string> rest;
  for (size_t i = 0; i < args->size(); ++i) {
    const std::string& arg = (*args)[i];
    if (arg == "--") {  // everything after belongs to the command
      rest.insert(rest.end(), args->begin() + i, args->end());
      break;
    }
    std::string name, value;
    bool has_value = false;
    if (arg == "-o") {
      name = "output";
    } else if (absl::StartsWith(arg, "-o=")) {
      name = "output";
      value = arg.substr(3);
      has_value = true;
    } else if (absl::StartsWith(arg, "--")) {
      name = arg.substr(2);
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name = name.substr(0, eq);
        has_value = true;
      }
    }
    static const char* const kGlobal[] = {"endpoint", "api-key", "output", "timeout",
                                          "config",   "tls",     "tls-ca",
                                          "tls-cert", "tls-key"};
    if (name.empty() || std::find(std::begin(kGlobal), std::end(kGlobal), name) ==
                            std::end(kGlobal)) {
      rest.push_back(arg);
      continue;
    }
    if (!has_value && name == "tls") {
      value = "true";
    } else if (!has_value) {
      if (i + 1 >= args->size()) {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      }
      value = (*args)[++i];
    }
    given[name] = value;
  }
  *args = std::move(rest);

  GlobalOptions options;
  const bool explicit_config = given.count("config") > 0;
  options.config_path = explicit_config ? given["config"] : DefaultConfigPath();
  std::map<std::string, std::string> file;
  if (!options.config_path.empty()) {
    auto read = ReadConfig(options.config_path, explicit_config);
    if (!read.ok()) return read.status();
    file = *std::move(read);
  }
  auto pick = [&](const std::string& flag, const char* env, const std::string& key,
                  const std::string& fallback) {
    if (auto it = given.find(flag); it != given.end()) return it->second;
    if (env != nullptr) {
      if (std::string v = Getenv(env); !v.empty()) return v;
    }
    if (auto it = file.find(key); it != file.end()) return it->second;
    return fallback;
  };
  options.endpoint = pick("endpoint", "IMAGECTL_ENDPOINT", "endpoint", "127.0.0.1:7443");
  options.api_key = pick("api-key", "IMAGECTL_API_KEY", "api_key", "");
  options.output = pick("output", "IMAGECTL_OUTPUT", "output", "table");
  if (options.output != "table" && options.output != "json") {
    return absl::InvalidArgumentError(
        absl::StrCat("-o/--output must be table or json, not \"", options.output, "\""));
  }
  std::string timeout = pick("timeout", nullptr, "timeout", "30");
  if (!absl::SimpleAtoi(timeout, &options.timeout_seconds) || options.timeout_seconds <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("--timeout must be a positive number of seconds, not \"", timeout, "\""));
  }
  std::string tls = pick("tls", nullptr, "tls", "false");
  if (!absl::SimpleAtob(tls, &options.tls)) {
    return absl::InvalidArgumentError(absl::StrCat("--tls: \"", tls, "\" is not true or false"));
  }
  options.tls_ca_file = pick("tls-ca", nullptr, "tls_ca", "");
  if (!options.tls_ca_file.empty()) options.tls = true;
  options.tls_cert_file = pick("tls-cert", nullptr, "tls_cert", "");
  options.tls_key_file = pick("tls-key", nullptr, "tls_key", "");
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert and --tls-key go together: the client certificate and its private key");
  }
  if (!options.tls_cert_file.empty()) options.tls = true;
  return options;
}

std::string GlobalHelp() {
  return "Global flags (anywhere on the line):\n"
         "  --endpoint=HOST:PORT   controlplane address (env IMAGECTL_ENDPOINT, config "
         "endpoint=; default 127.0.0.1:7443)\n"
         "  --api-key=SECRET       API key (env IMAGECTL_API_KEY, config api_key=)\n"
         "  -o, --output=FORMAT    table or json (proto JSON mapping); default table\n"
         "  --timeout=SECONDS      deadline of each call, retries included; default 30\n"
         "  --tls                  connect with TLS (system roots)\n"
         "  --tls-ca=FILE          connect with TLS, trusting these PEM roots\n"
         "  --tls-cert=FILE        connect with TLS, presenting this PEM client certificate\n"
         "                         (for a controlplane with --tls-client-ca-file)\n"
         "  --tls-key=FILE         its private key (PEM; readable by its owner only)\n"
         "  --config=FILE          config file (env IMAGECTL_CONFIG; default\n"
         "                         ~/.config/imagectl/config): key=value lines\n"
         "  -h, --help             help for any command\n";
}

absl::StatusOr<client::ImageTemplatesClient*> Context::Client() {
  if (client_ != nullptr) return client_.get();
  if (globals_.api_key.empty()) {
    return absl::UnauthenticatedError(
        "no API key given: imagectl needs one for every call");
  }
  client::ClientOptions options;
  options.endpoint = globals_.endpoint;
  options.api_key = globals_.api_key;
  options.timeout = absl::Seconds(globals_.timeout_seconds);
  options.use_tls = globals_.tls;
  if (!globals_.tls_ca_file.empty()) {
    std::ifstream in(globals_.tls_ca_file);
    if (!in) {
      return absl::InvalidArgumentError(
          absl::StrCat("--tls-ca: cannot read ", globals_.tls_ca_file));
    }
    std::stringstream pem;
    pem << in.rdbuf();
    options.tls_root_certs = pem.str();
  }
  if (!globals_.tls_cert_file.empty()) {
    // 1 MiB: far above any certificate chain or key.
    absl::StatusOr<std::string> chain =
        common::ReadSmallFile(globals_.tls_cert_file, "--tls-cert", 1 << 20);
    if (!chain.ok()) return chain.status();
    absl::StatusOr<std::string> key =
        common::ReadSecretFile(globals_.tls_key_file, "--tls-key", 1 << 20);
    if (!key.ok()) return key.status();
    options.tls_cert_chain = *std::move(chain);
    options.tls_private_key = *std::move(key);
  }
  auto made = client::ImageTemplatesClient::Create(options);
  if (!made.ok()) return made.status();
  client_ = *std::move(made);
  return client_.get();
}

int ExitCodeFor(absl::StatusCode code) {
  switch (code) {
    case absl::StatusCode::kOk:
      return kExitOk;
    case absl::StatusCode::kInvalidArgument:
      return kExitUsage;
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kUnauthenticated:
      return kExitNotFound;
    default:
      return kExitError;
  }
}

std::string AdviceFor(absl::StatusCode code, const GlobalOptions& globals) {
  switch (code) {
    case absl::StatusCode::kUnauthenticated:
      return "give a valid API key: --api-key, IMAGECTL_API_KEY, or api_key= in " +
             (globals.config_path.empty() ? std::string("~/.config/imagectl/config")
                                          : globals.config_path) +
             " (an operator or user manager creates keys with `imagectl admin key create`)";
    case absl::StatusCode::kPermissionDenied:
      return "your user lacks the permission named above; ask a user manager of your account "
             "to grant it (`imagectl admin permission set USER_ID --permissions=...`)";
    case absl::StatusCode::kNotFound:
      return "check the id: `imagectl image list`, `imagectl server list` and `imagectl op "
             "list` show what your key can see";
    case absl::StatusCode::kUnavailable:
      return "the controlplane at " + globals.endpoint +
             " (--endpoint), or a service behind it (a storage node, the compute driver), "
             "cannot be reached; the call was retried; try again later";
    case absl::StatusCode::kDeadlineExceeded:
      return absl::StrCat("no answer within --timeout=", globals.timeout_seconds,
                          "s; retry, or raise --timeout");
    case absl::StatusCode::kInvalidArgument:
      return "fix the value named above; `--help` on the command lists its flags";
    case absl::StatusCode::kFailedPrecondition:
      return "the resource is not in a state that allows this; fix that first and retry";
    case absl::StatusCode::kAlreadyExists:
      return "pick another name, or use the existing resource";
    case absl::StatusCode::kResourceExhausted:
      return "a quota, pool or store is used up: see `imagectl admin quota get`, or ask the "
             "operator for more SAN volumes or addresses";
    default:
      return "retry; if it persists, report the message above to the operator";
  }
}

int Context::Fail(const absl::Status& status) {
  std::fprintf(stderr, "imagectl: %s: %s\n  what to do: %s\n",
               absl::StatusCodeToString(status.code()).c_str(),
               std::string(status.message()).c_str(),
               AdviceFor(status.code(), globals_).c_str());
  return ExitCodeFor(status.code());
}

int Context::UsageError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "imagectl %s: %s\n  see: imagectl %s --help\n", command.c_str(),
               message.c_str(), command.c_str());
  return kExitUsage;
}

std::optional<int> ParseArgs(Context& ctx, const std::string& command, common::FlagSet& flags,
                             const std::vector<std::string>& args, int min_positional,
                             int max_positional, std::vector<std::string>* positional) {
  std::vector<const char*> argv = {"imagectl"};
  for (const std::string& arg : args) argv.push_back(arg.c_str());
  bool help = false;
  auto parsed = flags.Parse(static_cast<int>(argv.size()), argv.data(), &help);
  if (help) {
    std::printf("%s\n%s", flags.Help().c_str(), GlobalHelp().c_str());
    return kExitOk;
  }
  if (!parsed.ok()) return ctx.UsageError(command, std::string(parsed.status().message()));
  const int n = static_cast<int>(parsed->size());
  if (n < min_positional) {
    return ctx.UsageError(command, "missing argument");
  }
  if (max_positional >= 0 && n > max_positional) {
    return ctx.UsageError(command, absl::StrCat("unexpected argument \"",
                                                (*parsed)[max_positional], "\""));
  }
  *positional = *std::move(parsed);
  return std::nullopt;
}

bool FlagGiven(const std::vector<std::string>& args, const std::string& name) {
  for (const std::string& arg : args) {
    if (arg == "--") break;
    if (arg == "--" + name || absl::StartsWith(arg, "--" + name + "=")) return true;
  }
  return false;
}

std::vector<std::string> SplitList(const std::string& value) {
  std::vector<std::string> out;
  for (absl::string_view item : absl::StrSplit(value, ',', absl::SkipWhitespace())) {
    out.emplace_back(absl::StripAsciiWhitespace(item));
  }
  return out;
}

absl::StatusOr<int64_t> ParseSize(const std::string& value) {
  std::string text = absl::AsciiStrToUpper(absl::StripAsciiWhitespace(value));
  int64_t multiplier = 1;
  for (const auto& [suffix, factor] : std::vector<std::pair<std::string, int64_t>>{
           {"TIB", 1LL << 40}, {"GIB", 1LL << 30}, {"MIB", 1LL << 20}, {"KIB", 1LL << 10},
           {"T", 1LL << 40},   {"G", 1LL << 30},   {"M", 1LL << 20},   {"K", 1LL << 10},
           {"B", 1}}) {
    if (absl::EndsWith(text, suffix)) {
      text = text.substr(0, text.size() - suffix.size());
      multiplier = factor;
      break;
    }
  }
  double number = 0;
  if (text.empty() || !absl::SimpleAtod(text, &number) || number < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("\"", value, "\" is not a size (for example 4096, 512M, 10G)"));
  }
  return static_cast<int64_t>(std::llround(number * static_cast<double>(multiplier)));
}

bool ParseCredential(const std::string& text, v1::SoftwareCredential* credential) {
  std::vector<std::string> parts = absl::StrSplit(text, absl::MaxSplits(':', 2));
  if (parts.size() != 3) return false;
  credential->set_software(parts[0]);
  credential->set_username(parts[1]);
  credential->set_password(parts[2]);
  return true;
}

std::string FormatBytes(int64_t bytes) {
  static const char* const kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double value = static_cast<double>(bytes);
  int unit = 0;
  while (value >= 1024 && unit < 4) {
    value /= 1024;
    ++unit;
  }
  if (unit == 0) return absl::StrCat(bytes, " B");
  return absl::StrFormat("%.1f %s", value, kUnits[unit]);
}

std::string ShortEnum(const std::string& name, const std::string& prefix) {
  return absl::StartsWith(name, prefix) ? name.substr(prefix.size()) : name;
}

absl::StatusOr<int> ParseEnum(const google::protobuf::EnumDescriptor* descriptor,
                              const std::string& prefix, const std::string& flag,
                              const std::string& value) {
  std::string upper = absl::AsciiStrToUpper(value);
  absl::StrReplaceAll({{"-", "_"}}, &upper);
  if (!absl::StartsWith(upper, prefix)) upper = prefix + upper;
  const google::protobuf::EnumValueDescriptor* found = descriptor->FindValueByName(upper);
  if (found != nullptr && found->number() != 0) return found->number();
  std::vector<std::string> choices;
  for (int i = 1; i < descriptor->value_count(); ++i) {
    choices.push_back(absl::AsciiStrToLower(ShortEnum(descriptor->value(i)->name(), prefix)));
  }
  return absl::InvalidArgumentError(absl::StrCat("--", flag, ": \"", value,
                                                 "\" is not one of ",
                                                 absl::StrJoin(choices, ", ")));
}

std::string FormatTime(const google::protobuf::Message& message) {
  const auto& timestamp = static_cast<const google::protobuf::Timestamp&>(message);
  if (timestamp.seconds() == 0 && timestamp.nanos() == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(timestamp.seconds()),
                          absl::LocalTimeZone());
}

void Table::Print(FILE* out) const {
  std::vector<size_t> widths;
  for (const auto& row : rows_) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows_) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      const std::string cell = row[i].empty() ? "-" : row[i];
      line += cell;
      if (i + 1 < row.size()) line += std::string(widths[i] + 2 - cell.size(), ' ');
    }
    std::fprintf(out, "%s\n", line.c_str());
  }
}

void PrintJson(const google::protobuf::Message& message) {
  google::protobuf::util::JsonPrintOptions options;
  options.add_whitespace = true;
  std::string json;
  auto status = google::protobuf::util::MessageToJsonString(message, &json, options);
  if (!status.ok()) {
    std::fprintf(stderr, "imagectl: cannot print JSON: %s\n", status.ToString().c_str());
    return;
  }
  std::fputs(json.c_str(), stdout);
  if (json.empty() || json.back() != '\n') std::fputc('\n', stdout);
}

void Print(Context& ctx, const google::protobuf::Message& message,
           const std::function<void()>& table) {
  if (ctx.json()) {
    PrintJson(message);
  } else {
    table();
  }
}

void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields) {
  size_t width = 0;
  for (const auto& field : fields) width = std::max(width, field.first.size());
  for (const auto& [name, value] : fields) {
    std::printf("%-*s  %s\n", static_cast<int>(width + 1), (name + ":").c_str(),
                value.empty() ? "-" : value.c_str());
  }
}

void NoteNextPage(const std::string& next_page_token) {
  if (next_page_token.empty()) return;
  std::fflush(stdout);  // keep the note after the table it follows
  std::fprintf(stderr, "more: repeat with --page-token=%s\n", next_page_token.c_str());
}

ProgressReporter::ProgressReporter()
    : live_(IsTerminal(STDOUT_FILENO) && IsTerminal(STDERR_FILENO)) {}

namespace {

std::string FormatEta(const v1::OperationProgress& progress) {
  int64_t seconds = -1;
  if (progress.has_eta()) {
    seconds = progress.eta().seconds();
  } else if (progress.bytes_per_second() > 0 && progress.bytes_total() > 0) {
    seconds = (progress.bytes_total() - progress.bytes_done()) / progress.bytes_per_second();
  }
  if (seconds < 0) return "--:--";
  return absl::StrFormat("%d:%02d", seconds / 60, seconds % 60);
}

}  // namespace

void ProgressReporter::Update(const v1::Operation& operation) {
  const v1::OperationProgress& progress = operation.progress();
  const std::string state = ShortEnum(v1::OperationState_Name(operation.state()),
                                      "OPERATION_STATE_");
  const std::string step = operation.step().empty() ? state : operation.step();
  const double percent = std::clamp(progress.percent(), 0.0, 100.0);
  const double mbps = static_cast<double>(progress.bytes_per_second()) / 1e6;
  if (live_) {
    constexpr int kWidth = 30;
    const int filled = static_cast<int>(percent / 100.0 * kWidth);
    std::fprintf(stderr, "\r[%s%s] %5.1f%%  %7.1f MB/s  ETA %s  %-24s",
                 std::string(filled, '#').c_str(), std::string(kWidth - filled, '.').c_str(),
                 percent, mbps, FormatEta(progress).c_str(), step.substr(0, 24).c_str());
    std::fflush(stderr);
    drawn_ = true;
    return;
  }
  const int decile = static_cast<int>(percent / 10);
  if (step == last_step_ && decile == last_decile_ && state == last_state_) return;
  last_step_ = step;
  last_decile_ = decile;
  last_state_ = state;
  std::fprintf(stderr, "operation %s: %s%s %.0f%% %.1f MB/s ETA %s\n", operation.id().c_str(),
               state.c_str(), operation.step().empty() ? "" : (" " + operation.step()).c_str(),
               percent, mbps, FormatEta(progress).c_str());
  std::fflush(stderr);
}

void ProgressReporter::Finish() {
  if (live_ && drawn_) std::fputc('\n', stderr);
  drawn_ = false;
}

void PrintOperation(const v1::Operation& op) {
  std::string result;
  if (op.result_case() == v1::Operation::kImageTemplateId) {
    result = "image template " + op.image_template_id();
  } else if (op.result_case() == v1::Operation::kDeployedServers) {
    result = "servers " + absl::StrJoin(op.deployed_servers().server_ids(), ", ");
  }
  std::string error;
  if (op.has_error() && op.error().code() != 0) {
    error = absl::StrCat(
        absl::StatusCodeToString(static_cast<absl::StatusCode>(op.error().code())), ": ",
        op.error().message());
  }
  PrintFields({
      {"id", op.id()},
      {"kind", ShortEnum(v1::OperationKind_Name(op.kind()), "OPERATION_KIND_")},
      {"state", ShortEnum(v1::OperationState_Name(op.state()), "OPERATION_STATE_")},
      {"step", op.step()},
      {"progress", absl::StrFormat("%.1f%% (%s of %s)", op.progress().percent(),
                                   FormatBytes(op.progress().bytes_done()),
                                   FormatBytes(op.progress().bytes_total()))},
      {"target", op.target().id()},
      {"result", result},
      {"error", error},
      {"account", op.account_id()},
      {"request id", op.request_id()},
      {"created", FormatTime(op.create_time())},
      {"ended", FormatTime(op.end_time())},
  });
  if (op.finished_steps_size() > 0) {
    std::printf("\n");
    Table steps({"STEP", "SERVER", "STATE", "ATTEMPTS", "STARTED", "ENDED"});
    for (const v1::OperationStep& s : op.finished_steps()) {
      steps.Add({s.name(), s.server_id(),
                 ShortEnum(v1::OperationState_Name(s.state()), "OPERATION_STATE_"),
                 absl::StrCat(s.attempt_count()), FormatTime(s.start_time()),
                 FormatTime(s.end_time())});
    }
    steps.Print(stdout);
  }
}

int FollowOperation(Context& ctx, const v1::Operation& started, bool no_wait) {
  if (no_wait) {
    if (ctx.json()) {
      PrintJson(started);
    } else {
      std::printf("%s\n", started.id().c_str());
      std::fprintf(stderr, "follow it with: imagectl op watch %s\n", started.id().c_str());
    }
    return kExitOk;
  }
  absl::StatusOr<client::ImageTemplatesClient*> c = ctx.Client();
  if (!c.ok()) return ctx.Fail(c.status());
  ProgressReporter reporter;
  absl::StatusOr<v1::Operation> done = (*c)->WaitForOperation(
      started.id(), [&](const v1::Operation& op) { reporter.Update(op); });
  reporter.Finish();
  if (!done.ok()) {
    std::fprintf(stderr, "imagectl: stopped following operation %s (it may still run; see "
                         "`imagectl op get %s`)\n",
                 started.id().c_str(), started.id().c_str());
    return ctx.Fail(done.status());
  }
  Print(ctx, *done, [&] { PrintOperation(*done); });
  if (done->state() == v1::OPERATION_STATE_SUCCEEDED) return kExitOk;
  std::fprintf(stderr, "imagectl: operation %s ended %s: %s: %s\n  what to do: %s\n",
               done->id().c_str(),
               ShortEnum(v1::OperationState_Name(done->state()), "OPERATION_STATE_").c_str(),
               absl::StatusCodeToString(static_cast<absl::StatusCode>(done->error().code()))
                   .c_str(),
               done->error().message().c_str(),
               done->state() == v1::OPERATION_STATE_CANCELLED
                   ? "it was cancelled; start it again if still wanted"
                   : "read the message and the failed step (`imagectl op get ID`), fix the "
                     "cause, then start it again");
  return kExitFailedOperation;
}

namespace {

std::vector<Command>& Registry() {
  static std::vector<Command>* commands = [] {
    auto* all = new std::vector<Command>();
    for (auto group : {ImageCommands, OperationCommands, ServerCommands, AdminIdentityCommands,
                        AdminInventoryCommands}) {
      for (Command& command : group()) all->push_back(std::move(command));
    }
    return all;
  }();
  return *commands;
}

void PrintGroupHelp(const std::string& prefix, FILE* out) {
  if (prefix.empty()) {
    std::fprintf(out,
                 "imagectl: capture virtual servers into image templates and deploy new "
                 "servers from them.\n\n"
                 "Usage: imagectl [global flags] COMMAND [flags] [args]\n"
                 "Example:\n"
                 "  imagectl --endpoint=127.0.0.1:7443 --api-key=$KEY image list\n\n");
  } else {
    std::fprintf(out, "Usage: imagectl %s COMMAND [flags] [args]\n\n", prefix.c_str());
  }
  std::fprintf(out, "Commands:\n");
  for (const Command& command : Registry()) {
    if (!prefix.empty() && !absl::StartsWith(command.path, prefix + " ")) continue;
    std::fprintf(out, "  %-30s %s\n", command.path.c_str(), command.summary.c_str());
  }
  std::fprintf(out,
               "\nRun `imagectl COMMAND --help` for a command's flags and an example.\n"
               "Exit codes: 0 ok, 1 other error, 2 usage error or invalid argument, 3 not "
               "found / permission denied / unauthenticated, 4 operation failed or "
               "cancelled.\n\n%s",
               GlobalHelp().c_str());
}

}  // namespace

int Main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<GlobalOptions> globals = ResolveGlobals(&args);
  if (!globals.ok()) {
    std::fprintf(stderr, "imagectl: %s\n  see: imagectl --help\n",
                 std::string(globals.status().message()).c_str());
    return kExitUsage;
  }
  Context ctx(*std::move(globals));

  // The command is the longest registered path formed by the leading words.
  size_t words = 0;
  while (words < args.size() && !absl::StartsWith(args[words], "-")) ++words;
  const Command* match = nullptr;
  size_t matched = 0;
  for (const Command& command : Registry()) {
    std::vector<std::string> path = absl::StrSplit(command.path, ' ');
    if (path.size() > words || path.size() <= matched) continue;
    if (std::equal(path.begin(), path.end(), args.begin())) {
      match = &command;
      matched = path.size();
    }
  }
  if (match != nullptr) {
    return match->run(ctx, std::vector<std::string>(args.begin() + matched, args.end()));
  }
  const bool help = std::find(args.begin(), args.end(), "--help") != args.end() ||
                    std::find(args.begin(), args.end(), "-h") != args.end() ||
                    (args.size() == 1 && args[0] == "help");
  // A group ("image", "admin key") or nothing: list what is there.
  std::string prefix = absl::StrJoin(args.begin(), args.begin() + words, " ");
  if (prefix == "help") prefix.clear();
  bool is_group = prefix.empty();
  for (const Command& command : Registry()) {
    if (absl::StartsWith(command.path, prefix + " ")) is_group = true;
  }
  if (help || (is_group && words == args.size() && !prefix.empty())) {
    if (!is_group) prefix.clear();
    PrintGroupHelp(prefix, help ? stdout : stderr);
    return help ? kExitOk : kExitUsage;
  }
  if (args.empty()) {
    PrintGroupHelp("", stderr);
    return kExitUsage;
  }
  std::fprintf(stderr, "imagectl: unknown command \"%s\"\n  see: imagectl --help\n",
               prefix.c_str());
  return kExitUsage;
}

}  // namespace imagectl
