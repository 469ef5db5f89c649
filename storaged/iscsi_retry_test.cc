// A command the target never answers is sent a bounded number of times: the
// request fails UNAVAILABLE naming the LBA range and the attempts instead of
// timing out, reconnecting and sending it again forever. The target is a
// real tgtd behind a proxy that swallows that one command (as a target whose
// backing store hangs on those blocks would), and passes everything else,
// logins included.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"
#include "storaged/iscsi_volume.h"
#include "storaged/testing/tgtd_fixture.h"

namespace storaged {
namespace {

constexpr uint8_t kScsiCommandOpcode = 0x01;
constexpr uint8_t kRead16 = 0x88;
constexpr uint8_t kWrite16 = 0x8a;

// Forwards TCP connections from 127.0.0.1:port() to 127.0.0.1:target_port.
// From initiator to target it parses iSCSI PDUs (no digests) and drops every
// SCSI Command PDU whose CDB is READ(16) or WRITE(16) at `drop_lba`, with its
// immediate data. Thread-safe; the destructor closes everything.
class DroppingProxy {
 public:
  DroppingProxy(int target_port, uint64_t drop_lba)
      : target_port_(target_port), drop_lba_(drop_lba) {
    listen_fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(addr);
    if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
        listen(listen_fd_, 16) != 0 ||
        getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      return;
    }
    port_ = ntohs(addr.sin_port);
    acceptor_ = std::thread([this] { Accept(); });
  }

  ~DroppingProxy() {
    stop_ = true;
    if (listen_fd_ >= 0) shutdown(listen_fd_, SHUT_RDWR);
    if (acceptor_.joinable()) acceptor_.join();
    {
      absl::MutexLock lock(&mu_);
      for (int fd : fds_) shutdown(fd, SHUT_RDWR);
    }
    for (std::thread& t : pumps_) t.join();
    for (int fd : fds_) close(fd);
    if (listen_fd_ >= 0) close(listen_fd_);
  }

  int port() const { return port_; }  // 0 if the proxy could not listen
  int dropped() const { return dropped_; }
  int connections() const { return connections_; }

 private:
  void Accept() {
    while (!stop_) {
      pollfd pfd{listen_fd_, POLLIN, 0};
      if (poll(&pfd, 1, 100) <= 0) continue;
      int client = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (client < 0) continue;
      int target = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      addr.sin_port = htons(target_port_);
      if (connect(target, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
        close(client);
        close(target);
        continue;
      }
      ++connections_;
      absl::MutexLock lock(&mu_);
      fds_.push_back(client);
      fds_.push_back(target);
      pumps_.emplace_back([this, client, target] { Upstream(client, target); });
      pumps_.emplace_back([this, client, target] { Downstream(target, client); });
    }
  }

  static bool SendAll(int fd, const char* data, size_t size) {
    while (size > 0) {
      ssize_t n = send(fd, data, size, MSG_NOSIGNAL);
      if (n <= 0) return false;
      data += n;
      size -= n;
    }
    return true;
  }

  // Either side closing ends both directions.
  static void Hangup(int a, int b) {
    shutdown(a, SHUT_RDWR);
    shutdown(b, SHUT_RDWR);
  }

  void Downstream(int from, int to) {
    char buffer[64 << 10];
    while (true) {
      ssize_t n = recv(from, buffer, sizeof(buffer), 0);
      if (n <= 0 || !SendAll(to, buffer, n)) break;
    }
    Hangup(from, to);
  }

  void Upstream(int from, int to) {
    std::string pending;
    char buffer[64 << 10];
    while (true) {
      ssize_t n = recv(from, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      pending.append(buffer, n);
      size_t used = 0;
      bool ok = true;
      // Basic Header Segment: 48 bytes; AHS length (words) in byte 4, data
      // segment length in bytes 5-7, padded to 4; the CDB in bytes 32-47.
      while (ok && pending.size() - used >= 48) {
        const auto* bhs = reinterpret_cast<const uint8_t*>(pending.data() + used);
        const size_t data = (size_t{bhs[5]} << 16) | (size_t{bhs[6]} << 8) | bhs[7];
        const size_t total = 48 + size_t{bhs[4]} * 4 + (data + 3) / 4 * 4;
        if (pending.size() - used < total) break;
        if (!Drop(bhs)) ok = SendAll(to, pending.data() + used, total);
        used += total;
      }
      pending.erase(0, used);
      if (!ok) break;
    }
    Hangup(from, to);
  }

  bool Drop(const uint8_t* bhs) {
    if ((bhs[0] & 0x3f) != kScsiCommandOpcode) return false;
    const uint8_t* cdb = bhs + 32;
    if (cdb[0] != kRead16 && cdb[0] != kWrite16) return false;
    uint64_t lba = 0;
    for (int i = 2; i < 10; ++i) lba = lba << 8 | cdb[i];
    if (lba != drop_lba_) return false;
    ++dropped_;
    return true;
  }

  const int target_port_;
  const uint64_t drop_lba_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> dropped_{0};
  std::atomic<int> connections_{0};
  std::thread acceptor_;
  absl::Mutex mu_;
  std::vector<int> fds_ ABSL_GUARDED_BY(mu_);
  std::vector<std::thread> pumps_;  // joined after acceptor_ ends
};

class IscsiRetryTest : public TgtdFixture {};

// Without a limit the I/O under test would go on forever: this cancels it
// after a minute, and the test then fails on the code.
class Watchdog {
 public:
  Watchdog()
      : thread_([this] {
          absl::Time until = absl::Now() + absl::Seconds(60);
          while (!done_ && absl::Now() < until) absl::SleepFor(absl::Milliseconds(50));
          cancel_ = true;
        }) {}
  ~Watchdog() {
    done_ = true;
    thread_.join();
  }
  const std::atomic<bool>* flag() const { return &cancel_; }

 private:
  std::atomic<bool> cancel_{false};
  std::atomic<bool> done_{false};
  std::thread thread_;
};

constexpr uint64_t kDropLba = 2048;  // 1 MiB in, 512-byte blocks

TEST_F(IscsiRetryTest, ACommandThatNeverAnswersFailsAfterItsAttempts) {
  tests::Lun lun = MakeLun(8 << 20, /*thin=*/false);
  DroppingProxy proxy(san_->port(), kDropLba);
  ASSERT_NE(proxy.port(), 0);
  IscsiVolumeOptions options;
  options.command_timeout = absl::Seconds(1);
  options.max_command_attempts = 3;
  auto volume = IscsiVolume::Open(
      absl::StrReplaceAll(lun.url, {{absl::StrCat(":", san_->port(), "/"),
                                     absl::StrCat(":", proxy.port(), "/")}}),
      options);
  ASSERT_TRUE(volume.ok()) << volume.status();

  // Blocks before the dropped command read normally; the read stops there.
  uint64_t bytes = 0;
  absl::Status status;
  {
    Watchdog watchdog;
    ReadOptions read;
    read.cancelled = watchdog.flag();
    read.io_bytes = 65536;  // the second command starts at kDropLba
    status = (*volume)->ReadExtents(
        {{kDropLba * 512 - 65536, 2 * 65536}}, read, [&](uint64_t, absl::string_view data) {
          bytes += data.size();
          return absl::OkStatus();
        });
  }
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), absl::StrCat("READ(16) lba ", kDropLba)))
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "3 attempts")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "timed out")) << status;
  EXPECT_EQ(bytes, 65536u);
  EXPECT_EQ(proxy.dropped(), 3);

  // A write there fails the same way, at Flush; the session then still
  // serves the other blocks.
  {
    Watchdog watchdog;
    WriteOptions write_options;
    write_options.cancelled = watchdog.flag();
    auto writer = (*volume)->NewWriter(write_options);
    ASSERT_TRUE(writer->Write(kDropLba * 512, std::string(4096, 'x')).ok());
    absl::Status flushed = writer->Flush();
    EXPECT_EQ(flushed.code(), absl::StatusCode::kUnavailable) << flushed;
    EXPECT_TRUE(absl::StrContains(flushed.message(), absl::StrCat("WRITE(16) lba ", kDropLba)))
        << flushed;
    EXPECT_TRUE(absl::StrContains(flushed.message(), "3 attempts")) << flushed;
  }
  EXPECT_EQ(proxy.dropped(), 6);
  {
    auto writer = (*volume)->NewWriter({});
    ASSERT_TRUE(writer->Write(0, std::string(65536, 'y')).ok());
    EXPECT_TRUE(writer->Flush().ok());
  }
  std::string back;
  ASSERT_TRUE((*volume)
                  ->ReadExtents({{0, 65536}}, {},
                                [&](uint64_t, absl::string_view data) {
                                  back.append(data.data(), data.size());
                                  return absl::OkStatus();
                                })
                  .ok());
  EXPECT_EQ(back, std::string(65536, 'y'));
}

}  // namespace
}  // namespace storaged
