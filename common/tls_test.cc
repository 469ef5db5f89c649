#include "common/tls.h"

#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "absl/strings/match.h"
#include "gtest/gtest.h"

namespace common {
namespace {

std::string Write(const std::string& name, const std::string& text, mode_t mode) {
  const std::string path = std::string(std::getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << text;
  ::chmod(path.c_str(), mode);
  return path;
}

TEST(TlsTest, NoFilesMeansPlaintext) {
  auto server = ServerCredentialsFrom({});
  ASSERT_TRUE(server.ok()) << server.status();
  EXPECT_NE(*server, nullptr);
  auto channel = InternalChannelCredentialsFrom({});
  ASSERT_TRUE(channel.ok()) << channel.status();
  EXPECT_NE(*channel, nullptr);
}

TEST(TlsTest, BadCombinationsAndFilesAreRefusedNamingTheFlag) {
  const std::string cert = Write("cert.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
  const std::string key = Write("key.pem", "-----BEGIN PRIVATE KEY-----\n", 0600);
  const std::string open_key = Write("open-key.pem", "-----BEGIN PRIVATE KEY-----\n", 0644);

  TlsFiles files;
  files.cert_file = cert;
  auto refused = ServerCredentialsFrom(files);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--tls-key-file"));

  files = {};
  files.client_ca_file = cert;
  refused = ServerCredentialsFrom(files);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--tls-client-ca-file"));

  files = {};
  files.cert_file = cert;
  files.key_file = open_key;
  refused = ServerCredentialsFrom(files);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "--tls-key-file " + open_key));
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "chmod 600"));

  files.key_file = key;
  files.ca_file = cert + ".missing";
  auto channel = InternalChannelCredentialsFrom(files);
  EXPECT_EQ(channel.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(channel.status().message(), "--tls-ca-file"));

  files.ca_file = std::string(std::getenv("TEST_TMPDIR"));  // a directory
  channel = InternalChannelCredentialsFrom(files);
  EXPECT_EQ(channel.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(channel.status().message(), "not a regular file"));
}

}  // namespace
}  // namespace common
