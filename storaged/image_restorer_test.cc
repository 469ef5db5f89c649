// RestoreImage against a real tgtd LUN: bytes, zero handling on thin and
// thick targets, and the background flushes that spread the target's
// write-back over the restore.
#include "storaged/image_restorer.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storaged/digest.h"
#include "storaged/image_store.h"
#include "storaged/iscsi_volume.h"
#include "storaged/testing/tgtd_fixture.h"
#include "storaged/volume_fault.h"
#include "tests/san.h"

namespace storaged {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint32_t kChunk = 64 << 10;

std::string ReadFile(const std::string& path, uint64_t size) {
  std::ifstream in(path, std::ios::binary);
  std::string out(size, '\0');
  in.read(out.data(), size);
  out.resize(in.gcount());
  return out;
}

// `size` bytes: data, except that every 4th 1 MiB stretch is zero.
std::string MakeVolume(uint64_t size) {
  std::mt19937_64 rng(42);
  std::string v(size, '\0');
  for (uint64_t off = 0; off < size; off += 8) {
    if ((off / kMiB) % 4 == 3) continue;
    uint64_t word = rng() & 0x0f0f0f0f0f0f0f0fULL;  // compressible
    std::memcpy(&v[off], &word, 8);
  }
  return v;
}

void WriteFile(const std::string& path, uint64_t offset, absl::string_view data) {
  std::fstream f(path, std::ios::binary | std::ios::in | std::ios::out);
  f.seekp(offset);
  f.write(data.data(), data.size());
  ASSERT_TRUE(f.good()) << path;
}

// `size` bytes that do not compress (stored as raw frames), in which chunk
// `i` repeats chunk `i - 5` when i % 7 == 6 (deduplicated, so a restore sends
// it from an earlier place in a frame) and chunks with i % 11 == 10 are
// all-zero.
std::string MakeDedupVolume(uint64_t size) {
  std::mt19937_64 rng(7);
  std::string v(size, '\0');
  for (uint64_t off = 0; off + 8 <= size; off += 8) {
    uint64_t word = rng();
    std::memcpy(&v[off], &word, 8);
  }
  for (uint64_t i = 0; i * kChunk < size; ++i) {
    const uint64_t length = std::min<uint64_t>(kChunk, size - i * kChunk);
    if (i % 11 == 10) {
      v.replace(i * kChunk, length, length, '\0');
    } else if (i % 7 == 6 && length == kChunk) {
      v.replace(i * kChunk, kChunk, v.substr((i - 5) * kChunk, kChunk));
    }
  }
  return v;
}

class ImageRestorerTest : public TgtdFixture {
 protected:
  void SetUp() override {
    std::string name = ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::replace(name.begin(), name.end(), '/', '_');  // parameterized names
    dir_ = absl::StrCat(std::getenv("TEST_TMPDIR"), "/store-", name);
    std::filesystem::remove_all(dir_);
    OpenStore();
  }

  void OpenStore() {
    store_.reset();
    ImageStoreOptions o;
    o.chunk_size = kChunk;
    auto store = ImageStore::Open(dir_, o);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  void Capture(const std::string& id, const std::string& volume) {
    auto w = store_->BeginImage(id, volume.size(), 512);
    ASSERT_TRUE(w.ok()) << w.status();
    for (uint64_t i = 0; i < (*w)->chunk_count(); ++i) {
      ASSERT_TRUE((*w)->AddChunk(i, absl::string_view(volume).substr(i * kChunk, kChunk)).ok());
    }
    ASSERT_TRUE((*w)->Commit().ok());
  }

  std::string dir_;
  std::unique_ptr<ImageStore> store_;
};

TEST_F(ImageRestorerTest, BackgroundFlushesFollowTheBytesSent) {
  const uint64_t size = 16 * kMiB;
  const std::string volume = MakeVolume(size);
  Capture("img", volume);

  struct Case {
    bool thin;
    uint64_t every;
    int flushes;  // StartFlush calls expected
  } cases[] = {
      // Thick: four 3 MiB data runs and the zeroes between them, written
      // explicitly (three 1 MiB ranges, then 1 MiB + the 2 MiB tail): eight
      // sends of at least 1 MiB.
      {false, 1 * kMiB, 8},
      // Thin, fresh target: the zero stretches are unmapped already and
      // nothing is sent for them; 12 MiB of data in 3 MiB runs.
      {true, 1 * kMiB, 4},
      {true, 6 * kMiB, 2},
      {true, 0, 0},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrCat(c.thin ? "thin" : "thick", " every ", c.every));
    tests::Lun lun = MakeLun(size + 2 * kMiB, c.thin);  // tail past the image
    auto iscsi = IscsiVolume::Open(lun.url, {});
    ASSERT_TRUE(iscsi.ok()) << iscsi.status();
    FaultVolume target(iscsi->get());
    auto image = store_->OpenImage("img");
    ASSERT_TRUE(image.ok()) << image.status();
    RestoreOptions options;
    options.background_flush_bytes = c.every;
    auto result = RestoreImage(**image, target, options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(target.start_flushes(), c.flushes);
    EXPECT_EQ(result->bytes_written, 12 * kMiB);
    EXPECT_EQ(result->bytes_skipped, 6 * kMiB);
    EXPECT_TRUE(ReadFile(lun.backing_path, size) == volume) << "restored bytes differ";
    EXPECT_EQ(ReadFile(lun.backing_path, size + 2 * kMiB).substr(size),
              std::string(2 * kMiB, '\0'));
  }
}

class RestoreGeometryTest : public ImageRestorerTest,
                            public ::testing::WithParamInterface<std::tuple<bool, uint32_t>> {};

// Restores send chunks from the decoded frames, several pieces per write:
// deduplicated chunks, zero chunks between data, a short last chunk, and a
// larger target whose old bytes (in the image's zero ranges and past its end)
// must all read back as zero.
TEST_P(RestoreGeometryTest, ByteIdenticalAndZeroBeyondTheImage) {
  auto [thin, block_size] = GetParam();
  const uint64_t size = 9 * kMiB + 5 * 4096;  // last chunk 20 KiB
  const std::string volume = MakeDedupVolume(size);
  Capture("img", volume);

  const uint64_t target_size = size + 3 * kMiB;
  tests::Lun lun = MakeLun(target_size, thin, block_size);
  // Old data everywhere: where the image has zero chunks, and past its end.
  WriteFile(lun.backing_path, 0, std::string(target_size, '\x77'));
  auto target = IscsiVolume::Open(lun.url, {});
  ASSERT_TRUE(target.ok()) << target.status();
  auto image = store_->OpenImage("img");
  ASSERT_TRUE(image.ok()) << image.status();
  RestoreOptions options;
  options.write.io_bytes = 96 * 1024;  // commands end inside chunks
  auto result = RestoreImage(**image, **target, options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->bytes_total, target_size);
  const std::string restored = ReadFile(lun.backing_path, target_size);
  ASSERT_EQ(restored.size(), target_size);
  EXPECT_TRUE(restored.substr(0, size) == volume) << "restored bytes differ";
  EXPECT_EQ(restored.find_first_not_of('\0', size), std::string::npos)
      << "old bytes past the image";
}

INSTANTIATE_TEST_SUITE_P(ThinThick, RestoreGeometryTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(512u, 4096u)),
                         [](const auto& info) {
                           return absl::StrCat(std::get<0>(info.param) ? "Thin" : "Thick",
                                               std::get<1>(info.param));
                         });

// A chunk whose bytes no longer match its digest (the frame's own checksum
// and the pack index rewritten to match, so only the chunk digest can tell)
// stops the restore with DATA_LOSS naming that chunk; nothing at or after it
// is written (before it, writes not yet issued are withdrawn).
TEST_F(ImageRestorerTest, CorruptChunkIsDataLossNamingIt) {
  const uint64_t size = 12 * kMiB;
  std::string volume = MakeDedupVolume(size);
  // No dedup or zero chunks here: chunk i sits at i * kChunk of the frames.
  std::mt19937_64 rng(9);
  for (uint64_t off = 0; off < size; off += 8) {
    uint64_t word = rng();
    std::memcpy(&volume[off], &word, 8);
  }
  Capture("img", volume);

  std::vector<std::string> packs;
  for (const auto& e : std::filesystem::directory_iterator(dir_ + "/packs")) {
    if (absl::EndsWith(e.path().string(), ".pack")) packs.push_back(e.path().string());
  }
  ASSERT_EQ(packs.size(), 1u);
  const std::string pack = ReadFile(packs[0], 1ull << 30);
  auto u32 = [&](uint64_t at) {
    uint32_t v;
    std::memcpy(&v, pack.data() + at, 4);
    return v;
  };
  auto u64 = [&](uint64_t at) {
    uint64_t v;
    std::memcpy(&v, pack.data() + at, 8);
    return v;
  };
  const uint64_t footer = pack.size() - 48;
  const uint64_t index_offset = u64(footer);
  const uint64_t index_length = u64(footer + 8);
  ASSERT_GE(u32(index_offset), 2u);  // frames
  // Frame 1's entry: offset, stored_len, plain_len, codec, checksum[16].
  const uint64_t entry = index_offset + 4 + 33;
  const uint64_t frame_offset = u64(entry);
  const uint32_t stored_len = u32(entry + 8);
  ASSERT_EQ(pack[entry + 16], 0) << "frame 1 is not stored raw";
  // Which chunk is the 4th of frame 1 (frames are packed as they finish):
  // the pack's chunk entries are digest[32], frame, offset, length.
  const uint64_t chunks_at = index_offset + 4 + 33 * u32(index_offset);
  Digest victim;
  for (uint32_t c = 0; c < u32(chunks_at); ++c) {
    const uint64_t e = chunks_at + 4 + 44 * uint64_t{c};
    if (u32(e + 32) == 1 && u32(e + 36) == 3 * kChunk) victim = Digest::FromBytes(&pack[e]);
  }
  ASSERT_FALSE(victim.IsZero());
  uint64_t bad = 0;
  while (bad * kChunk < size && Sha256(volume.substr(bad * kChunk, kChunk)) != victim) ++bad;
  ASSERT_LT(bad * kChunk, size);

  std::string frame = pack.substr(frame_offset, stored_len);
  frame[3 * kChunk + 100] ^= 0x01;
  std::string index = pack.substr(index_offset, index_length);
  const Digest frame_sum = Sha256(frame);
  index.replace(entry - index_offset + 17, 16,
                std::string(reinterpret_cast<const char*>(frame_sum.bytes.data()), 16));
  const Digest index_sum = Sha256(index);
  WriteFile(packs[0], frame_offset, frame);
  WriteFile(packs[0], index_offset, index);
  WriteFile(packs[0], footer + 16,
            absl::string_view(reinterpret_cast<const char*>(index_sum.bytes.data()), 24));
  OpenStore();  // loads the rewritten index

  tests::Lun lun = MakeLun(size, /*thin=*/true);
  auto target = IscsiVolume::Open(lun.url, {});
  ASSERT_TRUE(target.ok()) << target.status();
  auto image = store_->OpenImage("img");
  ASSERT_TRUE(image.ok()) << image.status();
  auto result = RestoreImage(**image, **target, RestoreOptions());
  ASSERT_EQ(result.status().code(), absl::StatusCode::kDataLoss) << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), absl::StrCat("chunk ", bad, " ")))
      << result.status();
  EXPECT_TRUE(absl::StrContains(result.status().message(), "digest mismatch"))
      << result.status();
  target->reset();  // waits for the writes sent
  const std::string restored = ReadFile(lun.backing_path, size);
  for (uint64_t off = 0; off < bad * kChunk; off += 4096) {
    const std::string block = restored.substr(off, 4096);
    ASSERT_TRUE(block == volume.substr(off, 4096) || block == std::string(4096, '\0'))
        << "wrong bytes at " << off;
  }
  EXPECT_EQ(restored.find_first_not_of('\0', bad * kChunk), std::string::npos)
      << "bytes after the bad chunk were written";
}

// Four restores of one image at once share decoded frames (each decoded and
// checked once between them), each sending from the same buffers: every
// target is byte-identical.
TEST_F(ImageRestorerTest, ConcurrentRestoresSharingFramesAreByteIdentical) {
  const uint64_t size = 10 * kMiB + 4096;
  const std::string volume = MakeDedupVolume(size);
  Capture("img", volume);
  constexpr int kRestores = 4;
  std::vector<tests::Lun> luns;
  std::vector<std::unique_ptr<IscsiVolume>> targets;
  std::vector<std::unique_ptr<ImageReader>> images;
  for (int i = 0; i < kRestores; ++i) {
    luns.push_back(MakeLun(size, /*thin=*/i % 2 == 0, i < 2 ? 512 : 4096));
    auto target = IscsiVolume::Open(luns.back().url, {});
    ASSERT_TRUE(target.ok()) << target.status();
    targets.push_back(std::move(*target));
    auto image = store_->OpenImage("img");
    ASSERT_TRUE(image.ok()) << image.status();
    images.push_back(std::move(*image));
  }
  std::vector<absl::Status> results(kRestores);
  std::vector<std::thread> threads;
  for (int i = 0; i < kRestores; ++i) {
    threads.emplace_back([&, i] {
      results[i] = RestoreImage(*images[i], *targets[i], RestoreOptions()).status();
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kRestores; ++i) {
    SCOPED_TRACE(absl::StrCat("restore ", i));
    ASSERT_TRUE(results[i].ok()) << results[i];
    EXPECT_TRUE(ReadFile(luns[i].backing_path, size) == volume) << "restored bytes differ";
  }
}

}  // namespace
}  // namespace storaged
