// The StorageNode service against hostile or broken callers: malformed image
// ids, frames that lie about their size or carry padding, streams that fail
// their checks, verification of heavily damaged images, a second garbage
// collection while one runs. The service runs in process on a loopback port.
#include <zstd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "storaged/digest.h"
#include "storaged/filesystem_fault.h"
#include "storaged/image_store.h"
#include "storaged/testing/service_node.h"

namespace storaged {
namespace {

namespace pb = imagetemplates::storagenode::v1;
namespace stdfs = std::filesystem;

using testing::ChunkData;
using testing::kChunk;
constexpr auto Options = testing::SmallStoreOptions;

// One PutChunks stream of `requests`; its status.
grpc::Status PutChunks(testing::ServiceNode& node, const std::vector<pb::PutChunksRequest>& requests,
                       pb::PutChunksResponse* response = nullptr) {
  grpc::ClientContext context;
  pb::PutChunksResponse ignored;
  auto writer = node.stub->PutChunks(&context, response != nullptr ? response : &ignored);
  for (const pb::PutChunksRequest& r : requests) {
    if (!writer->Write(r)) break;
  }
  writer->WritesDone();
  return writer->Finish();
}

// A frame of whole chunks, sent raw.
pb::PutChunksRequest RawFrame(const std::string& image_id, const std::vector<std::string>& chunks) {
  pb::PutChunksRequest r;
  r.set_image_id(image_id);
  r.set_encoding(pb::CHUNK_ENCODING_RAW);
  for (const std::string& c : chunks) {
    pb::FrameChunk* fc = r.add_frame_chunks();
    fc->set_chunk_digest(std::string(Sha256(c).AsBytes()));
    fc->set_offset(r.data().size());
    fc->set_length(c.size());
    r.mutable_data()->append(c);
  }
  r.set_plain_size(r.data().size());
  return r;
}

uint64_t Collect(testing::ServiceNode& node) {
  grpc::ClientContext context;
  pb::CollectGarbageRequest request;
  pb::CollectGarbageResponse response;
  grpc::Status s = node.stub->CollectGarbage(&context, request, &response);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return response.chunks_removed();
}

TEST(StorageNodeEdgesTest, MalformedImageIdsAreRefusedBeforeAnythingUsesThem) {
  testing::ServiceNode node("ids", Options());
  const std::string huge(1 << 20, 'a');
  for (const std::string& id : {std::string("../x"), std::string("a\nE forged op=admin"), huge}) {
    SCOPED_TRACE(id.substr(0, 20));
    grpc::Status put = PutChunks(node, {RawFrame(id, {ChunkData(1)})});
    EXPECT_EQ(put.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << put.error_message();
    EXPECT_LT(put.error_message().size(), 400u);  // the id is cut short, not echoed whole
    EXPECT_FALSE(absl::StrContains(put.error_message(), "\n")) << put.error_message();

    grpc::ClientContext manifest_context;
    pb::PutManifestResponse manifest_response;
    auto manifest_writer = node.stub->PutManifest(&manifest_context, &manifest_response);
    pb::PutManifestRequest manifest;
    manifest.set_image_id(id);
    manifest.set_manifest_digest(absl::StrCat("sha256:", std::string(64, '0')));
    manifest_writer->Write(manifest);
    manifest_writer->WritesDone();
    EXPECT_EQ(manifest_writer->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

    grpc::ClientContext send_context;
    pb::SendImageRequest send;
    send.set_image_id(id);
    send.set_peer_address("127.0.0.1:1");
    auto sent = node.stub->SendImage(&send_context, send);
    pb::SendImageProgress progress;
    while (sent->Read(&progress)) {
    }
    EXPECT_EQ(sent->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);

    // This node cannot open volumes (UNIMPLEMENTED): INVALID_ARGUMENT shows
    // the id is checked before the source is logged in to.
    grpc::ClientContext capture_context;
    pb::CaptureVolumeRequest capture;
    capture.set_image_id(id);
    capture.set_source_url("iscsi://127.0.0.1/iqn.2024-01.test:none/0");
    auto captured = node.stub->CaptureVolume(&capture_context, capture);
    pb::CaptureVolumeProgress capture_progress;
    while (captured->Read(&capture_progress)) {
    }
    EXPECT_EQ(captured->Finish().error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  // Nothing of them is left in the node's status (which every heartbeat sends).
  grpc::ClientContext status_context;
  pb::GetNodeStatusResponse status;
  ASSERT_TRUE(node.stub->GetNodeStatus(&status_context, {}, &status).ok());
  EXPECT_LT(status.ByteSizeLong(), 4096u);
}

TEST(StorageNodeEdgesTest, ManifestsInFlightShareOneMemoryBudget) {
  testing::ServiceNode node("manifest-budget", Options());
  node.service->set_max_manifest_bytes(1000);
  auto first_message = [](const std::string& id, size_t bytes) {
    pb::PutManifestRequest m;
    m.set_image_id(id);
    m.set_manifest(std::string(bytes, 'm'));
    m.set_manifest_digest(absl::StrCat("sha256:", Sha256(m.manifest()).ToHex()));
    return m;
  };
  // The first call holds 600 bytes while its sender has not finished.
  grpc::ClientContext holding_context;
  pb::PutManifestResponse holding_response;
  auto holding = node.stub->PutManifest(&holding_context, &holding_response);
  ASSERT_TRUE(holding->Write(first_message("img-a", 600)));
  for (int i = 0; i < 1000 && node.service->manifest_bytes_held() != 600; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_EQ(node.service->manifest_bytes_held(), 600u);

  auto put = [&](size_t bytes) {
    grpc::ClientContext context;
    pb::PutManifestResponse response;
    auto writer = node.stub->PutManifest(&context, &response);
    writer->Write(first_message("img-b", bytes));
    writer->WritesDone();
    return writer->Finish();
  };
  // 400 more fit the budget (the call then fails as DATA_LOSS: the bytes
  // are no manifest); 401 do not, and say why.
  grpc::Status fits = put(400);
  EXPECT_EQ(fits.error_code(), grpc::StatusCode::DATA_LOSS) << fits.error_message();
  grpc::Status refused = put(401);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::UNAVAILABLE) << refused.error_message();
  EXPECT_TRUE(absl::StrContains(refused.error_message(), "hold 600 of the 1000 bytes"))
      << refused.error_message();
  // A single manifest over the limit is refused as too large, not busy.
  EXPECT_EQ(put(1001).error_code(), grpc::StatusCode::INVALID_ARGUMENT);

  holding->WritesDone();
  EXPECT_FALSE(holding->Finish().ok());
  EXPECT_EQ(node.service->manifest_bytes_held(), 0u);
  grpc::Status after = put(1000);
  EXPECT_EQ(after.error_code(), grpc::StatusCode::DATA_LOSS) << after.error_message();
}

TEST(StorageNodeEdgesTest, AFrameNamingMoreChunksThanItCanHoldIsRefusedUpFront) {
  testing::ServiceNode node("shape", Options());
  pb::PutChunksRequest r;
  r.set_image_id("victim");
  r.set_encoding(pb::CHUNK_ENCODING_RAW);
  r.set_plain_size(16);
  r.set_data(std::string(16, 'x'));
  for (int i = 0; i < 200000; ++i) {
    pb::FrameChunk* c = r.add_frame_chunks();
    std::string digest(32, '\0');
    std::memcpy(digest.data(), &i, sizeof i);
    c->set_chunk_digest(digest);
    c->set_length(16);
  }
  grpc::Status s = PutChunks(node, {r});
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "holds at most 1 chunks")) << s.error_message();
}

// A stream that fails its checks ends the image's receive: the chunks it
// (and the FindMissingChunks before it) pinned are garbage again at once,
// not after the 15-minute idle timeout.
TEST(StorageNodeEdgesTest, AStreamThatFailsItsChecksReleasesTheReceivesPins) {
  testing::ServiceNode node("pins", Options());
  std::vector<std::string> chunks;
  for (int i = 0; i < 8; ++i) chunks.push_back(ChunkData(100 + i));
  grpc::ClientContext find_context;
  pb::FindMissingChunksRequest find;
  find.set_image_id("img");
  for (const std::string& c : chunks) find.add_chunk_digests(std::string(Sha256(c).AsBytes()));
  pb::FindMissingChunksResponse missing;
  ASSERT_TRUE(node.stub->FindMissingChunks(&find_context, find, &missing).ok());
  ASSERT_EQ(missing.missing_chunk_digests_size(), 8);
  grpc::Status put = PutChunks(node, {RawFrame("img", chunks)});
  ASSERT_TRUE(put.ok()) << put.error_message();
  EXPECT_EQ(Collect(node), 0u) << "the receive pins them";

  pb::PutChunksRequest lie = RawFrame("img", {ChunkData(200)});
  lie.mutable_frame_chunks(0)->set_chunk_digest(std::string(Sha256(ChunkData(201)).AsBytes()));
  EXPECT_EQ(PutChunks(node, {lie}).error_code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(Collect(node), 8u) << "the failed stream ended the receive";
}

std::string Zstd(const std::string& plain) {
  std::string out(ZSTD_compressBound(plain.size()), '\0');
  size_t n = ZSTD_compress(out.data(), out.size(), plain.data(), plain.size(), 3);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}

// A skippable frame (magic 0x184D2A50, 4-byte little-endian size) of `n` bytes.
std::string Skippable(uint32_t n) {
  std::string out = {'\x50', '\x2a', '\x4d', '\x18'};
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + std::string(n, 'p');
}

// zstd payloads are stored as they arrive, so padding would be read, hashed
// and forwarded with the chunk for ever: exactly one frame, nothing around it.
TEST(StorageNodeEdgesTest, ZstdPayloadsMustBeOneFrameWithNothingAroundIt) {
  testing::ServiceNode node("zstd", Options());
  const std::string chunk = ChunkData(7);
  pb::PutChunksRequest r = RawFrame("", {chunk});
  r.set_encoding(pb::CHUNK_ENCODING_ZSTD);
  const std::string frame = Zstd(chunk);
  for (const std::string& payload :
       {Skippable(1 << 20) + frame, frame + Skippable(16), frame + frame, frame + "x",
        frame.substr(0, frame.size() - 1)}) {
    r.set_data(payload);
    grpc::Status s = PutChunks(node, {r});
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DATA_LOSS) << s.error_message();
  }
  EXPECT_EQ(node.store->Status()->stored_bytes, 0u);
  r.set_data(frame);
  pb::PutChunksResponse response;
  grpc::Status s = PutChunks(node, {r}, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(response.chunks_stored(), 1u);
  EXPECT_EQ(response.bytes_stored(), frame.size());
}

// An image naming one chunk thousands of times reports it once, with counts
// (the answer must fit in a message however large the image).
TEST(StorageNodeEdgesTest, VerifyListsEachMissingChunkOnceAndCountsThem) {
  testing::ServiceNode node("verify", Options());
  auto writer = node.store->BeginImage("img", 3000ull * kChunk, 512);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (uint64_t i = 0; i < 3000; ++i) {
    ASSERT_TRUE((*writer)->AddChunk(i, ChunkData(i % 3)).ok());
  }
  ASSERT_TRUE((*writer)->Commit().ok());
  for (const auto& entry : stdfs::directory_iterator(node.dir + "/packs")) {
    stdfs::remove(entry.path());
  }
  grpc::ClientContext context;
  pb::VerifyImageRequest request;
  request.set_image_id("img");
  auto reader = node.stub->VerifyImage(&context, request);
  pb::VerifyImageProgress progress, last;
  while (reader->Read(&progress)) last = progress;
  grpc::Status s = reader->Finish();
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_FALSE(last.result().ok());
  EXPECT_EQ(last.result().missing_chunk_count(), 3u);
  EXPECT_EQ(last.result().missing_chunk_digests_size(), 3);
  EXPECT_EQ(last.result().corrupt_chunk_count(), 0u);
  EXPECT_EQ(last.chunks_checked(), 3000u);
}

TEST(StorageNodeEdgesTest, VerifyStopsWhenCancelled) {
  testing::ServiceNode node("verify_cancel", Options());
  auto writer = node.store->BeginImage("img", 64ull * kChunk, 512);
  ASSERT_TRUE(writer.ok());
  for (uint64_t i = 0; i < 64; ++i) ASSERT_TRUE((*writer)->AddChunk(i, ChunkData(i)).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  std::atomic<bool> cancelled{true};
  auto report = node.store->VerifyImage("img", &cancelled);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kCancelled) << report.status();
  cancelled = false;
  report = node.store->VerifyImage("img", &cancelled);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->chunks_checked, 64u);
}

// A second collection while one runs is refused, not queued behind it.
TEST(StorageNodeEdgesTest, ASecondCollectionWhileOneRunsIsAborted) {
  FaultInjectingFilesystem fs(PosixFilesystem());
  ImageStoreOptions options = Options();
  options.filesystem = &fs;
  testing::ServiceNode node("gc", options);
  auto writer = node.store->BeginImage("img", 4ull * kChunk, 512);
  ASSERT_TRUE(writer.ok());
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE((*writer)->AddChunk(i, ChunkData(i)).ok());
  ASSERT_TRUE((*writer)->Commit().ok());

  fs.HoldOpensForRead(".manifest");  // the first collection stops while marking
  std::thread first([&] { EXPECT_EQ(Collect(node), 0u); });
  fs.WaitForHeldOpen();
  grpc::ClientContext context;
  pb::CollectGarbageRequest request;
  pb::CollectGarbageResponse response;
  grpc::Status second = node.stub->CollectGarbage(&context, request, &response);
  EXPECT_EQ(second.error_code(), grpc::StatusCode::ABORTED) << second.error_message();
  fs.ReleaseOpens();
  first.join();
  EXPECT_EQ(Collect(node), 0u);  // and the next one runs
}

}  // namespace
}  // namespace storaged
