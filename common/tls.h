// TLS for the public API and the internal API. Without a certificate a
// server speaks plaintext (loopback, or behind a TLS-terminating proxy); with
// one, it serves TLS, and with client roots it also requires client
// certificates (mutual TLS, for storaged, which only the control plane and
// its peers call). Internal calls (storaged -> controlplane, controlplane ->
// storaged, storaged -> storaged) use TLS once roots to check their peers by
// are given, presenting this process's certificate where it has one.
#ifndef COMMON_TLS_H_
#define COMMON_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "common/flags.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace common {

struct TlsFiles {
  std::string cert_file;       // this process's certificate chain (PEM)
  std::string key_file;        // its private key (PEM), readable by its owner only
  std::string ca_file;         // roots that the servers internal calls reach must chain to
  std::string client_ca_file;  // serving: client certificates required, chaining to these
};

// Plaintext without cert_file. INVALID_ARGUMENT for a certificate without
// its key (or the other way round) or client roots without a certificate;
// file errors as ReadSecretFile, naming the flag.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFrom(
    const TlsFiles& files);
// Plaintext without ca_file; errors as ServerCredentialsFrom.
absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> InternalChannelCredentialsFrom(
    const TlsFiles& files);

// Registers --tls-cert-file, --tls-key-file, --tls-ca-file and
// --tls-client-ca-file (a daemon's TLS flags).
void AddTlsFlags(FlagSet& flags, TlsFiles* files);
// For a daemon's main: reads the files, sets the internal channel
// credentials, logs what it serves, and returns the server credentials.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> SetUpTls(const TlsFiles& files);

// What CreateInternalChannel connects with: plaintext until set. Set once,
// before serving.
void SetInternalChannelCredentials(std::shared_ptr<grpc::ChannelCredentials> credentials);
std::shared_ptr<grpc::ChannelCredentials> InternalChannelCredentials();

}  // namespace common

#endif  // COMMON_TLS_H_
