// A storage node inside the test process: an ImageStore in its own directory
// under TEST_TMPDIR and the real StorageNode service on a loopback port,
// without volumes (RPCs that open one get UNIMPLEMENTED).
#ifndef STORAGED_TESTING_SERVICE_NODE_H_
#define STORAGED_TESTING_SERVICE_NODE_H_

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "grpcpp/grpcpp.h"
#include "imagetemplates/storagenode/v1/storage_node.grpc.pb.h"
#include "storaged/image_copier.h"
#include "storaged/image_store.h"
#include "storaged/storage_node_service.h"

namespace storaged {
namespace testing {

inline constexpr uint32_t kChunk = 16 << 10;

// Small frames and packs, so a few chunks span several of each.
inline ImageStoreOptions SmallStoreOptions() {
  ImageStoreOptions o;
  o.chunk_size = kChunk;
  o.frame_size = 256 << 10;  // 16 chunks a frame
  o.pack_size = 4 << 20;
  return o;
}

// Half random, half text: zstd has something to do, every seed distinct.
inline std::string ChunkData(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::string out(kChunk, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    out[i] = (i / 256) % 2 == 0 ? static_cast<char>(rng()) : "copy me, only once "[i % 19];
  }
  return out;
}

struct ServiceNode {
  ServiceNode(const std::string& name, const ImageStoreOptions& options) {
    dir = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
    std::filesystem::remove_all(dir);
    auto opened = ImageStore::Open(dir, options);
    EXPECT_TRUE(opened.ok()) << opened.status();
    store = std::move(*opened);
    service = std::make_unique<StorageNodeService>(
        name, store.get(), [](const std::string&) -> absl::StatusOr<std::unique_ptr<Volume>> {
          return absl::UnimplementedError("no volumes in this test");
        });
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.SetMaxReceiveMessageSize(64 << 20);
    builder.RegisterService(service.get());
    server = builder.BuildAndStart();
    address = absl::StrCat("127.0.0.1:", port);
    stub = NewPeerStub(address);
  }
  ~ServiceNode() { server->Shutdown(std::chrono::system_clock::now()); }

  std::string dir;
  std::unique_ptr<ImageStore> store;
  std::unique_ptr<StorageNodeService> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
  std::unique_ptr<imagetemplates::storagenode::v1::StorageNode::StubInterface> stub;
};

}  // namespace testing
}  // namespace storaged

#endif  // STORAGED_TESTING_SERVICE_NODE_H_
