// Copying images between two stores through the real StorageNode service
// over loopback gRPC: only missing chunks cross, stored frames are forwarded
// as they are, a corrupt or lying sender commits nothing, cancel, re-runs,
// and garbage collection on the receiver during a copy; DeleteImage during a
// receive, and racing with the commit.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <random>
#include <thread>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/barrier.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "storaged/digest.h"
#include "storaged/image_copier.h"
#include "storaged/image_receiver.h"
#include "storaged/image_store.h"
#include "storaged/manifest.h"
#include "storaged/storage_node_service.h"
#include "storaged/testing/service_node.h"

namespace storaged {
namespace {

namespace pb = imagetemplates::storagenode::v1;
namespace stdfs = std::filesystem;

using testing::ChunkData;
using testing::kChunk;
constexpr auto Options = testing::SmallStoreOptions;

// A volume as chunk seeds; 0 is an all-zero chunk.
using Seeds = std::vector<uint64_t>;

// One node: a store in its own directory and the real service on a port.
struct Node : testing::ServiceNode {
  explicit Node(const std::string& name) : ServiceNode(name, Options()) {}

  ManifestSummary Capture(const std::string& id, const Seeds& seeds) {
    auto w = store->BeginImage(id, seeds.size() * kChunk, 512);
    EXPECT_TRUE(w.ok()) << w.status();
    for (size_t i = 0; i < seeds.size(); ++i) {
      std::string data = seeds[i] == 0 ? std::string(kChunk, '\0') : ChunkData(seeds[i]);
      EXPECT_TRUE((*w)->AddChunk(i, data).ok());
    }
    auto summary = (*w)->Commit();
    EXPECT_TRUE(summary.ok()) << summary.status();
    return *summary;
  }

  // The image's chunks as bytes, checked against their digests.
  std::string Read(const std::string& id) {
    auto reader = store->OpenImage(id);
    EXPECT_TRUE(reader.ok()) << reader.status();
    if (!reader.ok()) return "";
    std::string out;
    for (uint64_t i = 0; i < (*reader)->manifest().ChunkCount(); ++i) {
      auto chunk = (*reader)->ReadChunk(i);
      EXPECT_TRUE(chunk.ok()) << chunk.status();
      out += chunk->empty() ? std::string(kChunk, '\0') : *chunk;
    }
    return out;
  }

  std::string Digest(const std::string& id) {
    auto reader = store->OpenImage(id);
    return reader.ok() ? absl::StrCat("sha256:", (*reader)->manifest_digest().ToHex()) : "";
  }

};

// PutManifest of `encoded` as image `id` on `to`, with `digest_text`
// ("sha256:HEX") as the expected digest, in one message; `response` may be
// null.
grpc::Status PutManifest(Node& to, const std::string& id, const std::string& encoded,
                         const std::string& digest_text,
                         pb::PutManifestResponse* response = nullptr) {
  grpc::ClientContext context;
  pb::PutManifestResponse ignored;
  auto writer = to.stub->PutManifest(&context, response != nullptr ? response : &ignored);
  pb::PutManifestRequest request;
  request.set_image_id(id);
  request.set_manifest(encoded);
  request.set_manifest_digest(digest_text);
  writer->Write(request);
  writer->WritesDone();
  return writer->Finish();
}

// PutChunks of an image's chunks as the copier sends them; `response` may be
// null.
grpc::Status PutChunks(Node& from, Node& to, const std::string& id,
                       const std::vector<Digest>& digests,
                       pb::PutChunksResponse* response = nullptr) {
  grpc::ClientContext context;
  pb::PutChunksResponse ignored;
  auto writer = to.stub->PutChunks(&context, response != nullptr ? response : &ignored);
  bool first = true;
  absl::Status exported = from.store->ExportChunks(
      digests,
      [&](TransferFrame frame) {
        pb::PutChunksRequest request;
        if (first) request.set_image_id(id);
        first = false;
        request.set_encoding(frame.zstd ? pb::CHUNK_ENCODING_ZSTD : pb::CHUNK_ENCODING_RAW);
        request.set_plain_size(frame.plain_size);
        request.set_data(frame.data);
        for (const auto& c : frame.chunks) {
          pb::FrameChunk* out = request.add_frame_chunks();
          out->set_chunk_digest(std::string(c.digest.AsBytes()));
          out->set_offset(c.offset);
          out->set_length(c.length);
        }
        writer->Write(request);  // false once the peer ended the stream
        return absl::OkStatus();
      },
      nullptr);
  EXPECT_TRUE(exported.ok()) << exported;
  writer->WritesDone();
  return writer->Finish();
}

// FindMissingChunks for `digests` of image `id` on `to`; `*missing` (may be
// null) is how many it lists.
grpc::Status FindMissing(Node& to, const std::string& id,
                         const std::vector<Digest>& digests, int* missing = nullptr) {
  grpc::ClientContext context;
  pb::FindMissingChunksRequest request;
  request.set_image_id(id);
  for (const Digest& d : digests) request.add_chunk_digests(std::string(d.AsBytes()));
  pb::FindMissingChunksResponse response;
  grpc::Status status = to.stub->FindMissingChunks(&context, request, &response);
  if (missing != nullptr) *missing = response.missing_chunk_digests_size();
  return status;
}

// DeleteImage of `id` on `on` through its gRPC API.
grpc::Status DeleteImage(Node& on, const std::string& id) {
  grpc::ClientContext context;
  pb::DeleteImageRequest request;
  request.set_image_id(id);
  pb::DeleteImageResponse response;
  return on.stub->DeleteImage(&context, request, &response);
}

// SendImage on `from` through its gRPC API; the summary or the status.
absl::StatusOr<pb::SendImageSummary> Send(Node& from, Node& to, const std::string& id,
                                          int* progress_messages = nullptr) {
  grpc::ClientContext context;
  pb::SendImageRequest request;
  request.set_image_id(id);
  request.set_peer_address(to.address);
  auto reader = from.stub->SendImage(&context, request);
  pb::SendImageProgress progress;
  pb::SendImageSummary summary;
  int messages = 0;
  while (reader->Read(&progress)) {
    ++messages;
    if (progress.has_summary()) summary = progress.summary();
  }
  if (progress_messages != nullptr) *progress_messages = messages;
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                        status.error_message());
  }
  return summary;
}

Seeds Range(uint64_t first, int n) {
  Seeds s;
  for (int i = 0; i < n; ++i) s.push_back(first + i);
  return s;
}

TEST(ImageCopyTest, SendsOnlyMissingChunksForwardingStoredFrames) {
  Node src("src"), dst("dst");
  // disk1: 256 distinct chunks and 32 zero chunks. disk2: disk1 with 40
  // chunks rewritten (a "7% of files changed" twin).
  Seeds disk1 = Range(1000, 256);
  for (int i = 0; i < 32; ++i) disk1.push_back(0);
  Seeds disk2 = disk1;
  for (int i = 0; i < 40; ++i) disk2[3 + i * 6] = 5000 + i;
  src.Capture("disk1", disk1);
  ManifestSummary s2 = src.Capture("disk2", disk2);
  ASSERT_EQ(s2.new_chunks, 40u);

  auto first = Send(src, dst, "disk1");
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->chunks_sent(), 256u);
  EXPECT_EQ(first->chunks_skipped(), 0u);
  EXPECT_EQ(first->frames_built(), 0u);  // every frame of disk1 was wanted whole
  EXPECT_EQ(first->frames_forwarded(), 16u);
  EXPECT_EQ(first->manifest_digest(), src.Digest("disk1"));
  EXPECT_EQ(dst.Digest("disk1"), src.Digest("disk1"));
  EXPECT_EQ(dst.Read("disk1"), src.Read("disk1"));

  uint64_t stored_before = dst.store->Status()->stored_bytes;
  auto second = Send(src, dst, "disk2");
  ASSERT_TRUE(second.ok()) << second.status();
  // Only the 40 rewritten chunks cross, in disk2's own frames, as stored.
  EXPECT_EQ(second->chunks_sent(), 40u);
  EXPECT_EQ(second->chunks_skipped(), 216u);
  EXPECT_EQ(second->frames_built(), 0u);
  EXPECT_EQ(second->bytes_sent(), s2.new_stored_bytes);
  EXPECT_LT(second->bytes_sent(), first->bytes_sent() / 4);
  uint64_t stored_after = dst.store->Status()->stored_bytes;
  EXPECT_GE(stored_after - stored_before, second->bytes_sent());
  EXPECT_LT(stored_after - stored_before, second->bytes_sent() + (64 << 10));  // + pack index
  EXPECT_EQ(dst.Digest("disk2"), src.Digest("disk2"));
  EXPECT_EQ(dst.Read("disk2"), src.Read("disk2"));
  auto verify = dst.store->VerifyImage("disk2");
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(verify->ok());

  // Again: the peer has it; nothing is sent.
  auto again = Send(src, dst, "disk2");
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->already_present());
  EXPECT_EQ(again->chunks_sent(), 0u);
  EXPECT_EQ(again->bytes_sent(), 0u);
  EXPECT_EQ(dst.store->Status()->stored_bytes, stored_after);
  // The receive ended with the commit: nothing stays pinned.
  EXPECT_EQ(dst.service->Status()->jobs_size(), 0);
}

// Manifests grow 32 bytes per data chunk, past what one message may hold, so
// they travel in pieces; the receiver bounds the whole.
TEST(ImageCopyTest, ManifestsTravelInPiecesUpToTheReceiversLimit) {
  Node src("src_pieces"), dst("dst_pieces");
  src.Capture("img", Range(300, 40));
  Digest digest;
  auto encoded = src.store->ReadEncodedManifest("img", &digest);
  ASSERT_TRUE(encoded.ok());
  ASSERT_GT(encoded->size(), 1000u);

  dst.service->set_max_manifest_bytes(encoded->size() - 1);
  SendOptions options;
  options.manifest_piece_bytes = 100;
  auto refused = SendImage(*src.store, "img", *dst.stub, options);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_NE(refused.status().message().find("over"), absl::string_view::npos) << refused.status();
  EXPECT_TRUE(dst.store->ListImages().empty());

  dst.service->set_max_manifest_bytes(encoded->size());
  auto sent = SendImage(*src.store, "img", *dst.stub, options);
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(dst.Digest("img"), absl::StrCat("sha256:", digest.ToHex()));
  EXPECT_EQ(dst.Read("img"), src.Read("img"));

  // Pieces must agree on what they belong to.
  grpc::ClientContext context;
  pb::PutManifestResponse response;
  auto writer = dst.stub->PutManifest(&context, &response);
  pb::PutManifestRequest piece;
  piece.set_image_id("other");
  piece.set_manifest_digest(absl::StrCat("sha256:", digest.ToHex()));
  piece.set_manifest(encoded->substr(0, 10));
  writer->Write(piece);
  piece.set_image_id("img");
  piece.set_manifest(encoded->substr(10));
  writer->Write(piece);
  writer->WritesDone();
  EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST(ImageCopyTest, PartlyWantedFramesAreRebuilt) {
  Node src("src2"), dst("dst2");
  Seeds image = Range(1, 64);
  src.Capture("img", image);
  // The peer holds every other chunk already, under another image.
  Seeds half;
  for (int i = 0; i < 64; i += 2) half.push_back(image[i]);
  dst.Capture("half", half);
  auto sent = Send(src, dst, "img");
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(sent->chunks_sent(), 32u);
  EXPECT_EQ(sent->chunks_skipped(), 32u);
  EXPECT_EQ(sent->frames_forwarded(), 0u);
  EXPECT_EQ(sent->frames_built(), 2u);  // 32 chunks of 16 KiB in 256 KiB frames
  EXPECT_EQ(dst.Read("img"), src.Read("img"));
  EXPECT_EQ(dst.Digest("img"), src.Digest("img"));
}

TEST(ImageCopyTest, LyingSenderIsDataLossAndNothingIsCommitted) {
  Node dst("dst3");
  const std::string good = ChunkData(7), bad = ChunkData(8);
  const std::string good_digest(Sha256(good).AsBytes());
  const std::string claimed(Sha256(ChunkData(9)).AsBytes());  // sent as `bad`
  int missing = -1;
  ASSERT_TRUE(FindMissing(dst, "lie", {Sha256(good), Sha256(ChunkData(9))}, &missing).ok());
  EXPECT_EQ(missing, 2);
  // One frame: a good chunk, then one whose content is not its digest.
  {
    grpc::ClientContext context;
    pb::PutChunksResponse response;
    auto writer = dst.stub->PutChunks(&context, &response);
    pb::PutChunksRequest request;
    request.set_image_id("lie");
    request.set_encoding(pb::CHUNK_ENCODING_RAW);
    request.set_plain_size(2 * kChunk);
    request.set_data(good + bad);
    for (int i = 0; i < 2; ++i) {
      pb::FrameChunk* c = request.add_frame_chunks();
      c->set_chunk_digest(i == 0 ? good_digest : claimed);
      c->set_offset(i * kChunk);
      c->set_length(kChunk);
    }
    writer->Write(request);
    writer->WritesDone();
    grpc::Status status = writer->Finish();
    EXPECT_EQ(status.error_code(), grpc::StatusCode::DATA_LOSS) << status.error_message();
  }
  // A good single chunk in an earlier message of a stream that then lies:
  // nothing of the stream is kept.
  {
    grpc::ClientContext context;
    pb::PutChunksResponse response;
    auto writer = dst.stub->PutChunks(&context, &response);
    pb::PutChunksRequest ok_chunk;
    ok_chunk.set_image_id("lie");
    ok_chunk.set_encoding(pb::CHUNK_ENCODING_RAW);
    ok_chunk.set_plain_size(kChunk);
    ok_chunk.set_chunk_digest(good_digest);
    ok_chunk.set_data(good);
    writer->Write(ok_chunk);
    pb::PutChunksRequest lie = ok_chunk;
    lie.set_chunk_digest(claimed);
    lie.set_data(bad);
    writer->Write(lie);
    writer->WritesDone();
    EXPECT_EQ(writer->Finish().error_code(), grpc::StatusCode::DATA_LOSS);
    // Undecodable zstd is DATA_LOSS too.
    grpc::ClientContext context2;
    auto writer2 = dst.stub->PutChunks(&context2, &response);
    pb::PutChunksRequest junk = ok_chunk;
    junk.set_encoding(pb::CHUNK_ENCODING_ZSTD);
    junk.set_data("not zstd at all");
    writer2->Write(junk);
    writer2->WritesDone();
    EXPECT_EQ(writer2->Finish().error_code(), grpc::StatusCode::DATA_LOSS);
  }
  EXPECT_EQ(dst.store->MissingChunks({Sha256(good), Sha256(ChunkData(9))}).size(), 2u);
  EXPECT_EQ(dst.store->Status()->stored_bytes, 0u);

  // A manifest naming those chunks: refused while they are missing.
  auto other = ImageStore::Open(std::string(std::getenv("TEST_TMPDIR")) + "/liar", Options());
  ASSERT_TRUE(other.ok());
  auto w = (*other)->BeginImage("lie", 2 * kChunk, 512);
  ASSERT_TRUE((*w)->AddChunk(0, good).ok());
  ASSERT_TRUE((*w)->AddChunk(1, ChunkData(9)).ok());
  ASSERT_TRUE((*w)->Commit().ok());
  Digest digest;
  auto encoded = (*other)->ReadEncodedManifest("lie", &digest);
  ASSERT_TRUE(encoded.ok());
  auto put_manifest = [&](const std::string& bytes, const std::string& digest_text) {
    return PutManifest(dst, "lie", bytes, digest_text).error_code();
  };
  const std::string digest_text = absl::StrCat("sha256:", digest.ToHex());
  EXPECT_EQ(put_manifest(*encoded, digest_text), grpc::StatusCode::FAILED_PRECONDITION);
  std::string altered = *encoded;
  altered[altered.size() / 2] ^= 1;
  EXPECT_EQ(put_manifest(altered, digest_text), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(put_manifest(*encoded, "sha256:" + std::string(64, '0')),
            grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(put_manifest(*encoded, "md5:abc"), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_TRUE(dst.store->ListImages().empty());

  // Bad requests.
  grpc::ClientContext context;
  pb::FindMissingChunksRequest find;
  find.add_chunk_digests("short");
  pb::FindMissingChunksResponse found;
  EXPECT_EQ(dst.stub->FindMissingChunks(&context, find, &found).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  grpc::ClientContext context2;
  pb::SendImageRequest send;
  send.set_image_id("lie");
  send.set_peer_address("no port");
  auto reader = dst.stub->SendImage(&context2, send);
  pb::SendImageProgress p;
  while (reader->Read(&p)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// A peer's manifest is untrusted: one that names a stored chunk at an index
// of another length (a reader would copy 16 KiB into an 8 KiB slot), or has
// another chunk size, a bad block size or a wrong logical size, is refused
// and nothing is committed.
TEST(ImageCopyTest, ManifestsThatDisagreeWithTheirChunksAreRefused) {
  Node dst("dst3b");
  dst.Capture("x", {7});  // the store now holds ChunkData(7), 16 KiB
  const Digest x = Sha256(ChunkData(7));
  auto put = [&](Manifest m) {
    Digest digest;
    std::string encoded = EncodeManifest(m, &digest);
    grpc::Status status =
        PutManifest(dst, m.image_id, encoded, absl::StrCat("sha256:", digest.ToHex()));
    return std::make_pair(status.error_code(), status.error_message());
  };
  auto manifest = [&](uint64_t volume_size, uint32_t chunk_size, uint32_t block_size) {
    Manifest m;
    m.image_id = "bad";
    m.volume_size = volume_size;
    m.block_size = block_size;
    m.chunk_size = chunk_size;
    m.chunks = ChunkTable(ChunkCountFor(volume_size, chunk_size));
    m.chunks.Append(0, x);
    m.logical_bytes = std::min<uint64_t>(volume_size, chunk_size);
    return m;
  };
  // Chunk 0 of an 8 KiB volume is 8 KiB; x is 16 KiB.
  auto [code, message] = put(manifest(8 << 10, kChunk, 512));
  EXPECT_EQ(code, grpc::StatusCode::DATA_LOSS) << message;
  EXPECT_NE(message.find("16384 bytes long, not 8192"), std::string::npos) << message;
  std::tie(code, message) = put(manifest(64 << 10, 2 * kChunk, 512));
  EXPECT_EQ(code, grpc::StatusCode::INVALID_ARGUMENT) << message;
  EXPECT_NE(message.find("chunk size 32768"), std::string::npos) << message;
  std::tie(code, message) = put(manifest(kChunk, kChunk, 768));
  EXPECT_EQ(code, grpc::StatusCode::INVALID_ARGUMENT) << message;
  Manifest lying = manifest(kChunk, kChunk, 512);
  lying.logical_bytes = 1 << 30;
  std::tie(code, message) = put(lying);
  EXPECT_EQ(code, grpc::StatusCode::DATA_LOSS) << message;
  // The same chunk at an index of its own length commits.
  std::tie(code, message) = put(manifest(kChunk, kChunk, 512));
  EXPECT_EQ(code, grpc::StatusCode::OK) << message;
  EXPECT_EQ(dst.Read("bad"), ChunkData(7));
  std::vector<std::string> ids = dst.store->ListImages();
  std::sort(ids.begin(), ids.end());
  EXPECT_EQ(ids, (std::vector<std::string>{"bad", "x"}));
}

TEST(ImageCopyTest, CorruptLocalChunkIsDataLossAndPeerGetsNothing) {
  Node src("src4"), dst("dst4");
  src.Capture("img", Range(100, 64));
  // Flip a byte inside the first frame of the only pack.
  std::string pack;
  for (const auto& e : stdfs::directory_iterator(src.dir + "/packs")) pack = e.path();
  ASSERT_FALSE(pack.empty());
  {
    std::fstream f(pack, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c;
    f.read(&c, 1);
    c ^= 0x40;
    f.seekp(100);
    f.write(&c, 1);
  }
  auto sent = Send(src, dst, "img");
  EXPECT_EQ(sent.status().code(), absl::StatusCode::kDataLoss) << sent.status();
  EXPECT_TRUE(dst.store->ListImages().empty());
  EXPECT_EQ(dst.store->Status()->image_count, 0u);
  // An unknown image is NOT_FOUND, a dead peer UNAVAILABLE.
  EXPECT_EQ(Send(src, dst, "nope").status().code(), absl::StatusCode::kNotFound);
  Node other("src4b");
  other.Capture("img", Range(100, 4));
  Node gone("gone4");
  std::string gone_address = gone.address;
  gone.server->Shutdown(std::chrono::system_clock::now());
  auto stub = NewPeerStub(gone_address);
  SendOptions options;
  options.call_timeout = absl::Seconds(5);
  EXPECT_EQ(SendImage(*other.store, "img", *stub, options).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST(ImageCopyTest, CancelLeavesNoImageKeepsCheckedFramesAndARerunSendsTheRest) {
  Node src("src5"), dst("dst5");
  src.Capture("img", Range(1, 256));  // 16 frames
  std::atomic<bool> cancelled{false};
  int reports = 0;
  SendOptions options;
  options.cancelled = &cancelled;
  options.progress_interval = absl::ZeroDuration();
  // The bytes dst's receive of "img" has read off the stream so far.
  auto received = [&]() -> uint64_t {
    grpc::ClientContext context;
    pb::GetNodeStatusResponse status;
    if (!dst.stub->GetNodeStatus(&context, pb::GetNodeStatusRequest(), &status).ok()) return 0;
    for (const pb::NodeJob& job : status.status().jobs()) {
      if (job.kind() == pb::NODE_JOB_KIND_RECEIVE && job.image_id() == "img") {
        return job.bytes_done();
      }
    }
    return 0;
  };
  options.on_progress = [&](const SendProgress& p) {
    ++reports;
    if (p.chunks_sent < 32 || cancelled) return;  // two frames sent
    // Cancel once the peer has read some of them: a cancel can overtake
    // frames still buffered in gRPC, which the peer then never sees.
    for (absl::Time until = absl::Now() + absl::Seconds(10);
         received() == 0 && absl::Now() < until; absl::SleepFor(absl::Milliseconds(2))) {
    }
    cancelled = true;
  };
  auto sent = SendImage(*src.store, "img", *dst.stub, options);
  EXPECT_EQ(sent.status().code(), absl::StatusCode::kCancelled) << sent.status();
  EXPECT_GE(reports, 3);
  EXPECT_TRUE(dst.store->ListImages().empty());
  // The frames that arrived before the cut passed their checks and were
  // kept; the rerun sends exactly the chunks still missing.
  std::vector<Digest> digests;
  {
    auto reader = src.store->OpenImage("img");
    ASSERT_TRUE(reader.ok()) << reader.status();
    (*reader)->manifest().chunks.ForEachData(
        [&](uint64_t, const Digest& d) { digests.push_back(d); });
  }
  ASSERT_EQ(digests.size(), 256u);
  // The sender's call returns at the cancel; the peer's handler seals after.
  size_t missing = digests.size();
  for (absl::Time until = absl::Now() + absl::Seconds(10);
       missing == digests.size() && absl::Now() < until; absl::SleepFor(absl::Milliseconds(5))) {
    missing = dst.store->MissingChunks(digests).size();
  }
  EXPECT_LT(missing, 256u);
  EXPECT_GT(dst.store->Status()->stored_bytes, 0u);

  cancelled = false;
  options.on_progress = nullptr;
  auto rerun = SendImage(*src.store, "img", *dst.stub, options);
  ASSERT_TRUE(rerun.ok()) << rerun.status();
  EXPECT_EQ(rerun->chunks_sent, missing);
  EXPECT_EQ(dst.Read("img"), src.Read("img"));
}

TEST(ImageCopyTest, ReceiverGarbageCollectionKeepsChunksOfAnImageBeingReceived) {
  Node src("src6"), dst("dst6");
  Seeds image = Range(1, 64);
  src.Capture("img", image);
  // The peer once held half of these chunks; that image is deleted, so they
  // are garbage until the copy names them.
  Seeds half(image.begin(), image.begin() + 32);
  dst.Capture("old", half);
  ASSERT_TRUE(dst.store->DeleteImage("old").ok());

  // Collect right after FindMissingChunks reported them present.
  bool collected = false;
  SendOptions options;
  options.progress_interval = absl::ZeroDuration();
  options.on_progress = [&](const SendProgress& p) {
    if (!collected && p.chunks_skipped > 0 && p.chunks_sent == 0) {
      auto gc = dst.store->CollectGarbage(false);
      EXPECT_TRUE(gc.ok()) << gc.status();
      EXPECT_EQ(gc->chunks_removed, 0u);
      collected = true;
    }
  };
  auto sent = SendImage(*src.store, "img", *dst.stub, options);
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_TRUE(collected);
  EXPECT_EQ(sent->chunks_sent, 32u);
  EXPECT_EQ(dst.Read("img"), src.Read("img"));

  // Received chunks survive a collection between PutChunks and PutManifest.
  src.Capture("img2", Range(500, 40));
  std::vector<Digest> digests;
  for (uint64_t s = 500; s < 540; ++s) digests.push_back(Sha256(ChunkData(s)));
  int missing = -1;
  ASSERT_TRUE(FindMissing(dst, "img2", digests, &missing).ok());
  ASSERT_EQ(missing, 40);
  pb::PutChunksResponse put_response;
  grpc::Status put = PutChunks(src, dst, "img2", digests, &put_response);
  ASSERT_TRUE(put.ok()) << put.error_message();
  EXPECT_EQ(put_response.chunks_stored(), 40u);
  auto gc = dst.store->CollectGarbage(false);
  ASSERT_TRUE(gc.ok());
  EXPECT_EQ(gc->chunks_removed, 0u);
  EXPECT_TRUE(dst.store->MissingChunks(digests).empty());
  Digest digest;
  auto encoded = src.store->ReadEncodedManifest("img2", &digest);
  ASSERT_TRUE(encoded.ok());
  const std::string digest_text = absl::StrCat("sha256:", digest.ToHex());
  pb::PutManifestResponse response;
  grpc::Status status = PutManifest(dst, "img2", *encoded, digest_text, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.summary().manifest_digest(), src.Digest("img2"));
  // Repeating the commit is fine; the image survives later collections.
  EXPECT_TRUE(PutManifest(dst, "img2", *encoded, digest_text).ok());
  ASSERT_TRUE(dst.store->CollectGarbage(false).ok());
  EXPECT_EQ(dst.Read("img2"), src.Read("img2"));
}

// A sender that died: its receive ends after the idle timeout, and the
// chunks it pinned are garbage again.
TEST(ImageCopyTest, IdleReceiveExpires) {
  Node dst("dst7");
  dst.Capture("old", Range(1, 8));
  ASSERT_TRUE(dst.store->DeleteImage("old").ok());
  std::vector<Digest> digests;
  for (uint64_t s = 1; s <= 8; ++s) digests.push_back(Sha256(ChunkData(s)));
  ImageReceiver receiver(dst.store.get(), absl::Milliseconds(50));
  auto missing = receiver.FindMissing("new", digests);
  ASSERT_TRUE(missing.ok());
  EXPECT_TRUE(missing->empty());
  EXPECT_EQ(receiver.pinned_count("new"), 8u);
  EXPECT_EQ(dst.store->CollectGarbage(false)->chunks_removed, 0u);
  absl::SleepFor(absl::Milliseconds(100));
  receiver.ExpireIdle();  // as the service's CollectGarbage does first
  EXPECT_EQ(receiver.pinned_count("new"), 0u);
  EXPECT_EQ(receiver.receive_count(), 0u);
  ASSERT_TRUE(receiver.FindMissing("new", digests).ok());
  ASSERT_TRUE(receiver.Pin("other", {}).ok());
  absl::SleepFor(absl::Milliseconds(100));
  ASSERT_TRUE(receiver.Pin("other", {}).ok());  // any call sweeps idle receives
  EXPECT_EQ(receiver.pinned_count("new"), 0u);
  EXPECT_EQ(receiver.receive_count(), 1u);
  EXPECT_EQ(dst.store->CollectGarbage(false)->chunks_removed, 8u);
  EXPECT_EQ(receiver.FindMissing("../x", digests).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The undo of a cancelled copy deletes the image on the receiver while the
// sender, not yet stopped, is between PutChunks and PutManifest.
TEST(ImageCopyTest, DeleteImageDuringAReceiveRefusesItsManifestAndUnpinsItsChunks) {
  Node src("src8"), dst("dst8");
  src.Capture("img", Range(800, 40));
  std::vector<Digest> digests;
  for (uint64_t s = 800; s < 840; ++s) digests.push_back(Sha256(ChunkData(s)));
  int missing = -1;
  grpc::Status found = FindMissing(dst, "img", digests, &missing);
  ASSERT_TRUE(found.ok()) << found.error_message();
  ASSERT_EQ(missing, 40);
  grpc::Status put = PutChunks(src, dst, "img", digests);
  ASSERT_TRUE(put.ok()) << put.error_message();
  EXPECT_TRUE(dst.store->MissingChunks(digests).empty());
  // Pinned by the receive: a collection keeps them.
  EXPECT_EQ(dst.store->CollectGarbage(false)->chunks_removed, 0u);

  // Only a receive, no committed image: the delete ended it, so OK.
  grpc::Status deleted = DeleteImage(dst, "img");
  EXPECT_TRUE(deleted.ok()) << deleted.error_message();

  Digest digest;
  auto encoded = src.store->ReadEncodedManifest("img", &digest);
  ASSERT_TRUE(encoded.ok());
  grpc::Status committed =
      PutManifest(dst, "img", *encoded, absl::StrCat("sha256:", digest.ToHex()));
  EXPECT_EQ(committed.error_code(), grpc::StatusCode::ABORTED) << committed.error_message();
  EXPECT_NE(committed.error_message().find("receive of image img was cancelled by DeleteImage"),
            std::string::npos)
      << committed.error_message();
  // Nor can the sender start over within the tombstone.
  EXPECT_EQ(FindMissing(dst, "img", digests).error_code(), grpc::StatusCode::ABORTED);
  EXPECT_EQ(PutChunks(src, dst, "img", digests).error_code(), grpc::StatusCode::ABORTED);

  grpc::ClientContext get_context;
  pb::GetImageRequest get;
  get.set_image_id("img");
  pb::GetImageResponse got;
  EXPECT_EQ(dst.stub->GetImage(&get_context, get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(dst.store->ListImages().empty());
  // Nothing left to delete now.
  EXPECT_EQ(DeleteImage(dst, "img").error_code(), grpc::StatusCode::NOT_FOUND);
  // The pins went with the receive: the received chunks are garbage.
  auto gc = dst.store->CollectGarbage(false);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->chunks_removed, 40u);
  EXPECT_EQ(dst.store->MissingChunks(digests).size(), 40u);
  EXPECT_EQ(dst.store->Status()->stored_bytes, 0u);

  // Other ids are unaffected.
  src.Capture("other", Range(800, 40));
  auto sent = SendImage(*src.store, "other", *dst.stub, SendOptions());
  ASSERT_TRUE(sent.ok()) << sent.status();
  EXPECT_EQ(dst.Read("other"), src.Read("other"));
}

// The tombstone ends after its time; then the id can be received again.
TEST(ImageCopyTest, DeleteTombstoneExpires) {
  Node src("src9"), dst("dst9");
  src.Capture("img", Range(900, 4));
  std::vector<Digest> digests;
  for (uint64_t s = 900; s < 904; ++s) digests.push_back(Sha256(ChunkData(s)));
  ImageReceiver receiver(dst.store.get(), absl::Minutes(15), absl::Seconds(1));
  ASSERT_TRUE(receiver.FindMissing("img", digests).ok());
  EXPECT_EQ(receiver.pinned_count("img"), 4u);
  EXPECT_TRUE(receiver.Delete("img").ok());
  EXPECT_EQ(receiver.receive_count(), 0u);
  EXPECT_EQ(receiver.Pin("img", digests).code(), absl::StatusCode::kAborted);
  EXPECT_EQ(receiver.receive_count(), 0u);
  EXPECT_EQ(receiver.Delete("img").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(receiver.Delete("../x").code(), absl::StatusCode::kInvalidArgument);
  absl::SleepFor(absl::Milliseconds(1500));
  ASSERT_TRUE(receiver.FindMissing("img", digests).ok());
  EXPECT_EQ(receiver.pinned_count("img"), 4u);
}

// PutManifest and DeleteImage at the same moment, many times: the delete
// either refuses the commit or deletes the committed image, never returns OK
// with the image left behind.
TEST(ImageCopyTest, DeleteImageRacingWithPutManifestLeavesNoImage) {
  Node src("src10"), dst("dst10");
  const Seeds seeds = Range(1000, 6);
  src.Capture("base", seeds);
  ASSERT_TRUE(SendImage(*src.store, "base", *dst.stub, SendOptions()).ok());
  std::vector<Digest> digests;
  for (uint64_t s : seeds) digests.push_back(Sha256(ChunkData(s)));

  constexpr int kIterations = 150;
  int refused = 0, deleted_after_commit = 0;
  for (int i = 0; i < kIterations; ++i) {
    // A distinct id each time: a delete may leave a tombstone.
    const std::string id = absl::StrCat("race", i);
    src.Capture(id, seeds);
    Digest digest;
    auto encoded = src.store->ReadEncodedManifest(id, &digest);
    ASSERT_TRUE(encoded.ok());
    // Every other one with a receive open, as the copier leaves it; the
    // rest as a sender that skipped FindMissingChunks.
    if (i % 2 == 0) {
      int missing = -1;
      ASSERT_TRUE(FindMissing(dst, id, digests, &missing).ok());
      ASSERT_EQ(missing, 0);
    }
    absl::Barrier* start = new absl::Barrier(2);  // the last to pass deletes it
    grpc::Status commit_status, delete_status;
    std::thread committer([&] {
      if (start->Block()) delete start;
      commit_status = PutManifest(dst, id, *encoded, absl::StrCat("sha256:", digest.ToHex()));
    });
    std::thread deleter([&] {
      if (start->Block()) delete start;
      delete_status = DeleteImage(dst, id);
    });
    committer.join();
    deleter.join();

    grpc::ClientContext get_context;
    pb::GetImageRequest get;
    get.set_image_id(id);
    pb::GetImageResponse got;
    const grpc::Status present = dst.stub->GetImage(&get_context, get, &got);
    ASSERT_TRUE(commit_status.ok() || commit_status.error_code() == grpc::StatusCode::ABORTED)
        << i << ": " << commit_status.error_message();
    if (i % 2 == 0) {
      // A receive or a commit was there to delete.
      ASSERT_TRUE(delete_status.ok()) << i << ": " << delete_status.error_message();
    } else {
      ASSERT_TRUE(delete_status.ok() ||
                  delete_status.error_code() == grpc::StatusCode::NOT_FOUND)
          << i << ": " << delete_status.error_message();
    }
    if (delete_status.ok()) {
      ASSERT_EQ(present.error_code(), grpc::StatusCode::NOT_FOUND)
          << i << ": image left after DeleteImage returned OK (commit: "
          << commit_status.error_message() << ")";
    } else if (present.ok()) {
      // No receive open and the delete came first, finding nothing: it
      // leaves no tombstone, so the commit after it stands.
      ASSERT_EQ(i % 2, 1) << i;
      ASSERT_TRUE(commit_status.ok()) << i;
      ASSERT_TRUE(dst.store->DeleteImage(id).ok()) << i;
    }
    // A refused commit is refused by the delete, never half-done.
    if (!commit_status.ok()) {
      EXPECT_EQ(present.error_code(), grpc::StatusCode::NOT_FOUND) << i;
      ++refused;
    } else if (delete_status.ok()) {
      ++deleted_after_commit;
    }
  }
  std::cerr << "race: " << refused << " commits refused, " << deleted_after_commit
            << " committed then deleted, of " << kIterations << "\n";
  // Only "base" is left, and it reads back intact.
  EXPECT_EQ(dst.store->ListImages(), std::vector<std::string>{"base"});
  EXPECT_EQ(dst.Read("base"), src.Read("base"));
}

}  // namespace
}  // namespace storaged
