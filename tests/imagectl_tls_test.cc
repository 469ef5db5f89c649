// imagectl --tls-cert/--tls-key against a controlplane that requires client
// certificates (--tls-client-ca-file): with the certificate it gets answers,
// without one, or with one of another CA, the handshake is refused; a key
// file others may read is refused before connecting.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "google/protobuf/util/json_util.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/identity.pb.h"
#include "tests/imagectl_runner.h"
#include "tests/process.h"
#include "tests/stack.h"
#include "tests/tls_certificates.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;

using Result = ImagectlResult;

class ImagectlTlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("imagectltls");
    ASSERT_EQ(mkdir((dir_ + "/home").c_str(), 0700), 0);
    auto certs = MakeTestCertificates(dir_);
    ASSERT_TRUE(certs.ok()) << certs.status();
    certs_ = *certs;
    ASSERT_FALSE(WriteInternalToken(dir_ + "/internal.token").empty());
    auto process = StartControlPlane(
        dir_, {"--tls-cert-file=" + certs_.cert, "--tls-key-file=" + certs_.key,
               "--tls-client-ca-file=" + certs_.ca});
    ASSERT_TRUE(process.ok()) << process.status();
    cp_ = std::make_unique<Process>(*std::move(process));
    admin_ = ReadFirstLine(dir_ + "/admin.key");
    ASSERT_FALSE(admin_.empty());
  }

  void TearDown() override {
    if (cp_) {
      auto status = cp_->Stop(SIGTERM);
      EXPECT_TRUE(status.ok()) << status.status();
    }
  }

  // imagectl as the operator with `args` after the endpoint, key and a
  // short timeout; HOME is empty, so no user config leaks in.
  Result Run(const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"--endpoint=" + cp_->address(), "--api-key=" + admin_,
                                     "--timeout=5"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunImagectl(dir_, argv);
  }

  std::string dir_;
  TestCertificates certs_;
  std::unique_ptr<Process> cp_;
  std::string admin_;
};

TEST_F(ImagectlTlsTest, ClientCertificateIsRequiredAndAccepted) {
  Result ok = Run({"--tls-ca=" + certs_.ca, "--tls-cert=" + certs_.cert,
                   "--tls-key=" + certs_.key, "whoami", "-o", "json"});
  ASSERT_EQ(ok.code, 0) << ok.err;
  v1::GetCallerResponse caller;
  auto parsed = google::protobuf::util::JsonStringToMessage(ok.out, &caller);
  ASSERT_TRUE(parsed.ok()) << parsed.ToString() << "\n" << ok.out;
  EXPECT_EQ(caller.user().username(), "admin") << ok.out;
  EXPECT_FALSE(caller.account().id().empty());

  // No certificate: the server ends the handshake.
  Result none = Run({"--tls-ca=" + certs_.ca, "whoami", "-o", "json"});
  EXPECT_NE(none.code, 0);
  EXPECT_TRUE(none.out.empty()) << none.out;
  EXPECT_TRUE(absl::StrContains(none.err, "UNAVAILABLE")) << none.err;

  // A certificate of another CA: refused the same way.
  Result other = Run({"--tls-ca=" + certs_.ca, "--tls-cert=" + certs_.other_cert,
                      "--tls-key=" + certs_.other_key, "whoami", "-o", "json"});
  EXPECT_NE(other.code, 0);
  EXPECT_TRUE(other.out.empty()) << other.out;
  EXPECT_TRUE(absl::StrContains(other.err, "UNAVAILABLE")) << other.err;
}

TEST_F(ImagectlTlsTest, KeyFileMustBeOwnerOnlyAndPaired) {
  // A copy of the good key that others may read.
  const std::string open_key = dir_ + "/open.key";
  {
    const std::string pem = ReadFile(certs_.key);
    ASSERT_FALSE(pem.empty());
    int fd = open(open_key.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(write(fd, pem.data(), pem.size()), static_cast<ssize_t>(pem.size()));
    close(fd);
    ASSERT_EQ(chmod(open_key.c_str(), 0644), 0);
  }
  Result exposed = Run({"--tls-ca=" + certs_.ca, "--tls-cert=" + certs_.cert,
                        "--tls-key=" + open_key, "whoami"});
  EXPECT_NE(exposed.code, 0);
  EXPECT_TRUE(absl::StrContains(exposed.err, "--tls-key")) << exposed.err;
  EXPECT_FALSE(absl::StrContains(exposed.err, "UNAVAILABLE")) << exposed.err;

  Result missing = Run({"--tls-ca=" + certs_.ca, "--tls-cert=" + certs_.cert,
                        "--tls-key=" + dir_ + "/absent.key", "whoami"});
  EXPECT_NE(missing.code, 0);
  EXPECT_TRUE(absl::StrContains(missing.err, "--tls-key")) << missing.err;

  Result unpaired = Run({"--tls-ca=" + certs_.ca, "--tls-cert=" + certs_.cert, "whoami"});
  EXPECT_EQ(unpaired.code, 2) << unpaired.err;
  EXPECT_TRUE(absl::StrContains(unpaired.err, "--tls-key")) << unpaired.err;
}

}  // namespace
}  // namespace tests
