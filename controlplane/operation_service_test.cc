// OperationService over a real in-process gRPC server: open watches are
// bounded per account and in all, and each ends (freeing its slot) when its
// operation ends, its client cancels or its key is revoked; who may cancel.
#include "controlplane/operation_service.h"

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/time/clock.h"
#include "controlplane/ids.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/sqlite_request_id_store.h"
#include "controlplane/testing/audit_log_fake.h"
#include "controlplane/testing/authenticator_fake.h"
#include "controlplane/testing/template_test_database.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

const std::string kA = "00000000-0000-4000-8000-00000000000a";
const std::string kB = "00000000-0000-4000-8000-00000000000b";
const std::string kOp = "00000000-0000-4000-8000-0000000000ff";

// One open WatchOperation stream.
struct OpenWatch {
  std::unique_ptr<grpc::ClientContext> context;
  std::unique_ptr<grpc::ClientReader<v1::Operation>> reader;
};

class WatchLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenTemplateTestDatabase();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    for (const auto& id : {kA, kB, kOp}) ASSERT_TRUE(AddTestAccount(*db_, id).ok());
    operations_ = std::make_unique<SqliteOperationStore>(db_.get());
    request_ids_ = std::make_unique<SqliteRequestIdStore>(db_.get());
    OperationManager::Options options;
    options.poll_interval = absl::Milliseconds(100);
    options.progress_interval = absl::ZeroDuration();
    options.max_watches_per_account = 2;
    options.max_watches = 3;
    manager_ = std::make_unique<OperationManager>(operations_.get(), request_ids_.get(), &audit_,
                                                  options);
    service_ = std::make_unique<OperationServiceImpl>(&auth_, manager_.get());
    for (const auto& [key, account] :
         {std::pair{"alice-key", kA}, std::pair{"bob-key", kB}, std::pair{"op-key", kOp}}) {
      Caller caller;
      caller.user_id = std::string("user-") + key;
      caller.account_id = account;
      caller.is_operator = account == kOp;
      auth_.AddKey(key, caller);
    }
    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    stub_ = v1::OperationService::NewStub(grpc::CreateChannel(
        "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials()));
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  v1::Operation InsertOperation(const std::string& account, v1::OperationState state,
                                v1::OperationKind kind = v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE,
                                const std::string& server_id = "") {
    v1::Operation op;
    op.set_id(NewUuid());
    op.set_kind(kind);
    op.set_account_id(account);
    op.set_state(state);
    op.mutable_target()->set_type(server_id.empty() ? v1::RESOURCE_TYPE_IMAGE_TEMPLATE
                                                    : v1::RESOURCE_TYPE_SERVER);
    op.mutable_target()->set_id(server_id.empty() ? NewUuid() : server_id);
    *op.mutable_create_time() = ToTimestamp(NowMicros());
    *op.mutable_update_time() = op.create_time();
    EXPECT_TRUE(operations_->InsertOperation(op, {}).ok());
    return op;
  }

  OpenWatch Open(const std::string& key, const std::string& id) {
    OpenWatch watch;
    watch.context = std::make_unique<grpc::ClientContext>();
    watch.context->AddMetadata("authorization", "Bearer " + key);
    watch.context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    v1::WatchOperationRequest request;
    request.set_id(id);
    watch.reader = stub_->WatchOperation(watch.context.get(), request);
    return watch;
  }

  grpc::Status Cancel(const std::string& key, const std::string& id, v1::Operation* out) {
    grpc::ClientContext context;
    if (!key.empty()) context.AddMetadata("authorization", "Bearer " + key);
    v1::CancelOperationRequest request;
    request.set_id(id);
    return stub_->CancelOperation(&context, request, out);
  }

  // Opens a watch and reads its first message: true once the server has
  // admitted it; false (and `status` set) if the stream ended instead.
  bool OpenAndRead(const std::string& key, const std::string& id, OpenWatch* watch,
                   grpc::Status* status) {
    *watch = Open(key, id);
    v1::Operation first;
    if (watch->reader->Read(&first)) return true;
    *status = watch->reader->Finish();
    return false;
  }

  std::unique_ptr<SqliteDatabase> db_;
  FakeAuthenticator auth_;
  RecordingAuditLog audit_;
  std::unique_ptr<SqliteOperationStore> operations_;
  std::unique_ptr<SqliteRequestIdStore> request_ids_;
  std::unique_ptr<OperationManager> manager_;
  std::unique_ptr<OperationServiceImpl> service_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<v1::OperationService::Stub> stub_;
};

TEST_F(WatchLimitTest, WatchesAreBoundedAndEndWithTheOperationOrTheClient) {
  const v1::Operation mine = InsertOperation(kA, v1::OPERATION_STATE_RUNNING);
  const v1::Operation bobs = InsertOperation(kB, v1::OPERATION_STATE_RUNNING);
  grpc::Status status;
  OpenWatch w1, w2, refused, bob, op_watch;
  ASSERT_TRUE(OpenAndRead("alice-key", mine.id(), &w1, &status)) << status.error_message();
  ASSERT_TRUE(OpenAndRead("alice-key", mine.id(), &w2, &status)) << status.error_message();

  // A third from the same account is refused at once, naming the limit.
  ASSERT_FALSE(OpenAndRead("alice-key", mine.id(), &refused, &status));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("the account already has 2 open WatchOperation"),
            std::string::npos)
      << status.error_message();

  // Another account has its own allowance, until the server's total is hit.
  ASSERT_TRUE(OpenAndRead("bob-key", bobs.id(), &bob, &status)) << status.error_message();
  ASSERT_FALSE(OpenAndRead("op-key", mine.id(), &op_watch, &status));
  EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << status.error_message();
  EXPECT_NE(status.error_message().find("serves 3 WatchOperation streams"), std::string::npos)
      << status.error_message();

  // A client that cancels frees its slot within the poll interval.
  w2.context->TryCancel();
  EXPECT_EQ(w2.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  OpenWatch w3;
  bool admitted = false;
  for (int i = 0; i < 50 && !admitted; ++i) {
    admitted = OpenAndRead("alice-key", mine.id(), &w3, &status);
    if (!admitted) {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
      absl::SleepFor(absl::Milliseconds(100));
    }
  }
  ASSERT_TRUE(admitted) << "a cancelled watch kept its slot";

  // The operation ends: both of its watches get the end and finish OK.
  ASSERT_TRUE(operations_
                  ->UpdateOperation(mine.id(),
                                    [](v1::Operation& op, OperationInternals&) {
                                      op.set_state(v1::OPERATION_STATE_SUCCEEDED);
                                      return absl::OkStatus();
                                    })
                  .ok());
  for (OpenWatch* w : {&w1, &w3}) {
    v1::Operation last;
    v1::Operation op;
    while (w->reader->Read(&op)) last = op;
    status = w->reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(last.state(), v1::OPERATION_STATE_SUCCEEDED);
  }
  // Their slots are free again: two more watches (of the ended operation,
  // answered at once) are admitted.
  for (int i = 0; i < 2; ++i) {
    OpenWatch again = Open("alice-key", mine.id());
    v1::Operation op;
    std::vector<v1::Operation> received;
    while (again.reader->Read(&op)) received.push_back(op);
    status = again.reader->Finish();
    EXPECT_TRUE(status.ok()) << status.error_message();
    ASSERT_EQ(received.size(), 1u);
    EXPECT_EQ(received[0].state(), v1::OPERATION_STATE_SUCCEEDED);
  }
  bob.context->TryCancel();
  EXPECT_EQ(bob.reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
}

// A stream authenticated once outlived the revocation of its key.
TEST_F(WatchLimitTest, AWatchEndsWhenItsKeyIsRevoked) {
  Caller carol;
  carol.user_id = "user-carol";
  carol.account_id = kA;
  auth_.AddKey("carol-key", carol);
  const v1::Operation op = InsertOperation(kA, v1::OPERATION_STATE_RUNNING);
  OpenWatch watch;
  grpc::Status status;
  ASSERT_TRUE(OpenAndRead("carol-key", op.id(), &watch, &status)) << status.error_message();
  auth_.RevokeKey("carol-key");
  ASSERT_TRUE(operations_
                  ->UpdateOperation(op.id(),
                                    [](v1::Operation& o, OperationInternals&) {
                                      o.mutable_progress()->set_bytes_done(1 << 20);
                                      return absl::OkStatus();
                                    })
                  .ok());
  v1::Operation received;
  int after_revoke = 0;
  while (watch.reader->Read(&received)) ++after_revoke;
  status = watch.reader->Finish();
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED) << status.error_message();
  EXPECT_EQ(after_revoke, 0) << "an update reached a revoked key";
}

// Cancelling a capture needs access to the server captured; a refusal for a
// missing or unknown key is audited like every other mutating call's.
TEST_F(WatchLimitTest, CancellingACaptureNeedsTheServerAndRefusalsAreAudited) {
  const std::string server = NewUuid();
  const v1::Operation create = InsertOperation(kA, v1::OPERATION_STATE_RUNNING,
                                               v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE, server);
  Caller limited;
  limited.user_id = "user-limited";
  limited.account_id = kA;
  limited.permissions = {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_VIEW};
  auth_.AddKey("limited-key", limited);
  Caller granted = limited;
  granted.user_id = "user-granted";
  granted.server_ids = {server};
  auth_.AddKey("granted-key", granted);

  audit_.Clear();
  v1::Operation answer;
  grpc::Status status = Cancel("", create.id(), &answer);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  status = Cancel("no-such-key", create.id(), &answer);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  std::vector<RecordedAuditEvent> events = audit_.events();
  ASSERT_EQ(events.size(), 2u);
  for (const RecordedAuditEvent& event : events) {
    EXPECT_EQ(event.method, "/imagetemplates.v1.OperationService/CancelOperation");
    EXPECT_EQ(event.target.id(), create.id());
    EXPECT_EQ(event.code, absl::StatusCode::kUnauthenticated);
    EXPECT_EQ(event.user_id, "");
  }

  status = Cancel("limited-key", create.id(), &answer);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::PERMISSION_DENIED) << status.error_message();
  EXPECT_NE(status.error_message().find("device access to server " + server), std::string::npos)
      << status.error_message();
  auto row = operations_->GetOperation(create.id());
  ASSERT_TRUE(row.ok()) << row.status();
  EXPECT_EQ(row->state(), v1::OPERATION_STATE_RUNNING);

  status = Cancel("granted-key", create.id(), &answer);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(answer.state(), v1::OPERATION_STATE_CANCELLING);
}

}  // namespace
}  // namespace controlplane
