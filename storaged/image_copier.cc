#include "storaged/image_copier.h"

#include <algorithm>
#include <chrono>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/grpc_cancel_propagator.h"
#include "common/grpc_status.h"
#include "common/internal_token.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "storaged/internal/progress_throttle.h"

namespace storaged {

namespace pb = imagetemplates::storagenode::v1;

namespace {

constexpr size_t kFindBatch = 4096;

void SetDeadline(grpc::ClientContext* context, absl::Duration timeout) {
  context->set_deadline(std::chrono::system_clock::now() +
                        std::chrono::microseconds(absl::ToInt64Microseconds(timeout)));
}

// The peer's error, saying it came from the peer.
absl::Status FromPeer(const grpc::Status& status, absl::string_view call) {
  absl::Status s = common::FromGrpcStatus(status);
  if (s.ok()) return s;
  return absl::Status(s.code(), absl::StrCat("peer ", call, ": ", s.message()));
}

std::string DigestString(const Digest& d) { return absl::StrCat("sha256:", d.ToHex()); }

bool Cancelled(const SendOptions& options) {
  return options.cancelled != nullptr && options.cancelled->load();
}

}  // namespace

absl::StatusOr<SendProgress> SendImage(ImageStore& store, const std::string& image_id,
                                       pb::StorageNode::StubInterface& peer,
                                       const SendOptions& options) {
  // The reader keeps the image's chunks here while they are sent.
  ASSIGN_OR_RETURN(std::unique_ptr<ImageReader> reader, store.OpenImage(image_id));
  Digest digest;
  ASSIGN_OR_RETURN(std::string encoded, store.ReadEncodedManifest(image_id, &digest));
  if (digest != reader->manifest_digest()) {
    return absl::AbortedError(
        absl::StrCat("image ", image_id, " changed while it was being sent; retry"));
  }
  std::vector<Digest> unique;
  {
    absl::flat_hash_set<Digest, DigestHash> seen;
    reader->manifest().chunks.ForEachData([&](uint64_t, const Digest& d) {
      if (seen.insert(d).second) unique.push_back(d);
    });
  }
  SendProgress progress;
  progress.chunks_total = unique.size();
  internal::ProgressThrottle<SendProgress> throttle(
      options.on_progress, options.progress_interval, absl::InfinitePast());
  auto report = [&](bool final) { throttle.Report(progress, final); };

  {
    grpc::ClientContext context;
    SetDeadline(&context, options.call_timeout);
    common::GrpcCancelPropagator cancel(&context, options.cancelled);
    pb::GetImageRequest request;
    request.set_image_id(image_id);
    pb::GetImageResponse response;
    grpc::Status status = peer.GetImage(&context, request, &response);
    if (status.ok()) {
      if (response.summary().manifest_digest() != DigestString(digest)) {
        return absl::AlreadyExistsError(absl::StrCat(
            "the peer holds image ", image_id, " with digest ",
            response.summary().manifest_digest(), ", not ", DigestString(digest)));
      }
      progress.chunks_skipped = unique.size();
      progress.already_present = true;
      progress.manifest_digest = DigestString(digest);
      report(true);
      return progress;
    }
    if (status.error_code() != grpc::StatusCode::NOT_FOUND) {
      if (Cancelled(options)) return absl::CancelledError("send cancelled");
      return FromPeer(status, "GetImage");
    }
  }

  std::vector<Digest> missing;
  for (size_t i = 0; i < unique.size(); i += kFindBatch) {
    if (Cancelled(options)) return absl::CancelledError("send cancelled");
    grpc::ClientContext context;
    SetDeadline(&context, options.call_timeout);
    pb::FindMissingChunksRequest request;
    request.set_image_id(image_id);
    for (size_t k = i; k < std::min(unique.size(), i + kFindBatch); ++k) {
      request.add_chunk_digests(std::string(unique[k].AsBytes()));
    }
    pb::FindMissingChunksResponse response;
    RETURN_IF_ERROR(
        FromPeer(peer.FindMissingChunks(&context, request, &response), "FindMissingChunks"));
    for (const std::string& d : response.missing_chunk_digests()) {
      if (d.size() != 32) return absl::InternalError("peer FindMissingChunks: bad digest");
      missing.push_back(Digest::FromBytes(d.data()));
    }
  }
  progress.chunks_skipped = unique.size() - missing.size();
  report(false);

  if (!missing.empty()) {
    grpc::ClientContext context;
    common::GrpcCancelPropagator cancel(&context, options.cancelled);
    pb::PutChunksResponse response;
    std::unique_ptr<grpc::ClientWriterInterface<pb::PutChunksRequest>> writer =
        peer.PutChunks(&context, &response);
    const absl::Status closed = absl::AbortedError("the peer closed the stream");
    bool first = true;
    absl::Status exported = store.ExportChunks(
        missing,
        [&](TransferFrame frame) -> absl::Status {
          pb::PutChunksRequest request;
          if (first) request.set_image_id(image_id);
          first = false;
          request.set_encoding(frame.zstd ? pb::CHUNK_ENCODING_ZSTD : pb::CHUNK_ENCODING_RAW);
          request.set_plain_size(frame.plain_size);
          for (const TransferFrame::Chunk& c : frame.chunks) {
            pb::FrameChunk* out = request.add_frame_chunks();
            out->set_chunk_digest(std::string(c.digest.AsBytes()));
            out->set_offset(c.offset);
            out->set_length(c.length);
          }
          const uint64_t bytes = frame.data.size();
          ++(frame.forwarded ? progress.frames_forwarded : progress.frames_built);
          *request.mutable_data() = std::move(frame.data);
          if (!writer->Write(request)) return closed;
          progress.chunks_sent += frame.chunks.size();
          progress.bytes_sent += bytes;
          report(false);
          return absl::OkStatus();
        },
        options.cancelled);
    if (!exported.ok() && exported != closed) {
      // Ours failed (a corrupt local chunk, cancel): the peer gets no image;
      // it keeps the frames it has checked, for a later attempt.
      context.TryCancel();
      writer->Finish();
      if (Cancelled(options)) return absl::CancelledError("send cancelled");
      return exported;
    }
    if (exported.ok()) writer->WritesDone();
    absl::Status finished = FromPeer(writer->Finish(), "PutChunks");
    if (!finished.ok()) {
      if (Cancelled(options)) return absl::CancelledError("send cancelled");
      return finished;
    }
    if (!exported.ok()) return absl::InternalError("the peer ended PutChunks early with OK");
  }

  if (Cancelled(options)) return absl::CancelledError("send cancelled");
  grpc::ClientContext context;
  // The peer decodes, checks and durably writes the whole manifest: the
  // deadline grows by a second per MB of it (1 GiB at most).
  SetDeadline(&context, options.call_timeout + absl::Seconds(encoded.size() / 1000000));
  common::GrpcCancelPropagator cancel(&context, options.cancelled);
  pb::PutManifestResponse response;
  {
    std::unique_ptr<grpc::ClientWriterInterface<pb::PutManifestRequest>> writer =
        peer.PutManifest(&context, &response);
    const size_t piece = std::max<size_t>(1, options.manifest_piece_bytes);
    for (size_t offset = 0; offset == 0 || offset < encoded.size(); offset += piece) {
      pb::PutManifestRequest request;
      if (offset == 0) {
        request.set_image_id(image_id);
        request.set_manifest_digest(DigestString(digest));
      }
      request.set_manifest(encoded.substr(offset, piece));
      if (!writer->Write(request)) break;  // the peer ended the call: Finish says why
    }
    writer->WritesDone();
    RETURN_IF_ERROR(FromPeer(writer->Finish(), "PutManifest"));
  }
  if (response.summary().manifest_digest() != DigestString(digest)) {
    return absl::DataLossError(absl::StrCat("the peer committed image ", image_id,
                                            " with digest ",
                                            response.summary().manifest_digest()));
  }
  progress.manifest_digest = DigestString(digest);
  report(true);
  return progress;
}

std::unique_ptr<pb::StorageNode::StubInterface> NewPeerStub(const std::string& address,
                                                           const std::string& internal_token) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(64 << 20);
  args.SetMaxSendMessageSize(64 << 20);
  return pb::StorageNode::NewStub(common::CreateInternalChannel(address, internal_token, args));
}

}  // namespace storaged
