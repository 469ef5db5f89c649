// The controlplane binary alone (no storaged): request_id answers survive a
// kill -9 in the middle of a stream of mutating calls, and the WatchOperation
// stream limits follow --max-watches-per-account and --max-watches.
// Templates and operations are written straight into the database file, as
// a finished capture leaves them (tests/template_rpc_test.cc does the same).
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/sqlite_template_store.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/identity_setup.h"
#include "tests/process.h"
#include "tests/rpc.h"
#include "tests/seed_records.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
using Templates = v1::ImageTemplateService::Stub;

class ControlPlaneProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("cpproc");
    ASSERT_FALSE(WriteInternalToken(dir_ + "/internal.token").empty());
  }

  void TearDown() override {
    store_.reset();
    operations_store_.reset();
    db_.reset();
    if (cp_) {
      auto status = cp_->Stop(SIGTERM);
      EXPECT_TRUE(status.ok()) << status.status();
    }
  }

  // The controlplane on a free port with `flags` added.
  void Start(const std::vector<std::string>& flags = {}) {
    auto process = StartControlPlane(dir_, flags);
    ASSERT_TRUE(process.ok()) << process.status();
    cp_ = std::make_unique<Process>(*std::move(process));
    auto channel = grpc::CreateChannel(cp_->address(), grpc::InsecureChannelCredentials());
    identity_ = v1::IdentityService::NewStub(channel);
    templates_ = v1::ImageTemplateService::NewStub(channel);
    operations_ = v1::OperationService::NewStub(channel);
    admin_ = ReadFirstLine(dir_ + "/admin.key");
    ASSERT_FALSE(admin_.empty());
    if (!db_) {
      auto db = OpenSeedDatabase(dir_ + "/cp.db");
      ASSERT_TRUE(db.ok()) << db.status();
      db_ = *std::move(db);
      store_ = std::make_unique<controlplane::SqliteTemplateStore>(db_.get());
      operations_store_ = std::make_unique<controlplane::SqliteOperationStore>(db_.get());
    }
  }

  void KillAndRestart(const std::vector<std::string>& flags = {}) {
    auto killed = cp_->Stop(SIGKILL);
    ASSERT_TRUE(killed.ok()) << killed.status();
    cp_.reset();
    // A fresh port: another socket on the machine may hold the old one by now.
    Start(flags);
  }

  // A new account and a user of it with `permissions`; the user's API key.
  std::string NewAccountKey(const std::string& name, std::string* account_id,
                            const std::vector<v1::Permission>& permissions) {
    const User user = CreateAccountUser(*identity_, admin_, name, name + "-user", permissions);
    *account_id = user.account_id;
    return user.key;
  }

  // An ACTIVE private template of `owner`, as a finished capture records it.
  v1::ImageTemplate Seed(const std::string& owner, const std::string& name) {
    v1::ImageTemplate t = ActiveTemplate(owner, name, NowTimestamp());
    absl::Status status = store_->InsertTemplate(t);
    EXPECT_TRUE(status.ok()) << status;
    return t;
  }

  // A RUNNING operation of `account_id` that no workflow drives (its kind
  // has none), so it never ends and watches of it stay open.
  std::string RunningOperation(const std::string& account_id) {
    v1::Operation op;
    op.set_id(NewUuid());
    op.set_kind(v1::OPERATION_KIND_UNSPECIFIED);
    op.set_account_id(account_id);
    op.set_state(v1::OPERATION_STATE_RUNNING);
    *op.mutable_create_time() = NowTimestamp();
    *op.mutable_update_time() = op.create_time();
    absl::Status status = operations_store_->InsertOperation(op, {});
    EXPECT_TRUE(status.ok()) << status;
    return op.id();
  }

  std::string dir_;
  std::unique_ptr<Process> cp_;
  std::unique_ptr<v1::IdentityService::Stub> identity_;
  std::unique_ptr<Templates> templates_;
  std::unique_ptr<v1::OperationService::Stub> operations_;
  std::string admin_;
  std::unique_ptr<controlplane::SqliteDatabase> db_;
  std::unique_ptr<controlplane::SqliteTemplateStore> store_;
  std::unique_ptr<controlplane::SqliteOperationStore> operations_store_;
};

// Updates with request_ids stream in while the controlplane is killed -9
// at some point among them. After the restart every request_id, repeated at
// once, answers OK with its own update (the stored answer of a call that
// committed, or the call done now for one that had not): never ABORTED for
// a claim the dead process left, never a second different answer.
TEST_F(ControlPlaneProcessTest, RequestIdAnswersSurviveKill9) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::string account;
  const std::string key =
      NewAccountKey("acme", &account, {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE});
  const v1::ImageTemplate t = Seed(account, "golden");

  auto update = [&](int i) {
    v1::UpdateImageTemplateRequest request;
    request.set_id(t.id());
    request.set_note(absl::StrCat("note ", i));
    request.mutable_update_mask()->add_paths("note");
    request.set_request_id(absl::StrCat("update-", i));
    return request;
  };
  constexpr int kCalls = 400;
  std::map<int, std::string> answered;  // before the kill
  std::atomic<bool> stop{false};
  std::atomic<int> done{0};
  std::thread caller([&] {
    for (int i = 0; i < kCalls && !stop; ++i) {
      v1::UpdateImageTemplateResponse response;
      grpc::Status status = Call(*templates_, &Templates::UpdateImageTemplate, key, update(i),
                                 &response, std::chrono::seconds(5));
      if (!status.ok()) break;  // the kill
      answered[i] = response.SerializeAsString();
      ++done;
    }
  });
  // Killed while the calls stream in.
  for (int i = 0; i < 3000 && done < 50; ++i) absl::SleepFor(absl::Milliseconds(10));
  auto killed = cp_->Stop(SIGKILL);
  stop = true;
  caller.join();  // before Start replaces the stub it calls
  ASSERT_TRUE(killed.ok()) << killed.status();
  cp_.reset();
  ASSERT_NO_FATAL_FAILURE(Start());
  ASSERT_GE(answered.size(), 50u);
  ASSERT_LT(answered.size(), static_cast<size_t>(kCalls)) << "the kill came after the last call";
  std::fprintf(stderr, "%zu of %d updates answered before the kill\n", answered.size(), kCalls);

  for (int i = 0; i < kCalls; ++i) {
    v1::UpdateImageTemplateResponse response;
    const absl::Time start = absl::Now();
    grpc::Status status =
        Call(*templates_, &Templates::UpdateImageTemplate, key, update(i), &response);
    ASSERT_TRUE(status.ok()) << "update-" << i << ": " << status.error_message();
    EXPECT_LT(absl::Now() - start, absl::Seconds(4)) << "update-" << i << " waited on a claim";
    EXPECT_EQ(response.image_template().note(), absl::StrCat("note ", i));
    auto it = answered.find(i);
    if (it != answered.end()) {
      EXPECT_EQ(response.SerializeAsString(), it->second) << "update-" << i;
    }
    // And the same answer again.
    v1::UpdateImageTemplateResponse again;
    ASSERT_TRUE(
        Call(*templates_, &Templates::UpdateImageTemplate, key, update(i), &again).ok());
    EXPECT_EQ(again.SerializeAsString(), response.SerializeAsString()) << "update-" << i;
  }
}

// A delete's operation and its remembered answer survive a kill -9: the
// repeat after the restart returns the same operation, and only one exists.
TEST_F(ControlPlaneProcessTest, DeleteRepeatAfterKill9IsTheSameOperation) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::string account;
  const std::string key =
      NewAccountKey("acme", &account, {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE});
  const v1::ImageTemplate t = Seed(account, "doomed");
  v1::DeleteImageTemplateRequest request;
  request.set_id(t.id());
  request.set_request_id("delete-once");
  v1::Operation first;
  ASSERT_TRUE(
      Call(*templates_, &Templates::DeleteImageTemplate, key, request, &first).ok());
  ASSERT_NO_FATAL_FAILURE(KillAndRestart());
  v1::Operation repeat;
  grpc::Status status = Call(*templates_, &Templates::DeleteImageTemplate, key, request, &repeat);
  ASSERT_TRUE(status.ok()) << status.error_message();
  EXPECT_EQ(repeat.id(), first.id());
  controlplane::OperationQuery query;
  query.account_id = account;
  auto all = operations_store_->ListOperations(query);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->size(), 1u);
}

// Opens a watch of `id` as `key` and reads its first message; the stream
// stays open until Close. A refused one holds its status.
struct Watch {
  grpc::ClientContext context;
  std::unique_ptr<grpc::ClientReader<v1::Operation>> reader;
  v1::Operation first;
  bool open = false;
  grpc::Status refusal;
};

std::unique_ptr<Watch> OpenWatch(v1::OperationService::Stub& stub, const std::string& key,
                                 const std::string& id) {
  for (int attempt = 0;; ++attempt) {
    auto watch = std::make_unique<Watch>();
    watch->context.AddMetadata("authorization", "Bearer " + key);
    watch->context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    v1::WatchOperationRequest request;
    request.set_id(id);
    watch->reader = stub.WatchOperation(&watch->context, request);
    watch->open = watch->reader->Read(&watch->first);
    if (watch->open) return watch;
    watch->refusal = watch->reader->Finish();
    // A connection to the process killed before may be reset once.
    if (watch->refusal.error_code() != grpc::StatusCode::UNAVAILABLE || attempt == 20) {
      return watch;
    }
    absl::SleepFor(absl::Milliseconds(100));
  }
}

grpc::Status Refusal(Watch& watch) {
  EXPECT_FALSE(watch.open);
  return watch.refusal;
}

void Close(Watch& watch) {
  watch.context.TryCancel();
  watch.reader->Finish();
}

TEST_F(ControlPlaneProcessTest, WatchLimitsFollowFlags) {
  ASSERT_NO_FATAL_FAILURE(Start({"--max-watches-per-account=2", "--max-watches=3"}));
  std::string a, b;
  const std::string key_a = NewAccountKey("acme", &a, {v1::PERMISSION_SERVER_VIEW});
  const std::string key_b = NewAccountKey("globex", &b, {v1::PERMISSION_SERVER_VIEW});
  const std::string op_a = RunningOperation(a);
  const std::string op_b = RunningOperation(b);

  auto a1 = OpenWatch(*operations_, key_a, op_a);
  auto a2 = OpenWatch(*operations_, key_a, op_a);
  ASSERT_TRUE(a1->open && a2->open);
  EXPECT_EQ(a1->first.id(), op_a);
  // The account's third.
  auto a3 = OpenWatch(*operations_, key_a, op_a);
  grpc::Status refused = Refusal(*a3);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();

  auto b1 = OpenWatch(*operations_, key_b, op_b);
  ASSERT_TRUE(b1->open);
  // The server's fourth, though globex has only one.
  auto b2 = OpenWatch(*operations_, key_b, op_b);
  refused = Refusal(*b2);
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << refused.error_message();

  // A closed watch frees its place (noticed within the poll interval).
  Close(*a1);
  std::unique_ptr<Watch> again;
  for (int i = 0; i < 50; ++i) {
    again = OpenWatch(*operations_, key_a, op_a);
    if (again->open) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_TRUE(again->open) << again->refusal.error_message();
  Close(*again);
  Close(*a2);
  Close(*b1);

  // Without the flags (32 per account) the same account holds three.
  ASSERT_NO_FATAL_FAILURE(KillAndRestart());
  std::vector<std::unique_ptr<Watch>> watches;
  for (int i = 0; i < 3; ++i) {
    watches.push_back(OpenWatch(*operations_, key_a, op_a));
    EXPECT_TRUE(watches.back()->open) << i << ": " << watches.back()->refusal.error_message();
  }
  for (auto& watch : watches) {
    if (watch->open) Close(*watch);
  }
}

// A second controlplane on the same database would take over the first
// one's request_id claims as a dead process's: it refuses to start.
TEST_F(ControlPlaneProcessTest, SecondControlplaneOnTheSameDatabaseFailsAtStart) {
  ASSERT_NO_FATAL_FAILURE(Start());
  std::vector<std::string> argv = {
      RunfilePath("controlplane/controlplane"), "--listen=127.0.0.1:0",
      "--db=" + dir_ + "/cp.db", "--admin-key-file=" + dir_ + "/admin.key",
      "--internal-token-file=" + dir_ + "/internal.token"};
  auto second = Process::StartServer(argv, dir_ + "/second.log", absl::Seconds(60));
  EXPECT_FALSE(second.ok());
  std::ifstream log(dir_ + "/second.log");
  std::stringstream text;
  text << log.rdbuf();
  EXPECT_NE(text.str().find(absl::StrCat("is in use by another controlplane (pid ", cp_->pid(), ")")),
            std::string::npos)
      << text.str();
  // The first one still answers.
  v1::GetCallerRequest request;
  v1::GetCallerResponse response;
  EXPECT_TRUE(
      Call(*identity_, &v1::IdentityService::Stub::GetCaller, admin_, request, &response).ok());
}

TEST_F(ControlPlaneProcessTest, TemplateCacheSizeFollowsItsFlag) {
  std::vector<std::string> argv = {
      RunfilePath("controlplane/controlplane"), "--listen=127.0.0.1:0",
      "--db=" + dir_ + "/cp.db", "--internal-token-file=" + dir_ + "/internal.token",
      "--template-cache-entries=0"};
  auto refused = Process::StartServer(argv, dir_ + "/cache0.log", absl::Seconds(20));
  EXPECT_FALSE(refused.ok());
  EXPECT_NE(ReadFirstLine(dir_ + "/cache0.log").find("--template-cache-entries"),
            std::string::npos)
      << ReadFirstLine(dir_ + "/cache0.log");
  // Any size in range starts and serves.
  ASSERT_NO_FATAL_FAILURE(Start({"--template-cache-entries=1"}));
  v1::GetCallerRequest request;
  v1::GetCallerResponse response;
  EXPECT_TRUE(
      Call(*identity_, &v1::IdentityService::Stub::GetCaller, admin_, request, &response).ok());
}

// Requests are read whole before authentication: the public port takes at
// most 4 MiB, so a caller without a key cannot make each call hold 64 MiB.
TEST_F(ControlPlaneProcessTest, OversizedRequestsAreRefusedBeforeTheyAreRead) {
  ASSERT_NO_FATAL_FAILURE(Start());
  auto create = [&](size_t name_bytes, const std::string& key) {
    v1::CreateImageTemplateRequest request;
    request.set_server_id(NewUuid());
    request.set_name(std::string(name_bytes, 'n'));
    v1::Operation response;
    return Call(*templates_, &Templates::CreateImageTemplate, key, request, &response);
  };
  grpc::Status huge = create(5 << 20, "");
  EXPECT_EQ(huge.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << huge.error_message();
  // Below the limit the request is read and checked as usual.
  EXPECT_EQ(create(3 << 20, "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  grpc::Status long_name = create(3 << 20, admin_);
  EXPECT_EQ(long_name.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
      << long_name.error_message();
}

TEST_F(ControlPlaneProcessTest, BadWatchLimitFlagIsRefused) {
  std::vector<std::string> argv = {
      RunfilePath("controlplane/controlplane"), "--listen=127.0.0.1:0",
      "--db=" + dir_ + "/cp.db", "--internal-token-file=" + dir_ + "/internal.token",
      "--max-watches=0"};
  auto process = Process::StartServer(argv, dir_ + "/bad.log", absl::Seconds(20));
  EXPECT_FALSE(process.ok());
  EXPECT_NE(ReadFirstLine(dir_ + "/bad.log").find("--max-watches"), std::string::npos)
      << ReadFirstLine(dir_ + "/bad.log");
}

}  // namespace
}  // namespace tests
