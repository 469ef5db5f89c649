// Copy between two stores over loopback gRPC (the real StorageNode service on
// the receiving side), beside `cp` of the sender's packed store files:
//   image_copy_bench --work=DIR disk1.img disk2.img
// Captures both disks into a source store, copies disk1 to an empty peer,
// then disk2 (the peer holds disk1), and reports bytes sent, time and the
// sender's store size; then times `cp -r` + `sync` of the source store.
#include <fcntl.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/flags.h"
#include "grpcpp/grpcpp.h"
#include "storaged/image_copier.h"
#include "storaged/image_store.h"
#include "storaged/storage_node_service.h"

namespace storaged {
namespace {

absl::Status CaptureFile(ImageStore& store, const std::string& id, const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError("open " + path);
  uint64_t size = static_cast<uint64_t>(::lseek(fd, 0, SEEK_END));
  auto writer = store.BeginImage(id, size, 512);
  if (!writer.ok()) return writer.status();
  const uint32_t chunk = store.options().chunk_size;
  std::string buffer(4 << 20, '\0');
  for (uint64_t off = 0; off < size; off += buffer.size()) {
    size_t n = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size - off));
    if (::pread(fd, buffer.data(), n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
      ::close(fd);
      return absl::DataLossError("short read");
    }
    for (size_t o = 0; o < n; o += chunk) {
      uint64_t index = (off + o) / chunk;
      absl::Status s = (*writer)->AddChunk(
          index, absl::string_view(buffer).substr(o, (*writer)->ChunkLength(index)));
      if (!s.ok()) {
        ::close(fd);
        return s;
      }
    }
  }
  ::close(fd);
  return (*writer)->Commit().status();
}

int Main(int argc, char** argv) {
  std::string work = "/var/tmp/image-copy-bench";
  common::FlagSet flags("image_copy_bench --work=DIR disk1.img disk2.img");
  flags.String("work", &work, "scratch directory (emptied)");
  bool help = false;
  auto parsed = flags.Parse(argc, argv, &help);
  if (!parsed.ok() || help || parsed->size() != 2) {
    std::fprintf(stderr, "%s", flags.Help().c_str());
    return 2;
  }
  std::vector<std::string> disks = *parsed;
  if (disks.size() != 2) {
    std::fprintf(stderr, "give two disk images\n");
    return 2;
  }
  std::filesystem::remove_all(work);
  std::filesystem::create_directories(work);
  auto src = ImageStore::Open(work + "/src", ImageStoreOptions());
  auto dst = ImageStore::Open(work + "/dst", ImageStoreOptions());
  if (!src.ok() || !dst.ok()) {
    std::fprintf(stderr, "open stores: %s %s\n", src.status().ToString().c_str(),
                 dst.status().ToString().c_str());
    return 1;
  }
  for (int i = 0; i < 2; ++i) {
    absl::Status s = CaptureFile(**src, absl::StrCat("disk", i + 1), disks[i]);
    if (!s.ok()) {
      std::fprintf(stderr, "capture: %s\n", s.ToString().c_str());
      return 1;
    }
  }
  StorageNodeService service("dst", dst->get(),
                             [](const std::string&) -> absl::StatusOr<std::unique_ptr<Volume>> {
                               return absl::UnimplementedError("no volumes");
                             });
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(64 << 20);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  auto peer = NewPeerStub(absl::StrCat("127.0.0.1:", port));

  std::printf("| copy | chunks sent / total | bytes sent | frames forwarded / built | time |\n");
  std::printf("| --- | --- | --- | --- | --- |\n");
  double first_seconds = 0;
  for (const char* id : {"disk1", "disk2", "disk2"}) {
    absl::Time start = absl::Now();
    auto sent = SendImage(**src, id, *peer, SendOptions());
    double seconds = absl::ToDoubleSeconds(absl::Now() - start);
    if (!sent.ok()) {
      std::fprintf(stderr, "send %s: %s\n", id, sent.status().ToString().c_str());
      return 1;
    }
    if (first_seconds == 0) first_seconds = seconds;
    std::printf("| %s%s | %llu / %llu | %.1f MB | %llu / %llu | %.3f s |\n", id,
                sent->already_present ? " again" : "",
                static_cast<unsigned long long>(sent->chunks_sent),
                static_cast<unsigned long long>(sent->chunks_total), sent->bytes_sent / 1e6,
                static_cast<unsigned long long>(sent->frames_forwarded),
                static_cast<unsigned long long>(sent->frames_built), seconds);
  }
  auto status = (*src)->Status();
  absl::Time start = absl::Now();
  std::string cmd = absl::StrCat("cp -r ", work, "/src ", work, "/cp && sync -f ", work, "/cp");
  if (std::system(cmd.c_str()) != 0) return 1;
  double cp_seconds = absl::ToDoubleSeconds(absl::Now() - start);
  std::printf("\nsource store: %.1f MB in %llu packs; cp -r + sync of it: %.3f s; "
              "first copy (disk1 to an empty peer) / cp = %.2fx\n",
              status->stored_bytes / 1e6, static_cast<unsigned long long>(status->pack_count),
              cp_seconds, first_seconds / cp_seconds);
  server->Shutdown();
  return 0;
}

}  // namespace
}  // namespace storaged

int main(int argc, char** argv) { return storaged::Main(argc, argv); }
