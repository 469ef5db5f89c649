// A unary call with an API key, as every multi-process test makes them.
#ifndef TESTS_RPC_H_
#define TESTS_RPC_H_

#include <chrono>
#include <string>

#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"

namespace tests {

// Calls `rpc` on `stub` with `key` as the bearer token (none if empty) and a
// deadline of `timeout`; returns the status.
template <typename Stub, typename Request, typename Response>
grpc::Status Call(Stub& stub,
                  grpc::Status (Stub::*rpc)(grpc::ClientContext*, const Request&, Response*),
                  const std::string& key, const Request& request, Response* response,
                  std::chrono::seconds timeout = std::chrono::seconds(30)) {
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + timeout);
  if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
  return (stub.*rpc)(&context, request, response);
}

}  // namespace tests

#endif  // TESTS_RPC_H_
