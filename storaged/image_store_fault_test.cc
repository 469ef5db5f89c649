// ImageStore under failures that the store must not hide: a pack that fails
// to open once, a pack that cannot be opened at all, a delete racing with a
// capture of the same id.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storaged/digest.h"
#include "storaged/filesystem.h"
#include "storaged/filesystem_fault.h"
#include "storaged/image_store.h"

namespace storaged {
namespace {

constexpr uint32_t kChunk = 16 << 10;

std::string TestDir(const std::string& name) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::filesystem::remove_all(dir);
  return dir;
}

ImageStoreOptions Options(Filesystem* fs) {
  ImageStoreOptions o;
  o.filesystem = fs;
  o.chunk_size = kChunk;
  o.frame_size = 64 << 10;
  o.pack_size = 256 << 10;
  o.max_open_packs = 1;
  return o;
}

// Incompressible, so that 40 chunks span three packs.
std::string ChunkData(int seed) {
  std::mt19937_64 rng(seed);
  std::string s(kChunk, '\0');
  for (uint32_t i = 0; i < kChunk; ++i) s[i] = static_cast<char>(rng());
  return s;
}

// Captures `chunks` distinct data chunks as `id`.
void Capture(ImageStore& store, const std::string& id, int chunks) {
  auto writer = store.BeginImage(id, uint64_t{kChunk} * chunks, 512);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (int i = 0; i < chunks; ++i) {
    ASSERT_TRUE((*writer)->AddChunk(i, ChunkData(i)).ok());
  }
  ASSERT_TRUE((*writer)->Commit().ok());
}

// A read whose pack fails to open once used to read again for its error
// message; that second read succeeded, so ReadChunkTo returned OK without
// ever filling the buffer (a restore then wrote stale bytes).
TEST(ImageStoreFaultTest, ReadChunkToNeverReturnsOkWithAnUnfilledBuffer) {
  const std::string dir = TestDir("read_to");
  FaultInjectingFilesystem fs(PosixFilesystem());
  {
    auto store = ImageStore::Open(dir, Options(&fs));
    ASSERT_TRUE(store.ok()) << store.status();
    Capture(**store, "img", 40);  // several packs
  }
  for (uint64_t index : {0, 17, 39}) {
    SCOPED_TRACE(index);
    // A fresh store has no pack open, wherever the parallel capture put the
    // chunk (two of these chunks may share a pack).
    auto store = ImageStore::Open(dir, Options(&fs));
    ASSERT_TRUE(store.ok()) << store.status();
    auto reader = (*store)->OpenImage("img");
    ASSERT_TRUE(reader.ok()) << reader.status();
    std::string buffer(kChunk, '\xAA');
    const int failed_before = fs.failed_opens();
    fs.FailOpensForRead(".pack", 1, EACCES);
    absl::Status s = (*reader)->ReadChunkTo(index, buffer.data());
    EXPECT_EQ(fs.failed_opens(), failed_before + 1) << "the read opened no pack";
    EXPECT_FALSE(s.ok() && buffer != ChunkData(static_cast<int>(index)))
        << "OK with the buffer left unfilled";
    EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("chunk ", index, " ")))
        << s.message();
    EXPECT_TRUE(absl::StrContains(s.message(), "Permission denied")) << s.message();
    // Once the pack opens, the same call fills the buffer.
    ASSERT_TRUE((*reader)->ReadChunkTo(index, buffer.data()).ok());
    EXPECT_EQ(buffer, ChunkData(static_cast<int>(index)));
  }
}

TEST(ImageStoreFaultTest, ReadChunkViewReturnsItsOwnError) {
  const std::string dir = TestDir("read_view");
  FaultInjectingFilesystem fs(PosixFilesystem());
  {
    auto store = ImageStore::Open(dir, Options(&fs));
    ASSERT_TRUE(store.ok()) << store.status();
    Capture(**store, "img", 40);
  }
  auto store = ImageStore::Open(dir, Options(&fs));
  ASSERT_TRUE(store.ok()) << store.status();
  auto reader = (*store)->OpenImage("img");
  ASSERT_TRUE(reader.ok()) << reader.status();
  absl::string_view data("stale");
  std::shared_ptr<const void> keep;
  fs.FailOpensForRead(".pack", 1, EACCES);
  absl::Status s = (*reader)->ReadChunkView(21, &data, &keep);
  EXPECT_EQ(s.code(), absl::StatusCode::kInternal) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "chunk 21 ")) << s.message();
  ASSERT_TRUE((*reader)->ReadChunkView(21, &data, &keep).ok());
  EXPECT_EQ(data, ChunkData(21));
}

// A cancelled create deletes its image while the capture may still be
// winding down: NOT_FOUND then let the capture commit an orphan afterwards.
TEST(ImageStoreFaultTest, DeleteDuringACaptureOfTheIdIsFailedPrecondition) {
  auto store = ImageStore::Open(TestDir("delete_capture"), Options(nullptr));
  ASSERT_TRUE(store.ok()) << store.status();
  auto writer = (*store)->BeginImage("img", 4 * kChunk, 512);
  ASSERT_TRUE(writer.ok()) << writer.status();
  ASSERT_TRUE((*writer)->AddChunk(0, ChunkData(0)).ok());

  absl::Status deleted = (*store)->DeleteImage("img");
  EXPECT_EQ(deleted.code(), absl::StatusCode::kFailedPrecondition) << deleted;
  EXPECT_TRUE(absl::StrContains(deleted.message(), "capture of image img is running"))
      << deleted.message();
  // Other ids are unaffected.
  EXPECT_EQ((*store)->DeleteImage("other").code(), absl::StatusCode::kNotFound);

  ASSERT_TRUE((*writer)->AddZeroChunks(1, 3).ok());
  ASSERT_TRUE((*writer)->Commit().ok());
  // Committed: the retried delete removes it.
  EXPECT_TRUE((*store)->DeleteImage("img").ok());
  EXPECT_TRUE((*store)->ListImages().empty());

  // Aborted: nothing to delete, and the id is free again.
  auto second = (*store)->BeginImage("img2", kChunk, 512);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ((*store)->DeleteImage("img2").code(), absl::StatusCode::kFailedPrecondition);
  (*second)->Abort();
  EXPECT_EQ((*store)->DeleteImage("img2").code(), absl::StatusCode::kNotFound);
}

// A pack that cannot be read (EACCES, EIO) fails the open, naming it, so
// storaged keeps retrying (NOT_SERVING) instead of serving without the
// pack's chunks for good; once it is readable the store opens whole.
TEST(ImageStoreFaultTest, UnreadablePackFailsTheOpenUntilItIsReadable) {
  const std::string dir = TestDir("unreadable_pack");
  FaultInjectingFilesystem fs(PosixFilesystem());
  {
    auto store = ImageStore::Open(dir, Options(&fs));
    ASSERT_TRUE(store.ok()) << store.status();
    Capture(**store, "img", 40);
  }
  std::vector<std::string> packs;
  for (const auto& e : std::filesystem::directory_iterator(dir + "/packs")) {
    packs.push_back(e.path().filename().string());
  }
  std::sort(packs.begin(), packs.end());
  ASSERT_GE(packs.size(), 2u);

  fs.FailOpensForRead(packs[0], -1, EACCES);
  auto denied = ImageStore::Open(dir, Options(&fs));
  ASSERT_FALSE(denied.ok());
  EXPECT_NE(denied.status().message().find(packs[0]), std::string::npos) << denied.status();
  fs.FailOpensForRead(".pack", 1, EIO);
  auto transient = ImageStore::Open(dir, Options(&fs));
  EXPECT_FALSE(transient.ok());
  EXPECT_GE(fs.failed_opens(), 2);

  auto store = ImageStore::Open(dir, Options(&fs));
  ASSERT_TRUE(store.ok()) << store.status();
  auto full = (*store)->VerifyImage("img");
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_TRUE(full->ok());
  EXPECT_EQ(full->chunks_checked, 40u);
}

// A PutChunks frame whose entries name the same bytes again and again used to
// be hashed entry by entry (a 64 MiB message: ~1.5M entries over 16 MiB of
// zeroes, hours of SHA-256). Entries must tile the frame at most once.
TEST(ImageStoreFaultTest, ImportRefusesFramesWhoseChunksOverlapQuickly) {
  auto store = ImageStore::Open(TestDir("import_frames"), Options(nullptr));
  ASSERT_TRUE(store.ok()) << store.status();
  auto importer = (*store)->BeginImport();
  ASSERT_TRUE(importer.ok()) << importer.status();
  const std::string a = ChunkData(1), b = ChunkData(2);
  auto frame_of = [&](std::vector<TransferFrame::Chunk> chunks) {
    TransferFrame f;
    f.plain_size = 2 * kChunk;
    f.data = a + b;
    f.chunks = std::move(chunks);
    return f;
  };
  const TransferFrame::Chunk first{Sha256(a), 0, kChunk};
  const TransferFrame::Chunk second{Sha256(b), kChunk, kChunk};

  struct Bad {
    const char* what;
    TransferFrame frame;
    const char* message;
  };
  std::vector<Bad> bad;
  bad.push_back({"duplicate", frame_of({first, first}), "overlaps"});
  bad.push_back({"unsorted", frame_of({second, first}), "sorted by offset"});
  bad.push_back({"overlapping",
                 frame_of({first, TransferFrame::Chunk{Sha256(b.substr(0, 512)), kChunk - 512,
                                                       1024}}),
                 "overlaps"});
  bad.push_back({"longer than a chunk",
                 frame_of({TransferFrame::Chunk{Sha256(a + b), 0, 2 * kChunk}}),
                 "bytes long"});
  bad.push_back({"empty chunk", frame_of({TransferFrame::Chunk{Sha256(""), 0, 0}}),
                 "bytes long"});
  {
    // The attack's shape: far more entries than the frame has room for.
    TransferFrame zeroes;
    zeroes.plain_size = 16 << 20;
    zeroes.data.assign(zeroes.plain_size, '\0');
    const Digest zero_digest = Sha256(std::string(kChunk, '\0'));
    zeroes.chunks.assign(1500000, TransferFrame::Chunk{zero_digest, 0, kChunk});
    bad.push_back({"1.5M entries", std::move(zeroes), "holds at most"});
    TransferFrame repeated;
    repeated.plain_size = 16 << 20;
    repeated.data.assign(repeated.plain_size, '\0');
    repeated.chunks.assign(1000, TransferFrame::Chunk{zero_digest, 0, kChunk});
    bad.push_back({"1000 entries at one offset", std::move(repeated), "overlaps"});
  }
  for (const Bad& b : bad) {
    SCOPED_TRACE(b.what);
    // No timing assertion (shared machines): each message names a shape check
    // that runs before any chunk is hashed.
    absl::Status s = (*importer)->Verify(b.frame);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_TRUE(absl::StrContains(s.message(), b.message)) << s.message();
    EXPECT_EQ((*importer)->AddFrame(b.frame).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  // The well-formed frame still goes in.
  absl::StatusOr<bool> added = (*importer)->AddFrame(frame_of({first, second}));
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_TRUE(*added);
  ASSERT_TRUE((*importer)->Finish().ok());
  EXPECT_TRUE((*store)->MissingChunks({Sha256(a), Sha256(b)}).empty());
}

}  // namespace
}  // namespace storaged
