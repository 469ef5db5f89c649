// Runs a gRPC server the way every process of this project does: health
// checking and server reflection on, bound to --listen (port 0 allowed), the
// bound address logged and optionally written to a file, serving until
// SIGTERM or SIGINT, then a graceful shutdown.
#ifndef COMMON_GRPC_SERVER_H_
#define COMMON_GRPC_SERVER_H_

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/impl/codegen/service_type.h"

namespace common {

// Blocks SIGTERM and SIGINT in the calling thread and every thread it starts
// later, so ServeUntilSignal can wait for them with sigwait. Call first in main.
void BlockTerminationSignals();

struct ServeOptions {
  std::string listen;     // HOST:PORT; port 0 picks a free port.
  std::string port_file;  // If set, the bound port is written here atomically.
  absl::Duration shutdown_grace = absl::Seconds(5);
  // Null: plaintext (common/tls.h makes TLS ones).
  std::shared_ptr<grpc::ServerCredentials> credentials;
  // Largest message each way. A request is read whole before any handler
  // (its authentication included) runs, so a server whose callers send small
  // requests should receive less.
  int max_receive_bytes = 64 << 20;
  int max_send_bytes = 64 << 20;
  // Pings closer together than this, while the server sends nothing, count
  // against the client (gRPC's default is 5 minutes); below the 20 s of
  // internal channels' keepalive (common/internal_token.h).
  absl::Duration min_ping_interval = absl::Seconds(10);
};

// Serves `services` until SIGTERM/SIGINT. `on_started` runs once the server
// listens, with the bound port (for health status and background work);
// `on_stopping` runs after the signal, before shutdown. Returns UNAVAILABLE if the address cannot be
// bound, INVALID_ARGUMENT if it is malformed.
absl::Status ServeUntilSignal(const ServeOptions& options,
                              const std::vector<grpc::Service*>& services,
                              const std::function<void(grpc::Server*, int port)>& on_started,
                              const std::function<void()>& on_stopping);

// Writes `contents` to `path` through a temporary file and rename, so readers
// never see a partial file. `mode` applies to the new file.
absl::Status WriteFileAtomically(const std::string& path,
                                 const std::string& contents, int mode);

}  // namespace common

#endif  // COMMON_GRPC_SERVER_H_
