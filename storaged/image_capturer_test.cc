// CaptureVolume against an in-memory volume that, like an iSCSI target
// faster than hashing, always has the next piece ready: the volume itself
// never gets to see a cancel, so the capture must.
#include "storaged/image_capturer.h"

#include <atomic>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "storaged/image_store.h"
#include "storaged/testing/temp_store.h"
#include "storaged/volume.h"

namespace storaged {
namespace {

constexpr uint32_t kChunk = 16 << 10;
constexpr uint32_t kPiece = 64 << 10;

std::unique_ptr<ImageStore> OpenStore(const std::string& name) {
  ImageStoreOptions o;
  o.chunk_size = kChunk;
  return testing::OpenTempStore(name, o);
}

// Thick, all data. ReadExtents hands pieces over without looking at
// options.cancelled (its data is always ready); after `cancel_after_pieces`
// pieces it sets `*cancel`, as a CancelOperation arriving mid-capture would.
class ReadyVolume final : public Volume {
 public:
  ReadyVolume(uint64_t size, std::atomic<bool>* cancel, int cancel_after_pieces)
      : cancel_(cancel), cancel_after_(cancel_after_pieces) {
    info_.size_bytes = size;
    info_.block_size = 512;
    data_.resize(size);
    std::mt19937_64 rng(3);
    for (char& c : data_) c = static_cast<char>(rng() | 1);
  }

  int pieces_read() const { return pieces_; }
  const VolumeInfo& info() const override { return info_; }
  absl::StatusOr<std::vector<Extent>> MappedExtents(uint64_t offset, uint64_t length) override {
    return std::vector<Extent>{{offset, std::min(length, info_.size_bytes - offset)}};
  }
  absl::Status ReadExtents(const std::vector<Extent>& extents, const ReadOptions&,
                           const ReadSink& sink) override {
    for (const Extent& e : extents) {
      for (uint64_t off = e.offset; off < e.offset + e.length; off += kPiece) {
        const uint64_t n = std::min<uint64_t>(kPiece, e.offset + e.length - off);
        if (++pieces_ == cancel_after_) cancel_->store(true);
        if (absl::Status s = sink(off, absl::string_view(data_).substr(off, n)); !s.ok()) {
          return s;
        }
      }
    }
    return absl::OkStatus();
  }
  std::unique_ptr<VolumeWriter> NewWriter(const WriteOptions&) override { return nullptr; }

 private:
  VolumeInfo info_;
  std::string data_;
  std::atomic<bool>* const cancel_;
  const int cancel_after_;
  int pieces_ = 0;
};

struct Case {
  const char* name;
  int cancel_after_pieces;
};

class CaptureCancelTest : public ::testing::TestWithParam<Case> {};

TEST_P(CaptureCancelTest, EndsCancelledWithNoImage) {
  constexpr uint64_t kSize = 64 * kPiece;  // 4 MiB
  auto store = OpenStore(GetParam().name);
  ASSERT_NE(store, nullptr);
  std::atomic<bool> cancel{false};
  ReadyVolume volume(kSize, &cancel, GetParam().cancel_after_pieces);
  CaptureOptions options;
  options.read.cancelled = &cancel;
  options.hash_threads = 1;

  absl::StatusOr<ManifestSummary> summary = CaptureVolume(volume, *store, "img", 0, options);
  EXPECT_EQ(summary.status().code(), absl::StatusCode::kCancelled) << summary.status();
  EXPECT_TRUE(absl::StrContains(summary.status().message(), "cancelled"))
      << summary.status().message();
  EXPECT_TRUE(store->ListImages().empty());
  // Stopped at the cancel, not at the end of the volume.
  if (GetParam().cancel_after_pieces < 64) {
    EXPECT_EQ(volume.pieces_read(), GetParam().cancel_after_pieces);
  }
  // The id is free again: the capture released it.
  EXPECT_EQ(store->DeleteImage("img").code(), absl::StatusCode::kNotFound);
}

INSTANTIATE_TEST_SUITE_P(Cancel, CaptureCancelTest,
                         ::testing::Values(Case{"early", 3}, Case{"middle", 20},
                                           // During the last piece: only the check
                                           // before Commit sees it.
                                           Case{"last", 64}),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(CaptureTest, UncancelledCaptureCommits) {
  constexpr uint64_t kSize = 16 * kPiece;
  auto store = OpenStore("plain");
  ASSERT_NE(store, nullptr);
  std::atomic<bool> cancel{false};
  ReadyVolume volume(kSize, &cancel, -1);
  CaptureOptions options;
  options.read.cancelled = &cancel;
  absl::StatusOr<ManifestSummary> summary = CaptureVolume(volume, *store, "img", 0, options);
  ASSERT_TRUE(summary.ok()) << summary.status();
  EXPECT_EQ(summary->data_chunks, kSize / kChunk);
  EXPECT_EQ(store->ListImages(), std::vector<std::string>{"img"});
}

}  // namespace
}  // namespace storaged
