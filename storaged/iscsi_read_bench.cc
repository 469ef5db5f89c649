// Measures ReadExtents (and VolumeWriter) throughput over a grid of I/O sizes
// and queue depths, to justify kDefaultIoBytes / kDefaultQueueDepth.
//
//   bazel run -c opt //storaged:iscsi_read_bench -- [--url=iscsi://...]
//
// Without --url it starts its own tgtd (tests/san.h) with a thick LUN whose
// backing file is filled with random data.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "storaged/iscsi_volume.h"
#include "tests/san.h"

ABSL_FLAG(std::string, url, "", "LUN to read; empty = start a private tgtd");
ABSL_FLAG(int, size_mib, 1024, "size of the private LUN");
ABSL_FLAG(std::string, io_kib, "64,128,256,512,1024,4096", "I/O sizes to try, KiB");
ABSL_FLAG(std::string, depths, "1,4,8,16,32", "queue depths to try");
ABSL_FLAG(int, repeat, 3, "runs per cell; the best is printed");
ABSL_FLAG(bool, write, true, "also measure the writer (overwrites the LUN!)");
ABSL_FLAG(int, sink_stall_us_per_mib, 0,
          "the read sink sleeps this long per MiB, as a capture's sink does while "
          "it waits for its hash threads; shows whether I/O goes on meanwhile");

namespace {

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> out;
  for (absl::string_view part : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int v = 0;
    if (absl::SimpleAtoi(part, &v) && v > 0) out.push_back(v);
  }
  return out;
}

bool FillRandom(const std::string& path, uint64_t size) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return false;
  std::mt19937_64 rng(42);
  std::string chunk(1 << 20, '\0');
  for (uint64_t done = 0; done < size; done += chunk.size()) {
    for (size_t i = 0; i < chunk.size(); i += 8) {
      uint64_t v = rng();
      memcpy(&chunk[i], &v, 8);
    }
    if (write(fd, chunk.data(), chunk.size()) != static_cast<ssize_t>(chunk.size())) {
      close(fd);
      return false;
    }
  }
  close(fd);
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  std::unique_ptr<tests::San> san;
  std::string url = absl::GetFlag(FLAGS_url);
  if (url.empty()) {
    auto started = tests::San::Start();
    if (!started.ok()) {
      fprintf(stderr, "%s\n", started.status().ToString().c_str());
      return 1;
    }
    san = std::move(*started);
    const uint64_t size = uint64_t(absl::GetFlag(FLAGS_size_mib)) << 20;
    tests::LunOptions options;
    options.backing_path = san->dir() + "/bench.img";
    if (!FillRandom(options.backing_path, size)) {
      fprintf(stderr, "cannot fill %s\n", options.backing_path.c_str());
      return 1;
    }
    auto lun = san->CreateLun("bench", size, options);
    if (!lun.ok()) {
      fprintf(stderr, "%s\n", lun.status().ToString().c_str());
      return 1;
    }
    url = lun->url;
  }
  // Outside Bazel the private SAN lives in /tmp: remove its GiB of data.
  std::string bench_image = san ? san->dir() + "/bench.img" : "";
  absl::Cleanup remove_image = [&] {
    if (san == nullptr) return;
    san->Stop().IgnoreError();
    unlink(bench_image.c_str());
    unlink((san->dir() + "/tgtd.log").c_str());
    rmdir(san->dir().c_str());
  };
  auto volume = storaged::IscsiVolume::Open(url);
  if (!volume.ok()) {
    fprintf(stderr, "%s\n", volume.status().ToString().c_str());
    return 1;
  }
  const uint64_t size = (*volume)->info().size_bytes;
  printf("volume %llu MiB, block %u, max transfer %u\n",
         static_cast<unsigned long long>(size >> 20), (*volume)->info().block_size,
         (*volume)->info().max_transfer_bytes);

  const std::vector<int> io_kibs = ParseList(absl::GetFlag(FLAGS_io_kib));
  const std::vector<int> depths = ParseList(absl::GetFlag(FLAGS_depths));
  for (bool writing : {false, true}) {
    if (writing && !absl::GetFlag(FLAGS_write)) break;
    printf("\n%s MB/s (best of %d)\n%8s", writing ? "WRITE" : "READ",
           absl::GetFlag(FLAGS_repeat), "io\\qd");
    for (int d : depths) printf("%8d", d);
    printf("\n");
    std::string payload = writing ? std::string(size_t{4} << 20, '\x5a') : std::string();
    for (int kib : io_kibs) {
      printf("%6dK ", kib);
      for (int depth : depths) {
        double best = 0;
        for (int r = 0; r < absl::GetFlag(FLAGS_repeat); ++r) {
          absl::Time start = absl::Now();
          absl::Status status;
          if (!writing) {
            storaged::ReadOptions options;
            options.io_bytes = kib * 1024;
            options.queue_depth = depth;
            uint64_t sum = 0;
            uint64_t since_stall = 0;
            const absl::Duration stall =
                absl::Microseconds(absl::GetFlag(FLAGS_sink_stall_us_per_mib));
            status = (*volume)->ReadExtents({{0, size}}, options,
                                            [&](uint64_t, absl::string_view data) {
                                              sum += static_cast<unsigned char>(data[0]);
                                              since_stall += data.size();
                                              if (since_stall >= (1u << 20)) {
                                                since_stall -= 1u << 20;
                                                absl::SleepFor(stall);
                                              }
                                              return absl::OkStatus();
                                            });
          } else {
            storaged::WriteOptions options;
            options.io_bytes = kib * 1024;
            options.queue_depth = depth;
            auto writer = (*volume)->NewWriter(options);
            for (uint64_t off = 0; status.ok() && off < size; off += payload.size()) {
              status = writer->Write(off, payload.substr(0, std::min<uint64_t>(payload.size(), size - off)));
            }
            if (status.ok()) status = writer->Flush();
          }
          if (!status.ok()) {
            fprintf(stderr, "\n%s\n", status.ToString().c_str());
            return 1;
          }
          double seconds = absl::ToDoubleSeconds(absl::Now() - start);
          best = std::max(best, size / seconds / 1e6);
        }
        printf("%8.0f", best);
        fflush(stdout);
      }
      printf("\n");
    }
  }
  return 0;
}
