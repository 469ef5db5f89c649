#include "storaged/image_store.h"

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/status_macros.h"
#include "gtest/gtest.h"
#include "storaged/digest.h"
#include "storaged/filesystem.h"
#include "storaged/filesystem_fault.h"

namespace storaged {
namespace {

namespace stdfs = std::filesystem;

constexpr uint32_t kChunk = 64 << 10;

std::string TestDir(const std::string& name) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  stdfs::remove_all(dir);
  return dir;
}

// Small frames and packs so tests cross frame and pack boundaries.
ImageStoreOptions SmallOptions(Filesystem* fs = nullptr) {
  ImageStoreOptions o;
  o.filesystem = fs;
  o.chunk_size = kChunk;  // the tests size their volumes in these chunks
  o.frame_size = 256 << 10;
  o.pack_size = 1 << 20;
  return o;
}

std::unique_ptr<ImageStore> OpenStore(const std::string& dir,
                                      ImageStoreOptions o = SmallOptions()) {
  auto store = ImageStore::Open(dir, o);
  EXPECT_TRUE(store.ok()) << store.status();
  return store.ok() ? std::move(store).value() : nullptr;
}

// Chunk content kinds: zero, one repeated pattern, or unique half-random,
// half-text data (so zstd has something to do).
std::string UniqueChunk(std::mt19937_64& rng, size_t n) {
  std::string out(n, '\0');
  for (size_t i = 0; i < n; ++i) {
    out[i] = (i / 512) % 2 == 0 ? static_cast<char>(rng())
                                : "the quick brown fox "[i % 20];
  }
  return out;
}

std::string MakeVolume(uint64_t size, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string repeated = UniqueChunk(rng, kChunk);
  std::string volume;
  volume.reserve(size);
  for (uint64_t off = 0, i = 0; off < size; off += kChunk, ++i) {
    size_t n = std::min<uint64_t>(kChunk, size - off);
    switch (i % 5) {
      case 0:
        volume.append(n, '\0');
        break;
      case 1:
        volume.append(repeated, 0, n);
        break;
      default:
        volume.append(UniqueChunk(rng, n));
    }
  }
  return volume;
}

// Adds every chunk of `volume`, from `threads` threads in shuffled order.
absl::Status AddAll(ImageWriter* w, const std::string& volume,
                    int threads = 1, bool shuffle = false) {
  std::vector<uint64_t> order(w->chunk_count());
  for (uint64_t i = 0; i < order.size(); ++i) order[i] = i;
  if (shuffle) std::shuffle(order.begin(), order.end(), std::mt19937_64(7));
  std::vector<absl::Status> results(threads);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (size_t k = t; k < order.size(); k += threads) {
        uint64_t i = order[k];
        absl::Status s = w->AddChunk(
            i, absl::string_view(volume).substr(i * kChunk, w->ChunkLength(i)));
        if (!s.ok()) {
          results[t] = s;
          return;
        }
      }
    });
  }
  for (std::thread& t : pool) t.join();
  for (const absl::Status& s : results) {
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::StatusOr<ManifestSummary> Capture(ImageStore* store,
                                        const std::string& id,
                                        const std::string& volume,
                                        int threads = 1, bool shuffle = false) {
  auto w = store->BeginImage(id, volume.size(), 512);
  if (!w.ok()) return w.status();
  absl::Status s = AddAll(w->get(), volume, threads, shuffle);
  if (!s.ok()) return s;
  return (*w)->Commit();
}

absl::StatusOr<std::string> Restore(ImageStore* store, const std::string& id) {
  auto r = store->OpenImage(id);
  if (!r.ok()) return r.status();
  const Manifest& m = (*r)->manifest();
  std::string out;
  for (uint64_t i = 0; i < m.ChunkCount(); ++i) {
    auto chunk = (*r)->ReadChunk(i);
    if (!chunk.ok()) return chunk.status();
    if (chunk->empty()) {
      out.append(m.ChunkLength(i), '\0');
    } else {
      out.append(*chunk);
    }
  }
  return out;
}

// Whether image `id` restores to exactly `want`; a failure names the read
// error, or the sizes and the first byte that differs.
::testing::AssertionResult RestoresTo(ImageStore* store, const std::string& id,
                                      const std::string& want) {
  absl::StatusOr<std::string> got = Restore(store, id);
  if (!got.ok()) return ::testing::AssertionFailure() << got.status();
  if (*got == want) return ::testing::AssertionSuccess();
  size_t at = 0;
  while (at < got->size() && at < want.size() && (*got)[at] == want[at]) ++at;
  return ::testing::AssertionFailure()
         << "image " << id << " restores to " << got->size()
         << " bytes, expected " << want.size() << "; first difference at byte "
         << at;
}

std::vector<std::string> FilesIn(const std::string& dir,
                                 absl::string_view suffix) {
  std::vector<std::string> out;
  if (!stdfs::exists(dir)) return out;
  for (const auto& e : stdfs::directory_iterator(dir)) {
    std::string p = e.path().string();
    if (absl::EndsWith(p, suffix)) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

size_t TempFiles(const std::string& dir) {
  return FilesIn(dir + "/packs", ".tmp").size() +
         FilesIn(dir + "/images", ".tmp").size();
}

void FlipByte(const std::string& path, uint64_t offset) {
  std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
  f.seekg(static_cast<std::streamoff>(offset));
  char c = 0;
  f.get(c);
  f.seekp(static_cast<std::streamoff>(offset));
  f.put(static_cast<char>(c ^ 0x40));
}

TEST(ImageStoreTest, RoundTripRandomZeroRepeatedOddSize) {
  std::string dir = TestDir("roundtrip");
  auto store = OpenStore(dir);
  // Not a multiple of 64 KiB: the last chunk is 12 KiB.
  const std::string volume = MakeVolume(5 * (1 << 20) + 12 * 1024, 1);
  auto summary = Capture(store.get(), "img-1", volume, 3, /*shuffle=*/true);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->chunk_count, 81u);
  EXPECT_EQ(summary->zero_chunks, 17u);
  EXPECT_EQ(summary->data_chunks, 64u);
  EXPECT_EQ(summary->unique_chunks, 49u);  // 48 unique + 1 repeated.
  EXPECT_EQ(summary->new_chunks, 49u);
  EXPECT_EQ(summary->logical_bytes, 64u * kChunk);  // The tail is zero.
  EXPECT_GT(summary->new_stored_bytes, 0u);
  EXPECT_LT(summary->new_stored_bytes, 49u * kChunk);  // zstd helped
  EXPECT_GT(summary->stored_bytes, 0u);

  ASSERT_TRUE(RestoresTo(store.get(), "img-1", volume));

  auto reader = store->OpenImage("img-1");
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->manifest().volume_size, volume.size());
  EXPECT_EQ((*reader)->manifest().block_size, 512u);
  EXPECT_EQ((*reader)->manifest_digest(), summary->manifest_digest);
  EXPECT_EQ((*reader)->ReadChunk(81).status().code(),
            absl::StatusCode::kOutOfRange);
  auto zero = (*reader)->ReadChunk(0);
  ASSERT_TRUE(zero.ok());
  EXPECT_TRUE(zero->empty());
  reader->reset();

  // Everything comes back after a reopen, from the pack indexes alone.
  store.reset();
  store = OpenStore(dir);
  ASSERT_TRUE(RestoresTo(store.get(), "img-1", volume));
  auto report = store->VerifyImage("img-1");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok());
  EXPECT_EQ(report->chunks_checked, 64u);

  auto status = store->Status();
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_EQ(status->image_count, 1u);
  EXPECT_EQ(status->logical_bytes, summary->logical_bytes);
  EXPECT_EQ(status->chunk_count, 49u);
  EXPECT_GT(status->stored_bytes, 0u);
  EXPECT_GT(status->dedup_ratio, 1.0);
  EXPECT_GT(status->capacity_bytes, 0u);
  EXPECT_GT(status->pack_count, 1u);
}

// Pack files open in this process, as /proc/self/fd shows them.
size_t OpenPackFiles(const std::string& dir) {
  size_t n = 0;
  for (const auto& e : stdfs::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    stdfs::path target = stdfs::read_symlink(e.path(), ec);
    if (!ec && absl::StartsWith(target.string(), dir) &&
        absl::EndsWith(target.string(), ".pack")) {
      ++n;
    }
  }
  return n;
}

TEST(ImageStoreTest, OpenPackFilesAreBounded) {
  std::string dir = TestDir("openpacks");
  ImageStoreOptions o = SmallOptions();
  o.max_open_packs = 2;
  auto store = OpenStore(dir, o);
  // Unique data of ~12 MiB in 1 MiB packs: many more packs than the limit.
  std::mt19937_64 rng(21);
  std::string volume;
  for (int i = 0; i < 12 * (1 << 20) / static_cast<int>(kChunk); ++i) {
    volume += UniqueChunk(rng, kChunk);
  }
  ASSERT_TRUE(Capture(store.get(), "many", volume).ok());
  ASSERT_GT(FilesIn(dir + "/packs", ".pack").size(), 4u);
  for (int round = 0; round < 2; ++round) {
    ASSERT_TRUE(RestoresTo(store.get(), "many", volume));
    EXPECT_LE(OpenPackFiles(dir), 2u);
    EXPECT_GE(OpenPackFiles(dir), 1u);
  }
  auto report = store->VerifyImage("many");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->ok());
  EXPECT_LE(OpenPackFiles(dir), 2u);
  store.reset();
  EXPECT_EQ(OpenPackFiles(dir), 0u);
}

TEST(ImageStoreTest, PerCaptureCompressionLevel) {
  auto store = OpenStore(TestDir("levels"));
  EXPECT_EQ(store->BeginImage("x", 1 << 20, 512, 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->BeginImage("x", 1 << 20, 512, -1).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Word salad compresses far better at 19 than at 1 (repetitive log lines
  // do not: zstd -19 stores them larger than -1).
  std::mt19937_64 rng(5);
  const char* words[] = {"alpha", "beta", "gamma", "storage", "image", "template",
                         "server", "volume", "chunk", "frame", "restore", "network"};
  std::string text;
  while (text.size() < (1u << 20)) {
    for (int n = 3 + rng() % 10; n > 0; --n) {
      text += words[rng() % 12];
      text += n > 1 ? " " : "\n";
    }
  }
  text.resize(1 << 20);
  // The same volume into two empty stores, so nothing deduplicates.
  size_t stored[2];
  int levels[2] = {1, 19};
  for (int i = 0; i < 2; ++i) {
    auto fresh = OpenStore(TestDir(absl::StrCat("level", levels[i])));
    auto w = fresh->BeginImage("img", text.size(), 512, levels[i]);
    ASSERT_TRUE(w.ok()) << w.status();
    for (uint64_t c = 0; c < (*w)->chunk_count(); ++c) {
      ASSERT_TRUE((*w)->AddChunk(c, absl::string_view(text).substr(c * kChunk, kChunk)).ok());
    }
    auto summary = (*w)->Commit();
    ASSERT_TRUE(summary.ok()) << summary.status();
    stored[i] = summary->new_stored_bytes;
    if (i == 1) {
      ASSERT_TRUE(RestoresTo(fresh.get(), "img", text));
    }
  }
  EXPECT_LT(stored[1], stored[0]);
}

TEST(ImageStoreTest, SameDataTwiceStoresNothingNew) {
  std::string dir = TestDir("dedup_same");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(3 << 20, 2);
  auto first = Capture(store.get(), "a", volume);
  ASSERT_TRUE(first.ok()) << first.status();
  auto before = store->Status();
  auto second = Capture(store.get(), "b", volume, 2, true);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->new_chunks, 0u);
  EXPECT_EQ(second->new_stored_bytes, 0u);
  EXPECT_EQ(second->stored_bytes, first->stored_bytes);
  auto after = store->Status();
  EXPECT_EQ(after->stored_bytes, before->stored_bytes);
  EXPECT_EQ(after->pack_count, before->pack_count);
  EXPECT_EQ(after->logical_bytes, 2 * first->logical_bytes);
  ASSERT_TRUE(RestoresTo(store.get(), "b", volume));
}

TEST(ImageStoreTest, ChangedBlocksStoreOnlyTheirChunks) {
  std::string dir = TestDir("dedup_changed");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(4 << 20, 3);
  ASSERT_TRUE(Capture(store.get(), "base", volume).ok());
  std::string changed = volume;
  // Three 4 KiB blocks in three different chunks (one was all zero).
  for (uint64_t block : {3u, 16u * 7 + 5, 16u * 40}) {
    for (int i = 0; i < 4096; ++i) changed[block * 4096 + i] = 'Z' + i % 3;
  }
  auto summary = Capture(store.get(), "changed", changed);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->new_chunks, 3u);
  EXPECT_GT(summary->new_stored_bytes, 0u);
  EXPECT_LT(summary->new_stored_bytes, 3u * kChunk);
  ASSERT_TRUE(RestoresTo(store.get(), "changed", changed));
}

TEST(ImageStoreTest, CorruptPackByteIsDataLossAndVerifyListsIt) {
  std::string dir = TestDir("corrupt");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(3 << 20, 4);
  ASSERT_TRUE(Capture(store.get(), "img", volume).ok());
  auto packs = FilesIn(dir + "/packs", ".pack");
  ASSERT_FALSE(packs.empty());
  FlipByte(packs[0], 16 + 100);  // Inside the first frame.

  auto report = store->VerifyImage("img");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->ok());
  ASSERT_FALSE(report->corrupt_chunks.empty());
  EXPECT_TRUE(report->missing_chunks.empty());
  EXPECT_FALSE(report->errors.empty());

  auto reader = store->OpenImage("img");
  ASSERT_TRUE(reader.ok());
  uint64_t bad = report->corrupt_chunks[0];
  auto chunk = (*reader)->ReadChunk(bad);
  EXPECT_EQ(chunk.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_TRUE(absl::StrContains(chunk.status().message(),
                                absl::StrCat("chunk ", bad, " ")))
      << chunk.status();
  EXPECT_TRUE(absl::StrContains(chunk.status().message(),
                                (*reader)->manifest().chunks.At(bad).ToHex()));
  // Chunks outside the damaged frame still read and match.
  const Manifest& m = (*reader)->manifest();
  int good = 0;
  for (uint64_t i = 0; i < m.ChunkCount(); ++i) {
    if (m.chunks.At(i).IsZero() ||
        std::count(report->corrupt_chunks.begin(), report->corrupt_chunks.end(),
                   i) > 0) {
      continue;
    }
    auto c = (*reader)->ReadChunk(i);
    ASSERT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE(*c == volume.substr(i * kChunk, kChunk));
    ++good;
  }
  EXPECT_GT(good, 0);
}

// Readers open at the same time share decoded, checked frames (a deploy of
// several servers decodes each frame once); once none is open, a new reader
// reads from disk again, and verification always does.
TEST(ImageStoreTest, ConcurrentReadersShareFramesUntilTheLastCloses) {
  std::string dir = TestDir("shared_frames");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(1 << 20, 9);  // 4 frames: fits the cache
  ASSERT_TRUE(Capture(store.get(), "img", volume).ok());
  auto first = store->OpenImage("img");
  ASSERT_TRUE(first.ok());
  auto restored = [](ImageReader& r) -> absl::StatusOr<std::string> {
    std::string out(r.manifest().volume_size, '\0');
    for (uint64_t i = 0; i < r.manifest().ChunkCount(); ++i) {
      RETURN_IF_ERROR(r.ReadChunkTo(i, out.data() + i * r.manifest().chunk_size));
    }
    return out;
  };
  auto a = restored(**first);
  ASSERT_TRUE(a.ok()) << a.status();
  EXPECT_TRUE(*a == volume);

  auto packs = FilesIn(dir + "/packs", ".pack");
  ASSERT_FALSE(packs.empty());
  FlipByte(packs[0], 16 + 100);  // inside the first frame

  // Decoded before the damage and still held for the open reader.
  auto second = store->OpenImage("img");
  ASSERT_TRUE(second.ok());
  auto b = restored(**second);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_TRUE(*b == volume);
  auto report = store->VerifyImage("img");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->corrupt_chunks.empty());

  first->reset();
  second->reset();
  auto third = store->OpenImage("img");
  ASSERT_TRUE(third.ok());
  EXPECT_EQ(restored(**third).status().code(), absl::StatusCode::kDataLoss);
}

// The digests of the chunks `report` lists as corrupt or missing.
absl::flat_hash_set<Digest, DigestHash> BadDigests(ImageStore* store, const std::string& id,
                                                   const VerifyReport& report) {
  absl::flat_hash_set<Digest, DigestHash> out;
  auto reader = store->OpenImage(id);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (!reader.ok()) return out;
  for (uint64_t i : report.corrupt_chunks) out.insert((*reader)->manifest().chunks.At(i));
  for (uint64_t i : report.missing_chunks) out.insert((*reader)->manifest().chunks.At(i));
  return out;
}

// The distinct data chunks of image `id`.
std::vector<Digest> ImageDigests(ImageStore* store, const std::string& id) {
  absl::flat_hash_set<Digest, DigestHash> seen;
  auto reader = store->OpenImage(id);
  EXPECT_TRUE(reader.ok()) << reader.status();
  if (reader.ok()) {
    (*reader)->manifest().chunks.ForEachData([&](uint64_t, const Digest& d) { seen.insert(d); });
  }
  return std::vector<Digest>(seen.begin(), seen.end());
}

// Exports `digests` from `from` into a new store at `dir`, whose importer
// checks every chunk against its digest, as a copy to another node does.
absl::Status ExportInto(ImageStore* from, const std::vector<Digest>& digests,
                        const std::string& dir) {
  stdfs::remove_all(dir);
  ASSIGN_OR_RETURN(std::unique_ptr<ImageStore> to, ImageStore::Open(dir, SmallOptions()));
  ASSIGN_OR_RETURN(std::unique_ptr<ChunkImporter> importer, to->BeginImport());
  RETURN_IF_ERROR(from->ExportChunks(
      digests, [&](TransferFrame frame) { return importer->AddFrame(frame).status(); }, nullptr));
  RETURN_IF_ERROR(importer->Finish());
  if (!to->MissingChunks(digests).empty()) return absl::InternalError("chunks missing");
  return absl::OkStatus();
}

// A damaged chunk is not deduplicated against: the next capture holding the
// same bytes stores them again, and that copy repairs the older image. After
// a restart both copies are on disk; reads are good whichever the index finds
// first, and a collection keeps them good.
TEST(ImageStoreTest, RecaptureRepairsADamagedChunk) {
  std::string dir = TestDir("repair");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(3 << 20, 4);
  ASSERT_TRUE(Capture(store.get(), "a", volume).ok());
  auto packs = FilesIn(dir + "/packs", ".pack");
  ASSERT_FALSE(packs.empty());
  FlipByte(packs[0], 16 + 100);  // inside the first frame
  auto damaged = store->VerifyImage("a");
  ASSERT_TRUE(damaged.ok()) << damaged.status();
  ASSERT_FALSE(damaged->corrupt_chunks.empty());
  const auto bad = BadDigests(store.get(), "a", *damaged);
  ASSERT_FALSE(bad.empty());
  const std::vector<Digest> bad_list(bad.begin(), bad.end());
  // A peer copying the chunks is asked for them again too, and this node
  // will not send them.
  EXPECT_EQ(store->MissingChunks(bad_list).size(), bad.size());
  EXPECT_EQ(ExportInto(store.get(), ImageDigests(store.get(), "a"), dir + "-peer").code(),
            absl::StatusCode::kDataLoss);

  auto second = Capture(store.get(), "b", volume);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->new_chunks, bad.size());  // only the damaged ones
  EXPECT_TRUE(store->MissingChunks(bad_list).empty());
  auto repaired = store->VerifyImage("a");
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_TRUE(repaired->ok()) << absl::StrJoin(repaired->errors, "; ");
  ASSERT_TRUE(RestoresTo(store.get(), "a", volume));

  // Pack names order the load: the damaged pack is found first, then last.
  // A collection straight after the restart, before any read found the
  // damage, must not take the good copy for garbage (it is not the one the
  // index names when the damaged pack loads first).
  // A copy to another node straight after a restart (damaged pack first)
  // sends the good copies.
  std::string damaged_pack = packs[0];
  for (const char* name : {"0000000000000001", "0000000000000000", "ffffffffffffffff"}) {
    SCOPED_TRACE(name);
    store.reset();
    const std::string renamed = absl::StrCat(dir, "/packs/", name, ".pack");
    ASSERT_TRUE(stdfs::exists(damaged_pack)) << damaged_pack;
    stdfs::rename(damaged_pack, renamed);
    damaged_pack = renamed;
    store = OpenStore(dir);
    ASSERT_NE(store, nullptr);
    if (std::string(name) == "0000000000000001") {
      EXPECT_TRUE(ExportInto(store.get(), ImageDigests(store.get(), "a"), dir + "-peer").ok());
      continue;
    }
    auto collected = store->CollectGarbage(/*dry_run=*/false);
    ASSERT_TRUE(collected.ok()) << collected.status();
    for (const char* id : {"a", "b"}) {
      auto report = store->VerifyImage(id);
      ASSERT_TRUE(report.ok()) << report.status();
      EXPECT_TRUE(report->ok()) << id << ": " << absl::StrJoin(report->errors, "; ");
      ASSERT_TRUE(RestoresTo(store.get(), id, volume));
    }
  }
  ASSERT_TRUE(store->DeleteImage("b").ok());
  ASSERT_TRUE(store->CollectGarbage(/*dry_run=*/false).ok());
  store.reset();
  store = OpenStore(dir);
  auto after_gc = store->VerifyImage("a");
  ASSERT_TRUE(after_gc.ok()) << after_gc.status();
  EXPECT_TRUE(after_gc->ok()) << absl::StrJoin(after_gc->errors, "; ");
}

// A pack that disappears while the store runs: its chunks are missing, and
// a capture of the same bytes stores them again.
TEST(ImageStoreTest, RecaptureRepairsChunksOfAPackDeletedWhileRunning) {
  std::string dir = TestDir("repair_missing");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(4 << 20, 5);
  ASSERT_TRUE(Capture(store.get(), "a", volume).ok());
  store.reset();
  store = OpenStore(dir);  // no pack open
  auto packs = FilesIn(dir + "/packs", ".pack");
  ASSERT_GE(packs.size(), 2u);
  stdfs::remove(packs[0]);
  auto report = store->VerifyImage("a");
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_FALSE(report->missing_chunks.empty());
  const auto bad = BadDigests(store.get(), "a", *report);

  auto second = Capture(store.get(), "b", volume);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->new_chunks, bad.size());
  auto repaired = store->VerifyImage("a");
  ASSERT_TRUE(repaired.ok()) << repaired.status();
  EXPECT_TRUE(repaired->ok()) << absl::StrJoin(repaired->errors, "; ");
  ASSERT_TRUE(RestoresTo(store.get(), "a", volume));
}

TEST(ImageStoreTest, DeletedPackIsListedMissing) {
  std::string dir = TestDir("missing_pack");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(4 << 20, 5);
  ASSERT_TRUE(Capture(store.get(), "img", volume).ok());
  store.reset();
  auto packs = FilesIn(dir + "/packs", ".pack");
  ASSERT_GE(packs.size(), 2u);
  stdfs::remove(packs[0]);
  store = OpenStore(dir);
  auto report = store->VerifyImage("img");
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_FALSE(report->ok());
  EXPECT_FALSE(report->missing_chunks.empty());
  EXPECT_TRUE(report->corrupt_chunks.empty());
  auto reader = store->OpenImage("img");
  ASSERT_TRUE(reader.ok());
  EXPECT_EQ((*reader)->ReadChunk(report->missing_chunks[0]).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(ImageStoreTest, TruncatedOrAlteredManifestIsDataLoss) {
  std::string dir = TestDir("bad_manifest");
  auto store = OpenStore(dir);
  const std::string volume = MakeVolume(1 << 20, 6);
  ASSERT_TRUE(Capture(store.get(), "trunc", volume).ok());
  ASSERT_TRUE(Capture(store.get(), "alter", volume).ok());
  std::string trunc = dir + "/images/trunc.manifest";
  stdfs::resize_file(trunc, stdfs::file_size(trunc) - 7);
  FlipByte(dir + "/images/alter.manifest", 40);
  for (int pass = 0; pass < 2; ++pass) {
    EXPECT_EQ(store->OpenImage("trunc").status().code(),
              absl::StatusCode::kDataLoss);
    EXPECT_EQ(store->OpenImage("alter").status().code(),
              absl::StatusCode::kDataLoss);
    EXPECT_EQ(store->VerifyImage("alter").status().code(),
              absl::StatusCode::kDataLoss);
    // Collection refuses rather than guess what the manifest referenced.
    EXPECT_EQ(store->CollectGarbage(false).status().code(),
              absl::StatusCode::kDataLoss);
    store.reset();
    store = OpenStore(dir);  // Still listed after a reopen.
  }
  EXPECT_TRUE(store->DeleteImage("trunc").ok());
  EXPECT_TRUE(store->DeleteImage("alter").ok());
  EXPECT_TRUE(store->CollectGarbage(false).ok());
}

TEST(ImageStoreTest, ArgumentAndStateErrors) {
  std::string dir = TestDir("errors");
  auto store = OpenStore(dir);
  for (const std::string& bad :
       {std::string(), std::string("a/b"), std::string("../x"),
        std::string("a b"), std::string(129, 'a')}) {
    EXPECT_EQ(store->BeginImage(bad, 1 << 20, 512).status().code(),
              absl::StatusCode::kInvalidArgument)
        << bad;
    EXPECT_EQ(store->OpenImage(bad).status().code(),
              absl::StatusCode::kInvalidArgument);
  }
  EXPECT_TRUE(store->BeginImage(std::string(128, 'a'), 1 << 20, 512).ok());
  EXPECT_EQ(store->BeginImage("x", 0, 512).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->BeginImage("x", 1000, 512).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->BeginImage("x", 1 << 20, 1000).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store->OpenImage("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store->VerifyImage("nope").status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store->DeleteImage("nope").code(), absl::StatusCode::kNotFound);

  const std::string volume = MakeVolume((1 << 20) + 4096, 7);
  auto w = store->BeginImage("busy", volume.size(), 4096);
  ASSERT_TRUE(w.ok());
  EXPECT_EQ(store->BeginImage("busy", 1 << 20, 512).status().code(),
            absl::StatusCode::kAlreadyExists);
  EXPECT_EQ((*w)->AddChunk(17, "x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->AddChunk(0, "short").code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->ChunkLength(16), 4096u);
  ASSERT_TRUE((*w)->AddChunk(1, volume.substr(kChunk, kChunk)).ok());
  // The same content again is fine (a retried read); other content is not.
  EXPECT_TRUE((*w)->AddChunk(1, volume.substr(kChunk, kChunk)).ok());
  EXPECT_EQ((*w)->AddChunk(1, volume.substr(2 * kChunk, kChunk)).code(),
            absl::StatusCode::kInvalidArgument);
  // Chunk 0 never added.
  EXPECT_EQ((*w)->Commit().status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*w)->AddChunk(2, volume.substr(2 * kChunk, kChunk)).code(),
            absl::StatusCode::kAborted);
  w->reset();
  EXPECT_EQ(store->OpenImage("busy").status().code(),
            absl::StatusCode::kNotFound);

  // Zero ranges without their bytes (thin volumes).
  auto z = store->BeginImage("zeros", volume.size(), 4096);
  ASSERT_TRUE(z.ok());
  EXPECT_EQ((*z)->AddZeroChunks(10, 8).code(),
            absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE((*z)->AddZeroChunks(0, 17).ok());
  auto zs = (*z)->Commit();
  ASSERT_TRUE(zs.ok()) << zs.status();
  EXPECT_EQ(zs->zero_chunks, 17u);
  EXPECT_EQ(zs->logical_bytes, 0u);
  EXPECT_EQ((*z)->AddChunk(0, volume.substr(0, kChunk)).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store->BeginImage("zeros", 1 << 20, 512).status().code(),
            absl::StatusCode::kAlreadyExists);
  ASSERT_TRUE(
      RestoresTo(store.get(), "zeros", std::string(volume.size(), '\0')));
}

// Hashing threads add chunks slightly out of order while the capture loop
// marks zero ranges ahead of them: every order gives the same image, and a
// conflicting or missing index is refused wherever it sits.
TEST(ImageStoreTest, OutOfOrderChunksAndZeroRanges) {
  std::string dir = TestDir("out_of_order");
  auto store = OpenStore(dir);
  const uint64_t n = 40;
  const std::string volume = MakeVolume(n * kChunk - 4096, 11);  // every 5th chunk zero
  auto chunk = [&](uint64_t i) {
    return absl::string_view(volume).substr(i * kChunk, kChunk);
  };
  const std::string zero(kChunk, '\0');

  auto w = store->BeginImage("ooo", volume.size(), 4096);
  ASSERT_TRUE(w.ok()) << w.status();
  // Zero chunks first, last to first: 30, 35 as zero bytes, the rest as ranges.
  for (uint64_t i = n; i-- > 0;) {
    if (i % 5 != 0) continue;
    absl::Status s = i >= 30 ? (*w)->AddChunk(i, zero) : (*w)->AddZeroChunks(i, 1);
    ASSERT_TRUE(s.ok()) << i << ": " << s;
  }
  std::vector<uint64_t> data;
  for (uint64_t i = 0; i < n; ++i) {
    if (i % 5 != 0) data.push_back(i);
  }
  std::shuffle(data.begin(), data.end(), std::mt19937_64(3));
  for (size_t k = 0; k + 1 < data.size(); ++k) {
    uint64_t i = data[k];
    ASSERT_TRUE((*w)->AddChunk(i, (*w)->ChunkLength(i) == kChunk
                                      ? chunk(i)
                                      : absl::string_view(volume).substr(i * kChunk))
                    .ok())
        << i;
    // Zero over data is refused whether the data is in order yet or not.
    EXPECT_EQ((*w)->AddZeroChunks(i - i % 5, 5).code(), absl::StatusCode::kInvalidArgument);
  }
  // Data over a zero chunk, and other content for a data chunk.
  EXPECT_EQ((*w)->AddChunk(10, chunk(11)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*w)->AddChunk(data[0], chunk(data[0] == 2 ? 3 : 2)).code(),
            absl::StatusCode::kInvalidArgument);
  // Repeats of the same content are fine, zero or not.
  EXPECT_TRUE((*w)->AddChunk(data[0], chunk(data[0])).ok());
  EXPECT_TRUE((*w)->AddChunk(5, zero).ok());
  EXPECT_TRUE((*w)->AddZeroChunks(20, 1).ok());
  uint64_t last = data.back();
  std::string tail(absl::string_view(volume).substr(last * kChunk, (*w)->ChunkLength(last)));
  ASSERT_TRUE((*w)->AddChunk(last, tail).ok());
  auto summary = (*w)->Commit();
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->zero_chunks, n / 5);
  EXPECT_EQ(summary->data_chunks, n - n / 5);
  ASSERT_TRUE(RestoresTo(store.get(), "ooo", volume));
  // Same image as an in-order capture of the same bytes.
  auto in_order = Capture(store.get(), "in_order", volume);
  ASSERT_TRUE(in_order.ok()) << in_order.status();
  auto a = store->OpenImage("ooo");
  auto b = store->OpenImage("in_order");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ((*a)->manifest().chunks, (*b)->manifest().chunks);

  // A hole is named by its lowest index, wherever the chunks after it are.
  auto holed = store->BeginImage("holed", volume.size(), 4096);
  ASSERT_TRUE(holed.ok());
  ASSERT_TRUE((*holed)->AddZeroChunks(20, n - 20).ok());
  for (uint64_t i = 20; i-- > 0;) {
    if (i == 7 || i == 13) continue;
    ASSERT_TRUE((*holed)->AddChunk(i, chunk(i)).ok());
  }
  auto failed = (*holed)->Commit();
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(failed.status().message(), "chunk 7 of 40 was never added"))
      << failed.status();
}

TEST(ImageStoreTest, AbortLeavesNoImageAndCollectionReclaims) {
  std::string dir = TestDir("abort");
  auto store = OpenStore(dir);
  const std::string keep = MakeVolume(2 << 20, 8);
  ASSERT_TRUE(Capture(store.get(), "keep", keep).ok());
  const size_t packs_before = FilesIn(dir + "/packs", ".pack").size();
  const uint64_t stored_before = store->Status()->stored_bytes;

  for (bool explicit_abort : {true, false}) {
    const std::string volume = MakeVolume(6 << 20, explicit_abort ? 9 : 10);
    auto w = store->BeginImage("gone", volume.size(), 512);
    ASSERT_TRUE(w.ok());
    ASSERT_TRUE(AddAll(w->get(), volume).ok());
    if (explicit_abort) (*w)->Abort();
    w->reset();  // The destructor aborts too.
    EXPECT_EQ(store->OpenImage("gone").status().code(),
              absl::StatusCode::kNotFound);
    EXPECT_EQ(store->ListImages(), std::vector<std::string>{"keep"});
    EXPECT_EQ(TempFiles(dir), 0u);
    // Full packs were sealed before the abort; they hold only garbage.
    EXPECT_GT(FilesIn(dir + "/packs", ".pack").size(), packs_before);

    auto dry = store->CollectGarbage(/*dry_run=*/true);
    ASSERT_TRUE(dry.ok()) << dry.status();
    EXPECT_GT(dry->chunks_removed, 0u);
    EXPECT_GT(dry->bytes_freed, 0u);
    EXPECT_GT(FilesIn(dir + "/packs", ".pack").size(), packs_before);

    auto gc = store->CollectGarbage(false);
    ASSERT_TRUE(gc.ok()) << gc.status();
    EXPECT_EQ(gc->chunks_removed, dry->chunks_removed);
    EXPECT_GT(gc->packs_deleted, 0u);
    EXPECT_EQ(FilesIn(dir + "/packs", ".pack").size(), packs_before);
    EXPECT_EQ(store->Status()->stored_bytes, stored_before);
    ASSERT_TRUE(RestoresTo(store.get(), "keep", keep));
  }
}

TEST(ImageStoreTest, CollectionSparesLiveImagesAndCaptureInProgress) {
  std::string dir = TestDir("gc_live");
  auto store = OpenStore(dir);
  const std::string old_volume = MakeVolume(4 << 20, 11);
  const std::string other = MakeVolume(2 << 20, 12);
  ASSERT_TRUE(Capture(store.get(), "old", old_volume).ok());
  ASSERT_TRUE(Capture(store.get(), "other", other).ok());

  // The new image shares its first half with "old" and has new data after.
  std::string volume = old_volume.substr(0, 2 << 20) + MakeVolume(3 << 20, 13);
  auto w = store->BeginImage("new", volume.size(), 512);
  ASSERT_TRUE(w.ok());
  const uint64_t half = (*w)->chunk_count() * 3 / 4;  // Some new packs sealed.
  for (uint64_t i = 0; i < half; ++i) {
    ASSERT_TRUE(
        (*w)->AddChunk(i, volume.substr(i * kChunk, (*w)->ChunkLength(i)))
            .ok());
  }
  // An open reader of a deleted image keeps its chunks too.
  auto other_reader = store->OpenImage("other");
  ASSERT_TRUE(other_reader.ok());
  ASSERT_TRUE(store->DeleteImage("old").ok());
  ASSERT_TRUE(store->DeleteImage("other").ok());
  auto gc = store->CollectGarbage(false);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_GT(gc->chunks_removed, 0u);  // The second half of "old".

  for (uint64_t i = half; i < (*w)->chunk_count(); ++i) {
    ASSERT_TRUE(
        (*w)->AddChunk(i, volume.substr(i * kChunk, (*w)->ChunkLength(i)))
            .ok());
  }
  auto summary = (*w)->Commit();
  ASSERT_TRUE(summary.ok()) << summary.status();
  ASSERT_TRUE(RestoresTo(store.get(), "new", volume));
  for (uint64_t i = 0; i < (*other_reader)->manifest().ChunkCount(); ++i) {
    auto c = (*other_reader)->ReadChunk(i);
    ASSERT_TRUE(c.ok()) << c.status();
  }
  other_reader->reset();

  // Reopened, with a second collection: still intact.
  store.reset();
  store = OpenStore(dir);
  ASSERT_TRUE(store->CollectGarbage(false).ok());
  ASSERT_TRUE(RestoresTo(store.get(), "new", volume));
}

TEST(ImageStoreTest, CollectionRepacksMostlyDeadPacks) {
  std::string dir = TestDir("repack");
  ImageStoreOptions o = SmallOptions();
  o.pack_size = 64 << 20;  // One pack for the whole capture.
  auto store = OpenStore(dir, o);
  const std::string big = MakeVolume(8 << 20, 14);
  ASSERT_TRUE(Capture(store.get(), "big", big).ok());
  // A fifth of it survives in a second image.
  const std::string small = big.substr(0, 1600 << 10);
  ASSERT_TRUE(Capture(store.get(), "small", small).ok());
  ASSERT_EQ(FilesIn(dir + "/packs", ".pack").size(), 1u);
  const uint64_t before = store->Status()->stored_bytes;
  ASSERT_TRUE(store->DeleteImage("big").ok());
  auto gc = store->CollectGarbage(false);
  ASSERT_TRUE(gc.ok()) << gc.status();
  EXPECT_EQ(gc->packs_rewritten, 1u);
  EXPECT_GT(gc->bytes_freed, 0u);
  EXPECT_EQ(FilesIn(dir + "/packs", ".pack").size(), 1u);
  EXPECT_LT(store->Status()->stored_bytes, before / 3);
  ASSERT_TRUE(RestoresTo(store.get(), "small", small));
  store.reset();
  store = OpenStore(dir, o);
  auto report = store->VerifyImage("small");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
}

TEST(ImageStoreTest, FullDiskAbortsCaptureAndStoreStaysConsistent) {
  std::string dir = TestDir("enospc");
  FaultInjectingFilesystem fault(PosixFilesystem());
  auto store = OpenStore(dir, SmallOptions(&fault));
  const std::string first = MakeVolume(2 << 20, 15);
  ASSERT_TRUE(Capture(store.get(), "first", first).ok());

  fault.FailWritesAfter(1500 << 10);  // Room for about one pack.
  const std::string second = MakeVolume(8 << 20, 16);
  auto w = store->BeginImage("second", second.size(), 512);
  ASSERT_TRUE(w.ok());
  absl::Status s = AddAll(w->get(), second);
  if (s.ok()) s = (*w)->Commit().status();
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  w->reset();
  EXPECT_EQ(store->ListImages(), std::vector<std::string>{"first"});
  EXPECT_EQ(TempFiles(dir), 0u);

  // The manifest write itself hitting the full disk.
  fault.FailWritesAfter(0);
  auto z = store->BeginImage("zeros", 1 << 20, 512);
  ASSERT_TRUE(z.ok());
  ASSERT_TRUE((*z)->AddZeroChunks(0, 16).ok());
  EXPECT_EQ((*z)->Commit().status().code(),
            absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store->OpenImage("zeros").status().code(),
            absl::StatusCode::kNotFound);

  store.reset();
  store = OpenStore(dir);
  EXPECT_EQ(store->ListImages(), std::vector<std::string>{"first"});
  auto report = store->VerifyImage("first");
  ASSERT_TRUE(report.ok());
  EXPECT_TRUE(report->ok());
  ASSERT_TRUE(RestoresTo(store.get(), "first", first));
  ASSERT_TRUE(store->CollectGarbage(false).ok());
  // With space again, the capture works.
  auto again = Capture(store.get(), "second", second);
  ASSERT_TRUE(again.ok()) << again.status();
}

TEST(ImageStoreTest, FailedFsyncFailsCommit) {
  std::string dir = TestDir("fsync");
  FaultInjectingFilesystem fault(PosixFilesystem());
  auto store = OpenStore(dir, SmallOptions(&fault));
  fault.SetFailSync(true);
  auto s = Capture(store.get(), "img", MakeVolume(2 << 20, 17));
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInternal) << s.status();
  EXPECT_TRUE(store->ListImages().empty());
  fault.SetFailSync(false);
  store.reset();
  store = OpenStore(dir);
  EXPECT_TRUE(store->ListImages().empty());
  EXPECT_EQ(TempFiles(dir), 0u);
}

// Kills the "process" at every mutating file operation of a capture in turn;
// each reopen must show the earlier image intact and either no new image or
// a complete one, and no temporary files.
TEST(ImageStoreTest, CrashAtEveryOperationLeavesNoImageOrACompleteOne) {
  const std::string base = MakeVolume(1 << 20, 18);
  const std::string next = MakeVolume(3 << 20, 19);
  bool completed = false;
  int crashes = 0;
  for (uint64_t ops = 0; ops < 500 && !completed; ++ops) {
    std::string dir = TestDir("crash");
    {
      auto store = OpenStore(dir);
      ASSERT_TRUE(Capture(store.get(), "base", base).ok());
    }
    FaultInjectingFilesystem fault(PosixFilesystem());
    fault.CrashAfterOps(ops);
    {
      auto store = ImageStore::Open(dir, SmallOptions(&fault));
      if (store.ok()) {
        auto s = Capture(store->get(), "next", next, 2);
        if (!fault.crashed()) {
          ASSERT_TRUE(s.ok()) << s.status();
          completed = true;
        }
      }
    }
    if (fault.crashed()) ++crashes;
    auto store = OpenStore(dir);
    EXPECT_EQ(TempFiles(dir), 0u) << ops;
    ASSERT_TRUE(RestoresTo(store.get(), "base", base)) << ops;
    auto images = store->ListImages();
    if (std::count(images.begin(), images.end(), "next") > 0) {
      ASSERT_TRUE(RestoresTo(store.get(), "next", next)) << ops;
    } else {
      EXPECT_FALSE(completed);
    }
    ASSERT_TRUE(store->CollectGarbage(false).ok());
  }
  EXPECT_TRUE(completed);
  EXPECT_GT(crashes, 10);
}

TEST(ImageStoreTest, ConcurrentWritersShareChunks) {
  std::string dir = TestDir("concurrent");
  auto store = OpenStore(dir);
  const std::string shared = MakeVolume(3 << 20, 20);
  const std::string a = shared + MakeVolume(2 << 20, 21);
  const std::string b = MakeVolume(1 << 20, 22) + shared;
  ASSERT_TRUE(Capture(store.get(), "seed", MakeVolume(2 << 20, 23)).ok());
  absl::StatusOr<ManifestSummary> ra, rb;
  std::thread ta([&] { ra = Capture(store.get(), "a", a, 2, true); });
  std::thread tb([&] { rb = Capture(store.get(), "b", b, 2, true); });
  // A reader and a collection running alongside.
  std::thread tr([&] {
    for (int i = 0; i < 3; ++i) {
      auto r = Restore(store.get(), "seed");
      EXPECT_TRUE(r.ok()) << r.status();
      EXPECT_TRUE(store->CollectGarbage(false).ok());
    }
  });
  ta.join();
  tb.join();
  tr.join();
  ASSERT_TRUE(ra.ok()) << ra.status();
  ASSERT_TRUE(rb.ok()) << rb.status();
  for (const auto& [id, volume] :
       {std::make_pair("a", &a), std::make_pair("b", &b)}) {
    ASSERT_TRUE(RestoresTo(store.get(), id, *volume));
  }
  ASSERT_TRUE(store->CollectGarbage(false).ok());
  store.reset();
  store = OpenStore(dir);
  for (const char* id : {"a", "b", "seed"}) {
    auto report = store->VerifyImage(id);
    ASSERT_TRUE(report.ok()) << report.status();
    EXPECT_TRUE(report->ok()) << id;
  }
}

}  // namespace
}  // namespace storaged
