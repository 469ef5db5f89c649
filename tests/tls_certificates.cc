#include "tests/tls_certificates.h"

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace tests {
namespace {

// A CA named `name` and one certificate it signs for 127.0.0.1, both uses.
std::string Script(const std::string& dir, const std::string& name) {
  const std::string d = absl::StrCat("'", dir, "'");
  const std::string p = absl::StrCat(d, "/", name);
  return absl::StrCat(
      "set -e; cd ", d, "; umask 077; ",
      "printf 'subjectAltName=IP:127.0.0.1\\nextendedKeyUsage=serverAuth,clientAuth\\n' > ",
      name, "-ext.cnf; ",
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 "
      "-subj /CN=", name, "-ca -keyout ", name, "-ca.key -out ", name, "-ca.crt 2>/dev/null; ",
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
      "-subj /CN=", name, "-node -keyout ", name, ".key -out ", name, ".csr 2>/dev/null; ",
      "openssl x509 -req -days 2 -in ", name, ".csr -CA ", name, "-ca.crt -CAkey ", name,
      "-ca.key -CAcreateserial -extfile ", name, "-ext.cnf -out ", name, ".crt 2>/dev/null; ",
      "chmod 600 ", p, ".key; chmod 644 ", p, ".crt ", p, "-ca.crt");
}

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

absl::StatusOr<TestCertificates> MakeTestCertificates(const std::string& dir) {
  for (const char* name : {"good", "other"}) {
    const std::string command = Script(dir, name);
    if (std::system(command.c_str()) != 0) {
      return absl::UnavailableError(absl::StrCat("openssl failed: ", command));
    }
  }
  TestCertificates c;
  c.ca = dir + "/good-ca.crt";
  c.cert = dir + "/good.crt";
  c.key = dir + "/good.key";
  c.other_ca = dir + "/other-ca.crt";
  c.other_cert = dir + "/other.crt";
  c.other_key = dir + "/other.key";
  return c;
}

std::shared_ptr<grpc::ChannelCredentials> TlsCredentials(const std::string& ca_file,
                                                         const std::string& cert_file,
                                                         const std::string& key_file) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = Read(ca_file);
  if (options.pem_root_certs.empty()) return nullptr;
  if (!cert_file.empty()) {
    options.pem_cert_chain = Read(cert_file);
    options.pem_private_key = Read(key_file);
  }
  return grpc::SslCredentials(options);
}

}  // namespace tests
