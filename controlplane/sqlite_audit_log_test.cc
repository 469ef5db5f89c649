// Refusals of a throttled address summarized in the audit log: the real
// ApiKeyAuthenticator and SqliteAuditLog on one database, a fake clock, and
// the calls recorded the way RpcRunner::Audited records them.
#include "controlplane/sqlite_audit_log.h"

#include <unistd.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "controlplane/api_key_authenticator.h"
#include "controlplane/ids.h"
#include "controlplane/migrations.h"
#include "controlplane/testing/audit_summary.h"
#include "controlplane/testing/bootstrapped_database.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

constexpr char kShare[] = "/imagetemplates.v1.ImageTemplateService/ShareImageTemplate";
constexpr char kCreate[] = "/imagetemplates.v1.InventoryService/CreateDatacenter";
// Well-formed keys the table does not have, and a malformed one.
constexpr char kUnknown[] =
    "Bearer itk_00000000-0000-4000-8000-000000000001_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
constexpr char kMalformed[] = "Bearer let-me-in";

class SqliteAuditLogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<BootstrappedDatabase> db = OpenBootstrappedDatabase(absl::StrCat(
        "audit_summary_", ::testing::UnitTest::GetInstance()->current_test_info()->name()));
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(db->db);
    admin_ = db->operator_header;

    FailedAuthLimiter::Options limits;
    limits.burst = 5;
    limits.per_second = 0.5;  // empty to full: 10 s
    auth_ = std::make_unique<ApiKeyAuthenticator>(db_.get(), limits, clock_);
    log_ = NewLog();
    operator_.is_operator = true;
  }

  std::unique_ptr<SqliteAuditLog> NewLog() {
    SqliteAuditLog::Options options;
    options.summaries.interval = absl::Seconds(4);
    options.now = clock_;
    options.flush_every = absl::ZeroDuration();  // the test flushes
    return std::make_unique<SqliteAuditLog>(db_.get(), options);
  }

  // One mutating call from `peer`, authenticated and audited as
  // RpcRunner::Audited does; returns its status.
  absl::Status Call(const std::string& authorization, const std::string& peer,
                    const std::string& method, const absl::Status& result = absl::OkStatus()) {
    v1::ResourceReference target;
    target.set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
    target.set_id("t1");
    absl::StatusOr<Caller> caller = auth_->AuthenticateHeader(authorization, peer);
    if (!caller.ok()) {
      Caller anonymous;
      anonymous.peer = peer;
      log_->Record(anonymous, "", method, target, caller.status(), "req");
      return caller.status();
    }
    log_->Record(*caller, caller->account_id, method, target, result, "req");
    return result;
  }

  // Every event, oldest first.
  std::vector<v1::AuditEvent> Events() {
    std::vector<v1::AuditEvent> events;
    v1::ListAuditEventsRequest request;
    request.set_page_size(1000);
    while (true) {
      auto page = log_->List(operator_, request);
      EXPECT_TRUE(page.ok()) << page.status();
      if (!page.ok()) break;
      for (const auto& event : page->audit_events()) events.insert(events.begin(), event);
      if (page->next_page_token().empty()) break;
      request.set_page_token(page->next_page_token());
    }
    return events;
  }

  // Refusals from `address`: events of one call, and the sum of summaries.
  struct Refused {
    int singles = 0;
    int summaries = 0;
    int64_t summarized = 0;
  };
  Refused CountRefused(const std::string& address) {
    Refused refused;
    for (const auto& event : Events()) {
      if (event.outcome().code() != static_cast<int>(absl::StatusCode::kUnauthenticated) ||
          !absl::StartsWith(event.peer(), address)) {
        continue;
      }
      int64_t count = SummaryCount(event);
      if (count > 0) {
        ++refused.summaries;
        refused.summarized += count;
      } else {
        ++refused.singles;
      }
    }
    return refused;
  }

  absl::Time now_ = absl::FromUnixSeconds(1800000000);
  std::function<absl::Time()> clock_ = [this] { return now_; };
  std::unique_ptr<SqliteDatabase> db_;
  std::string admin_;
  std::unique_ptr<ApiKeyAuthenticator> auth_;
  std::unique_ptr<SqliteAuditLog> log_;
  Caller operator_;
  const std::string attacker_ = "ipv4:192.0.2.7";
};

TEST_F(SqliteAuditLogTest, ThrottledRefusalsAreCountedNotWrittenOneByOne) {
  // The operator's key, proven from the attacker's address before the flood.
  ASSERT_TRUE(Call(admin_, attacker_ + ":1", kCreate).ok());
  ASSERT_EQ(Events().size(), 1u);

  // The burst: 5 failures, each audited alone (unknown and malformed keys
  // alike).
  for (int i = 0; i < 5; ++i) {
    absl::Status s = Call(i % 2 ? kMalformed : kUnknown, attacker_ + ":2", kShare);
    EXPECT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_FALSE(ThrottledAddress(s).has_value()) << i;
  }
  EXPECT_EQ(Events().size(), 6u);

  // Throttled: 300 refusals, no row written for any of them.
  int64_t refused = 5;
  for (int i = 0; i < 300; ++i, ++refused) {
    absl::Status s =
        Call(i % 2 ? kMalformed : kUnknown, attacker_ + ":3", i < 200 ? kShare : kCreate);
    ASSERT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
    // Malformed keys are never throttled, only summarized; unknown keys
    // have their own bucket (3 of 5 spent in the burst): 2 more are looked
    // up, then they are refused unread.
    const std::string why = i % 2  ? "malformed API key"
                            : i < 4 ? "unknown API key"
                                    : "too many failed authentications from " + attacker_;
    EXPECT_TRUE(absl::StrContains(s.message(), why)) << i << ": " << s;
    EXPECT_EQ(ThrottledAddress(s), attacker_);
  }
  EXPECT_EQ(Events().size(), 6u);

  // Meanwhile the operator's cached key still works from that address and
  // its call, and a known caller's refusal, are audited one by one.
  ASSERT_TRUE(Call(admin_, attacker_ + ":4", kCreate).ok());
  EXPECT_EQ(Call(admin_, attacker_ + ":4", kShare, absl::PermissionDeniedError("no")).code(),
            absl::StatusCode::kPermissionDenied);
  std::vector<v1::AuditEvent> events = Events();
  ASSERT_EQ(events.size(), 8u);
  EXPECT_EQ(events[6].method(), kCreate);
  EXPECT_EQ(events[6].outcome().code(), 0);
  EXPECT_FALSE(events[6].user_id().empty());
  EXPECT_EQ(events[7].outcome().code(), static_cast<int>(absl::StatusCode::kPermissionDenied));

  // 2 s later the bucket has earned a try: the key is looked up, unknown,
  // and still counted, not written (the address is throttled until its
  // bucket is full again).
  now_ += absl::Seconds(2);
  absl::Status looked_up = Call(kUnknown, attacker_ + ":5", kShare);
  ++refused;
  EXPECT_TRUE(absl::StrContains(looked_up.message(), "unknown API key")) << looked_up;
  EXPECT_EQ(ThrottledAddress(looked_up), attacker_);
  EXPECT_EQ(Events().size(), 8u);

  // At 4 s the next ShareImageTemplate refusal closes that window: one
  // summary with every refusal of it.
  now_ += absl::Seconds(2);
  ASSERT_EQ(Call(kUnknown, attacker_ + ":6", kShare).code(), absl::StatusCode::kUnauthenticated);
  ++refused;
  events = Events();
  ASSERT_EQ(events.size(), 9u);
  const v1::AuditEvent& summary = events.back();
  EXPECT_EQ(SummaryCount(summary), 200 + 2) << summary.outcome().message();
  EXPECT_EQ(summary.method(), kShare);
  EXPECT_EQ(summary.peer(), attacker_);
  EXPECT_EQ(summary.outcome().code(), static_cast<int>(absl::StatusCode::kUnauthenticated));
  EXPECT_EQ(summary.account_id(), "");
  EXPECT_EQ(summary.user_id(), "");
  EXPECT_EQ(summary.target().id(), "t1");
  EXPECT_EQ(FromTimestamp(summary.time()), absl::ToUnixMicros(now_));
  EXPECT_TRUE(absl::StrContains(summary.outcome().message(),
                                "between 2027-01-15T08:00:00.000000Z and "
                                "2027-01-15T08:00:04.000000Z"))
      << summary.outcome().message();

  // The CreateDatacenter window went quiet: the flusher writes it when due.
  log_->FlushDueSummaries();
  events = Events();
  ASSERT_EQ(events.size(), 10u);
  EXPECT_EQ(SummaryCount(events.back()), 100);
  EXPECT_EQ(events.back().method(), kCreate);
  // Timed when written, not at its last call 4 s earlier, so that a reader
  // polling by time window finds it; the window is in the message.
  EXPECT_EQ(FromTimestamp(events.back().time()), absl::ToUnixMicros(now_));
  EXPECT_TRUE(absl::StrContains(events.back().outcome().message(),
                                "between 2027-01-15T08:00:00.000000Z and "
                                "2027-01-15T08:00:00.000000Z"))
      << events.back().outcome().message();

  // The flood stops; after its bucket is full again (10 s) the address is
  // no longer throttled and its next failures are audited one by one.
  now_ += absl::Seconds(11);
  absl::Status fresh = Call(kUnknown, attacker_ + ":7", kShare);
  ++refused;
  EXPECT_TRUE(absl::StrContains(fresh.message(), "unknown API key")) << fresh;
  EXPECT_FALSE(ThrottledAddress(fresh).has_value());
  EXPECT_EQ(Events().size(), 11u);

  Refused counted = CountRefused(attacker_);
  EXPECT_EQ(counted.singles, 5 + 1);
  EXPECT_EQ(counted.summaries, 2);
  EXPECT_EQ(counted.singles + counted.summarized, refused);
}

TEST_F(SqliteAuditLogTest, KeylessFloodIsSummarizedAndThrottlesNoKey) {
  // 200 calls without a key from a shared address (NAT): the burst of 5 is
  // audited one by one, the rest counted.
  for (int i = 0; i < 200; ++i) {
    absl::Status s = Call(i % 2 ? "" : kMalformed, attacker_ + ":1", kShare);
    ASSERT_EQ(s.code(), absl::StatusCode::kUnauthenticated);
    EXPECT_FALSE(absl::StrContains(s.message(), "too many")) << i << ": " << s;
  }
  EXPECT_EQ(Events().size(), 5u);
  // The operator's key, never used before, works from that address.
  ASSERT_TRUE(Call(admin_, attacker_ + ":2", kCreate).ok());
  now_ += absl::Seconds(4);
  log_->FlushDueSummaries();
  Refused counted = CountRefused(attacker_);
  EXPECT_EQ(counted.singles, 5);
  EXPECT_EQ(counted.summaries, 1);
  EXPECT_EQ(counted.summarized, 195);
}

TEST(AuditMigrationTest, OldShortMethodNamesGetTheFullName) {
  const char* tmp = getenv("TEST_TMPDIR");
  const std::string path =
      absl::StrCat(tmp ? tmp : "/tmp", "/audit_migration_", getpid(), ".db");
  // A database written before migration 8, with rows of both namings.
  {
    std::vector<std::string> before(Migrations().begin(), Migrations().begin() + 7);
    auto db = SqliteDatabase::Open(path, before);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE((*db)->Transaction([](SqliteConnection& conn) -> absl::Status {
                       int n = 0;
                       for (const char* method :
                            {"DeleteImageTemplate", "CancelOperation",
                             "/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate",
                             "/imagetemplates.v1.InventoryService/CreateDatacenter"}) {
                         auto stmt = conn.Prepare(
                             "INSERT INTO audit_events (id, time, account_id, user_id, "
                             "api_key_id, method, target_type, target_id, outcome_code, "
                             "outcome_message, request_id, operation_id, peer) VALUES "
                             "(?1, ?2, '', '', '', ?3, 0, '', 0, '', '', '', '')");
                         if (!stmt.ok()) return stmt.status();
                         stmt->Bind(1, NewUuid()).Bind(2, ++n).Bind(3, std::string(method));
                         absl::Status run = stmt->Run();
                         if (!run.ok()) return run;
                       }
                       return absl::OkStatus();
                     }).ok());
  }
  auto db = SqliteDatabase::Open(path, Migrations());
  ASSERT_TRUE(db.ok()) << db.status();
  SqliteAuditLog log(db->get());
  Caller op;
  op.is_operator = true;
  auto methods = [&](const std::string& filter) {
    v1::ListAuditEventsRequest request;
    request.set_method(filter);
    std::vector<std::string> out;
    auto page = log.List(op, request);
    EXPECT_TRUE(page.ok()) << page.status();
    if (page.ok()) {
      for (const auto& event : page->audit_events()) out.push_back(event.method());
    }
    return out;
  };
  using ::testing::ElementsAre;
  EXPECT_THAT(methods("/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate"),
              ElementsAre("/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate",
                          "/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate"));
  EXPECT_THAT(methods("/imagetemplates.v1.OperationService/CancelOperation"),
              ElementsAre("/imagetemplates.v1.OperationService/CancelOperation"));
  EXPECT_THAT(methods(""),
              ElementsAre("/imagetemplates.v1.InventoryService/CreateDatacenter",
                          "/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate",
                          "/imagetemplates.v1.OperationService/CancelOperation",
                          "/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate"));
}

TEST_F(SqliteAuditLogTest, OpenWindowsAreWrittenAtShutdown) {
  for (int i = 0; i < 25; ++i) {
    ASSERT_EQ(Call(kUnknown, attacker_ + ":1", kShare).code(),
              absl::StatusCode::kUnauthenticated);
  }
  log_->FlushDueSummaries();  // nothing is due yet
  EXPECT_EQ(CountRefused(attacker_).summaries, 0);
  log_.reset();
  log_ = NewLog();
  Refused counted = CountRefused(attacker_);
  EXPECT_EQ(counted.singles, 5);
  EXPECT_EQ(counted.summaries, 1);
  EXPECT_EQ(counted.summarized, 20);
}

TEST_F(SqliteAuditLogTest, BackgroundThreadWritesDueWindows) {
  // The flusher thread reads this clock while the test moves it.
  std::atomic<int64_t> log_now{absl::ToUnixMicros(now_)};
  SqliteAuditLog::Options options;
  options.summaries.interval = absl::Seconds(4);
  options.now = [&] { return absl::FromUnixMicros(log_now.load()); };
  options.flush_every = absl::Milliseconds(10);
  log_ = std::make_unique<SqliteAuditLog>(db_.get(), options);
  for (int i = 0; i < 8; ++i) Call(kMalformed, attacker_ + ":1", kCreate).IgnoreError();
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(CountRefused(attacker_).summaries, 0);  // not due yet
  log_now += absl::ToInt64Microseconds(absl::Seconds(5));
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (CountRefused(attacker_).summaries == 0 && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  Refused counted = CountRefused(attacker_);
  EXPECT_EQ(counted.summaries, 1);
  EXPECT_EQ(counted.summarized, 3);
  EXPECT_EQ(counted.singles, 5);
  log_.reset();  // stops the thread before log_now goes
}


// Whatever a caller sends, one audit row stays small: ids and messages are
// cut (on a UTF-8 boundary) and say how long they were.
TEST_F(SqliteAuditLogTest, HugeIdsAndMessagesAreClipped) {
  v1::ResourceReference target;
  target.set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
  target.set_id(std::string(10 << 20, 'x'));
  // A two-byte character straddles the cut.
  const std::string message = std::string(2047, 'm') + "\xc3\xa9" + std::string(1 << 20, 'm');
  Caller anonymous;
  anonymous.peer = "ipv4:192.0.2.50:1";
  log_->Record(anonymous, "", "/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate",
               target, absl::InvalidArgumentError(message), std::string(3 << 20, 'r'));
  std::vector<v1::AuditEvent> events = Events();
  ASSERT_FALSE(events.empty());
  const v1::AuditEvent& event = events.back();
  EXPECT_EQ(event.target().id(), std::string(256, 'x') + "... (10485760 bytes)");
  EXPECT_EQ(event.request_id(), std::string(256, 'r') + "... (3145728 bytes)");
  EXPECT_EQ(event.outcome().message(),
            std::string(2047, 'm') + "... (" + std::to_string(message.size()) + " bytes)");
  // The whole row, as stored.
  ASSERT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                   auto stmt = conn.Prepare(
                       "SELECT MAX(length(target_id) + length(request_id) + "
                       "length(outcome_message)) FROM audit_events");
                   if (!stmt.ok()) return stmt.status();
                   auto row = stmt->Step();
                   if (!row.ok()) return row.status();
                   EXPECT_LT(stmt->ColumnInt(0), 3000);
                   return absl::OkStatus();
                 }).ok());
}

// Times past what int64 microseconds hold were converted with an overflow
// (undefined; it wrapped to a negative start and listed every event).
TEST_F(SqliteAuditLogTest, OutOfRangeTimesAreInvalidArguments) {
  v1::ResourceReference target;
  target.set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
  target.set_id("t");
  log_->Record(operator_, operator_.account_id,
               "/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate", target,
               absl::OkStatus(), "");
  v1::ListAuditEventsRequest request;
  request.mutable_start_time()->set_seconds(int64_t{10000000000000});
  absl::Status status = log_->List(operator_, request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "start_time")) << status;
  request.clear_start_time();
  request.mutable_end_time()->set_nanos(-1);
  status = log_->List(operator_, request).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "end_time")) << status;
  // The latest valid start lists nothing; the earliest lists the event.
  request.clear_end_time();
  request.mutable_start_time()->set_seconds(int64_t{253402300799});
  auto page = log_->List(operator_, request);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_EQ(page->audit_events_size(), 0);
  request.mutable_start_time()->set_seconds(int64_t{-62135596800});
  page = log_->List(operator_, request);
  ASSERT_TRUE(page.ok()) << page.status();
  EXPECT_GE(page->audit_events_size(), 1);
}

}  // namespace
}  // namespace controlplane
