#include "storaged/internal/pack.h"

#include <zstd.h>

#include <cstdlib>
#include <fstream>
#include <random>

#include "gtest/gtest.h"

namespace storaged {
namespace internal {
namespace {

std::string TestDir(const std::string& name) {
  std::string dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  EXPECT_TRUE(PosixFilesystem()->CreateDir(dir).ok());
  return dir;
}

TEST(PackTest, WriteSealReadBack) {
  Filesystem* fs = PosixFilesystem();
  std::string dir = TestDir("pack_roundtrip");
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  std::string text(100000, 'x');
  std::string noise;
  std::mt19937 rng(1);
  for (int i = 0; i < 70000; ++i) noise.push_back(static_cast<char>(rng()));
  auto writer = PackWriter::Create(fs, dir, "p1");
  ASSERT_TRUE(writer.ok()) << writer.status();
  CompressedFrame a = CompressFrame(
      cctx, 3, 0.03, text,
      {FrameChunk{Sha256(text.substr(0, 50000)), 0, 50000},
       FrameChunk{Sha256(text.substr(50000)), 50000, 50000}});
  EXPECT_EQ(a.codec, Codec::kZstd);
  CompressedFrame b = CompressFrame(cctx, 3, 0.03, noise,
                                    {FrameChunk{Sha256(noise), 0, 70000}});
  EXPECT_EQ(b.codec, Codec::kRaw);
  ASSERT_TRUE((*writer)->AddFrame(a).ok());
  ASSERT_TRUE((*writer)->AddFrame(b).ok());
  uint64_t size = 0;
  auto sealed = (*writer)->Seal(&size);
  ASSERT_TRUE(sealed.ok()) << sealed.status();
  ZSTD_freeCCtx(cctx);

  auto file = fs->OpenForRead(dir + "/p1.pack");
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ(*(*file)->Size(), size);
  auto index = ReadPackIndex(**file, size);
  ASSERT_TRUE(index.ok()) << index.status();
  ASSERT_EQ(index->frames.size(), 2u);
  ASSERT_EQ(index->chunks.size(), 3u);
  EXPECT_EQ(index->chunks[2].frame, 1u);
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  auto f0 = ReadFrame(**file, index->frames[0], dctx, "p1", 0);
  ASSERT_TRUE(f0.ok()) << f0.status();
  EXPECT_EQ(*f0, text);
  auto f1 = ReadFrame(**file, index->frames[1], dctx, "p1", 1);
  ASSERT_TRUE(f1.ok()) << f1.status();
  EXPECT_EQ(*f1, noise);
  ZSTD_freeDCtx(dctx);
  EXPECT_FALSE(fs->FileSize(dir + "/p1.pack.tmp").ok());
}

TEST(PackTest, DamagedIndexIsDataLoss) {
  Filesystem* fs = PosixFilesystem();
  std::string dir = TestDir("pack_damaged");
  auto writer = PackWriter::Create(fs, dir, "p2");
  ASSERT_TRUE(writer.ok());
  std::string data(5000, 'y');
  CompressedFrame raw;
  raw.stored = data;
  raw.plain_len = 5000;
  raw.chunks = {FrameChunk{Sha256(data), 0, 5000}};
  ASSERT_TRUE((*writer)->AddFrame(raw).ok());
  uint64_t size = 0;
  ASSERT_TRUE((*writer)->Seal(&size).ok());
  std::string path = dir + "/p2.pack";
  // Flip one byte of the index (just before the 48-byte footer).
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(size - 60));
    f.put('\x5a');
  }
  auto file = fs->OpenForRead(path);
  ASSERT_TRUE(file.ok());
  EXPECT_EQ(ReadPackIndex(**file, size).status().code(),
            absl::StatusCode::kDataLoss);
  EXPECT_EQ(ReadPackIndex(**file, size - 1).status().code(),
            absl::StatusCode::kDataLoss);
}

TEST(PackTest, AbandonRemovesTempFile) {
  Filesystem* fs = PosixFilesystem();
  std::string dir = TestDir("pack_abandon");
  {
    auto writer = PackWriter::Create(fs, dir, "p3");
    ASSERT_TRUE(writer.ok());
    EXPECT_TRUE(fs->FileSize(dir + "/p3.pack.tmp").ok());
  }
  EXPECT_EQ(fs->FileSize(dir + "/p3.pack.tmp").status().code(),
            absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace internal
}  // namespace storaged
