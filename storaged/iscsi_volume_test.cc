#include "storaged/iscsi_volume.h"

#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storaged/testing/tgtd_fixture.h"
#include "storaged/volume_fault.h"
#include "tests/san.h"

namespace storaged {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

constexpr uint64_t kMiB = 1024 * 1024;

std::string RandomBytes(size_t n, uint32_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(n, '\0');
  for (size_t i = 0; i + 8 <= n; i += 8) {
    uint64_t v = rng();
    memcpy(&out[i], &v, 8);
  }
  return out;
}

std::string ReadFileRange(const std::string& path, uint64_t offset, uint64_t length) {
  std::string out(length, '\0');
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  EXPECT_GE(fd, 0) << path;
  ssize_t n = pread(fd, out.data(), length, static_cast<off_t>(offset));
  close(fd);
  EXPECT_EQ(n, static_cast<ssize_t>(length));
  return out;
}

// Data ranges of a sparse file, as SEEK_DATA/SEEK_HOLE see them.
std::vector<Extent> FileDataRanges(const std::string& path) {
  std::vector<Extent> out;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  off_t size = lseek(fd, 0, SEEK_END);
  off_t pos = 0;
  while (pos < size) {
    off_t data = lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;
    off_t hole = lseek(fd, data, SEEK_HOLE);
    out.push_back({static_cast<uint64_t>(data), static_cast<uint64_t>(hole - data)});
    pos = hole;
  }
  close(fd);
  return out;
}

absl::StatusOr<std::string> ReadAll(Volume& volume, const std::vector<Extent>& extents,
                                    const ReadOptions& options = {}) {
  std::string out;
  uint64_t expected = extents.empty() ? 0 : extents[0].offset;
  size_t index = 0;
  absl::Status status = volume.ReadExtents(
      extents, options, [&](uint64_t offset, absl::string_view data) {
        // Pieces arrive in order and cover the extents exactly.
        while (index < extents.size() &&
               expected == extents[index].offset + extents[index].length) {
          if (++index < extents.size()) expected = extents[index].offset;
        }
        EXPECT_EQ(offset, expected);
        expected += data.size();
        out.append(data.data(), data.size());
        return absl::OkStatus();
      });
  if (!status.ok()) return status;
  return out;
}

class IscsiVolumeTest : public TgtdFixture {
 protected:
  static std::unique_ptr<IscsiVolume> OpenOrDie(const std::string& url,
                                                const IscsiVolumeOptions& options = {}) {
    auto volume = IscsiVolume::Open(url, options);
    EXPECT_TRUE(volume.ok()) << volume.status();
    return volume.ok() ? std::move(*volume) : nullptr;
  }
};

TEST(ParseIscsiUrlTest, ParsesFullAndMinimalForms) {
  auto url = ParseIscsiUrl("iscsi://alice%s3cr@t/x@10.0.0.5:3261/iqn.2026-11.test:a/3");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->user, "alice");
  EXPECT_EQ(url->password, "s3cr@t/x");
  EXPECT_EQ(url->host, "10.0.0.5");
  EXPECT_EQ(url->port, 3261);
  EXPECT_EQ(url->iqn, "iqn.2026-11.test:a");
  EXPECT_EQ(url->lun, 3);
  EXPECT_EQ(url->Redacted(), "iscsi://alice@10.0.0.5:3261/iqn.2026-11.test:a/3");

  url = ParseIscsiUrl("iscsi://san.example/iqn.2026-11.test:b/0");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->port, 3260);
  EXPECT_TRUE(url->user.empty());

  url = ParseIscsiUrl("iscsi://[fd00::1]:3262/iqn.2026-11.test:c/1");
  ASSERT_TRUE(url.ok()) << url.status();
  EXPECT_EQ(url->host, "fd00::1");
  EXPECT_EQ(url->Portal(), "[fd00::1]:3262");
}

TEST(ParseIscsiUrlTest, RejectsMalformedUrls) {
  for (const char* bad : {
           "",
           "http://h/iqn.2026-11.test:a/1",
           "iscsi://",
           "iscsi://host",
           "iscsi://host/iqn.2026-11.test:a",
           "iscsi://host/iqn.2026-11.test:a/",
           "iscsi://host/iqn.2026-11.test:a/x",
           "iscsi://host/iqn.2026-11.test:a/-1",
           "iscsi://host/iqn.2026-11.test:a/99999",
           "iscsi://host:0/iqn.2026-11.test:a/1",
           "iscsi://host:70000/iqn.2026-11.test:a/1",
           "iscsi://host:/iqn.2026-11.test:a/1",
           "iscsi://host:abc/iqn.2026-11.test:a/1",
           "iscsi:///iqn.2026-11.test:a/1",
           "iscsi://host//1",
           "iscsi://host/notaniqn/1",
           "iscsi://fd00::1/iqn.2026-11.test:a/1",
           "iscsi://user@host/iqn.2026-11.test:a/1",
           "iscsi://user%@host/iqn.2026-11.test:a/1",
       }) {
    auto url = ParseIscsiUrl(bad);
    EXPECT_EQ(url.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  // The password never shows up in the message.
  auto url = ParseIscsiUrl("iscsi://bob%hunter2@host:99999/iqn.2026-11.test:a/1");
  EXPECT_EQ(url.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(url.status().message()), Not(HasSubstr("hunter2")));
}

class GeometryTest : public IscsiVolumeTest,
                     public ::testing::WithParamInterface<std::tuple<bool, uint32_t>> {};

TEST_P(GeometryTest, OpenReadsCapacityAndProvisioning) {
  auto [thin, block_size] = GetParam();
  tests::Lun lun = MakeLun(64 * kMiB, thin, block_size);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  EXPECT_EQ(volume->info().size_bytes, 64 * kMiB);
  EXPECT_EQ(volume->info().block_size, block_size);
  EXPECT_EQ(volume->info().thin, thin);
  EXPECT_EQ(volume->info().zeroes_unmapped, thin);
}

TEST_P(GeometryTest, WritesReadBackAndLandInTheBackingFile) {
  auto [thin, block_size] = GetParam();
  const uint64_t size = 32 * kMiB;
  tests::Lun lun = MakeLun(size, thin, block_size);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);

  std::string expected(size, '\0');
  {
    auto writer = volume->NewWriter({});
    // A large write spanning many commands, small ones, and one at the end.
    struct Piece {
      uint64_t offset;
      uint64_t length;
    };
    uint32_t seed = 1;
    for (Piece p : std::vector<Piece>{{0, 5 * kMiB + 3 * 4096},
                                      {8 * kMiB, 4096},
                                      {9 * kMiB, 1 * kMiB},
                                      {12 * kMiB + 8192, 3 * kMiB},
                                      {size - 64 * 1024, 64 * 1024}}) {
      std::string data = RandomBytes(p.length, seed++);
      expected.replace(p.offset, p.length, data);
      ASSERT_TRUE(writer->Write(p.offset, std::move(data)).ok());
      // Background flushes between writes, a second while the first may
      // still run, change nothing about the data.
      ASSERT_TRUE(writer->StartFlush().ok());
      ASSERT_TRUE(writer->StartFlush().ok());
    }
    ASSERT_TRUE(writer->Flush().ok());
  }
  auto read = ReadAll(*volume, {{0, size}});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == expected) << "volume content differs";
  EXPECT_TRUE(ReadFileRange(lun.backing_path, 0, size) == expected)
      << "backing file differs";

  // Several extents, odd io size, shallow queue.
  ReadOptions small;
  small.io_bytes = 3 * 4096 + 100;  // rounds down to blocks
  small.queue_depth = 3;
  std::vector<Extent> extents = {{4096, 8192}, {1 * kMiB, 2 * kMiB}, {size - 4096, 4096}};
  read = ReadAll(*volume, extents, small);
  ASSERT_TRUE(read.ok()) << read.status();
  std::string want;
  for (const Extent& e : extents) want += expected.substr(e.offset, e.length);
  EXPECT_TRUE(*read == want);
}

// Gathered writes: pieces of odd sizes that start and end inside commands
// (io_bytes 8 KiB here), sent from where they lie, land in order; `keep` is
// held until the commands are done and let go after.
TEST_P(GeometryTest, GatheredWritesLandInOrderAndReleaseTheirBuffers) {
  auto [thin, block_size] = GetParam();
  const uint64_t size = 8 * kMiB;
  tests::Lun lun = MakeLun(size, thin, block_size);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);

  const std::string source = RandomBytes(2 * kMiB, 21);
  std::string expected(size, '\0');
  std::weak_ptr<const void> released;
  {
    WriteOptions options;
    options.io_bytes = 8192;
    options.queue_depth = 3;
    auto writer = volume->NewWriter(options);
    auto keep = std::make_shared<const std::string>(source);
    released = keep;
    absl::string_view s(*keep);
    // 1 MiB from seven pieces, one of them repeated and one empty, at 1 MiB.
    std::vector<absl::string_view> pieces = {s.substr(100, 1000), s.substr(5000, 0),
                                             s.substr(7000, 300000), s.substr(100, 1000),
                                             s.substr(400000, 17)};
    uint64_t sum = 0;
    for (absl::string_view p : pieces) sum += p.size();
    pieces.push_back(s.substr(1 * kMiB, kMiB - sum));
    std::string flat;
    for (absl::string_view p : pieces) flat.append(p.data(), p.size());
    ASSERT_EQ(flat.size(), kMiB);
    expected.replace(kMiB, kMiB, flat);
    ASSERT_TRUE(writer->WriteGather(kMiB, pieces, keep).ok());
    // One piece of a whole 4 KiB block at the end of the volume.
    expected.replace(size - 4096, 4096, source.substr(0, 4096));
    ASSERT_TRUE(writer->WriteGather(size - 4096, {s.substr(0, 4096)}, keep).ok());
    keep.reset();
    // Misaligned (a block and a byte) and past the end: refused, nothing sent.
    auto other = std::make_shared<const std::string>(source);
    absl::string_view o(*other);
    EXPECT_EQ(writer->WriteGather(0, {o.substr(0, block_size), o.substr(0, 1)}, other).code(),
              absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(writer->WriteGather(size - 4096, {o.substr(0, 8192)}, other).code(),
              absl::StatusCode::kOutOfRange);
    EXPECT_EQ(other.use_count(), 1);
    ASSERT_TRUE(writer->Flush().ok());
  }
  EXPECT_TRUE(released.expired()) << "the writer still holds a gathered write's buffer";
  EXPECT_TRUE(ReadFileRange(lun.backing_path, 0, size) == expected) << "backing file differs";
}

INSTANTIATE_TEST_SUITE_P(ThinThick, GeometryTest,
                         ::testing::Combine(::testing::Bool(), ::testing::Values(512u, 4096u)),
                         [](const auto& info) {
                           return absl::StrCat(std::get<0>(info.param) ? "Thin" : "Thick",
                                               std::get<1>(info.param));
                         });

TEST_F(IscsiVolumeTest, MappedExtentsMatchBackingFileHoles) {
  const uint64_t size = 64 * kMiB;
  tests::Lun lun = MakeLun(size, /*thin=*/true);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  {
    auto writer = volume->NewWriter({});
    uint32_t seed = 7;
    // Many small islands, so one GET LBA STATUS answer holds many ranges.
    for (uint64_t off = 0; off < size; off += 256 * 1024) {
      if ((off / (256 * 1024)) % 3 == 0) continue;
      ASSERT_TRUE(writer->Write(off, RandomBytes(64 * 1024, seed++)).ok());
    }
    ASSERT_TRUE(writer->Write(40 * kMiB, RandomBytes(3 * kMiB, seed++)).ok());
    ASSERT_TRUE(writer->Flush().ok());
  }
  std::vector<Extent> want = FileDataRanges(lun.backing_path);
  ASSERT_GT(want.size(), 100u);
  auto mapped = volume->MappedExtents(0, size);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ(*mapped, want);

  // A window starting and ending inside mapped ranges is clipped.
  mapped = volume->MappedExtents(40 * kMiB + 4096, kMiB);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_THAT(*mapped, ElementsAre(Extent{40 * kMiB + 4096, kMiB}));

  // A thick volume is mapped everywhere.
  tests::Lun thick = MakeLun(8 * kMiB, /*thin=*/false);
  auto thick_volume = OpenOrDie(thick.url);
  ASSERT_NE(thick_volume, nullptr);
  mapped = thick_volume->MappedExtents(kMiB, 100 * kMiB);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_THAT(*mapped, ElementsAre(Extent{kMiB, 7 * kMiB}));
}

// tgt answers a hole of 2^32 blocks (2 TiB at 512 bytes) with a length of 0
// (its 32-bit field wraps). MappedExtents must neither fail nor skip data:
// it counts a short stretch as mapped and asks again past it.
TEST_F(IscsiVolumeTest, MappedExtentsSurviveAHoleOf2To32Blocks) {
  const uint64_t size = uint64_t{1} << 41;  // 2^32 blocks of 512 bytes
  tests::Lun lun = MakeLun(size, /*thin=*/true);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  ASSERT_EQ(volume->info().size_bytes, size);

  auto mapped = volume->MappedExtents(0, size);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_THAT(*mapped, ElementsAre(Extent{0, kMiB}));

  // Data past the probe is found, and the holes on both sides of it (each
  // under 2^32 blocks) are answered as they are.
  const uint64_t at = size / 2;
  {
    auto writer = volume->NewWriter({});
    ASSERT_TRUE(writer->Write(at, RandomBytes(64 * 1024, 11)).ok());
    ASSERT_TRUE(writer->Flush().ok());
  }
  mapped = volume->MappedExtents(0, size);
  ASSERT_TRUE(mapped.ok()) << mapped.status();
  EXPECT_EQ(*mapped, FileDataRanges(lun.backing_path));
  ASSERT_EQ(mapped->size(), 1u);
  EXPECT_LE(mapped->front().offset, at);
  EXPECT_GE(mapped->front().offset + mapped->front().length, at + 64 * 1024);
}

class WriteZeroesTest : public IscsiVolumeTest, public ::testing::WithParamInterface<bool> {};

TEST_P(WriteZeroesTest, RangeReadsZeroAndThinVolumesRegainHoles) {
  const bool thin = GetParam();
  const uint64_t size = 16 * kMiB;
  tests::Lun lun = MakeLun(size, thin, 4096);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  std::string expected = RandomBytes(size, 3);
  {
    auto writer = volume->NewWriter({});
    ASSERT_TRUE(writer->Write(0, expected).ok());
    ASSERT_TRUE(writer->WriteZeroes(2 * kMiB, 5 * kMiB).ok());
    ASSERT_TRUE(writer->Flush().ok());
  }
  expected.replace(2 * kMiB, 5 * kMiB, std::string(5 * kMiB, '\0'));
  auto read = ReadAll(*volume, {{0, size}});
  ASSERT_TRUE(read.ok()) << read.status();
  EXPECT_TRUE(*read == expected);
  EXPECT_TRUE(ReadFileRange(lun.backing_path, 0, size) == expected);
  if (thin) {
    EXPECT_THAT(FileDataRanges(lun.backing_path),
                ElementsAre(Extent{0, 2 * kMiB}, Extent{7 * kMiB, size - 7 * kMiB}));
    auto mapped = volume->MappedExtents(0, size);
    ASSERT_TRUE(mapped.ok());
    EXPECT_THAT(*mapped, ElementsAre(Extent{0, 2 * kMiB}, Extent{7 * kMiB, size - 7 * kMiB}));
  }
}

INSTANTIATE_TEST_SUITE_P(ThinThick, WriteZeroesTest, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Thin" : "Thick"; });

// A target that claims LBPRZ but rejects WRITE SAME with UNMAP (tgt does on
// a thick LUN): zeroing falls back to explicit zero writes instead of failing.
TEST_F(IscsiVolumeTest, WriteZeroesFallsBackWhenWriteSameIsRejected) {
  const uint64_t size = 16 * kMiB;
  tests::Lun lun = MakeLun(size, /*thin=*/false);
  IscsiVolumeOptions options;
  options.assume_thin_lbprz_for_testing = true;
  auto volume = OpenOrDie(lun.url, options);
  ASSERT_NE(volume, nullptr);
  ASSERT_TRUE(volume->info().thin && volume->info().zeroes_unmapped);
  std::string expected = RandomBytes(size, 5);
  for (int round = 0; round < 2; ++round) {  // the second round knows already
    auto writer = volume->NewWriter({});
    ASSERT_TRUE(writer->Write(0, expected).ok());
    ASSERT_TRUE(writer->WriteZeroes(kMiB, 3 * kMiB).ok());
    ASSERT_TRUE(writer->WriteZeroes(9 * kMiB, 2 * kMiB).ok());
    ASSERT_TRUE(writer->Write(12 * kMiB, std::string(kMiB, 'z')).ok());
    ASSERT_TRUE(writer->Flush().ok());
    std::string want = expected;
    want.replace(kMiB, 3 * kMiB, std::string(3 * kMiB, '\0'));
    want.replace(9 * kMiB, 2 * kMiB, std::string(2 * kMiB, '\0'));
    want.replace(12 * kMiB, kMiB, std::string(kMiB, 'z'));
    auto read = ReadAll(*volume, {{0, size}});
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_TRUE(*read == want) << "round " << round;
    EXPECT_TRUE(ReadFileRange(lun.backing_path, 0, size) == want) << "round " << round;
  }
}

// The volume's I/O thread services the connection while the caller is busy
// elsewhere: a loss during a slow sink is noticed and repaired before the
// sink returns, and the read still delivers every byte once, in order.
TEST_F(IscsiVolumeTest, IoThreadReconnectsWhileTheSinkIsBusy) {
  const uint64_t size = 32 * kMiB;
  tests::Lun lun = MakeLun(size, false);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  std::string expected = RandomBytes(size, 17);
  {
    auto writer = volume->NewWriter({});
    ASSERT_TRUE(writer->Write(0, expected).ok());
    ASSERT_TRUE(writer->Flush().ok());
  }
  const int before = volume->reconnects();
  int pieces = 0;
  bool reconnected_inside_sink = false;
  std::string read;
  absl::Status status =
      volume->ReadExtents({{0, size}}, {}, [&](uint64_t, absl::string_view d) {
        if (++pieces == 3) {
          volume->BreakConnectionForTesting();
          absl::Time deadline = absl::Now() + absl::Seconds(30);
          while (volume->reconnects() == before && absl::Now() < deadline) {
            absl::SleepFor(absl::Milliseconds(5));
          }
          reconnected_inside_sink = volume->reconnects() > before;
        }
        read.append(d.data(), d.size());
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(reconnected_inside_sink);
  EXPECT_TRUE(read == expected);

  // A writer whose caller stops submitting still gets its writes done: Flush
  // after a break finds everything written.
  std::string second = RandomBytes(size, 18);
  {
    auto writer = volume->NewWriter({});
    ASSERT_TRUE(writer->Write(0, second).ok());
    volume->BreakConnectionForTesting();
    ASSERT_TRUE(writer->Flush().ok());
  }
  EXPECT_TRUE(ReadFileRange(lun.backing_path, 0, size) == second);
}

TEST_F(IscsiVolumeTest, OpenErrorsHaveDistinctCodes) {
  tests::Lun lun = MakeLun(4 * kMiB, false);
  // A port nobody listens on.
  auto free_port_san = tests::San::Start();
  ASSERT_TRUE(free_port_san.ok());
  int dead_port = (*free_port_san)->port();
  ASSERT_TRUE((*free_port_san)->Stop().ok());
  auto volume = IscsiVolume::Open(
      absl::StrCat("iscsi://127.0.0.1:", dead_port, "/", lun.iqn, "/1"));
  EXPECT_EQ(volume.status().code(), absl::StatusCode::kUnavailable) << volume.status();

  volume = IscsiVolume::Open(
      absl::StrCat("iscsi://127.0.0.1:", san_->port(), "/iqn.2026-11.test:nosuch/1"));
  EXPECT_EQ(volume.status().code(), absl::StatusCode::kNotFound) << volume.status();

  volume = IscsiVolume::Open(absl::StrCat("iscsi://127.0.0.1:", san_->port(), "/", lun.iqn, "/7"));
  EXPECT_EQ(volume.status().code(), absl::StatusCode::kNotFound) << volume.status();

  volume = IscsiVolume::Open("iscsi://127.0.0.1/no-iqn/1");
  EXPECT_EQ(volume.status().code(), absl::StatusCode::kInvalidArgument) << volume.status();
}

TEST_F(IscsiVolumeTest, ChapCredentialsAreChecked) {
  tests::Lun lun = MakeLun(4 * kMiB, false);
  ASSERT_TRUE(san_->SetChap(TargetName(lun), "bob", "secretpass123").ok());
  const std::string rest = absl::StrCat("127.0.0.1:", san_->port(), "/", lun.iqn, "/1");

  auto volume = IscsiVolume::Open(absl::StrCat("iscsi://bob%wrongpass999@", rest));
  EXPECT_EQ(volume.status().code(), absl::StatusCode::kUnauthenticated) << volume.status();
  EXPECT_THAT(std::string(volume.status().message()), Not(HasSubstr("wrongpass999")));

  volume = IscsiVolume::Open(absl::StrCat("iscsi://", rest));
  EXPECT_EQ(volume.status().code(), absl::StatusCode::kUnauthenticated) << volume.status();

  volume = IscsiVolume::Open(absl::StrCat("iscsi://bob%secretpass123@", rest));
  ASSERT_TRUE(volume.ok()) << volume.status();
  EXPECT_EQ((*volume)->info().size_bytes, 4 * kMiB);
}

TEST_F(IscsiVolumeTest, RejectsBadRanges) {
  tests::Lun lun = MakeLun(4 * kMiB, false);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  auto sink = [](uint64_t, absl::string_view) { return absl::OkStatus(); };
  EXPECT_EQ(volume->ReadExtents({{100, 512}}, {}, sink).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(volume->ReadExtents({{4 * kMiB - 512, 1024}}, {}, sink).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(volume->ReadExtents({{4096, 512}, {0, 512}}, {}, sink).code(),
            absl::StatusCode::kInvalidArgument);
  auto writer = volume->NewWriter({});
  EXPECT_EQ(writer->Write(0, std::string(100, 'x')).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(IscsiVolumeTest, SinkErrorAndCancellationStopTheRead) {
  tests::Lun lun = MakeLun(16 * kMiB, false);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  int calls = 0;
  absl::Status status = volume->ReadExtents(
      {{0, 16 * kMiB}}, {}, [&](uint64_t, absl::string_view) {
        return ++calls == 3 ? absl::ResourceExhaustedError("disk full") : absl::OkStatus();
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(calls, 3);

  std::atomic<bool> cancelled{false};
  ReadOptions options;
  options.cancelled = &cancelled;
  calls = 0;
  status = volume->ReadExtents({{0, 16 * kMiB}}, options, [&](uint64_t, absl::string_view) {
    if (++calls == 2) cancelled = true;
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kCancelled);
  // The volume is still usable afterwards.
  EXPECT_TRUE(ReadAll(*volume, {{0, kMiB}}).ok());
}

TEST_F(IscsiVolumeTest, FaultVolumeSurfacesInjectedErrors) {
  tests::Lun lun = MakeLun(8 * kMiB, false);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  FaultVolume faulty(volume.get());

  faulty.FailReadsAfter(2 * kMiB, absl::DataLossError("injected medium error"));
  uint64_t delivered = 0;
  absl::Status status = faulty.ReadExtents({{0, 8 * kMiB}}, {},
                                           [&](uint64_t, absl::string_view data) {
                                             delivered += data.size();
                                             return absl::OkStatus();
                                           });
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(delivered, 2 * kMiB);

  faulty.FailWritesAfter(kMiB, absl::UnavailableError("injected link down"));
  auto writer = faulty.NewWriter({});
  EXPECT_TRUE(writer->Write(0, std::string(kMiB, 'a')).ok());
  EXPECT_EQ(writer->Write(kMiB, std::string(4096, 'b')).code(), absl::StatusCode::kUnavailable);
  // Sticks, like a real I/O error.
  EXPECT_EQ(writer->WriteZeroes(0, 4096).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(writer->Flush().code(), absl::StatusCode::kUnavailable);

  faulty.FailMappedExtents(absl::InternalError("injected"));
  EXPECT_EQ(faulty.MappedExtents(0, kMiB).status().code(), absl::StatusCode::kInternal);
}

TEST_F(IscsiVolumeTest, TransientConnectionLossIsResumed) {
  const uint64_t size = 32 * kMiB;
  tests::Lun lun = MakeLun(size, true);
  auto volume = OpenOrDie(lun.url);
  ASSERT_NE(volume, nullptr);
  std::string expected = RandomBytes(size, 11);
  {
    auto writer = volume->NewWriter({});
    for (uint64_t off = 0; off < size; off += 2 * kMiB) {
      ASSERT_TRUE(writer->Write(off, expected.substr(off, 2 * kMiB)).ok());
      // Initiator-side loss in the middle of the writes.
      if (off == 8 * kMiB) volume->BreakConnectionForTesting();
    }
    ASSERT_TRUE(writer->Flush().ok());
  }
  EXPECT_GE(volume->reconnects(), 1);

  // Target-side loss (tgtadm drops the connection) in the middle of a read.
  std::string read;
  int pieces = 0;
  int before_drop = 0;
  absl::Status status = volume->ReadExtents({{0, size}}, {}, [&](uint64_t, absl::string_view d) {
    if (++pieces == 5) {
      before_drop = volume->reconnects();
      EXPECT_TRUE(san_->DropConnections(TargetName(lun)).ok());
    }
    if (pieces == 20) {
      // Two separate losses, however slowly the I/O thread noticed the first.
      for (absl::Time end = absl::Now() + absl::Seconds(30);
           volume->reconnects() == before_drop && absl::Now() < end;) {
        absl::SleepFor(absl::Milliseconds(5));
      }
      volume->BreakConnectionForTesting();
    }
    read.append(d.data(), d.size());
    return absl::OkStatus();
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_TRUE(read == expected);
  EXPECT_GE(volume->reconnects(), 3);
  EXPECT_TRUE(ReadFileRange(lun.backing_path, 0, size) == expected);
}

TEST_F(IscsiVolumeTest, PersistentConnectionLossIsUnavailable) {
  auto own_san = tests::San::Start();
  ASSERT_TRUE(own_san.ok()) << own_san.status();
  // Larger than the read-ahead window (8 MiB), so reading goes on after the
  // target is gone.
  auto lun = (*own_san)->CreateLun("gone", 64 * kMiB);
  ASSERT_TRUE(lun.ok()) << lun.status();
  IscsiVolumeOptions options;
  options.reconnect_timeout = absl::Seconds(1);
  options.connect_timeout = absl::Milliseconds(500);
  auto volume = OpenOrDie(lun->url, options);
  ASSERT_NE(volume, nullptr);
  int pieces = 0;
  absl::Status status = volume->ReadExtents({{0, 64 * kMiB}}, {}, [&](uint64_t, absl::string_view) {
    // With our initiator reconnecting, tgtd may ignore the shutdown request
    // and need Stop()'s SIGKILL; gone is gone either way.
    if (++pieces == 2) (*own_san)->Stop().IgnoreError();
    return absl::OkStatus();
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  auto writer = volume->NewWriter({});
  status = writer->Write(0, std::string(4096, 'x'));
  if (status.ok()) status = writer->Flush();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
}

}  // namespace
}  // namespace storaged
