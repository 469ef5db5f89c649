// The token file's checks, and a real loopback call through
// CreateInternalChannel to a service that uses InternalTokenVerifier.
#include "common/internal_token.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>

#include "grpc/health/v1/health.grpc.pb.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "grpcpp/security/server_credentials.h"
#include "gtest/gtest.h"

namespace common {
namespace {

namespace health = grpc::health::v1;

constexpr char kToken[] = "0123456789abcdef0123456789abcdef-token";

class TokenFileTest : public ::testing::Test {
 protected:
  std::string Write(const std::string& contents, int mode) {
    std::string path = absl::StrCat(::testing::TempDir(), "/token", counter_++);
    ::unlink(path.c_str());
    std::ofstream(path) << contents;
    EXPECT_EQ(::chmod(path.c_str(), mode), 0);
    return path;
  }
  int counter_ = 0;
};

TEST_F(TokenFileTest, ReadsTheFirstLine) {
  auto token = ReadInternalTokenFile(Write(absl::StrCat(kToken, "\nsecond line\n"), 0600));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, kToken);
  token = ReadInternalTokenFile(Write(absl::StrCat("  ", kToken, "\r\n"), 0400));
  ASSERT_TRUE(token.ok()) << token.status();
  EXPECT_EQ(*token, kToken);
}

TEST_F(TokenFileTest, RefusesMissingShortOpenAndBlankTokens) {
  auto missing = ReadInternalTokenFile(::testing::TempDir() + "/no-such-token");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("no-such-token"), absl::string_view::npos);

  auto short_token = ReadInternalTokenFile(Write(std::string(31, 'x') + "\n", 0600));
  EXPECT_EQ(short_token.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(short_token.status().message().find("31 bytes; at least 32"),
            absl::string_view::npos)
      << short_token.status();
  EXPECT_TRUE(ReadInternalTokenFile(Write(std::string(32, 'x'), 0600)).ok());

  for (int mode : {0644, 0640, 0604, 0660}) {
    auto open = ReadInternalTokenFile(Write(kToken, mode));
    EXPECT_EQ(open.status().code(), absl::StatusCode::kFailedPrecondition) << mode;
    EXPECT_NE(open.status().message().find("chmod 600"), absl::string_view::npos);
  }
  auto empty = ReadInternalTokenFile(Write("", 0600));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  auto blank = ReadInternalTokenFile(Write("0123456789abcdef 0123456789abcdef\n", 0600));
  EXPECT_EQ(blank.status().code(), absl::StatusCode::kInvalidArgument);
  auto dir = ReadInternalTokenFile(::testing::TempDir());
  EXPECT_FALSE(dir.ok());
}

// Health's Check, guarded by the verifier.
class GuardedHealth final : public health::Health::Service {
 public:
  explicit GuardedHealth(const InternalTokenVerifier* verifier) : verifier_(verifier) {}
  grpc::Status Check(grpc::ServerContext* context, const health::HealthCheckRequest*,
                     health::HealthCheckResponse* response) override {
    grpc::Status auth = verifier_->Check(*context, "Check");
    if (!auth.ok()) return auth;
    response->set_status(health::HealthCheckResponse::SERVING);
    return grpc::Status::OK;
  }

 private:
  const InternalTokenVerifier* verifier_;
};

class VerifierTest : public ::testing::Test {
 protected:
  void Serve(const std::string& token) {
    verifier_ = std::make_unique<InternalTokenVerifier>(token);
    service_ = std::make_unique<GuardedHealth>(verifier_.get());
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
  }
  grpc::Status Call(const std::string& token, const std::string& raw_header = "") {
    auto stub = health::Health::NewStub(
        CreateInternalChannel(absl::StrCat("127.0.0.1:", port_), token));
    grpc::ClientContext context;
    if (!raw_header.empty()) context.AddMetadata("authorization", raw_header);
    health::HealthCheckResponse response;
    grpc::Status status = stub->Check(&context, {}, &response);
    if (status.ok()) {
      EXPECT_EQ(response.status(), health::HealthCheckResponse::SERVING);
    }
    return status;
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }

  std::unique_ptr<InternalTokenVerifier> verifier_;
  std::unique_ptr<GuardedHealth> service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
};

TEST_F(VerifierTest, OnlyTheRightTokenPasses) {
  ASSERT_NO_FATAL_FAILURE(Serve(kToken));
  EXPECT_TRUE(Call(kToken).ok());
  grpc::Status none = Call("");
  EXPECT_EQ(none.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(none.error_message().find("no internal token"), std::string::npos);
  std::string wrong = kToken;
  wrong.back() = 'X';
  grpc::Status bad = Call(wrong);
  EXPECT_EQ(bad.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_NE(bad.error_message().find("wrong internal token"), std::string::npos);
  EXPECT_EQ(Call("", kToken).error_code(), grpc::StatusCode::UNAUTHENTICATED);  // no "Bearer "
  EXPECT_EQ(Call("", absl::StrCat("Bearer ", kToken, "x")).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Call("", absl::StrCat("Bearer ", kToken)).ok());
}

TEST_F(VerifierTest, AFloodOfRefusalsLogsOnlyTheFirstFew) {
  ASSERT_NO_FATAL_FAILURE(Serve(kToken));
  ::testing::internal::CaptureStderr();
  for (int i = 0; i < 30; ++i) {
    ASSERT_EQ(Call("").error_code(), grpc::StatusCode::UNAUTHENTICATED) << i;
  }
  const std::string log = ::testing::internal::GetCapturedStderr();
  int lines = 0;
  for (size_t at = log.find("refused Check"); at != std::string::npos;
       at = log.find("refused Check", at + 1)) {
    ++lines;
  }
  EXPECT_EQ(lines, InternalTokenVerifier::kLoggedRefusals) << log;
  EXPECT_TRUE(Call(kToken).ok());
}

TEST_F(VerifierTest, EmptyTokenAcceptsEveryCall) {
  ASSERT_NO_FATAL_FAILURE(Serve(""));
  EXPECT_FALSE(verifier_->enabled());
  EXPECT_TRUE(Call("").ok());
  EXPECT_TRUE(Call(kToken).ok());
}

}  // namespace
}  // namespace common
