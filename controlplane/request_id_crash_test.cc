// request_id across a crash: a call whose effect is one transaction commits
// its remembered response with it (a crash leaves both or neither), and a
// call that starts an operation, whose claim a dead process left, answers
// with the operation that process started. The database is a real file; a
// "crash" is an injected failure at the step in question, then the stores
// are thrown away and the file opened again, as a restarted process does.
#include <atomic>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "common/status_macros.h"
#include "controlplane/idempotency.h"
#include "controlplane/ids.h"
#include "controlplane/image_template_manager.h"
#include "controlplane/migrations.h"
#include "controlplane/operation_service.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/sqlite_request_id_store.h"
#include "controlplane/sqlite_template_store.h"
#include "controlplane/testing/account_directory_fake.h"
#include "controlplane/testing/audit_log_fake.h"
#include "controlplane/testing/template_test_database.h"
#include "controlplane/testing/workflow_test_environment.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

const std::string kA = "00000000-0000-4000-8000-00000000000a";
const std::string kB = "00000000-0000-4000-8000-00000000000b";

// Forwards to a SqliteRequestIdStore; Remember fails while `fail_remember`
// is set, as a process killed at that step would never get there.
class CrashingRequestIds final : public RequestIdStore {
 public:
  explicit CrashingRequestIds(SqliteDatabase* db) : inner_(db) {}
  std::atomic<bool> fail_remember{false};

  absl::StatusOr<std::optional<std::string>> Find(absl::string_view account_id,
                                                  absl::string_view request_id,
                                                  absl::string_view fingerprint) override {
    return inner_.Find(account_id, request_id, fingerprint);
  }
  absl::StatusOr<RequestClaim> Claim(absl::string_view account_id, absl::string_view request_id,
                                     absl::string_view fingerprint) override {
    return inner_.Claim(account_id, request_id, fingerprint);
  }
  absl::StatusOr<std::optional<std::string>> FindInTransaction(
      absl::string_view account_id, absl::string_view request_id,
      absl::string_view fingerprint) override {
    return inner_.FindInTransaction(account_id, request_id, fingerprint);
  }
  absl::Status Release(absl::string_view account_id, absl::string_view request_id) override {
    return inner_.Release(account_id, request_id);
  }
  absl::Status Remember(absl::string_view account_id, absl::string_view request_id,
                        absl::string_view fingerprint, absl::string_view response) override {
    if (fail_remember) return absl::UnavailableError("injected crash before remembering");
    return inner_.Remember(account_id, request_id, fingerprint, response);
  }

 private:
  SqliteRequestIdStore inner_;
};

// One control-plane process's stores and manager over the database file.
struct Process {
  explicit Process(const std::string& path) {
    auto opened = SqliteDatabase::Open(path, Migrations());
    EXPECT_TRUE(opened.ok()) << opened.status();
    db = std::move(*opened);
    templates = std::make_unique<SqliteTemplateStore>(db.get());
    operations = std::make_unique<SqliteOperationStore>(db.get());
    request_ids = std::make_unique<CrashingRequestIds>(db.get());
    directory.AddAccount(kA);
    directory.AddAccount(kB);
    ImageTemplateManager::Dependencies deps;
    deps.templates = templates.get();
    deps.operations = operations.get();
    deps.request_ids = request_ids.get();
    deps.audit = &audit;
    deps.quotas = &directory;
    deps.accounts = &directory;
    manager = std::make_unique<ImageTemplateManager>(std::move(deps));
  }

  int64_t Count(const std::string& sql, const std::string& param) {
    int64_t count = -1;
    absl::Status status = db->Read([&](SqliteConnection& conn) -> absl::Status {
      ASSIGN_OR_RETURN(SqliteStatement s, conn.Prepare(sql));
      s.Bind(1, param);
      ASSIGN_OR_RETURN(bool row, s.Step());
      count = row ? s.ColumnInt(0) : 0;
      return absl::OkStatus();
    });
    EXPECT_TRUE(status.ok()) << status;
    return count;
  }

  std::unique_ptr<SqliteDatabase> db;
  std::unique_ptr<SqliteTemplateStore> templates;
  std::unique_ptr<SqliteOperationStore> operations;
  std::unique_ptr<CrashingRequestIds> request_ids;
  FakeAccountDirectory directory;
  RecordingAuditLog audit;
  std::unique_ptr<ImageTemplateManager> manager;
};

Caller Alice() {
  Caller caller;
  caller.user_id = "user-alice";
  caller.account_id = kA;
  caller.all_servers = true;
  caller.permissions.insert(v1::PERMISSION_IMAGE_TEMPLATE_MANAGE);
  return caller;
}

class RequestIdCrashTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* dir = getenv("TEST_TMPDIR");
    path_ = absl::StrCat(dir ? dir : "/tmp", "/", NewUuid(), ".db");
    process_ = std::make_unique<Process>(path_);
    for (const auto& id : {kA, kB}) ASSERT_TRUE(AddTestAccount(*process_->db, id).ok());
    template_ = Seed("golden");
  }

  // Throws the process away and opens the file again.
  void Restart() {
    process_.reset();
    process_ = std::make_unique<Process>(path_);
  }

  v1::ImageTemplate Seed(const std::string& name) {
    v1::ImageTemplate t;
    t.set_id(NewUuid());
    t.set_owner_account_id(kA);
    t.set_name(name);
    t.set_visibility(v1::VISIBILITY_PRIVATE);
    t.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
    *t.mutable_create_time() = ToTimestamp(NowMicros());
    *t.mutable_update_time() = ToTimestamp(NowMicros());
    auto* location = t.add_locations();
    location->set_datacenter("dal10");
    location->set_status(v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
    absl::Status status = process_->templates->InsertTemplate(t);
    EXPECT_TRUE(status.ok()) << status;
    return t;
  }

  v1::ShareImageTemplateRequest ShareRequest(const std::string& request_id) {
    v1::ShareImageTemplateRequest request;
    request.set_id(template_.id());
    request.add_account_ids(kB);
    request.set_request_id(request_id);
    return request;
  }

  int64_t Shares() {
    return process_->Count("SELECT COUNT(*) FROM image_template_shares WHERE template_id = ?1",
                           template_.id());
  }
  int64_t RequestRows(const std::string& request_id) {
    return process_->Count("SELECT COUNT(*) FROM idempotent_requests WHERE request_id = ?1",
                           request_id);
  }

  std::string path_;
  std::unique_ptr<Process> process_;
  v1::ImageTemplate template_;
};

// The call dies after its change and before its response is remembered:
// the change is rolled back with it and no claim is left, so the repeat of
// a restarted process acts at once (not ABORTED for a minute, not a second
// change), and every later repeat gets the same response.
TEST_F(RequestIdCrashTest, ChangeAndResponseCommitTogether) {
  const std::string rid = "share-after-crash";
  process_->request_ids->fail_remember = true;
  auto failed = process_->manager->ShareImageTemplate(Alice(), ShareRequest(rid));
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_EQ(Shares(), 0);
  EXPECT_EQ(RequestRows(rid), 0);
  EXPECT_EQ(process_->templates->GetTemplate(template_.id())->visibility(),
            v1::VISIBILITY_PRIVATE);

  Restart();
  auto first = process_->manager->ShareImageTemplate(Alice(), ShareRequest(rid));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->image_template().visibility(), v1::VISIBILITY_SHARED);
  EXPECT_EQ(Shares(), 1);

  Restart();
  // A repeat after the account lost its share finds the stored response,
  // not a second share.
  auto unshare = v1::UnshareImageTemplateRequest();
  unshare.set_id(template_.id());
  unshare.add_account_ids(kB);
  ASSERT_TRUE(process_->manager->UnshareImageTemplate(Alice(), unshare).ok());
  auto repeat = process_->manager->ShareImageTemplate(Alice(), ShareRequest(rid));
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(repeat->SerializeAsString(), first->SerializeAsString());
  EXPECT_EQ(Shares(), 0);
  EXPECT_EQ(RequestRows(rid), 1);
}

// A delete's operation row and its response commit together: a repeat
// after a restart returns the same operation, and there is one.
TEST_F(RequestIdCrashTest, DeleteAfterRestartReturnsTheSameOperation) {
  const std::string rid = "delete-once";
  v1::DeleteImageTemplateRequest request;
  request.set_id(template_.id());
  request.set_request_id(rid);

  process_->request_ids->fail_remember = true;
  auto failed = process_->manager->DeleteImageTemplate(Alice(), request);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_EQ(process_->Count("SELECT COUNT(*) FROM operations WHERE request_id = ?1", rid), 0);
  EXPECT_EQ(process_->templates->GetTemplate(template_.id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_ACTIVE);

  Restart();
  auto first = process_->manager->DeleteImageTemplate(Alice(), request);
  ASSERT_TRUE(first.ok()) << first.status();
  Restart();
  auto repeat = process_->manager->DeleteImageTemplate(Alice(), request);
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(repeat->id(), first->id());
  EXPECT_EQ(process_->Count("SELECT COUNT(*) FROM operations WHERE request_id = ?1", rid), 1);
  EXPECT_EQ(process_->templates->GetTemplate(template_.id())->status(),
            v1::IMAGE_TEMPLATE_STATUS_DELETING);
}

// Identical calls racing take no claim: they serialize on the transaction,
// one acts and every other gets its response.
TEST_F(RequestIdCrashTest, RacingIdenticalCallsActOnce) {
  const std::string rid = "deprecate-race";
  v1::DeprecateImageTemplateRequest request;
  request.set_id(template_.id());
  request.set_request_id(rid);
  std::vector<std::string> responses(8);
  std::vector<std::thread> threads;
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto response = process_->manager->DeprecateImageTemplate(Alice(), request);
      responses[i] = response.ok() ? response->SerializeAsString() : response.status().ToString();
    });
  }
  for (auto& thread : threads) thread.join();
  v1::DeprecateImageTemplateResponse first;
  ASSERT_TRUE(first.ParseFromString(responses[0])) << responses[0];
  EXPECT_TRUE(first.image_template().deprecated());
  for (const std::string& response : responses) EXPECT_EQ(response, responses[0]);
  EXPECT_EQ(process_->Count("SELECT COUNT(*) FROM idempotent_requests WHERE pending = 0 AND "
                            "request_id = ?1",
                            rid),
            1);
}

// The same request_id for a different request is still refused, whether
// the first finished or not.
TEST_F(RequestIdCrashTest, DifferentRequestUnderTheSameIdIsInvalid) {
  const std::string rid = "reused";
  ASSERT_TRUE(process_->manager->ShareImageTemplate(Alice(), ShareRequest(rid)).ok());
  v1::DisableImageTemplateRequest other;
  other.set_id(template_.id());
  other.set_request_id(rid);
  auto refused = process_->manager->DisableImageTemplate(Alice(), other);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kInvalidArgument) << refused.status();
  EXPECT_FALSE(process_->templates->GetTemplate(template_.id())->disabled());
}

// CancelOperation marks the operation CANCELLING and remembers its answer in
// one transaction: a cancel that dies before remembering left the operation
// as it was, and a repeat after the operation ended CANCELLED answers OK
// (not "already ended").
TEST_F(RequestIdCrashTest, CancelAndItsAnswerCommitTogether) {
  v1::Operation op;
  op.set_id(NewUuid());
  op.set_kind(v1::OPERATION_KIND_CREATE_IMAGE_TEMPLATE);
  op.set_account_id(kA);
  op.set_state(v1::OPERATION_STATE_RUNNING);
  *op.mutable_create_time() = ToTimestamp(NowMicros());
  *op.mutable_update_time() = op.create_time();
  ASSERT_TRUE(process_->operations->InsertOperation(op, {}).ok());
  v1::CancelOperationRequest request;
  request.set_id(op.id());
  request.set_request_id("cancel-once");
  auto cancel = [&] {
    OperationManager manager(process_->operations.get(), process_->request_ids.get(),
                             &process_->audit, OperationManager::Options());
    return manager.CancelOperation(Alice(), request);
  };

  process_->request_ids->fail_remember = true;
  auto failed = cancel();
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  EXPECT_EQ(process_->operations->GetOperation(op.id())->state(), v1::OPERATION_STATE_RUNNING);

  Restart();
  auto first = cancel();
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->state(), v1::OPERATION_STATE_CANCELLING);
  // Its worker ends it.
  ASSERT_TRUE(process_->operations
                  ->UpdateOperation(op.id(),
                                    [](v1::Operation& o, OperationInternals&) {
                                      o.set_state(v1::OPERATION_STATE_CANCELLED);
                                      return absl::OkStatus();
                                    })
                  .ok());
  Restart();
  auto repeat = cancel();
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(repeat->id(), op.id());
  EXPECT_EQ(repeat->state(), v1::OPERATION_STATE_CANCELLED);
  // A fresh cancel of the ended operation is refused as before.
  request.set_request_id("cancel-late");
  EXPECT_EQ(cancel().status().code(), absl::StatusCode::kFailedPrecondition);
}

// A claim left by an ended process (another store) is taken over at once
// and says when it was made; a live claim of this process still waits.
TEST_F(RequestIdCrashTest, OrphanedClaimIsTakenOverAtOnce) {
  auto dead = std::make_unique<SqliteRequestIdStore>(process_->db.get());
  auto claimed = dead->Claim(kA, "orphan", "fingerprint");
  ASSERT_TRUE(claimed.ok()) << claimed.status();
  EXPECT_FALSE(claimed->response.has_value());
  dead.reset();

  SqliteRequestIdStore restarted(process_->db.get());
  const absl::Time start = absl::Now();
  auto taken = restarted.Claim(kA, "orphan", "fingerprint");
  ASSERT_TRUE(taken.ok()) << taken.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(1));
  EXPECT_FALSE(taken->response.has_value());
  ASSERT_TRUE(taken->orphan_time_micros.has_value());
  EXPECT_LE(*taken->orphan_time_micros, NowMicros());

  // Its own claim is running: a different request is refused at once.
  auto different = restarted.Claim(kA, "orphan", "other fingerprint");
  EXPECT_EQ(different.status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(restarted.Remember(kA, "orphan", "fingerprint", "response").ok());
  auto repeat = restarted.Claim(kA, "orphan", "fingerprint");
  ASSERT_TRUE(repeat.ok());
  EXPECT_EQ(repeat->response, "response");
}

// A process that took over a dead call's claim and died too: the next one
// still gets the first claim's time, so it finds what the first call
// started (a takeover restarting the clock made the second repeat act
// again: a second deploy).
TEST_F(RequestIdCrashTest, ChainedTakeoversKeepTheFirstClaimTime) {
  const int64_t before = NowMicros();
  auto first = std::make_unique<SqliteRequestIdStore>(process_->db.get());
  ASSERT_TRUE(first->Claim(kA, "chain", "fingerprint").ok());
  first.reset();
  absl::SleepFor(absl::Milliseconds(20));
  auto second = std::make_unique<SqliteRequestIdStore>(process_->db.get());
  auto taken = second->Claim(kA, "chain", "fingerprint");
  ASSERT_TRUE(taken.ok() && taken->orphan_time_micros.has_value());
  const int64_t first_claim = *taken->orphan_time_micros;
  EXPECT_GE(first_claim, before);
  second.reset();
  absl::SleepFor(absl::Milliseconds(20));

  SqliteRequestIdStore third(process_->db.get());
  auto again = third.Claim(kA, "chain", "fingerprint");
  ASSERT_TRUE(again.ok()) << again.status();
  ASSERT_TRUE(again->orphan_time_micros.has_value());
  EXPECT_EQ(*again->orphan_time_micros, first_claim);
  // A different request taking over an orphan starts its own clock.
  SqliteRequestIdStore fourth(process_->db.get());
  auto other = fourth.Claim(kA, "chain", "other fingerprint");
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_FALSE(other->orphan_time_micros.has_value());
}

// A transaction opened inside another on the same thread joins it: its
// failure undoes only its own writes; the outer failure undoes both.
TEST_F(RequestIdCrashTest, NestedTransactionsAreSavepoints) {
  SqliteDatabase& db = *process_->db;
  auto remember = [&](SqliteConnection&, const std::string& rid) {
    return process_->request_ids->Remember(kA, rid, "f", "r");
  };
  absl::Status status = db.Transaction([&](SqliteConnection& conn) -> absl::Status {
    RETURN_IF_ERROR(remember(conn, "outer-kept"));
    absl::Status inner = db.Transaction([&](SqliteConnection& c) -> absl::Status {
      RETURN_IF_ERROR(remember(c, "inner-undone"));
      return absl::InternalError("inner fails");
    });
    EXPECT_EQ(inner.code(), absl::StatusCode::kInternal);
    return db.Transaction([&](SqliteConnection& c) { return remember(c, "inner-kept"); });
  });
  ASSERT_TRUE(status.ok()) << status;
  EXPECT_EQ(RequestRows("outer-kept"), 1);
  EXPECT_EQ(RequestRows("inner-undone"), 0);
  EXPECT_EQ(RequestRows("inner-kept"), 1);

  status = db.Transaction([&](SqliteConnection& conn) -> absl::Status {
    RETURN_IF_ERROR(db.Transaction([&](SqliteConnection& c) { return remember(c, "both-1"); }));
    RETURN_IF_ERROR(remember(conn, "both-2"));
    return absl::AbortedError("outer fails");
  });
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted);
  EXPECT_EQ(RequestRows("both-1"), 0);
  EXPECT_EQ(RequestRows("both-2"), 0);
}

// CreateImageTemplate: the create's own transaction inserts the template
// and its operation; a process that dies before remembering leaves its
// claim. The repeat of the next process (another request_id store) answers
// with that operation instead of capturing twice or ALREADY_EXISTS.
class CreateCrashTest : public WorkflowTestEnvironment {
 protected:
  // manager_'s stores, audit and accounts, but `request_ids` for its
  // request_id store and no workflows: the caller adds the one it calls.
  ImageTemplateManager::Dependencies DependenciesWith(RequestIdStore* request_ids) {
    ImageTemplateManager::Dependencies deps;
    deps.templates = templates_.get();
    deps.operations = operations_.get();
    deps.request_ids = request_ids;
    deps.audit = &audit_;
    deps.quotas = &accounts_;
    deps.accounts = &accounts_;
    return deps;
  }
};

TEST_F(CreateCrashTest, RepeatAfterCrashReturnsTheStartedOperation) {
  CrashingRequestIds crashing(db_.get());
  crashing.fail_remember = true;
  ImageTemplateManager::Dependencies deps = DependenciesWith(&crashing);
  deps.create = create_.get();
  ImageTemplateManager dying(deps);

  v1::CreateImageTemplateRequest request;
  request.set_server_id(AddServer(v1::POWER_STATE_RUNNING, /*data_disk=*/false));
  request.set_name("captured-once");
  request.set_request_id("create-after-crash");
  auto failed = dying.CreateImageTemplate(owner_, request);
  EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
  auto started = operations_->ListOperations(OperationQuery());
  ASSERT_TRUE(started.ok());
  ASSERT_EQ(started->size(), 1u);
  const std::string op_id = (*started)[0].id();

  // manager_ is the next process: its request_id store holds no claim.
  auto repeat = manager_->CreateImageTemplate(owner_, request);
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(repeat->id(), op_id);
  auto again = manager_->CreateImageTemplate(owner_, request);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), op_id);
  auto all = operations_->ListOperations(OperationQuery());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
  EXPECT_EQ(WaitTerminal(op_id).state(), v1::OPERATION_STATE_SUCCEEDED);
}

// Without a trace of the dead call's operation (it died before starting
// it), the repeat starts exactly one.
TEST_F(CreateCrashTest, RepeatAfterCrashBeforeActingActsOnce) {
  SqliteRequestIdStore dead(db_.get());
  v1::CreateImageTemplateRequest request;
  request.set_server_id(AddServer(v1::POWER_STATE_RUNNING, /*data_disk=*/false));
  request.set_name("captured-later");
  request.set_request_id("create-before-crash");
  ASSERT_TRUE(
      dead.Claim(owner_.account_id, request.request_id(),
                 RequestFingerprint("CreateImageTemplate", request))
          .ok());
  auto repeat = manager_->CreateImageTemplate(owner_, request);
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  auto again = manager_->CreateImageTemplate(owner_, request);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), repeat->id());
  auto all = operations_->ListOperations(OperationQuery());
  ASSERT_TRUE(all.ok());
  EXPECT_EQ(all->size(), 1u);
  EXPECT_EQ(WaitTerminal(repeat->id()).state(), v1::OPERATION_STATE_SUCCEEDED);
}

// DeployImageTemplate: the deploy that died after reserving volumes and
// servers is the repeat's answer; nothing is reserved twice. The request_id
// is the account's: another user of the account repeating the identical
// call gets the same operation, as a replay would answer it.
class DeployCrashTest : public CreateCrashTest {
 protected:
  void SetUp() override {
    CreateCrashTest::SetUp();
    template_ = ActiveTemplate("golden");
    AddIpPool();
    AddDeployVolumes(2);  // room for two deploys of one server
  }

  // Deploys one server as a process that dies before remembering its answer
  // (the claim stays); returns the operation it started.
  std::string DeployAndCrash(const v1::DeployImageTemplateRequest& request) {
    CrashingRequestIds crashing(db_.get());
    crashing.fail_remember = true;
    ImageTemplateManager::Dependencies deps = DependenciesWith(&crashing);
    deps.deploy = deploy_.get();
    ImageTemplateManager dying(deps);
    auto failed = dying.DeployImageTemplate(owner_, request);
    EXPECT_EQ(failed.status().code(), absl::StatusCode::kUnavailable) << failed.status();
    auto started = operations_->ListOperations(Deploys());
    EXPECT_TRUE(started.ok() && started->size() == 1u);
    return started.ok() && !started->empty() ? (*started)[0].id() : "";
  }

  v1::DeployImageTemplateRequest Request(const std::string& request_id) const {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(template_.id());
    request.set_datacenter("dc1");
    request.set_quantity(1);
    request.set_hostname_prefix("web");
    request.set_request_id(request_id);
    return request;
  }

  static OperationQuery Deploys() {
    OperationQuery deploys;
    deploys.kinds = {v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE};
    return deploys;
  }

  // `repeater` repeats the call: it gets `op_id`, which succeeds with one
  // server, and no second deploy exists.
  void ExpectRepeatReturns(const Caller& repeater, const v1::DeployImageTemplateRequest& request,
                           const std::string& op_id) {
    auto repeat = manager_->DeployImageTemplate(repeater, request);
    ASSERT_TRUE(repeat.ok()) << repeat.status();
    EXPECT_EQ(repeat->id(), op_id);
    v1::Operation done = WaitTerminal(op_id);
    EXPECT_EQ(done.state(), v1::OPERATION_STATE_SUCCEEDED) << done.DebugString();
    EXPECT_EQ(done.deployed_servers().server_ids_size(), 1);
    auto all = operations_->ListOperations(Deploys());
    ASSERT_TRUE(all.ok());
    EXPECT_EQ(all->size(), 1u);
  }

  v1::ImageTemplate template_;
};

TEST_F(DeployCrashTest, RepeatAfterCrashReservesOnce) {
  const v1::DeployImageTemplateRequest request = Request("deploy-after-crash");
  const std::string op_id = DeployAndCrash(request);
  ExpectRepeatReturns(owner_, request, op_id);
}

TEST_F(DeployCrashTest, RepeatAfterCrashByAnotherUserOfTheAccountReservesOnce) {
  const v1::DeployImageTemplateRequest request = Request("deploy-after-crash-2");
  const std::string op_id = DeployAndCrash(request);
  // Finished first: its hostname is then taken, and a second deploy would
  // still find room (two servers' volumes).
  ASSERT_EQ(WaitTerminal(op_id).state(), v1::OPERATION_STATE_SUCCEEDED);
  Caller colleague = owner_;
  colleague.user_id = "owner-2";
  ExpectRepeatReturns(colleague, request, op_id);
}

}  // namespace
}  // namespace controlplane
