#include "controlplane/credential_cipher.h"

#include <sys/stat.h>

#include <string>

#include "gtest/gtest.h"

namespace controlplane {
namespace {

TEST(CredentialCipherTest, RoundTripsWithFreshNonceAndBindsContext) {
  auto cipher = CredentialCipher::Create(std::string(32, 'k'));
  ASSERT_TRUE(cipher.ok());
  auto a = (*cipher)->Encrypt("hunter2", "server/1/0");
  auto b = (*cipher)->Encrypt("hunter2", "server/1/0");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);  // random nonce per value
  EXPECT_EQ(a->find("hunter2"), std::string::npos);
  EXPECT_EQ(*(*cipher)->Decrypt(*a, "server/1/0"), "hunter2");
  EXPECT_EQ((*cipher)->Decrypt(*a, "server/2/0").status().code(), absl::StatusCode::kDataLoss);
  std::string tampered = *a;
  tampered[13] ^= 1;
  EXPECT_EQ((*cipher)->Decrypt(tampered, "server/1/0").status().code(),
            absl::StatusCode::kDataLoss);
  auto other = CredentialCipher::Create(std::string(32, 'j'));
  EXPECT_EQ((*other)->Decrypt(*a, "server/1/0").status().code(), absl::StatusCode::kDataLoss);
  EXPECT_EQ(*(*cipher)->Decrypt(*(*cipher)->Encrypt("", "c"), "c"), "");
  EXPECT_EQ(CredentialCipher::Create("short").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CredentialCipherTest, KeyFileIsCreatedOnceWithMode0600) {
  const char* dir = getenv("TEST_TMPDIR");
  std::string path = std::string(dir ? dir : "/tmp") + "/cred.key";
  auto first = CredentialCipher::FromKeyFile(path);
  ASSERT_TRUE(first.ok()) << first.status();
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  EXPECT_EQ(st.st_size, 32);
  auto sealed = (*first)->Encrypt("secret", "ctx");
  auto second = CredentialCipher::FromKeyFile(path);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(*(*second)->Decrypt(*sealed, "ctx"), "secret");
  chmod(path.c_str(), 0644);
  EXPECT_EQ(CredentialCipher::FromKeyFile(path).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace controlplane
