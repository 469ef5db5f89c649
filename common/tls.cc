#include "common/tls.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "common/key_file.h"
#include "common/log.h"
#include "common/status_macros.h"

namespace common {
namespace {

constexpr size_t kMaxPemBytes = 1 << 20;

absl::Status CheckPairing(const TlsFiles& files) {
  if (files.cert_file.empty() != files.key_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-cert-file and --tls-key-file go together: a certificate and its private key");
  }
  if (!files.client_ca_file.empty() && files.cert_file.empty()) {
    return absl::InvalidArgumentError(
        "--tls-client-ca-file needs --tls-cert-file and --tls-key-file: client "
        "certificates are only asked for over TLS");
  }
  return absl::OkStatus();
}

struct KeyPair {
  std::string cert;
  std::string key;
};

absl::StatusOr<KeyPair> ReadKeyPair(const TlsFiles& files) {
  KeyPair pair;
  ASSIGN_OR_RETURN(pair.cert, ReadSmallFile(files.cert_file,
                                            "--tls-cert-file " + files.cert_file, kMaxPemBytes));
  ASSIGN_OR_RETURN(pair.key, ReadSecretFile(files.key_file, "--tls-key-file " + files.key_file,
                                            kMaxPemBytes));
  return pair;
}

absl::Mutex internal_mu(absl::kConstInit);
std::shared_ptr<grpc::ChannelCredentials>* internal_credentials ABSL_GUARDED_BY(internal_mu) =
    nullptr;

}  // namespace

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> ServerCredentialsFrom(
    const TlsFiles& files) {
  RETURN_IF_ERROR(CheckPairing(files));
  if (files.cert_file.empty()) return grpc::InsecureServerCredentials();
  ASSIGN_OR_RETURN(KeyPair pair, ReadKeyPair(files));
  grpc::SslServerCredentialsOptions options(
      files.client_ca_file.empty() ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                   : GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  if (!files.client_ca_file.empty()) {
    ASSIGN_OR_RETURN(options.pem_root_certs,
                     ReadSmallFile(files.client_ca_file,
                                   "--tls-client-ca-file " + files.client_ca_file, kMaxPemBytes));
  }
  options.pem_key_cert_pairs.push_back({pair.key, pair.cert});
  return grpc::SslServerCredentials(options);
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> InternalChannelCredentialsFrom(
    const TlsFiles& files) {
  RETURN_IF_ERROR(CheckPairing(files));
  if (files.ca_file.empty()) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  ASSIGN_OR_RETURN(options.pem_root_certs,
                   ReadSmallFile(files.ca_file, "--tls-ca-file " + files.ca_file, kMaxPemBytes));
  if (!files.cert_file.empty()) {
    ASSIGN_OR_RETURN(KeyPair pair, ReadKeyPair(files));
    options.pem_cert_chain = std::move(pair.cert);
    options.pem_private_key = std::move(pair.key);
  }
  return grpc::SslCredentials(options);
}

void AddTlsFlags(FlagSet& flags, TlsFiles* files) {
  flags.String("tls-cert-file", &files->cert_file,
               "serve TLS with this PEM certificate chain (also presented on internal calls); "
               "empty: plaintext");
  flags.String("tls-key-file", &files->key_file,
               "the certificate's PEM private key (mode 0600)");
  flags.String("tls-ca-file", &files->ca_file,
               "PEM roots the servers of internal calls must chain to; set: internal calls "
               "use TLS");
  flags.String("tls-client-ca-file", &files->client_ca_file,
               "require client certificates chaining to these PEM roots (mutual TLS)");
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> SetUpTls(const TlsFiles& files) {
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ServerCredentials> server, ServerCredentialsFrom(files));
  ASSIGN_OR_RETURN(std::shared_ptr<grpc::ChannelCredentials> internal,
                   InternalChannelCredentialsFrom(files));
  SetInternalChannelCredentials(std::move(internal));
  LogInfo("serving %s; internal calls over %s",
          files.cert_file.empty()            ? "plaintext"
          : files.client_ca_file.empty()     ? "TLS"
                                             : "TLS with client certificates required",
          files.ca_file.empty() ? "plaintext" : "TLS");
  return server;
}

void SetInternalChannelCredentials(std::shared_ptr<grpc::ChannelCredentials> credentials) {
  absl::MutexLock lock(&internal_mu);
  delete internal_credentials;
  internal_credentials = new std::shared_ptr<grpc::ChannelCredentials>(std::move(credentials));
}

std::shared_ptr<grpc::ChannelCredentials> InternalChannelCredentials() {
  {
    absl::MutexLock lock(&internal_mu);
    if (internal_credentials != nullptr) return *internal_credentials;
  }
  return grpc::InsecureChannelCredentials();
}

}  // namespace common
