// Throwaway certificates for tests of TLS, made with the openssl command.
#ifndef TESTS_TLS_CERTIFICATES_H_
#define TESTS_TLS_CERTIFICATES_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"

namespace tests {

// PEM file paths. `cert` is signed by `ca` and good for 127.0.0.1 as server
// and as client; `other_*` is the same from an unrelated CA. Keys are 0600.
struct TestCertificates {
  std::string ca, cert, key;
  std::string other_ca, other_cert, other_key;
};

// Writes them under `dir` (which must exist). UNAVAILABLE if openssl fails.
absl::StatusOr<TestCertificates> MakeTestCertificates(const std::string& dir);

// Channel credentials trusting `ca_file`, presenting `cert_file`/`key_file`
// when given. Empty pointer if a file cannot be read.
std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const std::string& ca_file,
                                                         const std::string& cert_file = "",
                                                         const std::string& key_file = "");

}  // namespace tests

#endif  // TESTS_TLS_CERTIFICATES_H_
