// RestoreImage against a real tgtd LUN: bytes, zero handling on thin and
// thick targets, and the background flushes that spread the target's
// write-back over the restore.
#include "storaged/image_restorer.h"

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
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

class ImageRestorerTest : public TgtdFixture {
 protected:
  void SetUp() override {
    std::string dir = absl::StrCat(std::getenv("TEST_TMPDIR"), "/store-",
                                   ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    ImageStoreOptions o;
    o.chunk_size = kChunk;
    auto store = ImageStore::Open(dir, o);
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

}  // namespace
}  // namespace storaged
