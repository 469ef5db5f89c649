#include "storaged/storage_node_service.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <deque>
#include <vector>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/grpc_status.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "google/protobuf/util/time_util.h"
#include "absl/strings/escaping.h"
#include "absl/algorithm/container.h"
#include "absl/strings/strip.h"
#include "storaged/config_drive_writer.h"
#include "storaged/image_copier.h"
#include "storaged/image_capturer.h"
#include "storaged/image_restorer.h"

namespace storaged {

namespace pb = imagetemplates::storagenode::v1;
using common::ToGrpcStatus;

namespace {

constexpr size_t kMaxConfigFileBytes = 64 << 10;

// Turns a cancelled RPC into the atomic flag the data path polls.
class CancelWatcher {
 public:
  explicit CancelWatcher(grpc::ServerContext* context)
      : thread_([this, context] {
          // Woken at once by the destructor: a sleep here added up to 50 ms
          // to every call that watched (a deploy's config drive write).
          do {
            if (context->IsCancelled()) {
              cancelled_.store(true);
              return;
            }
          } while (!done_.WaitForNotificationWithTimeout(absl::Milliseconds(50)));
        }) {}
  ~CancelWatcher() {
    done_.Notify();
    thread_.join();
  }
  const std::atomic<bool>* flag() const { return &cancelled_; }

 private:
  absl::Notification done_;
  std::atomic<bool> cancelled_{false};
  std::thread thread_;
};

void SetTimestamp(absl::Time time, google::protobuf::Timestamp* out) {
  *out = google::protobuf::util::TimeUtil::MicrosecondsToTimestamp(absl::ToUnixMicros(time));
}

std::string DigestString(const Digest& digest) {
  return absl::StrCat("sha256:", digest.ToHex());
}

pb::ImageManifestSummary ToSummary(const ImageSummary& image) {
  pb::ImageManifestSummary out;
  out.set_image_id(image.image_id);
  out.set_volume_size_bytes(image.volume_size);
  out.set_block_size(image.block_size);
  out.set_chunk_size(image.chunk_size);
  out.set_chunk_count(image.chunk_count);
  out.set_zero_chunk_count(image.zero_chunks);
  out.set_logical_bytes(image.logical_bytes);
  out.set_stored_bytes(image.stored_bytes);
  out.set_new_stored_bytes(image.new_stored_bytes);
  out.set_manifest_digest(DigestString(image.manifest_digest));
  SetTimestamp(image.create_time, out.mutable_create_time());
  return out;
}

}  // namespace

// Hands the heap's free memory back to the kernel when a call that moved a
// volume's worth of data returns (declared first, so it runs after every
// other local is gone). glibc keeps freed buffers and manifests in its
// arenas otherwise, and the next capture or restore would start from the
// last one's high-water mark.
class ReleaseMemoryOnReturn {
 public:
  ReleaseMemoryOnReturn() = default;
  ReleaseMemoryOnReturn(const ReleaseMemoryOnReturn&) = delete;
  ReleaseMemoryOnReturn& operator=(const ReleaseMemoryOnReturn&) = delete;
  ~ReleaseMemoryOnReturn() { malloc_trim(0); }
};

// Registers a running job for GetNodeStatus for as long as it lives.
class StorageNodeService::JobScope {
 public:
  JobScope(StorageNodeService* service, pb::NodeJobKind kind, std::string image_id)
      : service_(service) {
    absl::MutexLock lock(&service_->mu_);
    id_ = service_->next_job_id_++;
    service_->jobs_[id_] = Job{kind, std::move(image_id), absl::Now()};
  }
  ~JobScope() {
    absl::MutexLock lock(&service_->mu_);
    service_->jobs_.erase(id_);
  }
  void Progress(uint64_t done, uint64_t total) {
    absl::MutexLock lock(&service_->mu_);
    Job& job = service_->jobs_[id_];
    job.bytes_done = done;
    job.bytes_total = total;
  }

 private:
  StorageNodeService* service_;
  uint64_t id_ = 0;
};

// The manifest bytes one PutManifest call holds, counted against what all
// calls together may hold (max_manifest_bytes_) until it returns.
class StorageNodeService::ManifestReservation {
 public:
  explicit ManifestReservation(StorageNodeService* service)
      : service_(service), limit_(service->max_manifest_bytes_.load()) {}
  ManifestReservation(const ManifestReservation&) = delete;
  ManifestReservation& operator=(const ManifestReservation&) = delete;
  ~ManifestReservation() {
    absl::MutexLock lock(&service_->manifest_mu_);
    service_->manifest_bytes_held_ -= held_;
  }

  // Counts `bytes` more: INVALID_ARGUMENT past the limit for one manifest,
  // UNAVAILABLE past what the other calls in progress leave.
  absl::Status Grow(uint64_t bytes) {
    if (bytes > limit_ - held_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "manifest: over ", limit_, " bytes; this node takes no larger images"));
    }
    absl::MutexLock lock(&service_->manifest_mu_);
    uint64_t& all = service_->manifest_bytes_held_;
    if (bytes > limit_ - std::min(all, limit_)) {
      return absl::UnavailableError(absl::StrCat(
          "manifests being received hold ", all - held_, " of the ", limit_,
          " bytes this node buffers for them; try again once they are committed"));
    }
    all += bytes;
    held_ += bytes;
    return absl::OkStatus();
  }

 private:
  StorageNodeService* const service_;
  const uint64_t limit_;
  uint64_t held_ = 0;
};

StorageNodeService::StorageNodeService(std::string node_id, ImageStore* store,
                                       VolumeOpener open_volume)
    : node_id_(std::move(node_id)),
      store_(store),
      open_volume_(std::move(open_volume)),
      start_time_(absl::Now()) {}

void StorageNodeService::RequireInternalToken(const std::string& token) {
  internal_token_ = token;
  verifier_ = common::InternalTokenVerifier(token);
}

void StorageNodeService::AttachStore(ImageStore* store) {
  {
    absl::MutexLock lock(&receiver_mu_);
    receiver_.reset();
  }
  store_.store(store);
}

absl::StatusOr<ImageReceiver*> StorageNodeService::Receiver() {
  ASSIGN_OR_RETURN(ImageStore * store, Store());
  absl::MutexLock lock(&receiver_mu_);
  if (receiver_ == nullptr) receiver_ = std::make_unique<ImageReceiver>(store);
  return receiver_.get();
}

absl::StatusOr<ImageStore*> StorageNodeService::Store() const {
  ImageStore* store = store_.load();
  if (store == nullptr) {
    return absl::UnavailableError(absl::StrCat(
        "node ", node_id_, ": image store is not usable yet; see the storaged log"));
  }
  return store;
}

absl::StatusOr<pb::ImageManifestSummary> StorageNodeService::Summarize(
    ImageStore& store, const std::string& image_id) const {
  ASSIGN_OR_RETURN(ImageSummary summary, store.Summary(image_id));
  return ToSummary(summary);
}

grpc::Status StorageNodeService::CaptureVolume(
    grpc::ServerContext* context, const pb::CaptureVolumeRequest* request,
    grpc::ServerWriter<pb::CaptureVolumeProgress>* writer) {
  if (grpc::Status auth = verifier_.Check(*context, "CaptureVolume"); !auth.ok()) return auth;
  ReleaseMemoryOnReturn release;
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  const std::string& id = request->image_id();
  // Before the id reaches a log line, and before logging in to the source.
  if (absl::Status s = CheckImageId(id); !s.ok()) return ToGrpcStatus(s);
  if (request->zstd_level() < 0 || request->zstd_level() > 19) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("zstd_level: ", request->zstd_level(), " is outside 1..19 (0 = default)")));
  }
  // A retry after a lost answer: the image is already committed.
  if (absl::StatusOr<pb::ImageManifestSummary> existing = Summarize(**store, id); existing.ok()) {
    pb::CaptureVolumeProgress done;
    done.set_bytes_scanned(existing->volume_size_bytes());
    done.set_bytes_total(existing->volume_size_bytes());
    *done.mutable_summary() = *existing;
    writer->Write(done);
    return grpc::Status::OK;
  } else if (!absl::IsNotFound(existing.status())) {
    // A damaged manifest under this id (DATA_LOSS) is not "a capture is
    // running", which is what the store's refusal to begin would say.
    return ToGrpcStatus(existing.status());
  }
  absl::StatusOr<std::unique_ptr<Volume>> volume = open_volume_(request->source_url());
  if (!volume.ok()) {
    common::LogOp(id, "capture: cannot open source: %s", volume.status().ToString());
    return ToGrpcStatus(volume.status());
  }
  JobScope job(this, pb::NODE_JOB_KIND_CAPTURE, id);
  CancelWatcher cancel(context);
  CaptureOptions options;
  options.read.cancelled = cancel.flag();
  options.on_progress = [&](const CaptureProgress& p) {
    job.Progress(p.bytes_scanned, p.bytes_total);
    pb::CaptureVolumeProgress message;
    message.set_bytes_scanned(p.bytes_scanned);
    message.set_bytes_read(p.bytes_read);
    message.set_bytes_total(p.bytes_total);
    writer->Write(message);
  };
  common::LogOp(id, "capture started: %u bytes, block %u, %s",
                (*volume)->info().size_bytes, (*volume)->info().block_size,
                (*volume)->info().thin ? "thin" : "thick");
  absl::Time start = absl::Now();
  absl::StatusOr<ManifestSummary> summary =
      storaged::CaptureVolume(**volume, **store, id, request->zstd_level(), options);
  if (!summary.ok()) {
    absl::Status status = summary.status();
    if (status.code() == absl::StatusCode::kAlreadyExists) {
      status = absl::AbortedError(absl::StrCat("a capture of ", id, " is already running"));
    }
    common::LogOp(id, "capture failed: %s", status.ToString());
    return ToGrpcStatus(status);
  }
  common::LogOp(id, "capture committed in %s: logical %u, new stored %u bytes",
                absl::FormatDuration(absl::Now() - start), summary->logical_bytes,
                summary->new_stored_bytes);
  absl::StatusOr<pb::ImageManifestSummary> result = Summarize(**store, id);
  if (!result.ok()) return ToGrpcStatus(result.status());
  pb::CaptureVolumeProgress done;
  done.set_bytes_scanned(result->volume_size_bytes());
  done.set_bytes_total(result->volume_size_bytes());
  done.set_bytes_read(result->logical_bytes());
  done.set_bytes_stored(summary->new_stored_bytes);
  *done.mutable_summary() = *result;
  writer->Write(done);
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::RestoreVolume(
    grpc::ServerContext* context, const pb::RestoreVolumeRequest* request,
    grpc::ServerWriter<pb::RestoreVolumeProgress>* writer) {
  if (grpc::Status auth = verifier_.Check(*context, "RestoreVolume"); !auth.ok()) return auth;
  ReleaseMemoryOnReturn release;
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  const std::string& id = request->image_id();
  absl::StatusOr<std::unique_ptr<ImageReader>> image = (*store)->OpenImage(id);
  if (!image.ok()) return ToGrpcStatus(image.status());
  const std::string digest = DigestString((*image)->manifest_digest());
  if (!request->expected_manifest_digest().empty() &&
      request->expected_manifest_digest() != digest) {
    return ToGrpcStatus(absl::DataLossError(
        absl::StrCat("image ", id, " has manifest digest ", digest, ", expected ",
                     request->expected_manifest_digest())));
  }
  absl::StatusOr<std::unique_ptr<Volume>> volume = open_volume_(request->target_url());
  if (!volume.ok()) {
    common::LogOp(id, "restore: cannot open target: %s", volume.status().ToString());
    return ToGrpcStatus(volume.status());
  }
  JobScope job(this, pb::NODE_JOB_KIND_RESTORE, id);
  CancelWatcher cancel(context);
  RestoreOptions options;
  options.cancelled = cancel.flag();
  options.on_progress = [&](const RestoreProgress& p) {
    job.Progress(p.bytes_written + p.bytes_skipped, p.bytes_total);
    pb::RestoreVolumeProgress message;
    message.set_bytes_written(p.bytes_written + p.bytes_skipped);
    message.set_bytes_total(p.bytes_total);
    writer->Write(message);
  };
  absl::Time start = absl::Now();
  absl::StatusOr<RestoreProgress> result = RestoreImage(**image, **volume, options);
  if (!result.ok()) {
    common::LogOp(id, "restore failed: %s", result.status().ToString());
    return ToGrpcStatus(result.status());
  }
  common::LogOp(id, "restore done in %s: %u bytes written, %u zeroed",
                absl::FormatDuration(absl::Now() - start), result->bytes_written,
                result->bytes_skipped);
  pb::RestoreVolumeProgress done;
  done.set_bytes_written(result->bytes_written + result->bytes_skipped);
  done.set_bytes_total(result->bytes_total);
  pb::RestoreSummary* summary = done.mutable_summary();
  summary->set_image_id(id);
  summary->set_manifest_digest(digest);
  summary->set_target_size_bytes(result->bytes_total);
  summary->set_bytes_written(result->bytes_written);
  summary->set_bytes_skipped(result->bytes_skipped);
  writer->Write(done);
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::WriteConfigDrive(grpc::ServerContext* context,
                                                  const pb::WriteConfigDriveRequest* request,
                                                  pb::WriteConfigDriveResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "WriteConfigDrive"); !auth.ok()) return auth;
  if (request->meta_data().empty()) {
    return ToGrpcStatus(absl::InvalidArgumentError("meta_data: must not be empty"));
  }
  for (const auto& [name, value] :
       {std::pair<const char*, const std::string*>{"meta_data", &request->meta_data()},
        {"user_data", &request->user_data()},
        {"network_config", &request->network_config()}}) {
    if (value->size() > kMaxConfigFileBytes) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat(name, ": ", value->size(), " bytes is over the 64 KiB limit")));
    }
  }
  absl::StatusOr<std::unique_ptr<Volume>> volume = open_volume_(request->target_url());
  if (!volume.ok()) return ToGrpcStatus(volume.status());
  JobScope job(this, pb::NODE_JOB_KIND_WRITE_CONFIG_DRIVE, "");
  CancelWatcher cancel(context);
  ConfigDrive drive{request->meta_data(), request->user_data(), request->network_config()};
  absl::StatusOr<uint64_t> written = storaged::WriteConfigDrive(drive, **volume, cancel.flag());
  if (!written.ok()) return ToGrpcStatus(written.status());
  response->set_bytes_written(*written);
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::VerifyImage(grpc::ServerContext* context,
                                             const pb::VerifyImageRequest* request,
                                             grpc::ServerWriter<pb::VerifyImageProgress>* writer) {
  if (grpc::Status auth = verifier_.Check(*context, "VerifyImage"); !auth.ok()) return auth;
  ReleaseMemoryOnReturn release;
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  const std::string& id = request->image_id();
  absl::StatusOr<std::unique_ptr<ImageReader>> image = (*store)->OpenImage(id);
  pb::VerifyImageProgress done;
  pb::VerifyImageResult* result = done.mutable_result();
  result->set_image_id(id);
  if (image.status().code() == absl::StatusCode::kDataLoss) {
    // A damaged manifest is a finding, not a failure of the call.
    result->set_manifest_ok(false);
    result->set_ok(false);
    writer->Write(done);
    return grpc::Status::OK;
  }
  if (!image.ok()) return ToGrpcStatus(image.status());
  JobScope job(this, pb::NODE_JOB_KIND_VERIFY, id);
  CancelWatcher cancel(context);
  absl::StatusOr<VerifyReport> report = (*store)->VerifyImage(id, cancel.flag());
  if (!report.ok()) return ToGrpcStatus(report.status());
  const Manifest& manifest = (*image)->manifest();
  result->set_manifest_ok(true);
  // Distinct digests (an image may name one chunk millions of times), the
  // lists capped so the answer always fits in a message.
  constexpr int kMaxListedDigests = 10000;
  auto list = [&](const std::vector<uint64_t>& indexes,
                  google::protobuf::RepeatedPtrField<std::string>* out) {
    absl::flat_hash_set<Digest, DigestHash> seen;
    for (uint64_t index : indexes) {
      const Digest& d = manifest.chunks.At(index);
      if (seen.insert(d).second && out->size() < kMaxListedDigests) {
        out->Add(std::string(d.AsBytes()));
      }
    }
    return seen.size();
  };
  result->set_corrupt_chunk_count(
      list(report->corrupt_chunks, result->mutable_corrupt_chunk_digests()));
  result->set_missing_chunk_count(
      list(report->missing_chunks, result->mutable_missing_chunk_digests()));
  result->set_ok(report->ok());
  done.set_chunks_checked(report->chunks_checked);
  done.set_chunks_total(manifest.ChunkCount());
  done.set_bytes_checked(manifest.logical_bytes);
  if (!report->ok()) {
    common::LogOp(id, "verify found %u corrupt and %u missing chunks",
                  result->corrupt_chunk_count(), result->missing_chunk_count());
  }
  writer->Write(done);
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::DeleteImage(grpc::ServerContext* context,
                                             const pb::DeleteImageRequest* request,
                                             pb::DeleteImageResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "DeleteImage"); !auth.ok()) return auth;
  // Through the receiver: a receive of the id in progress is cancelled and
  // a commit racing with this delete cannot outlive it.
  absl::StatusOr<ImageReceiver*> receiver = Receiver();
  if (!receiver.ok()) return ToGrpcStatus(receiver.status());
  absl::Status status = (*receiver)->Delete(request->image_id());
  if (status.ok()) {
    common::LogOp(request->image_id(), "image deleted");
    if (on_image_deleted_) on_image_deleted_();
  }
  return ToGrpcStatus(status);
}

grpc::Status StorageNodeService::GetImage(grpc::ServerContext* context,
                                          const pb::GetImageRequest* request,
                                          pb::GetImageResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "GetImage"); !auth.ok()) return auth;
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  absl::StatusOr<pb::ImageManifestSummary> summary = Summarize(**store, request->image_id());
  if (!summary.ok()) return ToGrpcStatus(summary.status());
  *response->mutable_summary() = *std::move(summary);
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::CollectGarbage(grpc::ServerContext* context,
                                                const pb::CollectGarbageRequest* request,
                                                pb::CollectGarbageResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "CollectGarbage"); !auth.ok()) return auth;
  absl::Time start = absl::Now();
  absl::StatusOr<GcResult> result = CollectGarbageNow(request->dry_run());
  if (!result.ok()) return ToGrpcStatus(result.status());
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  absl::StatusOr<StoreStatus> status = (*store)->Status();
  if (!status.ok()) return ToGrpcStatus(status.status());
  absl::Duration took = absl::Now() - start;
  response->set_dry_run(request->dry_run());
  response->set_chunks_kept(status->chunk_count);
  response->set_chunks_removed(result->chunks_removed);
  response->set_bytes_freed(result->bytes_freed);
  *response->mutable_duration() = google::protobuf::util::TimeUtil::NanosecondsToDuration(absl::ToInt64Nanoseconds(took));
  return grpc::Status::OK;
}

absl::StatusOr<GcResult> StorageNodeService::CollectGarbageNow(bool dry_run) {
  ReleaseMemoryOnReturn release;
  ASSIGN_OR_RETURN(ImageStore * store, Store());
  JobScope job(this, pb::NODE_JOB_KIND_COLLECT_GARBAGE, "");
  // Receives abandoned by their senders stop pinning chunks first.
  if (absl::StatusOr<ImageReceiver*> receiver = Receiver(); receiver.ok()) {
    (*receiver)->ExpireIdle();
  }
  ASSIGN_OR_RETURN(GcResult result, store->CollectGarbage(dry_run));
  common::LogInfo("garbage collection%s: %u chunks, %u bytes freed", dry_run ? " (dry run)" : "",
                  result.chunks_removed, result.bytes_freed);
  return result;
}

absl::Status StorageNodeService::ScrubImages(const std::atomic<bool>& stop) {
  ReleaseMemoryOnReturn release;
  ASSIGN_OR_RETURN(ImageStore * store, Store());
  const std::vector<std::string> ids = store->ListImages();
  common::LogInfo("scrub: verifying %u images", ids.size());
  size_t damaged = 0;
  absl::Status first_error;
  for (const std::string& id : ids) {
    if (stop) return absl::CancelledError("scrub stopped");
    JobScope job(this, pb::NODE_JOB_KIND_VERIFY, id);
    absl::StatusOr<VerifyReport> report = store->VerifyImage(id, &stop);
    if (absl::IsNotFound(report.status())) continue;  // deleted meanwhile
    if (report.ok() && report->ok()) continue;
    if (report.ok() || absl::IsDataLoss(report.status())) {
      ++damaged;
      common::LogOp(id, "scrub: image damaged: %s",
                    report.ok() ? absl::StrCat(report->corrupt_chunks.size(), " corrupt and ",
                                               report->missing_chunks.size(), " missing chunks")
                                : std::string(report.status().message()));
    } else if (first_error.ok()) {
      first_error = report.status();  // I/O: says nothing about the data
    }
  }
  common::LogInfo("scrub: %u images verified, %u damaged", ids.size(), damaged);
  return first_error;
}

namespace {

constexpr int kMaxFindDigests = 4096;

// "sha256:<64 hex>" -> digest; INVALID_ARGUMENT naming `field` otherwise.
absl::StatusOr<Digest> ParseDigestString(absl::string_view field, absl::string_view text) {
  std::string raw;
  if (!absl::ConsumePrefix(&text, "sha256:") || text.size() != 64 ||
      !absl::c_all_of(text, [](char c) {
        return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
      })) {
    return absl::InvalidArgumentError(
        absl::StrCat(field, ": must be \"sha256:\" and 64 lowercase hex digits"));
  }
  raw = absl::HexStringToBytes(text);
  return Digest::FromBytes(raw.data());
}

absl::Status CheckPeerAddress(absl::string_view address) {
  size_t colon = address.rfind(':');
  bool ok = !address.empty() && address.size() <= 255 && colon != absl::string_view::npos &&
            colon > 0 && colon + 1 < address.size();
  for (char c : address) ok = ok && c > ' ' && c < 0x7f && c != '/';
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("peer_address: \"",
                                                 absl::CHexEscape(address.substr(0, 100)),
                                                 "\" is not HOST:PORT"));
}

}  // namespace

grpc::Status StorageNodeService::SendImage(grpc::ServerContext* context,
                                           const pb::SendImageRequest* request,
                                           grpc::ServerWriter<pb::SendImageProgress>* writer) {
  if (grpc::Status auth = verifier_.Check(*context, "SendImage"); !auth.ok()) return auth;
  ReleaseMemoryOnReturn release;
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  const std::string& id = request->image_id();
  if (absl::Status s = CheckImageId(id); !s.ok()) return ToGrpcStatus(s);
  if (absl::Status s = CheckPeerAddress(request->peer_address()); !s.ok()) {
    return ToGrpcStatus(s);
  }
  JobScope job(this, pb::NODE_JOB_KIND_SEND, id);
  CancelWatcher cancel(context);
  std::unique_ptr<pb::StorageNode::StubInterface> peer =
      NewPeerStub(request->peer_address(), internal_token_);
  SendOptions options;
  options.cancelled = cancel.flag();
  options.on_progress = [&](const SendProgress& p) {
    job.Progress(p.chunks_sent + p.chunks_skipped, p.chunks_total);
    pb::SendImageProgress message;
    message.set_chunks_total(p.chunks_total);
    message.set_chunks_sent(p.chunks_sent);
    message.set_chunks_skipped(p.chunks_skipped);
    message.set_bytes_sent(p.bytes_sent);
    writer->Write(message);
  };
  common::LogOp(id, "send to %s started", request->peer_address());
  absl::Time start = absl::Now();
  absl::StatusOr<SendProgress> sent = storaged::SendImage(**store, id, *peer, options);
  if (!sent.ok()) {
    common::LogOp(id, "send to %s failed: %s", request->peer_address(),
                  sent.status().ToString());
    return ToGrpcStatus(sent.status());
  }
  common::LogOp(id,
                "send to %s done in %s: %u of %u chunks sent (%u bytes, %u frames forwarded, "
                "%u built)%s",
                request->peer_address(), absl::FormatDuration(absl::Now() - start),
                sent->chunks_sent, sent->chunks_total, sent->bytes_sent, sent->frames_forwarded,
                sent->frames_built, sent->already_present ? ", the peer had the image" : "");
  pb::SendImageProgress done;
  done.set_chunks_total(sent->chunks_total);
  done.set_chunks_sent(sent->chunks_sent);
  done.set_chunks_skipped(sent->chunks_skipped);
  done.set_bytes_sent(sent->bytes_sent);
  pb::SendImageSummary* summary = done.mutable_summary();
  summary->set_image_id(id);
  summary->set_manifest_digest(sent->manifest_digest);
  summary->set_chunks_sent(sent->chunks_sent);
  summary->set_chunks_skipped(sent->chunks_skipped);
  summary->set_bytes_sent(sent->bytes_sent);
  summary->set_frames_forwarded(sent->frames_forwarded);
  summary->set_frames_built(sent->frames_built);
  summary->set_already_present(sent->already_present);
  writer->Write(done);
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::FindMissingChunks(grpc::ServerContext* context,
                                                   const pb::FindMissingChunksRequest* request,
                                                   pb::FindMissingChunksResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "FindMissingChunks"); !auth.ok()) return auth;
  absl::StatusOr<ImageReceiver*> receiver = Receiver();
  if (!receiver.ok()) return ToGrpcStatus(receiver.status());
  if (request->chunk_digests_size() > kMaxFindDigests) {
    return ToGrpcStatus(absl::InvalidArgumentError(
        absl::StrCat("chunk_digests: at most ", kMaxFindDigests, " per call (got ",
                     request->chunk_digests_size(), ")")));
  }
  std::vector<Digest> digests;
  digests.reserve(request->chunk_digests_size());
  for (const std::string& d : request->chunk_digests()) {
    if (d.size() != 32) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          absl::StrCat("chunk_digests: a digest has ", d.size(), " bytes, not 32")));
    }
    digests.push_back(Digest::FromBytes(d.data()));
  }
  absl::StatusOr<std::vector<Digest>> missing =
      (*receiver)->FindMissing(request->image_id(), digests);
  if (!missing.ok()) return ToGrpcStatus(missing.status());
  for (const Digest& d : *missing) response->add_missing_chunk_digests(std::string(d.AsBytes()));
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::PutChunks(grpc::ServerContext* context,
                                           grpc::ServerReader<pb::PutChunksRequest>* reader,
                                           pb::PutChunksResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "PutChunks"); !auth.ok()) return auth;
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  absl::StatusOr<ImageReceiver*> receiver = Receiver();
  if (!receiver.ok()) return ToGrpcStatus(receiver.status());
  absl::StatusOr<std::unique_ptr<ChunkImporter>> importer = (*store)->BeginImport();
  if (!importer.ok()) return ToGrpcStatus(importer.status());
  std::string image_id;
  std::unique_ptr<JobScope> job;

  // Frames are decoded and checked on kVerifyThreads threads while the next
  // ones arrive; storing them is serialized. At most kQueuedFrames wait.
  constexpr int kVerifyThreads = 2;
  constexpr size_t kQueuedFrames = 4;
  absl::Mutex mu;
  std::deque<TransferFrame> queue;
  bool closed = false;
  absl::Status error;
  absl::Mutex store_mu;  // Serializes Store; guards the two counts.
  uint64_t chunks_stored = 0;
  uint64_t chunks_skipped = 0;
  // With `mu` held.
  auto set_error = [&](absl::Status s) {
    if (error.ok()) error = std::move(s);
    closed = true;
    queue.clear();
  };
  std::vector<std::thread> workers;
  for (int i = 0; i < kVerifyThreads; ++i) {
    workers.emplace_back([&] {
      for (;;) {
        TransferFrame frame;
        {
          absl::MutexLock lock(&mu);
          auto ready = [&] { return closed || !queue.empty(); };
          mu.Await(absl::Condition(&ready));
          if (queue.empty()) return;
          frame = std::move(queue.front());
          queue.pop_front();
        }
        absl::Status s = (*importer)->Verify(frame);
        if (s.ok()) {
          absl::MutexLock lock(&store_mu);
          absl::StatusOr<bool> stored = (*importer)->Store(frame);
          s = stored.status();
          if (stored.ok()) (*stored ? chunks_stored : chunks_skipped) += frame.chunks.size();
        }
        if (!s.ok()) {
          absl::MutexLock lock(&mu);
          set_error(s);
          return;
        }
      }
    });
  }
  pb::PutChunksRequest request;
  bool first = true;
  absl::Status parse;
  while (parse.ok() && reader->Read(&request)) {
    if (first) {
      first = false;
      // Checked before it reaches a log line, the job list or a pin.
      if (!request.image_id().empty()) {
        parse = CheckImageId(request.image_id());
        if (!parse.ok()) break;
      }
      image_id = request.image_id();
      job = std::make_unique<JobScope>(this, pb::NODE_JOB_KIND_RECEIVE, image_id);
    }
    TransferFrame frame;
    if (request.encoding() != pb::CHUNK_ENCODING_RAW &&
        request.encoding() != pb::CHUNK_ENCODING_ZSTD) {
      parse = absl::InvalidArgumentError(
          absl::StrCat("encoding: ", request.encoding(), " is not RAW or ZSTD"));
      break;
    }
    frame.zstd = request.encoding() == pb::CHUNK_ENCODING_ZSTD;
    frame.plain_size = request.plain_size();
    if (request.frame_chunks_size() == 0) {
      if (request.chunk_digest().size() != 32) {
        parse = absl::InvalidArgumentError(absl::StrCat(
            "chunk_digest: has ", request.chunk_digest().size(), " bytes, not 32"));
        break;
      }
      frame.chunks.push_back(TransferFrame::Chunk{
          Digest::FromBytes(request.chunk_digest().data()), 0, request.plain_size()});
    } else {
      for (const pb::FrameChunk& c : request.frame_chunks()) {
        if (c.chunk_digest().size() != 32) {
          parse = absl::InvalidArgumentError(absl::StrCat(
              "frame_chunks.chunk_digest: has ", c.chunk_digest().size(), " bytes, not 32"));
          break;
        }
        frame.chunks.push_back(TransferFrame::Chunk{
            Digest::FromBytes(c.chunk_digest().data()), c.offset(), c.length()});
      }
      if (!parse.ok()) break;
    }
    frame.data = std::move(*request.mutable_data());
    response->set_bytes_received(response->bytes_received() + frame.data.size());
    // Before its chunks are pinned: a message naming a million digests for
    // a 16-byte frame must cost nothing.
    parse = (*importer)->CheckShape(frame);
    if (!parse.ok()) break;
    if (!image_id.empty()) {
      // Chunks the sender did not announce are pinned too, before they land.
      std::vector<Digest> digests;
      for (const TransferFrame::Chunk& c : frame.chunks) digests.push_back(c.digest);
      parse = (*receiver)->Pin(image_id, digests);
      if (!parse.ok()) break;
    }
    if (job != nullptr) job->Progress(response->bytes_received(), 0);
    absl::MutexLock lock(&mu);
    auto room = [&] { return closed || queue.size() < kQueuedFrames; };
    mu.Await(absl::Condition(&room));
    if (closed) break;  // A worker failed.
    queue.push_back(std::move(frame));
  }
  {
    absl::MutexLock lock(&mu);
    if (!parse.ok()) set_error(parse);
    closed = true;
  }
  for (std::thread& worker : workers) worker.join();
  auto fail = [&](const absl::Status& status) {
    common::LogOp(image_id, "receive failed, nothing of this stream kept: %s", status.ToString());
    return ToGrpcStatus(status);
  };
  // A frame that failed its checks, or a malformed message: keep nothing
  // from a sender that lies, nor its pins.
  if (!error.ok()) {
    if (!image_id.empty()) (*receiver)->Abandon(image_id);
    return fail(error);
  }
  // A DeleteImage during the stream: keep nothing (its chunks are unpinned).
  if (!image_id.empty()) {
    if (absl::Status s = (*receiver)->CheckNotDeleted(image_id); !s.ok()) return fail(s);
  }
  // A stream cut off (the sender cancelled, died or lost the network) ends
  // like a finished one; only the context tells. Every frame stored so far
  // passed its digest checks, so it is sealed and kept: a resumed copy finds
  // those chunks present and sends only the rest. They stay pinned by this
  // image's receive until it commits, is deleted or goes idle.
  if (context->IsCancelled()) {
    absl::Status sealed = (*importer)->Finish();
    common::LogOp(image_id, "receive cut off; kept %u chunks (%u bytes stored)%s",
                  chunks_stored, (*importer)->bytes_stored(),
                  sealed.ok() ? "" : absl::StrCat(", but sealing failed: ", sealed.ToString()));
    return ToGrpcStatus(absl::CancelledError("the sender cancelled"));
  }
  if (absl::Status s = (*importer)->Finish(); !s.ok()) return fail(s);
  response->set_chunks_stored(chunks_stored);
  response->set_chunks_skipped(chunks_skipped);
  response->set_bytes_stored((*importer)->bytes_stored());
  common::LogOp(image_id, "received %u chunks (%u bytes, %u stored), %u already present",
                response->chunks_stored(), response->bytes_received(), response->bytes_stored(),
                response->chunks_skipped());
  return grpc::Status::OK;
}

grpc::Status StorageNodeService::PutManifest(grpc::ServerContext* context,
                                             grpc::ServerReader<pb::PutManifestRequest>* reader,
                                             pb::PutManifestResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "PutManifest"); !auth.ok()) return auth;
  ReleaseMemoryOnReturn release;
  // The first message names the image and digest; every piece's manifest
  // bytes are appended to it.
  pb::PutManifestRequest request_message;
  if (!reader->Read(&request_message)) {
    return ToGrpcStatus(absl::InvalidArgumentError("PutManifest: no message"));
  }
  const pb::PutManifestRequest* request = &request_message;
  if (absl::Status s = CheckImageId(request->image_id()); !s.ok()) return ToGrpcStatus(s);
  absl::StatusOr<ImageReceiver*> receiver = Receiver();
  if (!receiver.ok()) return ToGrpcStatus(receiver.status());
  absl::StatusOr<Digest> expected =
      ParseDigestString("manifest_digest", request->manifest_digest());
  if (!expected.ok()) return ToGrpcStatus(expected.status());
  ManifestReservation reservation(this);
  std::string* manifest = request_message.mutable_manifest();
  if (absl::Status s = reservation.Grow(manifest->size()); !s.ok()) return ToGrpcStatus(s);
  for (pb::PutManifestRequest piece; reader->Read(&piece);) {
    if ((!piece.image_id().empty() && piece.image_id() != request->image_id()) ||
        (!piece.manifest_digest().empty() &&
         piece.manifest_digest() != request->manifest_digest())) {
      return ToGrpcStatus(absl::InvalidArgumentError(
          "PutManifest: a later message names another image_id or manifest_digest"));
    }
    if (absl::Status s = reservation.Grow(piece.manifest().size()); !s.ok()) {
      return ToGrpcStatus(s);
    }
    manifest->append(piece.manifest());
  }
  if (context->IsCancelled()) {
    return ToGrpcStatus(absl::CancelledError("the sender cancelled PutManifest"));
  }
  absl::StatusOr<ManifestSummary> summary =
      (*receiver)->Commit(request->image_id(), request->manifest(), *expected);
  if (!summary.ok()) {
    common::LogOp(request->image_id(), "received manifest refused: %s",
                  summary.status().ToString());
    return ToGrpcStatus(summary.status());
  }
  common::LogOp(request->image_id(), "received image committed: %s",
                request->manifest_digest());
  absl::StatusOr<ImageStore*> store = Store();
  if (!store.ok()) return ToGrpcStatus(store.status());
  absl::StatusOr<pb::ImageManifestSummary> result = Summarize(**store, request->image_id());
  if (absl::IsNotFound(result.status())) {
    // Only a DeleteImage since the commit removes it; the sender must not
    // count the image as copied.
    return ToGrpcStatus(absl::AbortedError(absl::StrCat(
        "image ", request->image_id(), " was committed and then deleted by DeleteImage")));
  }
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response->mutable_summary() = *std::move(result);
  return grpc::Status::OK;
}

absl::StatusOr<pb::NodeStatus> StorageNodeService::Status() const {
  ASSIGN_OR_RETURN(ImageStore * image_store, Store());
  ASSIGN_OR_RETURN(StoreStatus store, image_store->Status());
  pb::NodeStatus out;
  out.set_node_id(node_id_);
  out.set_capacity_bytes(store.capacity_bytes);
  out.set_free_bytes(store.free_bytes);
  out.set_image_count(store.image_count);
  out.set_chunk_count(store.chunk_count);
  out.set_stored_bytes(store.stored_bytes);
  out.set_logical_bytes(store.logical_bytes);
  out.set_dedup_ratio(store.dedup_ratio);
  out.set_version("0.1.0");
  SetTimestamp(start_time_, out.mutable_start_time());
  absl::MutexLock lock(&mu_);
  for (const auto& [id, job] : jobs_) {
    pb::NodeJob* j = out.add_jobs();
    j->set_kind(job.kind);
    j->set_image_id(job.image_id);
    SetTimestamp(job.start, j->mutable_start_time());
    j->set_bytes_done(job.bytes_done);
    j->set_bytes_total(job.bytes_total);
  }
  return out;
}

grpc::Status StorageNodeService::GetNodeStatus(grpc::ServerContext* context,
                                               const pb::GetNodeStatusRequest* request,
                                               pb::GetNodeStatusResponse* response) {
  if (grpc::Status auth = verifier_.Check(*context, "GetNodeStatus"); !auth.ok()) return auth;
  absl::StatusOr<pb::NodeStatus> status = Status();
  if (!status.ok()) return ToGrpcStatus(status.status());
  *response->mutable_status() = *std::move(status);
  return grpc::Status::OK;
}

}  // namespace storaged
