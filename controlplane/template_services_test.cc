// ImageTemplateService and OperationService over a real in-process gRPC
// server: authentication, status codes at the wire, and WatchOperation
// streaming.
#include <future>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "controlplane/ids.h"
#include "controlplane/image_template_manager.h"
#include "controlplane/image_template_service.h"
#include "controlplane/operation_service.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/sqlite_request_id_store.h"
#include "controlplane/sqlite_template_store.h"
#include "controlplane/testing/account_directory_fake.h"
#include "controlplane/testing/audit_log_fake.h"
#include "controlplane/testing/authenticator_fake.h"
#include "controlplane/testing/template_test_database.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

const std::string kA = "00000000-0000-4000-8000-00000000000a";
const std::string kB = "00000000-0000-4000-8000-00000000000b";
const std::string kOp = "00000000-0000-4000-8000-0000000000ff";

class TemplateServicesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenTemplateTestDatabase();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    for (const auto& id : {kA, kB, kOp}) {
      ASSERT_TRUE(AddTestAccount(*db_, id).ok());
      directory_.AddAccount(id);
    }
    templates_ = std::make_unique<SqliteTemplateStore>(db_.get());
    operations_ = std::make_unique<SqliteOperationStore>(db_.get());
    request_ids_ = std::make_unique<SqliteRequestIdStore>(db_.get());
    ImageTemplateManager::Dependencies deps{templates_.get(), operations_.get(),
                                            request_ids_.get(), &audit_, &directory_,
                                            &directory_, nullptr};
    template_manager_ = std::make_unique<ImageTemplateManager>(deps);
    OperationManager::Options options;
    options.poll_interval = absl::Milliseconds(200);
    options.progress_interval = absl::ZeroDuration();
    operation_manager_ = std::make_unique<OperationManager>(operations_.get(), request_ids_.get(),
                                                            &audit_, options);
    template_service_ =
        std::make_unique<ImageTemplateServiceImpl>(&auth_, template_manager_.get());
    operation_service_ = std::make_unique<OperationServiceImpl>(&auth_, operation_manager_.get());

    Caller alice;
    alice.user_id = "user-alice";
    alice.account_id = kA;
    alice.permissions = {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_SERVER_PROVISION};
    auth_.AddKey("alice-key", alice);
    Caller viewer = alice;
    viewer.user_id = "user-viewer";
    viewer.permissions.clear();
    auth_.AddKey("viewer-key", viewer);
    Caller bob;
    bob.user_id = "user-bob";
    bob.account_id = kB;
    bob.permissions = alice.permissions;
    auth_.AddKey("bob-key", bob);
    Caller op;
    op.user_id = "user-op";
    op.account_id = kOp;
    op.is_operator = true;
    auth_.AddKey("op-key", op);
    auth_.AddKey("revoked-key", alice);
    auth_.RevokeKey("revoked-key");

    grpc::ServerBuilder builder;
    int port = 0;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
    builder.RegisterService(template_service_.get());
    builder.RegisterService(operation_service_.get());
    server_ = builder.BuildAndStart();
    ASSERT_NE(server_, nullptr);
    auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port),
                                       grpc::InsecureChannelCredentials());
    channel_ = channel;
    templates_stub_ = v1::ImageTemplateService::NewStub(channel);
    operations_stub_ = v1::OperationService::NewStub(channel);
  }

  void TearDown() override {
    if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }

  std::unique_ptr<grpc::ClientContext> Context(const std::string& key) {
    auto context = std::make_unique<grpc::ClientContext>();
    if (!key.empty()) context->AddMetadata("authorization", "Bearer " + key);
    context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
    return context;
  }

  v1::Operation InsertOperation(const std::string& account, v1::OperationKind kind,
                                v1::OperationState state) {
    v1::Operation op;
    op.set_id(NewUuid());
    op.set_kind(kind);
    op.set_account_id(account);
    op.set_state(state);
    op.mutable_target()->set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
    op.mutable_target()->set_id(NewUuid());
    int64_t now = NowMicros();
    *op.mutable_create_time() = ToTimestamp(now);
    *op.mutable_update_time() = ToTimestamp(now);
    EXPECT_TRUE(operations_->InsertOperation(op, {}).ok());
    return op;
  }

  v1::ImageTemplate Seed(const std::string& owner, const std::string& name) {
    v1::ImageTemplate t;
    t.set_id(NewUuid());
    t.set_owner_account_id(owner);
    t.set_name(name);
    t.set_visibility(v1::VISIBILITY_PRIVATE);
    t.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
    *t.mutable_create_time() = ToTimestamp(NowMicros());
    *t.mutable_update_time() = t.create_time();
    EXPECT_TRUE(templates_->InsertTemplate(t).ok());
    return t;
  }

  // `after_first` runs once the first message has arrived.
  std::vector<v1::Operation> Watch(const std::string& key, const std::string& id,
                                   grpc::Status* status,
                                   const std::function<void()>& after_first = nullptr) {
    auto context = Context(key);
    v1::WatchOperationRequest request;
    request.set_id(id);
    auto reader = operations_stub_->WatchOperation(context.get(), request);
    std::vector<v1::Operation> received;
    v1::Operation op;
    while (reader->Read(&op)) {
      received.push_back(op);
      if (received.size() == 1 && after_first) after_first();
    }
    *status = reader->Finish();
    return received;
  }

  std::unique_ptr<SqliteDatabase> db_;
  FakeAuthenticator auth_;
  FakeAccountDirectory directory_;
  RecordingAuditLog audit_;
  std::unique_ptr<SqliteTemplateStore> templates_;
  std::unique_ptr<SqliteOperationStore> operations_;
  std::unique_ptr<SqliteRequestIdStore> request_ids_;
  std::unique_ptr<ImageTemplateManager> template_manager_;
  std::unique_ptr<OperationManager> operation_manager_;
  std::unique_ptr<ImageTemplateServiceImpl> template_service_;
  std::unique_ptr<OperationServiceImpl> operation_service_;
  std::unique_ptr<grpc::Server> server_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::ImageTemplateService::Stub> templates_stub_;
  std::unique_ptr<v1::OperationService::Stub> operations_stub_;
};

TEST_F(TemplateServicesTest, MissingOrRevokedKeyIsUnauthenticated) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::Operation op = InsertOperation(kA, v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE,
                                     v1::OPERATION_STATE_RUNNING);
  for (const std::string key : {"", "revoked-key", "no-such-key"}) {
    v1::GetImageTemplateRequest get;
    get.set_id(t.id());
    v1::GetImageTemplateResponse get_response;
    EXPECT_EQ(templates_stub_->GetImageTemplate(Context(key).get(), get, &get_response)
                  .error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::ListImageTemplatesResponse list_response;
    EXPECT_EQ(templates_stub_->ListImageTemplates(Context(key).get(), {}, &list_response)
                  .error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::DeleteImageTemplateRequest del;
    del.set_id(t.id());
    v1::Operation del_response;
    EXPECT_EQ(templates_stub_->DeleteImageTemplate(Context(key).get(), del, &del_response)
                  .error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::GetOperationRequest get_op;
    get_op.set_id(op.id());
    v1::Operation got;
    EXPECT_EQ(operations_stub_->GetOperation(Context(key).get(), get_op, &got).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    v1::CancelOperationRequest cancel;
    cancel.set_id(op.id());
    EXPECT_EQ(operations_stub_->CancelOperation(Context(key).get(), cancel, &got).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
    grpc::Status watch_status;
    EXPECT_TRUE(Watch(key, op.id(), &watch_status).empty());
    EXPECT_EQ(watch_status.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  EXPECT_EQ(templates_->GetTemplate(t.id())->status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  EXPECT_EQ(operations_->GetOperation(op.id())->state(), v1::OPERATION_STATE_RUNNING);
}

// ListImageTemplates sends each template's cached encoding (a raw method):
// over the wire it is exactly the manager's ListImageTemplatesResponse, page
// by page, and a change made through the API shows in the next list.
TEST_F(TemplateServicesTest, ListOverGrpcIsTheManagersResponseAndFollowsUpdates) {
  std::vector<v1::ImageTemplate> seeded;
  for (int i = 0; i < 5; ++i) seeded.push_back(Seed(kA, absl::StrCat("t", i)));
  Seed(kB, "bob-private");
  Caller alice;
  alice.account_id = kA;
  v1::ListImageTemplatesRequest request;
  request.set_page_size(2);
  request.set_order_by(v1::IMAGE_TEMPLATE_ORDER_BY_NAME);
  std::vector<std::string> names;
  int pages = 0;
  do {
    v1::ListImageTemplatesResponse wire;
    grpc::Status status =
        templates_stub_->ListImageTemplates(Context("alice-key").get(), request, &wire);
    ASSERT_TRUE(status.ok()) << status.error_message();
    auto direct = template_manager_->ListImageTemplates(alice, request);
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ(wire.DebugString(), direct->DebugString());
    for (const auto& t : wire.image_templates()) names.push_back(t.name());
    request.set_page_token(wire.next_page_token());
  } while (!request.page_token().empty() && ++pages < 10);
  EXPECT_EQ(names, (std::vector<std::string>{"t0", "t1", "t2", "t3", "t4"}));
  EXPECT_EQ(pages, 2);

  v1::UpdateImageTemplateRequest update;
  update.set_id(seeded[0].id());
  update.set_note("changed");
  update.mutable_update_mask()->add_paths("note");
  v1::UpdateImageTemplateResponse updated;
  ASSERT_TRUE(
      templates_stub_->UpdateImageTemplate(Context("alice-key").get(), update, &updated).ok());
  request.clear_page_token();
  v1::ListImageTemplatesResponse first;
  ASSERT_TRUE(templates_stub_->ListImageTemplates(Context("alice-key").get(), request, &first)
                  .ok());
  ASSERT_EQ(first.image_templates_size(), 2);
  EXPECT_EQ(first.image_templates(0).note(), "changed");
  EXPECT_EQ(first.image_templates(0).DebugString(), updated.image_template().DebugString());
  EXPECT_FALSE(first.next_page_token().empty());

  v1::ListImageTemplatesResponse bobs;
  ASSERT_TRUE(templates_stub_->ListImageTemplates(Context("bob-key").get(), {}, &bobs).ok());
  ASSERT_EQ(bobs.image_templates_size(), 1);
  EXPECT_EQ(bobs.image_templates(0).name(), "bob-private");
  EXPECT_TRUE(bobs.next_page_token().empty());

  v1::ListImageTemplatesRequest bad;
  bad.set_page_size(-1);
  v1::ListImageTemplatesResponse none;
  EXPECT_EQ(templates_stub_->ListImageTemplates(Context("alice-key").get(), bad, &none)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

// GetImageTemplate sends the cached encoding too: the manager's response,
// the latest version after an update, and NOT_FOUND alike for a template the
// caller may not see and one that does not exist.
TEST_F(TemplateServicesTest, GetOverGrpcIsTheManagersResponseAndFollowsUpdates) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::ImageTemplate bobs = Seed(kB, "bob-private");
  Caller alice;
  alice.account_id = kA;
  v1::GetImageTemplateRequest get;
  get.set_id(t.id());
  for (int i = 0; i < 2; ++i) {  // the second is answered from the cache
    v1::GetImageTemplateResponse wire;
    ASSERT_TRUE(templates_stub_->GetImageTemplate(Context("alice-key").get(), get, &wire).ok());
    auto direct = template_manager_->GetImageTemplate(alice, get);
    ASSERT_TRUE(direct.ok()) << direct.status();
    EXPECT_EQ(wire.DebugString(), direct->DebugString());
    EXPECT_EQ(wire.image_template().DebugString(), t.DebugString());
  }
  v1::UpdateImageTemplateRequest update;
  update.set_id(t.id());
  update.set_name("renamed");
  update.mutable_update_mask()->add_paths("name");
  v1::UpdateImageTemplateResponse updated;
  ASSERT_TRUE(
      templates_stub_->UpdateImageTemplate(Context("alice-key").get(), update, &updated).ok());
  v1::GetImageTemplateResponse after;
  ASSERT_TRUE(templates_stub_->GetImageTemplate(Context("alice-key").get(), get, &after).ok());
  EXPECT_EQ(after.image_template().name(), "renamed");
  EXPECT_EQ(after.image_template().DebugString(), updated.image_template().DebugString());

  v1::GetImageTemplateRequest hidden;
  hidden.set_id(bobs.id());
  v1::GetImageTemplateRequest missing;
  missing.set_id(NewUuid());
  std::vector<std::string> messages;
  for (const auto* request : {&hidden, &missing}) {
    v1::GetImageTemplateResponse none;
    grpc::Status status =
        templates_stub_->GetImageTemplate(Context("alice-key").get(), *request, &none);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
    std::string message = status.error_message();
    const size_t at = message.find(request->id());
    ASSERT_NE(at, std::string::npos) << message;
    messages.push_back(message.replace(at, request->id().size(), "ID"));
  }
  EXPECT_EQ(messages[0], messages[1]);  // nothing tells hidden from missing
}

// Bytes that are no request of the method are refused as such.
TEST_F(TemplateServicesTest, RawReadsRefuseBytesThatAreNoRequest) {
  Seed(kA, "t");
  grpc::GenericStub generic(channel_);
  // Field 1 says 5 bytes follow; 2 do.
  const std::string truncated("\x0a\x05"
                              "ab");
  auto call = [&](const char* method, const std::string& key) {
    grpc::Slice slice(truncated);
    grpc::ByteBuffer request(&slice, 1);
    grpc::ByteBuffer response;
    auto context = Context(key);
    std::promise<grpc::Status> done;
    generic.UnaryCall(context.get(), method, grpc::StubOptions(), &request, &response,
                      [&done](grpc::Status status) { done.set_value(status); });
    return done.get_future().get();
  };
  for (const char* method : {"/imagetemplates.v1.ImageTemplateService/ListImageTemplates",
                             "/imagetemplates.v1.ImageTemplateService/GetImageTemplate"}) {
    grpc::Status status = call(method, "alice-key");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
        << method << ": " << status.error_message();
    EXPECT_NE(status.error_message().find("request: not a "), std::string::npos);
    // Without a key the caller is refused before its bytes are read, as by
    // every other method.
    status = call(method, "");
    EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
        << method << ": " << status.error_message();
    EXPECT_EQ(status.error_message().find("request: not a "), std::string::npos);
  }
}

TEST_F(TemplateServicesTest, DeleteOverGrpcReturnsAnOperationTheOwnerCanRead) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::DeleteImageTemplateRequest del;
  del.set_id(t.id());
  v1::Operation op;
  grpc::Status status = templates_stub_->DeleteImageTemplate(Context("alice-key").get(), del, &op);
  ASSERT_TRUE(status.ok()) << status.error_message();
  v1::GetOperationRequest get;
  get.set_id(op.id());
  v1::Operation got;
  ASSERT_TRUE(operations_stub_->GetOperation(Context("alice-key").get(), get, &got).ok());
  EXPECT_EQ(got.DebugString(), op.DebugString());
  EXPECT_EQ(operations_stub_->GetOperation(Context("bob-key").get(), get, &got).error_code(),
            grpc::StatusCode::NOT_FOUND);
  // Deletes cannot be cancelled.
  v1::CancelOperationRequest cancel;
  cancel.set_id(op.id());
  EXPECT_EQ(operations_stub_->CancelOperation(Context("alice-key").get(), cancel, &got)
                .error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  // Bad input reaches the wire as INVALID_ARGUMENT naming the field.
  get.set_id("nope");
  status = operations_stub_->GetOperation(Context("alice-key").get(), get, &got);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(status.error_message().substr(0, 3), "id:");
}

TEST_F(TemplateServicesTest, WatchStreamsEveryChangeUntilTerminal) {
  v1::Operation op = InsertOperation(kA, v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE,
                                     v1::OPERATION_STATE_PENDING);
  // Changes start once the watch has sent the operation as it was, so the
  // first message is PENDING however slowly the stream comes up.
  std::thread worker;
  auto start_changes = [&] { worker = std::thread([&] {
    auto update = [&](std::function<void(v1::Operation&)> change) {
      absl::SleepFor(absl::Milliseconds(30));
      ASSERT_TRUE(operations_->UpdateOperation(op.id(), [&](v1::Operation& o, OperationInternals&) {
        change(o);
        return absl::OkStatus();
      }).ok());
    };
    update([](v1::Operation& o) {
      o.set_state(v1::OPERATION_STATE_RUNNING);
      o.set_step("restore_disk_0");
      o.mutable_progress()->set_bytes_total(100);
    });
    update([](v1::Operation& o) { o.mutable_progress()->set_bytes_done(50); });
    update([](v1::Operation& o) {
      o.set_step("");
      o.set_state(v1::OPERATION_STATE_SUCCEEDED);
      o.mutable_progress()->set_bytes_done(100);
      o.mutable_deployed_servers()->add_server_ids(NewUuid());
    });
  }); };
  grpc::Status status;
  std::vector<v1::Operation> received = Watch("alice-key", op.id(), &status, start_changes);
  if (worker.joinable()) worker.join();
  ASSERT_TRUE(status.ok()) << status.error_message();
  ASSERT_GE(received.size(), 2u);
  EXPECT_EQ(received.front().state(), v1::OPERATION_STATE_PENDING);
  EXPECT_EQ(received.back().state(), v1::OPERATION_STATE_SUCCEEDED);
  EXPECT_EQ(received.back().deployed_servers().server_ids_size(), 1);
  EXPECT_TRUE(received.back().has_end_time());
  for (size_t i = 1; i < received.size(); ++i) {
    EXPECT_NE(received[i].DebugString(), received[i - 1].DebugString()) << "repeated message";
  }
  // A terminal operation is sent once.
  received = Watch("alice-key", op.id(), &status);
  EXPECT_TRUE(status.ok());
  EXPECT_EQ(received.size(), 1u);
  // Other accounts see nothing.
  received = Watch("bob-key", op.id(), &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(received.empty());
  received = Watch("alice-key", "garbage", &status);
  EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

TEST_F(TemplateServicesTest, CancelMovesToCancellingAndChecksPermission) {
  v1::Operation deploy = InsertOperation(kA, v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE,
                                         v1::OPERATION_STATE_RUNNING);
  v1::Operation done = InsertOperation(kA, v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE,
                                       v1::OPERATION_STATE_SUCCEEDED);
  v1::CancelOperationRequest cancel;
  cancel.set_id(deploy.id());
  v1::Operation response;
  EXPECT_EQ(operations_stub_->CancelOperation(Context("bob-key").get(), cancel, &response)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(operations_stub_->CancelOperation(Context("viewer-key").get(), cancel, &response)
                .error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(operations_->GetOperation(deploy.id())->state(), v1::OPERATION_STATE_RUNNING);

  cancel.set_request_id("cancel-1");
  grpc::Status status =
      operations_stub_->CancelOperation(Context("alice-key").get(), cancel, &response);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(response.state(), v1::OPERATION_STATE_CANCELLING);
  EXPECT_TRUE(operations_->GetInternals(deploy.id())->cancel_requested);
  // Repeating is a no-op, with or without the request id.
  ASSERT_TRUE(operations_stub_->CancelOperation(Context("alice-key").get(), cancel, &response).ok());
  cancel.clear_request_id();
  ASSERT_TRUE(operations_stub_->CancelOperation(Context("alice-key").get(), cancel, &response).ok());
  EXPECT_EQ(response.state(), v1::OPERATION_STATE_CANCELLING);

  cancel.set_id(done.id());
  EXPECT_EQ(operations_stub_->CancelOperation(Context("alice-key").get(), cancel, &response)
                .error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);
  cancel.set_request_id("cancel-1");  // used for another operation
  EXPECT_EQ(operations_stub_->CancelOperation(Context("alice-key").get(), cancel, &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);

  auto events = audit_.events();
  ASSERT_EQ(events.size(), 7u);
  EXPECT_EQ(events[0].method, "/imagetemplates.v1.OperationService/CancelOperation");
  EXPECT_EQ(events[0].code, absl::StatusCode::kNotFound);
  EXPECT_EQ(events[0].account_id, kB);
  EXPECT_EQ(events[1].code, absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(events[2].code, absl::StatusCode::kOk);
  EXPECT_EQ(events[2].target.type(), v1::RESOURCE_TYPE_OPERATION);
}

TEST_F(TemplateServicesTest, ListOperationsScopesAndPages) {
  std::vector<std::string> mine;
  for (int i = 0; i < 5; ++i) {
    mine.push_back(InsertOperation(kA, v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE,
                                   v1::OPERATION_STATE_PENDING)
                       .id());
    InsertOperation(kB, v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE, v1::OPERATION_STATE_PENDING);
  }
  v1::ListOperationsRequest request;
  request.set_page_size(2);
  std::vector<std::string> seen;
  do {
    v1::ListOperationsResponse response;
    grpc::Status status =
        operations_stub_->ListOperations(Context("alice-key").get(), request, &response);
    ASSERT_TRUE(status.ok()) << status.error_message();
    for (const auto& op : response.operations()) seen.push_back(op.id());
    request.set_page_token(response.next_page_token());
  } while (!request.page_token().empty());
  EXPECT_EQ(seen, std::vector<std::string>(mine.rbegin(), mine.rend()));

  v1::ListOperationsResponse response;
  request.set_page_size(100);
  ASSERT_TRUE(operations_stub_->ListOperations(Context("op-key").get(), request, &response).ok());
  EXPECT_EQ(response.operations_size(), 10);
  request.set_account_id(kB);
  EXPECT_EQ(operations_stub_->ListOperations(Context("alice-key").get(), request, &response)
                .error_code(),
            grpc::StatusCode::NOT_FOUND);
  ASSERT_TRUE(operations_stub_->ListOperations(Context("op-key").get(), request, &response).ok());
  EXPECT_EQ(response.operations_size(), 5);
  request.clear_account_id();
  request.set_page_token("bm90IGEgdG9rZW4");
  EXPECT_EQ(operations_stub_->ListOperations(Context("alice-key").get(), request, &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  request.set_page_token("");
  request.add_states(static_cast<v1::OperationState>(99));
  EXPECT_EQ(operations_stub_->ListOperations(Context("alice-key").get(), request, &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  request.clear_states();
  request.set_page_size(-5);
  EXPECT_EQ(operations_stub_->ListOperations(Context("alice-key").get(), request, &response)
                .error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
}

}  // namespace
}  // namespace controlplane
