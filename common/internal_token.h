// The shared secret of the internal API (controlplane <-> storaged, storaged
// <-> storaged): read from a file given by --internal-token-file, sent as
// "authorization: Bearer <token>" on every internal call, and checked in
// constant time by the receiver. Without it anyone who reaches a port could
// register a node under another's id or make a storaged read and write
// arbitrary iSCSI volumes.
#ifndef COMMON_INTERNAL_TOKEN_H_
#define COMMON_INTERNAL_TOKEN_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/channel_arguments.h"

namespace common {

inline constexpr size_t kMinInternalTokenBytes = 32;
inline constexpr size_t kMaxInternalTokenBytes = 1024;
// The token file may hold more after its first line, up to this.
inline constexpr size_t kMaxInternalTokenFileBytes = 64 << 10;

// The first line of `path` (line end and surrounding blanks dropped).
// NOT_FOUND or PERMISSION_DENIED if it cannot be opened; FAILED_PRECONDITION
// if it is not a regular file, group or others may access it, or it is
// larger than kMaxInternalTokenFileBytes;
// INVALID_ARGUMENT if the token is shorter than kMinInternalTokenBytes,
// longer than kMaxInternalTokenBytes, or not printable ASCII without blanks
// (it travels in a header). Every message names the file.
absl::StatusOr<std::string> ReadInternalTokenFile(const std::string& path);

// Checks the token on incoming calls. Immutable, so thread-safe.
class InternalTokenVerifier {
 public:
  // An empty `token` accepts every call (standalone storaged).
  explicit InternalTokenVerifier(absl::string_view token = "");

  bool enabled() const { return enabled_; }

  // OK when disabled or when the call carries "authorization: Bearer
  // <token>"; UNAUTHENTICATED otherwise, after one log line naming `method`
  // and the peer (at most kLoggedRefusals lines per 10 s; the rest are
  // counted into the next line, so a flood cannot fill the disk). The
  // comparison takes the same time for any wrong token.
  grpc::Status Check(const grpc::ServerContext& context, absl::string_view method) const;

  static constexpr int kLoggedRefusals = 10;

 private:
  struct RefusalLog {
    absl::Mutex mu;
    absl::Time window_start ABSL_GUARDED_BY(mu) = absl::InfinitePast();
    int logged ABSL_GUARDED_BY(mu) = 0;
    int64_t unlogged ABSL_GUARDED_BY(mu) = 0;
  };

  bool enabled_ = false;
  unsigned char digest_[32] = {};  // SHA-256 of "Bearer <token>"
  // Shared by copies (the verifier is a value).
  std::shared_ptr<RefusalLog> refusals_ = std::make_shared<RefusalLog>();
};

// While a call is open, an internal channel pings its peer every `time`
// and fails the call UNAVAILABLE when a ping goes unanswered for `timeout`:
// a peer host that vanished without closing the connection (power loss, a
// partition) ends a capture or restore stream, which the operation then
// retries, instead of hanging it. Servers (common/grpc_server.h) accept
// pings this often.
struct Keepalive {
  absl::Duration time = absl::Seconds(20);
  absl::Duration timeout = absl::Seconds(10);
};

// A channel to `target` (TLS once SetInternalChannelCredentials gave roots,
// common/tls.h; plaintext otherwise) whose every call carries
// "authorization: Bearer <token>"; a plain channel when `token` is empty.
std::shared_ptr<grpc::Channel> CreateInternalChannel(const std::string& target,
                                                     const std::string& token,
                                                     const grpc::ChannelArguments& args = {},
                                                     const Keepalive& keepalive = {});

}  // namespace common

#endif  // COMMON_INTERNAL_TOKEN_H_
