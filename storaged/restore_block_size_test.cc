// RestoreImage refuses, before writing anything, a target whose block size
// does not divide the image's chunk size (32/64 KiB blocks against 16 KiB
// chunks): such a restore used to fail halfway, the disk half written.
#include <memory>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "storaged/image_restorer.h"
#include "storaged/image_store.h"
#include "storaged/testing/temp_store.h"
#include "storaged/volume.h"

namespace storaged {
namespace {

constexpr uint32_t kChunk = 16 << 10;

// Thick, in memory; the writer refuses misaligned writes as a target does
// and counts what reaches it.
class MemoryVolume final : public Volume {
 public:
  MemoryVolume(uint64_t size, uint32_t block_size) {
    info_.size_bytes = size;
    info_.block_size = block_size;
  }
  int writes = 0;
  const VolumeInfo& info() const override { return info_; }
  absl::StatusOr<std::vector<Extent>> MappedExtents(uint64_t offset, uint64_t length) override {
    return std::vector<Extent>{{offset, std::min(length, info_.size_bytes - offset)}};
  }
  absl::Status ReadExtents(const std::vector<Extent>&, const ReadOptions&,
                           const ReadSink&) override {
    return absl::UnimplementedError("not read");
  }
  std::unique_ptr<VolumeWriter> NewWriter(const WriteOptions&) override {
    return std::make_unique<Writer>(this);
  }

 private:
  class Writer final : public VolumeWriter {
   public:
    explicit Writer(MemoryVolume* v) : v_(v) {}
    using VolumeWriter::Write;
    absl::Status Write(uint64_t offset, std::shared_ptr<const std::string> data) override {
      return Count(offset, data->size());
    }
    absl::Status WriteZeroes(uint64_t offset, uint64_t length) override {
      return Count(offset, length);
    }
    absl::Status Flush() override { return absl::OkStatus(); }
    absl::Status StartFlush() override { return absl::OkStatus(); }

   private:
    absl::Status Count(uint64_t offset, uint64_t length) {
      const uint32_t bs = v_->info_.block_size;
      if (offset % bs != 0 || length % bs != 0) {
        return absl::InvalidArgumentError(absl::StrCat("write ", offset, "+", length,
                                                       " is not aligned to ", bs));
      }
      ++v_->writes;
      return absl::OkStatus();
    }
    MemoryVolume* v_;
  };
  VolumeInfo info_;
};

TEST(RestoreBlockSizeTest, BlockLargerThanAChunkIsRefusedBeforeAnyWrite) {
  ImageStoreOptions o;
  o.chunk_size = kChunk;
  std::unique_ptr<ImageStore> store = testing::OpenTempStore("store", o);
  ASSERT_NE(store, nullptr);
  // Data and zero chunks alternating: every run is one 16 KiB chunk.
  constexpr uint64_t kSize = 8 * kChunk;
  auto writer = store->BeginImage("img", kSize, 512);
  ASSERT_TRUE(writer.ok()) << writer.status();
  for (uint64_t i = 0; i < 8; ++i) {
    if (i % 2 == 0) {
      ASSERT_TRUE((*writer)->AddChunk(i, std::string(kChunk, static_cast<char>('a' + i))).ok());
    } else {
      ASSERT_TRUE((*writer)->AddZeroChunks(i, 1).ok());
    }
  }
  ASSERT_TRUE((*writer)->Commit().ok());

  for (uint32_t block_size : {32u << 10, 64u << 10}) {
    SCOPED_TRACE(block_size);
    auto reader = store->OpenImage("img");
    ASSERT_TRUE(reader.ok());
    MemoryVolume volume(kSize, block_size);
    absl::StatusOr<RestoreProgress> restored = RestoreImage(**reader, volume, RestoreOptions());
    EXPECT_EQ(restored.status().code(), absl::StatusCode::kFailedPrecondition)
        << restored.status();
    EXPECT_TRUE(absl::StrContains(restored.status().message(),
                                  absl::StrCat("block size ", block_size)))
        << restored.status().message();
    EXPECT_TRUE(absl::StrContains(restored.status().message(),
                                  absl::StrCat("chunk size ", kChunk)))
        << restored.status().message();
    EXPECT_EQ(volume.writes, 0);
  }
  // 4 KiB blocks divide the chunk: the same image restores.
  auto reader = store->OpenImage("img");
  ASSERT_TRUE(reader.ok());
  MemoryVolume fine(kSize, 4096);
  absl::StatusOr<RestoreProgress> restored = RestoreImage(**reader, fine, RestoreOptions());
  EXPECT_TRUE(restored.ok()) << restored.status();
  EXPECT_GT(fine.writes, 0);
}

}  // namespace
}  // namespace storaged
