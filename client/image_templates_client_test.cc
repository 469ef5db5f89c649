#include "client/image_templates_client.h"

#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "gtest/gtest.h"

namespace client {
namespace {

namespace v1 = imagetemplates::v1;

constexpr char kKey[] = "test-key";

// Fails calls without the test key, as the controlplane does.
grpc::Status CheckKey(grpc::ServerContext* context) {
  auto it = context->client_metadata().find("authorization");
  if (it == context->client_metadata().end() ||
      std::string(it->second.data(), it->second.size()) != std::string("Bearer ") + kKey) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "no valid API key");
  }
  return grpc::Status::OK;
}

// Canned answers; counts calls and remembers the request_ids it saw.
class FakeTemplates final : public v1::ImageTemplateService::Service {
 public:
  grpc::Status CreateImageTemplate(grpc::ServerContext* context,
                                   const v1::CreateImageTemplateRequest* request,
                                   v1::Operation* response) override {
    if (auto s = CheckKey(context); !s.ok()) return s;
    absl::MutexLock lock(&mu_);
    request_ids_.push_back(request->request_id());
    if (unavailable_left_ > 0) {
      --unavailable_left_;
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "storage node down");
    }
    response->set_id("op-1");
    response->set_state(v1::OPERATION_STATE_PENDING);
    return grpc::Status::OK;
  }

  grpc::Status GetImageTemplate(grpc::ServerContext* context,
                                const v1::GetImageTemplateRequest* request,
                                v1::GetImageTemplateResponse* response) override {
    if (auto s = CheckKey(context); !s.ok()) return s;
    {
      absl::MutexLock lock(&mu_);
      ++get_calls_;
    }
    if (request->id() == "slow") absl::SleepFor(absl::Seconds(3));
    if (request->id() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND,
                          "image template missing not found; list templates with "
                          "ListImageTemplates");
    }
    response->mutable_image_template()->set_id(request->id());
    return grpc::Status::OK;
  }

  grpc::Status DeleteImageTemplate(grpc::ServerContext* context,
                                   const v1::DeleteImageTemplateRequest* request,
                                   v1::Operation* response) override {
    absl::MutexLock lock(&mu_);
    ++delete_calls_;
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "needs PERMISSION_IMAGE_TEMPLATE_MANAGE");
  }

  void set_unavailable(int n) {
    absl::MutexLock lock(&mu_);
    unavailable_left_ = n;
  }
  std::vector<std::string> request_ids() {
    absl::MutexLock lock(&mu_);
    return request_ids_;
  }
  int get_calls() {
    absl::MutexLock lock(&mu_);
    return get_calls_;
  }
  int delete_calls() {
    absl::MutexLock lock(&mu_);
    return delete_calls_;
  }

 private:
  absl::Mutex mu_;
  int unavailable_left_ ABSL_GUARDED_BY(mu_) = 0;
  int get_calls_ ABSL_GUARDED_BY(mu_) = 0;
  int delete_calls_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<std::string> request_ids_ ABSL_GUARDED_BY(mu_);
};

// WatchOperation: the first watch sends two updates and breaks with
// UNAVAILABLE (a restarting control plane); the next one finishes.
class FakeOperations final : public v1::OperationService::Service {
 public:
  grpc::Status WatchOperation(grpc::ServerContext* context,
                              const v1::WatchOperationRequest* request,
                              grpc::ServerWriter<v1::Operation>* writer) override {
    if (auto s = CheckKey(context); !s.ok()) return s;
    if (request->id() == "missing") {
      return grpc::Status(grpc::StatusCode::NOT_FOUND, "operation missing not found");
    }
    int call;
    {
      absl::MutexLock lock(&mu_);
      call = ++watch_calls_;
    }
    v1::Operation op;
    op.set_id(request->id());
    op.set_state(v1::OPERATION_STATE_RUNNING);
    if (call == 1) {
      for (double percent : {10.0, 50.0}) {
        op.mutable_progress()->set_percent(percent);
        writer->Write(op);
      }
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "control plane restarting");
    }
    op.mutable_progress()->set_percent(80);
    writer->Write(op);
    op.set_state(v1::OPERATION_STATE_FAILED);
    op.mutable_progress()->set_percent(100);
    op.mutable_error()->set_code(static_cast<int>(grpc::StatusCode::DATA_LOSS));
    op.mutable_error()->set_message("digest mismatch");
    writer->Write(op);
    return grpc::Status::OK;
  }

  int watch_calls() {
    absl::MutexLock lock(&mu_);
    return watch_calls_;
  }

 private:
  absl::Mutex mu_;
  int watch_calls_ ABSL_GUARDED_BY(mu_) = 0;
};

class ImageTemplatesClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&templates_);
    builder.RegisterService(&operations_);
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    options_.endpoint = "127.0.0.1:" + std::to_string(port_);
    options_.api_key = kKey;
    options_.initial_backoff = absl::Milliseconds(10);
    options_.max_backoff = absl::Milliseconds(50);
  }

  void TearDown() override { server_->Shutdown(); }

  std::unique_ptr<ImageTemplatesClient> NewClient() {
    auto client = ImageTemplatesClient::Create(options_);
    EXPECT_TRUE(client.ok()) << client.status();
    return *std::move(client);
  }

  FakeTemplates templates_;
  FakeOperations operations_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  ClientOptions options_;
};

TEST_F(ImageTemplatesClientTest, RetriesUnavailableWithTheSameRequestId) {
  templates_.set_unavailable(2);
  auto client = NewClient();
  v1::CreateImageTemplateRequest request;
  request.set_server_id("s");
  absl::StatusOr<v1::Operation> op = client->CreateImageTemplate(request);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->id(), "op-1");
  std::vector<std::string> ids = templates_.request_ids();
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_EQ(ids[0].size(), 36u) << ids[0];
  EXPECT_EQ(ids[0][14], '4') << ids[0];  // UUID version 4
  EXPECT_EQ(ids[1], ids[0]);
  EXPECT_EQ(ids[2], ids[0]);
}

TEST_F(ImageTemplatesClientTest, EveryMutatingCallGetsItsOwnRequestId) {
  auto client = NewClient();
  v1::CreateImageTemplateRequest request;
  ASSERT_TRUE(client->CreateImageTemplate(request).ok());
  ASSERT_TRUE(client->CreateImageTemplate(request).ok());
  request.set_request_id("chosen-by-caller");
  ASSERT_TRUE(client->CreateImageTemplate(request).ok());
  std::vector<std::string> ids = templates_.request_ids();
  ASSERT_EQ(ids.size(), 3u);
  EXPECT_FALSE(ids[0].empty());
  EXPECT_NE(ids[0], ids[1]);
  EXPECT_EQ(ids[2], "chosen-by-caller");
}

TEST_F(ImageTemplatesClientTest, GivesUpAfterMaxAttempts) {
  templates_.set_unavailable(100);
  options_.max_attempts = 3;
  auto client = NewClient();
  absl::StatusOr<v1::Operation> op = client->CreateImageTemplate({});
  EXPECT_EQ(op.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(op.status().message(), "storage node down");
  EXPECT_EQ(templates_.request_ids().size(), 3u);
}

TEST_F(ImageTemplatesClientTest, DeadlineCoversTheCall) {
  auto client = NewClient();
  // Connected first: the 300 ms are the call's, not the channel's setup.
  EXPECT_EQ(client->GetImageTemplate("missing").status().code(), absl::StatusCode::kNotFound);
  const int calls_before = templates_.get_calls();
  const absl::Time start = absl::Now();
  CallOptions call;
  call.timeout = absl::Milliseconds(300);
  v1::GetImageTemplateRequest request;
  request.set_id("slow");
  auto response = client->Call(&v1::ImageTemplateService::Stub::GetImageTemplate, request, call);
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(templates_.get_calls(), calls_before + 1);  // DEADLINE_EXCEEDED is not retried

  options_.timeout = absl::Milliseconds(300);
  auto client2 = NewClient();
  EXPECT_EQ(client2->GetImageTemplate("slow").status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_F(ImageTemplatesClientTest, ErrorsKeepTheServersCodeAndMessageAndAreNotRetried) {
  auto client = NewClient();
  absl::StatusOr<v1::ImageTemplate> missing = client->GetImageTemplate("missing");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(missing.status().message(),
            "image template missing not found; list templates with ListImageTemplates");
  EXPECT_EQ(templates_.get_calls(), 1);

  v1::DeleteImageTemplateRequest del;
  del.set_id("x");
  auto deleted = client->Call(&v1::ImageTemplateService::Stub::DeleteImageTemplate, del);
  EXPECT_EQ(deleted.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(templates_.delete_calls(), 1);

  absl::StatusOr<v1::ImageTemplate> found = client->GetImageTemplate("t1");
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(found->id(), "t1");
}

TEST_F(ImageTemplatesClientTest, SendsTheApiKey) {
  options_.api_key = "wrong";
  auto client = NewClient();
  EXPECT_EQ(client->GetImageTemplate("t1").status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(ImageTemplatesClientTest, WaitForOperationWatchesAgainAfterUnavailable) {
  auto client = NewClient();
  std::vector<double> seen;
  absl::StatusOr<v1::Operation> op = client->WaitForOperation(
      "op-7", [&](const v1::Operation& o) { seen.push_back(o.progress().percent()); });
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(op->error().message(), "digest mismatch");
  EXPECT_EQ(seen, (std::vector<double>{10, 50, 80, 100}));
  EXPECT_EQ(operations_.watch_calls(), 2);
}

TEST_F(ImageTemplatesClientTest, WaitForOperationReturnsServerErrors) {
  auto client = NewClient();
  EXPECT_EQ(client->WaitForOperation("missing").status().code(), absl::StatusCode::kNotFound);
}

TEST_F(ImageTemplatesClientTest, UnreachableEndpointIsUnavailable) {
  server_->Shutdown();
  options_.max_attempts = 3;
  options_.wait_unavailable_limit = absl::Milliseconds(200);
  auto client = NewClient();
  EXPECT_EQ(client->GetImageTemplate("t1").status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client->WaitForOperation("op").status().code(), absl::StatusCode::kUnavailable);
}

TEST(ImageTemplatesClientCreateTest, RejectsAnEmptyEndpoint) {
  ClientOptions options;
  options.endpoint = "";
  EXPECT_EQ(ImageTemplatesClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(ImageTemplatesClientCreateTest, ClientCertificateNeedsItsKeyAndTls) {
  ClientOptions options;
  options.use_tls = true;
  options.tls_cert_chain = "-----BEGIN CERTIFICATE-----";
  EXPECT_EQ(ImageTemplatesClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.tls_cert_chain.clear();
  options.tls_private_key = "-----BEGIN PRIVATE KEY-----";
  EXPECT_EQ(ImageTemplatesClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
  options.tls_cert_chain = "-----BEGIN CERTIFICATE-----";
  options.use_tls = false;
  EXPECT_EQ(ImageTemplatesClient::Create(options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace client
