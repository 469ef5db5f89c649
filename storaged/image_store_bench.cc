// Captures raw disk images into a fresh temporary image store and reports
// capture time, throughput and stored bytes; for every image after the first,
// the new stored bytes as a share of the first image's. Then restores the
// last image and reports that throughput. Lets chunk/frame/level choices be
// compared on real disks:
//   image_store_bench [--compression-level=3] [--chunk-size=65536]
//                     [--frame-size=4194304]
//                     [--readers=2] [--store-dir=DIR] disk1.img [disk2.img ...]
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <thread>
#include <vector>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "common/status_macros.h"
#include "storaged/image_store.h"

namespace storaged {
namespace {

constexpr uint64_t kReadUnit = 1 << 20;  // Reader threads claim 1 MiB.

double Mb(uint64_t bytes) { return static_cast<double>(bytes) / 1e6; }

double CpuSeconds() {
  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
         (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

absl::StatusOr<ManifestSummary> CaptureFile(ImageStore* store,
                                            const std::string& id,
                                            const std::string& path,
                                            int readers) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, "open " + path);
  uint64_t size = static_cast<uint64_t>(::lseek(fd, 0, SEEK_END));
  auto writer = store->BeginImage(id, size, 512);
  if (!writer.ok()) {
    ::close(fd);
    return writer.status();
  }
  ImageWriter* w = writer->get();
  const uint32_t chunk = store->options().chunk_size;
  // Holes of a sparse file read as zeroes without being read, as unmapped
  // ranges of a thin LUN do (GET LBA STATUS); qemu-img skips them too.
  std::vector<bool> mapped(w->chunk_count(), false);
  for (off_t pos = 0;;) {
    off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;
    off_t hole = ::lseek(fd, data, SEEK_HOLE);
    if (hole < 0) hole = static_cast<off_t>(size);
    for (uint64_t i = data / chunk; i < w->chunk_count() &&
                                    i * chunk < static_cast<uint64_t>(hole);
         ++i) {
      mapped[i] = true;
    }
    pos = hole;
  }
  std::atomic<uint64_t> next{0};
  std::vector<absl::Status> results(readers);
  std::vector<std::thread> threads;
  for (int t = 0; t < readers; ++t) {
    threads.emplace_back([&, t] {
      std::string buffer(kReadUnit, '\0');
      for (;;) {
        uint64_t offset = next.fetch_add(kReadUnit);
        if (offset >= size) return;
        size_t n = static_cast<size_t>(std::min(kReadUnit, size - offset));
        bool any = false;
        for (size_t o = 0; o < n; o += chunk) any |= mapped[(offset + o) / chunk];
        if (!any) {
          absl::Status s =
              w->AddZeroChunks(offset / chunk, (n + chunk - 1) / chunk);
          if (!s.ok()) {
            results[t] = s;
            return;
          }
          continue;
        }
        ssize_t got = ::pread(fd, buffer.data(), n, static_cast<off_t>(offset));
        if (got != static_cast<ssize_t>(n)) {
          results[t] = absl::DataLossError("short read of " + path);
          return;
        }
        for (size_t o = 0; o < n; o += chunk) {
          uint64_t index = (offset + o) / chunk;
          absl::Status s = !mapped[index] ? w->AddZeroChunks(index, 1) : w->AddChunk(
              index, absl::string_view(buffer).substr(o, w->ChunkLength(index)));
          if (!s.ok()) {
            results[t] = s;
            return;
          }
        }
      }
    });
  }
  for (std::thread& t : threads) t.join();
  ::close(fd);
  for (const absl::Status& s : results) RETURN_IF_ERROR(s);
  absl::Time commit_start = absl::Now();
  auto summary = w->Commit();
  std::printf("  (commit: %.2f s)\n",
              absl::ToDoubleSeconds(absl::Now() - commit_start));
  return summary;
}

absl::Status Restore(ImageStore* store, const std::string& id,
                     uint64_t* bytes) {
  ASSIGN_OR_RETURN(std::unique_ptr<ImageReader> reader, store->OpenImage(id));
  for (uint64_t i = 0; i < reader->manifest().ChunkCount(); ++i) {
    ASSIGN_OR_RETURN(std::string chunk, reader->ReadChunk(i));
    *bytes += chunk.size();
  }
  return absl::OkStatus();
}

int Run(int argc, char** argv) {
  int64_t level = 3, frame_size = 4 << 20, readers = 2, threads = 2;
  int64_t chunk_size = 64 << 10;
  std::string store_dir;
  common::FlagSet flags("image_store_bench [flags] disk.img [disk2.img ...]");
  flags.Int("compression-level", &level, "zstd level");
  flags.Int("chunk-size", &chunk_size, "dedup unit in bytes");
  flags.Int("frame-size", &frame_size, "plain bytes per compressed frame");
  flags.Int("readers", &readers, "threads reading the file and hashing");
  flags.Int("compression-threads", &threads, "compression threads");
  flags.String("store-dir", &store_dir, "store directory (default: temp)");
  bool help = false;
  auto files = flags.Parse(argc, argv, &help);
  if (help || !files.ok() || files->empty()) {
    std::fprintf(stderr, "%s\n%s\n",
                 files.ok() ? "" : files.status().ToString().c_str(),
                 flags.Help().c_str());
    return help ? 0 : 2;
  }
  bool temp = store_dir.empty();
  if (temp) {
    char tmpl[] = "/tmp/image_store_bench.XXXXXX";
    if (::mkdtemp(tmpl) == nullptr) return 1;
    store_dir = tmpl;
  }
  ImageStoreOptions options;
  options.compression_level = static_cast<int>(level);
  options.chunk_size = static_cast<uint32_t>(chunk_size);
  options.frame_size = static_cast<uint32_t>(frame_size);
  options.compression_threads = static_cast<int>(threads);
  auto store = ImageStore::Open(store_dir, options);
  if (!store.ok()) {
    std::fprintf(stderr, "%s\n", store.status().ToString().c_str());
    return 1;
  }
  uint64_t first_stored = 0, first_unique = 0;
  std::string last_id;
  for (size_t i = 0; i < files->size(); ++i) {
    const std::string& path = (*files)[i];
    std::string id = absl::StrFormat("bench-%d", i);
    absl::Time start = absl::Now();
    double cpu_start = CpuSeconds();
    auto summary = CaptureFile(store->get(), id, path, static_cast<int>(readers));
    double secs = absl::ToDoubleSeconds(absl::Now() - start);
    if (!summary.ok()) {
      std::fprintf(stderr, "%s: %s\n", path.c_str(),
                   summary.status().ToString().c_str());
      return 1;
    }
    last_id = id;
    std::printf("  (cpu: %.2f s)\n", CpuSeconds() - cpu_start);
    std::printf(
        "%s: %.2f s, %.0f MB/s of volume, %.0f MB/s of data; volume %.1f MB, "
        "logical %.1f MB, chunks %lu data / %lu zero / %lu unique / %lu new, "
        "new stored %.2f MB, referenced stored %.2f MB\n",
        path.c_str(), secs, Mb(summary->volume_size) / secs,
        Mb(summary->logical_bytes) / secs, Mb(summary->volume_size),
        Mb(summary->logical_bytes), summary->data_chunks,
        summary->zero_chunks, summary->unique_chunks, summary->new_chunks,
        Mb(summary->new_stored_bytes), Mb(summary->stored_bytes));
    if (i == 0) {
      first_stored = summary->new_stored_bytes;
      first_unique = summary->unique_chunks;
    } else {
      std::printf("  new stored bytes: %.1f%% of the first; new chunks: %.1f%% "
                  "of the first's unique chunks\n",
                  100.0 * summary->new_stored_bytes / first_stored,
                  100.0 * summary->new_chunks / first_unique);
    }
  }
  auto status = (*store)->Status();
  if (status.ok()) {
    std::printf("store: %lu packs, %.2f MB on disk, dedup ratio %.2f\n",
                status->pack_count, Mb(status->stored_bytes),
                status->dedup_ratio);
  }
  absl::Time start = absl::Now();
  uint64_t restored = 0;
  absl::Status s = Restore(store->get(), last_id, &restored);
  double secs = absl::ToDoubleSeconds(absl::Now() - start);
  if (!s.ok()) {
    std::fprintf(stderr, "restore: %s\n", s.ToString().c_str());
    return 1;
  }
  std::printf("restore %s: %.2f s, %.0f MB/s of data (verified)\n",
              last_id.c_str(), secs, Mb(restored) / secs);
  struct rusage ru;
  ::getrusage(RUSAGE_SELF, &ru);
  std::printf("peak RSS %.1f MB\n", ru.ru_maxrss / 1024.0);
  store->reset();
  if (temp) std::filesystem::remove_all(store_dir);
  return 0;
}

}  // namespace
}  // namespace storaged

int main(int argc, char** argv) { return storaged::Run(argc, argv); }
