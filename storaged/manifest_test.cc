#include "storaged/manifest.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace storaged {
namespace {

Manifest Sample() {
  Manifest m;
  m.image_id = "img-1";
  m.volume_size = 5 * 65536 + 4096;
  m.block_size = 512;
  m.chunk_size = 65536;
  m.create_time = absl::FromUnixMicros(1700000000123456);
  m.logical_bytes = 3 * 65536 + 4096;
  m.new_stored_bytes = 1234;
  m.referenced_stored_bytes = 5678;
  m.new_chunks = 2;
  m.chunks = ChunkTable(6);
  m.chunks.Append(1, Sha256("a"));
  m.chunks.Append(2, Sha256("b"));
  m.chunks.Append(4, Sha256("a"));
  m.chunks.Append(5, Sha256("tail"));
  return m;
}

TEST(ManifestTest, RoundTrip) {
  Manifest m = Sample();
  Digest d1;
  std::string encoded = EncodeManifest(m, &d1);
  Digest d2;
  absl::StatusOr<Manifest> decoded = DecodeManifest(encoded, &d2);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(d1, d2);
  EXPECT_EQ(decoded->image_id, m.image_id);
  EXPECT_EQ(decoded->volume_size, m.volume_size);
  EXPECT_EQ(decoded->block_size, m.block_size);
  EXPECT_EQ(decoded->chunk_size, m.chunk_size);
  EXPECT_EQ(decoded->create_time, m.create_time);
  EXPECT_EQ(decoded->logical_bytes, m.logical_bytes);
  EXPECT_EQ(decoded->new_stored_bytes, m.new_stored_bytes);
  EXPECT_EQ(decoded->referenced_stored_bytes, m.referenced_stored_bytes);
  EXPECT_EQ(decoded->new_chunks, m.new_chunks);
  EXPECT_EQ(decoded->chunks, m.chunks);
  EXPECT_EQ(decoded->ChunkLength(5), 4096u);
  EXPECT_EQ(decoded->ChunkLength(0), 65536u);
}

TEST(ManifestTest, EveryTruncationIsDataLoss) {
  std::string encoded = EncodeManifest(Sample(), nullptr);
  for (size_t n = 0; n < encoded.size(); ++n) {
    EXPECT_EQ(DecodeManifest(encoded.substr(0, n), nullptr).status().code(),
              absl::StatusCode::kDataLoss)
        << n;
  }
}

TEST(ManifestTest, EveryFlippedByteIsDataLoss) {
  std::string encoded = EncodeManifest(Sample(), nullptr);
  for (size_t i = 0; i < encoded.size(); ++i) {
    std::string altered = encoded;
    altered[i] ^= 0x01;
    EXPECT_EQ(DecodeManifest(altered, nullptr).status().code(),
              absl::StatusCode::kDataLoss)
        << i;
  }
}

TEST(ManifestTest, AllZeroVolumeIsOneRun) {
  Manifest m;
  m.image_id = "z";
  m.volume_size = uint64_t{1} << 30;
  m.block_size = 4096;
  m.chunk_size = 65536;
  m.chunks = ChunkTable(ChunkCountFor(m.volume_size, m.chunk_size));
  std::string encoded = EncodeManifest(m, nullptr);
  EXPECT_LT(encoded.size(), 200u);
  absl::StatusOr<Manifest> decoded = DecodeManifest(encoded, nullptr);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->ChunkCount(), 16384u);
}

// Format v1 byte for byte, written out by hand: stores made before the
// in-memory table changed must still open, and new ones must read the same.
std::string HandEncodedSample() {
  std::string out = "STORMAN1";
  auto put = [&](uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>(v >> (8 * i)));
  };
  auto data = [&](absl::string_view content) {
    put(1, 1);
    out += std::string(Sha256(content).AsBytes());
  };
  put(1, 4);
  put(0, 4);
  put(5, 2);
  out += "img-1";
  put(5 * 65536 + 4096, 8);
  put(512, 4);
  put(65536, 4);
  put(1700000000123456, 8);
  put(3 * 65536 + 4096, 8);
  put(1234, 8);
  put(5678, 8);
  put(2, 8);
  put(6, 8);
  put(0, 1);
  put(1, 8);
  data("a");
  data("b");
  put(0, 1);
  put(1, 8);
  data("a");
  data("tail");
  out += std::string(Sha256(out).AsBytes());
  return out;
}

TEST(ManifestTest, EncodingIsFormatV1ByteForByte) {
  EXPECT_EQ(EncodeManifest(Sample(), nullptr), HandEncodedSample());
  absl::StatusOr<Manifest> decoded = DecodeManifest(HandEncodedSample(), nullptr);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->chunks, Sample().chunks);
}

TEST(ManifestTest, ConsecutiveZeroRunsDecode) {
  Manifest m;
  m.image_id = "z";
  m.volume_size = 10 * 4096;
  m.block_size = 512;
  m.chunk_size = 4096;
  m.chunks = ChunkTable(10);
  m.chunks.Append(3, Sha256("x"));
  std::string encoded = EncodeManifest(m, nullptr);
  // Replace the leading run of 3 with runs of 1 and 2.
  const size_t records = encoded.size() - 32 - (1 + 8 + 33 + 1 + 8);
  std::string split = encoded.substr(0, records);
  auto put_run = [&](uint64_t n) {
    split.push_back(0);
    for (int i = 0; i < 8; ++i) split.push_back(static_cast<char>(n >> (8 * i)));
  };
  put_run(1);
  put_run(2);
  split.append(encoded, records + 9, 33 + 9);
  split += std::string(Sha256(split).AsBytes());
  absl::StatusOr<Manifest> decoded = DecodeManifest(split, nullptr);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->chunks, m.chunks);
  EXPECT_EQ(decoded->chunks.run_count(), 1u);
}

TEST(ManifestTest, ChunkTableLooksUpByIndexAndJoinsRuns) {
  ChunkTable t(100);
  EXPECT_EQ(t.FindRun(0), 0u);
  EXPECT_TRUE(t.At(0).IsZero());
  t.Append(10, Sha256("10"));
  t.Append(11, Sha256("11"));
  t.Append(12, Sha256("12"));
  t.Append(50, Sha256("50"));
  t.Append(99, Sha256("99"));
  EXPECT_EQ(t.size(), 100u);
  EXPECT_EQ(t.data_count(), 5u);
  EXPECT_EQ(t.zero_count(), 95u);
  ASSERT_EQ(t.run_count(), 3u);
  EXPECT_EQ(t.run(0).first, 10u);
  EXPECT_EQ(t.run(0).end(), 13u);
  EXPECT_EQ(t.run(2).first, 99u);
  for (uint64_t i = 0; i < 100; ++i) {
    bool data = (i >= 10 && i <= 12) || i == 50 || i == 99;
    if (data) {
      EXPECT_EQ(t.At(i), Sha256(absl::StrCat(i))) << i;
    } else {
      EXPECT_TRUE(t.At(i).IsZero()) << i;
    }
  }
  EXPECT_EQ(t.FindRun(0), 0u);
  EXPECT_EQ(t.FindRun(12), 0u);
  EXPECT_EQ(t.FindRun(13), 1u);
  EXPECT_EQ(t.FindRun(50), 1u);
  EXPECT_EQ(t.FindRun(51), 2u);
  EXPECT_EQ(t.FindRun(99), 2u);
  std::vector<uint64_t> seen;
  t.ForEachData([&](uint64_t i, const Digest& d) {
    EXPECT_EQ(d, Sha256(absl::StrCat(i)));
    seen.push_back(i);
  });
  EXPECT_EQ(seen, (std::vector<uint64_t>{10, 11, 12, 50, 99}));
}

// Thousands of data chunks cross the table's digest blocks; growing it
// costs no more than the digests and one partly filled block.
TEST(ManifestTest, LargeTableRoundTripsAcrossBlocks) {
  Manifest m;
  m.image_id = "dense";
  m.chunk_size = 4096;
  m.block_size = 512;
  m.volume_size = 10000 * 4096;
  m.chunks = ChunkTable(10000);
  auto digest = [](uint64_t i) { return Sha256(absl::StrCat("chunk", i)); };
  for (uint64_t i = 0; i < 10000; ++i) {
    if (i % 1000 != 999 && !(i >= 3000 && i < 5000)) m.chunks.Append(i, digest(i));
  }
  const uint64_t data = m.chunks.data_count();
  EXPECT_EQ(data, 10000u - 2000 - 8);
  EXPECT_EQ(m.chunks.run_count(), 8u);
  EXPECT_LT(m.chunks.MemoryBytes(), data * sizeof(Digest) + 40 * 1024);
  absl::StatusOr<Manifest> decoded = DecodeManifest(EncodeManifest(m, nullptr), nullptr);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->chunks, m.chunks);
  for (uint64_t i = 0; i < 10000; ++i) {
    bool zero = i % 1000 == 999 || (i >= 3000 && i < 5000);
    ASSERT_EQ(decoded->chunks.At(i), zero ? Digest() : digest(i)) << i;
  }
}

}  // namespace
}  // namespace storaged

namespace storaged {
namespace {

TEST(ManifestChunkCountTest, ExactUpToTheLargestVolumeSize) {
  EXPECT_EQ(ChunkCountFor(1, 16384), 1u);
  EXPECT_EQ(ChunkCountFor(16384, 16384), 1u);
  EXPECT_EQ(ChunkCountFor(16385, 16384), 2u);
  // Adding chunk_size - 1 first wrapped these to 0.
  EXPECT_EQ(ChunkCountFor(~uint64_t{0} - 511, 65536), (~uint64_t{0} >> 16) + 1);
  EXPECT_EQ(ChunkCountFor(~uint64_t{0}, 16384), (~uint64_t{0} >> 14) + 1);
}

// A header whose volume size wrapped the chunk count to 0 decoded as a valid,
// empty image.
TEST(ManifestChunkCountTest, HugeVolumeWithNoChunksIsDataLoss) {
  Manifest m;
  m.image_id = "huge";
  m.volume_size = ~uint64_t{0} - 511;
  m.block_size = 512;
  m.chunk_size = 65536;
  m.chunks = ChunkTable(0);
  absl::StatusOr<Manifest> decoded = DecodeManifest(EncodeManifest(m, nullptr), nullptr);
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss) << decoded.status();

  m.volume_size = 0;
  decoded = DecodeManifest(EncodeManifest(m, nullptr), nullptr);
  EXPECT_EQ(decoded.status().code(), absl::StatusCode::kDataLoss) << decoded.status();
}

}  // namespace
}  // namespace storaged
