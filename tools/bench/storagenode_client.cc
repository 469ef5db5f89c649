// storagenode_client: a tiny command-line client of the internal storage-node
// API, for benchmarks and manual poking. Runs one RPC and prints one JSON line
// with the wall time of the call and the fields of its result:
//
//   storagenode_client --addr=HOST:PORT capture IMAGE_ID ISCSI_URL
//   storagenode_client --addr=HOST:PORT restore IMAGE_ID ISCSI_URL
//   storagenode_client --addr=HOST:PORT delete IMAGE_ID
//   storagenode_client --addr=HOST:PORT gc
//   storagenode_client --addr=HOST:PORT status
//
// Exits 1 with the gRPC code and message on stderr when the call fails, 2 on
// bad usage.
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/flags.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"

namespace {

namespace pb = imagetemplates::storagenode::v1;

struct Config {
  std::string addr = "127.0.0.1:7444";
  int64_t zstd_level = 0;
  std::string expected_digest;
  int64_t timeout_seconds = 3600;
  bool dry_run = false;
};

// Builds one flat JSON object, keys in insertion order.
class JsonLine {
 public:
  JsonLine& Str(const std::string& key, const std::string& value) {
    return Raw(key, absl::StrCat("\"", Escape(value), "\""));
  }
  JsonLine& Int(const std::string& key, uint64_t value) {
    return Raw(key, absl::StrCat(value));
  }
  JsonLine& Num(const std::string& key, double value) {
    return Raw(key, absl::StrFormat("%.6f", value));
  }
  JsonLine& Bool(const std::string& key, bool value) {
    return Raw(key, value ? "true" : "false");
  }
  std::string Finish() const { return absl::StrCat("{", body_, "}"); }

 private:
  JsonLine& Raw(const std::string& key, const std::string& value) {
    absl::StrAppend(&body_, body_.empty() ? "" : ", ", "\"", Escape(key), "\": ", value);
    return *this;
  }
  static std::string Escape(const std::string& in) {
    std::string out;
    for (unsigned char c : in) {
      if (c == '"' || c == '\\') {
        out.push_back('\\');
        out.push_back(static_cast<char>(c));
      } else if (c < 0x20) {
        absl::StrAppendFormat(&out, "\\u%04x", c);
      } else {
        out.push_back(static_cast<char>(c));
      }
    }
    return out;
  }
  std::string body_;
};

// A call that failed: exit code 1 and the gRPC status on stderr.
int Fail(const std::string& op, const grpc::Status& status) {
  std::fprintf(stderr, "storagenode_client: %s failed: code %d: %s\n", op.c_str(),
               static_cast<int>(status.error_code()), status.error_message().c_str());
  return 1;
}

void Print(const JsonLine& line) {
  std::printf("%s\n", line.Finish().c_str());
  std::fflush(stdout);
}

void SetDeadline(const Config& config, grpc::ClientContext* context) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::seconds(config.timeout_seconds));
}

double SecondsSince(absl::Time start) { return absl::ToDoubleSeconds(absl::Now() - start); }

int Capture(pb::StorageNode::Stub& stub, const Config& config, const std::string& id,
            const std::string& url) {
  grpc::ClientContext context;
  SetDeadline(config, &context);
  pb::CaptureVolumeRequest request;
  request.set_image_id(id);
  request.set_source_url(url);
  request.set_zstd_level(static_cast<int32_t>(config.zstd_level));
  const absl::Time start = absl::Now();
  auto reader = stub.CaptureVolume(&context, request);
  pb::CaptureVolumeProgress progress, last;
  uint64_t messages = 0;
  bool have_summary = false;
  pb::ImageManifestSummary summary;
  double scan_done_seconds = 0;  // When the last progress said the volume was read.
  while (reader->Read(&progress)) {
    ++messages;
    last = progress;
    if (scan_done_seconds == 0 && progress.bytes_total() > 0 &&
        progress.bytes_scanned() >= progress.bytes_total()) {
      scan_done_seconds = SecondsSince(start);
    }
    if (progress.has_summary()) {
      summary = progress.summary();
      have_summary = true;
    }
  }
  grpc::Status status = reader->Finish();
  const double seconds = SecondsSince(start);
  if (!status.ok()) return Fail("capture", status);
  if (!have_summary) {
    return Fail("capture", grpc::Status(grpc::StatusCode::INTERNAL,
                                        "stream ended without a summary"));
  }
  JsonLine line;
  line.Str("op", "capture")
      .Str("image_id", summary.image_id())
      .Num("wall_seconds", seconds)
      .Int("volume_size_bytes", summary.volume_size_bytes())
      .Int("block_size", summary.block_size())
      .Int("chunk_size", summary.chunk_size())
      .Int("chunk_count", summary.chunk_count())
      .Int("zero_chunk_count", summary.zero_chunk_count())
      .Int("logical_bytes", summary.logical_bytes())
      .Int("stored_bytes", summary.stored_bytes())
      .Int("new_stored_bytes", summary.new_stored_bytes())
      .Num("scan_done_seconds", scan_done_seconds)
      .Int("bytes_read", last.bytes_read())
      .Int("progress_messages", messages)
      .Str("manifest_digest", summary.manifest_digest());
  Print(line);
  return 0;
}

int Restore(pb::StorageNode::Stub& stub, const Config& config, const std::string& id,
            const std::string& url) {
  grpc::ClientContext context;
  SetDeadline(config, &context);
  pb::RestoreVolumeRequest request;
  request.set_image_id(id);
  request.set_target_url(url);
  request.set_expected_manifest_digest(config.expected_digest);
  const absl::Time start = absl::Now();
  auto reader = stub.RestoreVolume(&context, request);
  pb::RestoreVolumeProgress progress;
  uint64_t messages = 0;
  bool have_summary = false;
  pb::RestoreSummary summary;
  while (reader->Read(&progress)) {
    ++messages;
    if (progress.has_summary()) {
      summary = progress.summary();
      have_summary = true;
    }
  }
  grpc::Status status = reader->Finish();
  const double seconds = SecondsSince(start);
  if (!status.ok()) return Fail("restore", status);
  if (!have_summary) {
    return Fail("restore", grpc::Status(grpc::StatusCode::INTERNAL,
                                        "stream ended without a summary"));
  }
  JsonLine line;
  line.Str("op", "restore")
      .Str("image_id", summary.image_id())
      .Num("wall_seconds", seconds)
      .Int("target_size_bytes", summary.target_size_bytes())
      .Int("bytes_written", summary.bytes_written())
      .Int("bytes_skipped", summary.bytes_skipped())
      .Int("progress_messages", messages)
      .Str("manifest_digest", summary.manifest_digest());
  Print(line);
  return 0;
}

int Delete(pb::StorageNode::Stub& stub, const Config& config, const std::string& id) {
  grpc::ClientContext context;
  SetDeadline(config, &context);
  pb::DeleteImageRequest request;
  request.set_image_id(id);
  pb::DeleteImageResponse response;
  const absl::Time start = absl::Now();
  grpc::Status status = stub.DeleteImage(&context, request, &response);
  const double seconds = SecondsSince(start);
  if (!status.ok()) return Fail("delete", status);
  Print(JsonLine().Str("op", "delete").Str("image_id", id).Num("wall_seconds", seconds));
  return 0;
}

int CollectGarbage(pb::StorageNode::Stub& stub, const Config& config) {
  grpc::ClientContext context;
  SetDeadline(config, &context);
  pb::CollectGarbageRequest request;
  request.set_dry_run(config.dry_run);
  pb::CollectGarbageResponse response;
  const absl::Time start = absl::Now();
  grpc::Status status = stub.CollectGarbage(&context, request, &response);
  const double seconds = SecondsSince(start);
  if (!status.ok()) return Fail("gc", status);
  Print(JsonLine()
            .Str("op", "gc")
            .Num("wall_seconds", seconds)
            .Bool("dry_run", response.dry_run())
            .Int("chunks_kept", response.chunks_kept())
            .Int("chunks_removed", response.chunks_removed())
            .Int("bytes_freed", response.bytes_freed()));
  return 0;
}

int Status(pb::StorageNode::Stub& stub, const Config& config) {
  grpc::ClientContext context;
  SetDeadline(config, &context);
  pb::GetNodeStatusResponse response;
  const absl::Time start = absl::Now();
  grpc::Status status = stub.GetNodeStatus(&context, {}, &response);
  const double seconds = SecondsSince(start);
  if (!status.ok()) return Fail("status", status);
  const pb::NodeStatus& s = response.status();
  Print(JsonLine()
            .Str("op", "status")
            .Num("wall_seconds", seconds)
            .Str("node_id", s.node_id())
            .Str("version", s.version())
            .Int("capacity_bytes", s.capacity_bytes())
            .Int("free_bytes", s.free_bytes())
            .Int("image_count", s.image_count())
            .Int("chunk_count", s.chunk_count())
            .Int("logical_bytes", s.logical_bytes())
            .Int("stored_bytes", s.stored_bytes())
            .Num("dedup_ratio", s.dedup_ratio())
            .Int("jobs", s.jobs_size()));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Config config;
  common::FlagSet flags(
      "storagenode_client [--addr=HOST:PORT] COMMAND ARGS...\n"
      "Runs one storage-node RPC and prints one JSON line. Commands:\n"
      "  capture IMAGE_ID ISCSI_URL   CaptureVolume\n"
      "  restore IMAGE_ID ISCSI_URL   RestoreVolume\n"
      "  delete IMAGE_ID              DeleteImage\n"
      "  gc                           CollectGarbage\n"
      "  status                       GetNodeStatus");
  flags.String("addr", &config.addr, "storaged gRPC address");
  flags.Int("zstd-level", &config.zstd_level, "capture: zstd level, 0 = the node's default");
  flags.String("expected-digest", &config.expected_digest,
               "restore: the manifest digest the image must have");
  flags.Bool("dry-run", &config.dry_run, "gc: only count");
  flags.Int("timeout", &config.timeout_seconds, "deadline of the call in seconds");
  bool help = false;
  auto args = flags.Parse(argc, argv, &help);
  if (help) {
    std::fputs(flags.Help().c_str(), stdout);
    return 0;
  }
  if (!args.ok()) {
    std::fprintf(stderr, "storagenode_client: %s\n%s",
                 std::string(args.status().message()).c_str(), flags.Help().c_str());
    return 2;
  }
  const std::vector<std::string>& a = *args;
  auto usage = [&] {
    std::fprintf(stderr, "storagenode_client: bad arguments\n%s", flags.Help().c_str());
    return 2;
  };
  if (a.empty()) return usage();

  grpc::ChannelArguments channel_args;
  channel_args.SetMaxReceiveMessageSize(64 << 20);
  auto stub = pb::StorageNode::NewStub(grpc::CreateCustomChannel(
      config.addr, grpc::InsecureChannelCredentials(), channel_args));
  const std::string& command = a[0];
  if (command == "capture" && a.size() == 3) return Capture(*stub, config, a[1], a[2]);
  if (command == "restore" && a.size() == 3) return Restore(*stub, config, a[1], a[2]);
  if (command == "delete" && a.size() == 2) return Delete(*stub, config, a[1]);
  if (command == "gc" && a.size() == 1) return CollectGarbage(*stub, config);
  if (command == "status" && a.size() == 1) return Status(*stub, config);
  return usage();
}
