// The frame every imagectl command runs in: global options, the client,
// flag parsing with --help, output as a table or proto JSON, progress of
// operations, and the mapping of errors to exit codes and advice.
#ifndef CLIENT_IMAGECTL_CLI_H_
#define CLIENT_IMAGECTL_CLI_H_

#include <cstdio>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "client/image_templates_client.h"
#include "common/flags.h"
#include "google/protobuf/descriptor.h"
#include "google/protobuf/generated_enum_reflection.h"
#include "google/protobuf/message.h"

namespace imagectl {

// Process exit codes.
enum ExitCode {
  kExitOk = 0,
  kExitError = 1,             // anything else (UNAVAILABLE, INTERNAL, ...)
  kExitUsage = 2,             // bad command line, or INVALID_ARGUMENT
  kExitNotFound = 3,          // NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED
  kExitFailedOperation = 4,   // an operation ended FAILED or CANCELLED
};

// Settings that apply to every command; see ResolveGlobals for precedence.
struct GlobalOptions {
  std::string endpoint;
  std::string api_key;
  std::string output = "table";  // "table" or "json"
  int64_t timeout_seconds = 30;
  bool tls = false;
  std::string tls_ca_file;
  // A client certificate (PEM chain) and its private key (owner-only file),
  // both or neither; either implies tls.
  std::string tls_cert_file;
  std::string tls_key_file;
  std::string config_path;  // the config file that was read, if any
};

// Pulls the global flags (--endpoint, --api-key, -o/--output, --timeout,
// --config, --tls, --tls-ca, --tls-cert, --tls-key) out of `args`, wherever they stand, and fills
// the rest from IMAGECTL_ENDPOINT / IMAGECTL_API_KEY, then the config file
// (--config, else $IMAGECTL_CONFIG, else $XDG_CONFIG_HOME/imagectl/config or
// ~/.config/imagectl/config; lines `endpoint=`, `api_key=`, `output=`,
// `timeout=`, `tls=`, `tls_ca=`, `tls_cert=`, `tls_key=`), then defaults.
// Flags beat environment beat file. INVALID_ARGUMENT for a bad value, an
// unreadable --config, or --tls-cert without --tls-key (or the reverse).
absl::StatusOr<GlobalOptions> ResolveGlobals(std::vector<std::string>* args);

// Help text of the global flags.
std::string GlobalHelp();

class Context {
 public:
  explicit Context(GlobalOptions globals) : globals_(std::move(globals)) {}
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  const GlobalOptions& globals() const { return globals_; }
  bool json() const { return globals_.output == "json"; }

  // The client, made on first use. UNAUTHENTICATED (with advice) when no API
  // key is configured.
  absl::StatusOr<client::ImageTemplatesClient*> Client();

  // Runs an RPC through the client; see ImageTemplatesClient::Call.
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Call(grpc::Status (Stub::*rpc)(grpc::ClientContext*,
                                                          const Request&, Response*),
                                Request request) {
    absl::StatusOr<client::ImageTemplatesClient*> c = Client();
    if (!c.ok()) return c.status();
    return (*c)->Call(rpc, std::move(request));
  }

  // Prints the error with advice on stderr and returns its exit code.
  int Fail(const absl::Status& status);
  // A usage error: message, a pointer to --help, exit code 2.
  int UsageError(const std::string& command, const std::string& message);

 private:
  GlobalOptions globals_;
  std::unique_ptr<client::ImageTemplatesClient> client_;
};

// Exit code for a failed call.
int ExitCodeFor(absl::StatusCode code);
// What to do next after an error with `code`.
std::string AdviceFor(absl::StatusCode code, const GlobalOptions& globals);

// Parses a command's flags. Returns an exit code when the command should stop
// here (0 after printing --help, 2 on a usage error); otherwise fills
// `positional`, which must hold min..max entries (max < 0: no limit).
std::optional<int> ParseArgs(Context& ctx, const std::string& command, common::FlagSet& flags,
                             const std::vector<std::string>& args, int min_positional,
                             int max_positional, std::vector<std::string>* positional);

// True if `--name` or `--name=...` appears in args (to build update masks).
bool FlagGiven(const std::vector<std::string>& args, const std::string& name);

// Comma-separated list, empty items dropped.
std::vector<std::string> SplitList(const std::string& value);
// "10G", "512M", "4096", "1.5GiB" -> bytes (K/M/G/T are powers of 1024).
absl::StatusOr<int64_t> ParseSize(const std::string& value);
std::string FormatBytes(int64_t bytes);
// "VISIBILITY_PUBLIC" with prefix "VISIBILITY_" -> "PUBLIC".
std::string ShortEnum(const std::string& name, const std::string& prefix);
// Accepts "public", "PUBLIC" or "VISIBILITY_PUBLIC" for an enum whose values
// start with `prefix`. INVALID_ARGUMENT naming `flag` and the choices.
absl::StatusOr<int> ParseEnum(const google::protobuf::EnumDescriptor* descriptor,
                              const std::string& prefix, const std::string& flag,
                              const std::string& value);
std::string FormatTime(const google::protobuf::Message& timestamp);

// Parses `value` as the generated enum E (ParseEnum: INVALID_ARGUMENT naming
// `flag`) and passes it to `set`, a setter or adder of `message`, for example
// SetEnum(request, &v1::ListServersRequest::set_state, "SERVER_STATE_", "state", state).
template <typename Message, typename E>
absl::Status SetEnum(Message* message, void (Message::*set)(E), const std::string& prefix,
                     const std::string& flag, const std::string& value) {
  absl::StatusOr<int> number =
      ParseEnum(google::protobuf::GetEnumDescriptor<E>(), prefix, flag, value);
  if (!number.ok()) return number.status();
  (message->*set)(static_cast<E>(*number));
  return absl::OkStatus();
}

// "SOFTWARE:USER:PASSWORD" (the password may hold ':') into `credential`;
// false if `text` is not of that form.
bool ParseCredential(const std::string& text, imagetemplates::v1::SoftwareCredential* credential);

// A table printed with aligned columns; a header row first.
class Table {
 public:
  explicit Table(std::vector<std::string> headers) { rows_.push_back(std::move(headers)); }
  void Add(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  void Print(FILE* out) const;
  size_t size() const { return rows_.size() - 1; }

 private:
  std::vector<std::vector<std::string>> rows_;
};

// Prints `message` as proto JSON on stdout.
void PrintJson(const google::protobuf::Message& message);
// JSON mode: PrintJson(message); table mode: `table()`.
void Print(Context& ctx, const google::protobuf::Message& message,
           const std::function<void()>& table);
// "name: value" lines with aligned names.
void PrintFields(const std::vector<std::pair<std::string, std::string>>& fields);

// Fetches every page of a list RPC (or only one when the caller gave
// --page-size or --page-token), merging the pages into one response whose
// next_page_token is the last page's.
template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> ListPages(Context& ctx,
                                   grpc::Status (Stub::*rpc)(grpc::ClientContext*,
                                                             const Request&, Response*),
                                   Request request, bool one_page) {
  Response all;
  while (true) {
    absl::StatusOr<Response> page = ctx.Call(rpc, request);
    if (!page.ok()) return page.status();
    all.MergeFrom(*page);
    all.set_next_page_token(page->next_page_token());
    if (one_page || page->next_page_token().empty()) return all;
    request.set_page_token(page->next_page_token());
  }
}

// Says on stderr how to get the next page, if there is one.
void NoteNextPage(const std::string& next_page_token);

// Shows operation progress on stderr: a live bar (percent, MB/s, ETA, step)
// when stdout and stderr are terminals, else a plain line per step change and
// per 10% of progress.
class ProgressReporter {
 public:
  ProgressReporter();
  void Update(const imagetemplates::v1::Operation& operation);
  // Ends the bar's line.
  void Finish();

 private:
  bool live_;
  bool drawn_ = false;
  std::string last_step_;
  int last_decile_ = -1;
  std::string last_state_;
};

// After a call that started an operation: with `no_wait`, prints its id (table)
// or the Operation (JSON) and returns 0. Otherwise follows it with progress
// and prints the terminal Operation: 0 if SUCCEEDED, 4 if FAILED or CANCELLED
// (with the operation's error on stderr).
int FollowOperation(Context& ctx, const imagetemplates::v1::Operation& started, bool no_wait);

// Views shared by several commands.
void PrintOperation(const imagetemplates::v1::Operation& operation);
void PrintServerDetail(const imagetemplates::v1::Server& server);
// JSON mode: the server as JSON; table mode: PrintServerDetail.
void PrintServer(Context& ctx, const imagetemplates::v1::Server& server);
// "PORTAL/IQN/LUN".
std::string IscsiText(const imagetemplates::v1::IscsiAddress& address);
// `server list` and `admin server list` (named `command` in help and errors).
int ServerList(Context& ctx, const std::vector<std::string>& args, const std::string& command);

// One command: "image list", with a one-line summary and its runner, which
// gets the arguments after the command's path.
struct Command {
  std::string path;
  std::string summary;
  std::function<int(Context&, const std::vector<std::string>&)> run;
};

// The paging flags of a list command: --page-size, --page-token.
struct Paging {
  int64_t page_size = 0;
  std::string page_token;
  void Define(common::FlagSet& flags) {
    flags.Int("page-size", &page_size, "fetch one page of this size (default: every page)");
    flags.String("page-token", &page_token, "fetch the page after this token");
  }
  bool one_page() const { return page_size > 0 || !page_token.empty(); }
  template <typename Request>
  void Apply(Request* request) const {
    request->set_page_size(static_cast<int32_t>(page_size));
    request->set_page_token(page_token);
  }
};

// The shape every list command shares: parses `flags` plus the paging flags
// (no positional arguments), lets `fill` complete the request from the flags
// (an error is a usage error), fetches every page (or the one asked for),
// prints proto JSON or `table(response)`, and says how to get a next page.
template <typename Stub, typename Request, typename Response, typename Fill, typename TableFn>
int RunList(Context& ctx, const std::string& command, common::FlagSet& flags,
            const std::vector<std::string>& args,
            grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*), Fill fill,
            TableFn table) {
  Paging paging;
  paging.Define(flags);
  std::vector<std::string> pos;
  if (auto rc = ParseArgs(ctx, command, flags, args, 0, 0, &pos)) return *rc;
  Request request;
  if (absl::Status s = fill(&request); !s.ok()) {
    return ctx.UsageError(command, std::string(s.message()));
  }
  paging.Apply(&request);
  absl::StatusOr<Response> response = ListPages(ctx, rpc, request, paging.one_page());
  if (!response.ok()) return ctx.Fail(response.status());
  Print(ctx, *response, [&] { table(*response); });
  NoteNextPage(response->next_page_token());
  return static_cast<int>(kExitOk);
}

// The end every command making one call shares: calls `rpc`, hands the
// response to `print` and returns 0, or prints the error and returns its exit
// code.
template <typename Stub, typename Request, typename Response, typename PrintFn>
int RunCall(Context& ctx,
            grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
            Request request, PrintFn print) {
  absl::StatusOr<Response> response = ctx.Call(rpc, std::move(request));
  if (!response.ok()) return ctx.Fail(response.status());
  print(*response);
  return static_cast<int>(kExitOk);
}

// RunCall for an RPC that starts an operation: follows it (FollowOperation).
// `announce`, if set, says on stderr what started before a follow in table
// mode.
template <typename Stub, typename Request>
int RunOperation(
    Context& ctx,
    grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, imagetemplates::v1::Operation*),
    Request request, bool no_wait,
    const std::function<void(const imagetemplates::v1::Operation&)>& announce = nullptr) {
  absl::StatusOr<imagetemplates::v1::Operation> op = ctx.Call(rpc, std::move(request));
  if (!op.ok()) return ctx.Fail(op.status());
  if (announce && !no_wait && !ctx.json()) announce(*op);
  return FollowOperation(ctx, *op, no_wait);
}

// What `imagectl PATH ARG --help` says about a command that takes one id.
struct IdCommandSpec {
  std::string path;         // "admin user get"
  std::string summary;      // its line in the group's help
  std::string arg;          // "USER_ID"
  std::string description;  // what it does, who may run it
  std::string example_arg;  // the id in the example (and any flags after it)
};

namespace internal {

// IdCommand with `fetch(ctx, request)` in place of the call.
template <typename Request, typename Fetch, typename PrintFn>
Command IdCommandWith(const IdCommandSpec& spec, const std::string& field, Fetch fetch,
                      PrintFn print) {
  return {spec.path, spec.summary, [=](Context& ctx, const std::vector<std::string>& args) {
            common::FlagSet flags("imagectl " + spec.path + " " + spec.arg + "\n" +
                                  spec.description + "\nExample:\n  imagectl " + spec.path +
                                  " " + spec.example_arg);
            std::vector<std::string> pos;
            if (auto rc = ParseArgs(ctx, spec.path, flags, args, 1, 1, &pos)) return *rc;
            Request request;
            const google::protobuf::FieldDescriptor* id =
                Request::descriptor()->FindFieldByName(field);
            if (id == nullptr) {  // a mistake in the command table
              std::fprintf(stderr, "imagectl %s: internal: no request field %s\n",
                           spec.path.c_str(), field.c_str());
              return static_cast<int>(kExitError);
            }
            request.GetReflection()->SetString(&request, id, pos[0]);
            auto response = fetch(ctx, std::move(request));
            if (!response.ok()) return ctx.Fail(response.status());
            print(ctx, pos[0], *response);
            return static_cast<int>(kExitOk);
          }};
}

}  // namespace internal

// A command taking one id and no flags: sets the request's string field
// `field` to the id, calls `rpc` and hands the response to `print` (which also
// gets the id). Most get and delete commands are one of these.
template <typename Stub, typename Request, typename Response, typename PrintFn>
Command IdCommand(const IdCommandSpec& spec, const std::string& field,
                  grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
                  PrintFn print) {
  return internal::IdCommandWith<Request>(
      spec, field,
      [rpc](Context& ctx, Request request) { return ctx.Call(rpc, std::move(request)); }, print);
}

// IdCommand for a list RPC keyed by the id: fetches every page (ListPages).
template <typename Stub, typename Request, typename Response, typename PrintFn>
Command IdListCommand(const IdCommandSpec& spec, const std::string& field,
                      grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
                      PrintFn print) {
  return internal::IdCommandWith<Request>(
      spec, field,
      [rpc](Context& ctx, Request request) {
        return ListPages(ctx, rpc, std::move(request), /*one_page=*/false);
      },
      print);
}

// For IdCommand: prints `field` of the response (a sub-message) as JSON, or
// with `table` in table mode.
template <typename Response, typename Resource, typename TableFn>
auto PrintPart(const Resource& (Response::*field)() const, TableFn table) {
  return [=](Context& ctx, const std::string&, const Response& response) {
    const Resource& resource = (response.*field)();
    Print(ctx, resource, [&] { table(resource); });
  };
}

// For IdCommand: prints the whole response as JSON, or with `table` in table
// mode.
template <typename TableFn>
auto PrintResponse(TableFn table) {
  return [=](Context& ctx, const std::string&, const auto& response) {
    Print(ctx, response, [&] { table(response); });
  };
}

// For IdCommand on a delete: the empty response as JSON ({}), or
// "deleted WHAT ID" in table mode.
inline auto PrintDeleted(const std::string& what) {
  return [=](Context& ctx, const std::string& id, const google::protobuf::Message& response) {
    Print(ctx, response, [&] { std::printf("deleted %s %s\n", what.c_str(), id.c_str()); });
  };
}

std::vector<Command> ImageCommands();
std::vector<Command> OperationCommands();
std::vector<Command> ServerCommands();
std::vector<Command> AdminIdentityCommands();   // accounts, users, keys, quotas, audit
std::vector<Command> AdminInventoryCommands();  // datacenters, volumes, pools, servers, nodes

// Runs imagectl with argv[1..]; returns the exit code.
int Main(int argc, char** argv);

}  // namespace imagectl

#endif  // CLIENT_IMAGECTL_CLI_H_
