#include "storaged/manifest.h"

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
  m.chunks.resize(6);
  m.chunks[1] = Sha256("a");
  m.chunks[2] = Sha256("b");
  m.chunks[4] = Sha256("a");
  m.chunks[5] = Sha256("tail");
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
  m.chunks.resize(ChunkCountFor(m.volume_size, m.chunk_size));
  std::string encoded = EncodeManifest(m, nullptr);
  EXPECT_LT(encoded.size(), 200u);
  absl::StatusOr<Manifest> decoded = DecodeManifest(encoded, nullptr);
  ASSERT_TRUE(decoded.ok()) << decoded.status();
  EXPECT_EQ(decoded->ChunkCount(), 16384u);
}

}  // namespace
}  // namespace storaged
