// Internal channels' keepalive: a stream to a peer that stops answering
// (its host froze or vanished without closing the connection) ends with
// UNAVAILABLE instead of hanging; a peer that answers keeps it open. The
// peer is reached through a loopback proxy that can stop forwarding while
// keeping both connections open, as a lost host looks to the caller.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "common/internal_token.h"
#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"

namespace common {
namespace {

namespace health = grpc::health::v1;

// Forwards 127.0.0.1:port() to a backend port until Freeze(); then it reads
// and writes nothing more but keeps every connection open.
class FreezingProxy {
 public:
  explicit FreezingProxy(int backend_port) : backend_port_(backend_port) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(listen(listen_fd_, 8), 0);
    EXPECT_EQ(getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    accept_thread_ = std::thread([this] { Accept(); });
  }
  ~FreezingProxy() {
    stop_ = true;
    shutdown(listen_fd_, SHUT_RDWR);
    accept_thread_.join();
    absl::MutexLock lock(&mu_);
    for (std::thread& t : pumps_) t.join();
    for (int fd : fds_) close(fd);
    close(listen_fd_);
  }
  int port() const { return port_; }
  void Freeze() { frozen_ = true; }

 private:
  void Accept() {
    while (!stop_) {
      int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) return;
      int backend = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(backend_port_);
      EXPECT_EQ(connect(backend, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
      absl::MutexLock lock(&mu_);
      fds_.push_back(client);
      fds_.push_back(backend);
      pumps_.emplace_back([this, client, backend] { Pump(client, backend); });
      pumps_.emplace_back([this, client, backend] { Pump(backend, client); });
    }
  }
  void Pump(int from, int to) {
    char buf[16384];
    while (!stop_) {
      pollfd p{from, POLLIN, 0};
      if (frozen_ || poll(&p, 1, 20) <= 0) {
        if (frozen_) absl::SleepFor(absl::Milliseconds(20));
        continue;
      }
      ssize_t n = read(from, buf, sizeof buf);
      if (n <= 0) {
        shutdown(to, SHUT_WR);
        return;
      }
      for (ssize_t done = 0; done < n;) {
        ssize_t w = write(to, buf + done, n - done);
        if (w <= 0) return;
        done += w;
      }
    }
  }

  const int backend_port_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<bool> frozen_{false};
  std::thread accept_thread_;
  absl::Mutex mu_;
  std::vector<std::thread> pumps_ ABSL_GUARDED_BY(mu_);
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
};

// Watch sends SERVING once, then nothing until the caller goes away: a long
// call with no data, as a capture between two progress reports.
class SilentHealth final : public health::Health::Service {
 public:
  grpc::Status Watch(grpc::ServerContext* context, const health::HealthCheckRequest*,
                     grpc::ServerWriter<health::HealthCheckResponse>* writer) override {
    health::HealthCheckResponse response;
    response.set_status(health::HealthCheckResponse::SERVING);
    writer->Write(response);
    while (!context->IsCancelled()) absl::SleepFor(absl::Milliseconds(10));
    return grpc::Status::CANCELLED;
  }
};

TEST(InternalChannelKeepaliveTest, AStreamToAPeerThatStopsAnsweringEndsUnavailable) {
  SilentHealth service;
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  // This test pings far more often than common/grpc_server.h allows.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 50);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  FreezingProxy proxy(port);

  Keepalive keepalive;
  // A generous timeout: a loaded (sanitizer) machine may answer late.
  keepalive.time = absl::Milliseconds(500);
  keepalive.timeout = absl::Seconds(2);
  auto stub = health::Health::NewStub(
      CreateInternalChannel(absl::StrCat("127.0.0.1:", proxy.port()), "", {}, keepalive));
  grpc::ClientContext context;
  auto reader = stub->Watch(&context, {});
  health::HealthCheckResponse first;
  ASSERT_TRUE(reader->Read(&first));
  EXPECT_EQ(first.status(), health::HealthCheckResponse::SERVING);
  grpc::Status status;
  absl::Notification ended;
  std::thread waiter([&] {
    health::HealthCheckResponse more;
    while (reader->Read(&more)) {
    }
    status = reader->Finish();
    ended.Notify();
  });

  // Six pings answered: the silent stream stays open.
  EXPECT_FALSE(ended.WaitForNotificationWithTimeout(absl::Seconds(3)));
  proxy.Freeze();
  const absl::Time frozen = absl::Now();
  const bool ended_in_time = ended.WaitForNotificationWithTimeout(absl::Seconds(15));
  if (!ended_in_time) context.TryCancel();
  waiter.join();
  EXPECT_TRUE(ended_in_time) << "the stream hung on a peer that stopped answering";
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
  EXPECT_LT(absl::Now() - frozen, absl::Seconds(10));
  server->Shutdown(std::chrono::system_clock::now());
}

}  // namespace
}  // namespace common
