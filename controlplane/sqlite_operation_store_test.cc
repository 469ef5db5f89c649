#include "controlplane/sqlite_operation_store.h"

#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "controlplane/ids.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

const std::string kAlice = "00000000-0000-4000-8000-00000000000a";
const std::string kBob = "00000000-0000-4000-8000-00000000000b";

v1::Operation MakeOperation(const std::string& account, v1::OperationKind kind,
                            int64_t create_time_us) {
  v1::Operation op;
  op.set_id(NewUuid());
  op.set_kind(kind);
  op.set_account_id(account);
  op.set_user_id(NewUuid());
  op.set_state(v1::OPERATION_STATE_PENDING);
  op.mutable_target()->set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
  op.mutable_target()->set_id(NewUuid());
  op.set_image_template_id(op.target().id());
  *op.mutable_create_time() = ToTimestamp(create_time_us);
  *op.mutable_update_time() = ToTimestamp(create_time_us);
  return op;
}

class SqliteOperationStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenTemplateTestDatabase();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    ASSERT_TRUE(AddTestAccount(*db_, kAlice).ok());
    ASSERT_TRUE(AddTestAccount(*db_, kBob).ok());
    store_ = std::make_unique<SqliteOperationStore>(db_.get(), [this] { return now_; });
  }
  int64_t now_ = 5000000;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteOperationStore> store_;
};

TEST_F(SqliteOperationStoreTest, RoundTripAndUpdate) {
  v1::Operation op = MakeOperation(kAlice, v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE, 1000);
  op.set_request_id("req-1");
  op.mutable_deployed_servers()->add_server_ids(NewUuid());
  op.mutable_deployed_servers()->add_server_ids(NewUuid());
  auto* step = op.add_finished_steps();
  step->set_name("allocate_volumes");
  step->set_state(v1::OPERATION_STATE_SUCCEEDED);
  step->set_attempt_count(2);
  *step->mutable_start_time() = ToTimestamp(1100);
  *step->mutable_end_time() = ToTimestamp(1200);
  op.mutable_progress()->set_bytes_done(10);
  op.mutable_progress()->set_bytes_total(40);
  op.mutable_progress()->mutable_eta()->set_seconds(3);
  ASSERT_TRUE(store_->InsertOperation(op, {"params", false}).ok());
  EXPECT_EQ(store_->InsertOperation(op, {}).code(), absl::StatusCode::kAlreadyExists);

  auto got = store_->GetOperation(op.id());
  ASSERT_TRUE(got.ok()) << got.status();
  op.mutable_progress()->set_percent(25);
  EXPECT_EQ(got->DebugString(), op.DebugString());
  EXPECT_EQ(store_->GetInternals(op.id())->params, "params");

  uint64_t before = store_->ChangeCount();
  auto updated = store_->UpdateOperation(op.id(), [](v1::Operation& o, OperationInternals& in) {
    o.set_state(v1::OPERATION_STATE_FAILED);
    o.mutable_error()->set_code(15);
    o.mutable_error()->set_message("digest mismatch");
    in.cancel_requested = true;
    return absl::OkStatus();
  });
  ASSERT_TRUE(updated.ok()) << updated.status();
  EXPECT_GT(store_->ChangeCount(), before);
  EXPECT_EQ(updated->state(), v1::OPERATION_STATE_FAILED);
  EXPECT_EQ(updated->error().code(), 15);
  EXPECT_EQ(FromTimestamp(updated->end_time()), now_);
  EXPECT_EQ(FromTimestamp(updated->update_time()), now_);
  EXPECT_EQ(updated->finished_steps_size(), 1);
  EXPECT_TRUE(store_->GetInternals(op.id())->cancel_requested);

  absl::Status refused = store_->UpdateOperation(op.id(), [](v1::Operation& o, OperationInternals&) {
    o.set_step("x");
    return absl::FailedPreconditionError("no");
  }).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetOperation(op.id())->step(), "");
  EXPECT_EQ(store_->GetOperation(NewUuid()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteOperationStoreTest, ListFiltersAndPagesNewestFirst) {
  std::vector<v1::Operation> ops;
  for (int i = 0; i < 10; ++i) {
    v1::Operation op = MakeOperation(i % 2 ? kBob : kAlice,
                                     i % 3 ? v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE
                                           : v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE,
                                     1000 + i / 2);
    ASSERT_TRUE(store_->InsertOperation(op, {}).ok());
    ops.push_back(op);
  }
  OperationQuery q;
  q.account_id = kAlice;
  q.limit = 100;
  auto alice = store_->ListOperations(q);
  ASSERT_TRUE(alice.ok());
  ASSERT_EQ(alice->size(), 5u);
  EXPECT_EQ((*alice)[0].id(), ops[8].id());
  EXPECT_EQ((*alice)[4].id(), ops[0].id());

  q.kinds = {v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE};
  EXPECT_EQ(store_->ListOperations(q)->size(), 2u);  // i = 0, 6
  q.kinds.clear();
  q.target_id = ops[4].target().id();
  EXPECT_EQ(store_->ListOperations(q)->size(), 1u);
  q.target_id.clear();
  q.states = {v1::OPERATION_STATE_RUNNING};
  EXPECT_EQ(store_->ListOperations(q)->size(), 0u);

  // Pages of 3 over every account, in order, none twice.
  OperationQuery all;
  all.limit = 3;
  std::vector<std::string> seen;
  while (true) {
    auto page = store_->ListOperations(all);
    ASSERT_TRUE(page.ok());
    for (const auto& op : *page) seen.push_back(op.id());
    if (page->size() < 3) break;
    all.after = OperationCursor{FromTimestamp(page->back().create_time()), page->back().id()};
  }
  EXPECT_EQ(seen.size(), 10u);
  EXPECT_EQ(std::set<std::string>(seen.begin(), seen.end()).size(), 10u);

  // Oldest first (the runner's queue): the same rows the other way round.
  OperationQuery oldest;
  oldest.oldest_first = true;
  oldest.limit = 3;
  std::vector<std::string> forward;
  while (true) {
    auto page = store_->ListOperations(oldest);
    ASSERT_TRUE(page.ok());
    for (const auto& op : *page) forward.push_back(op.id());
    if (page->size() < 3) break;
    oldest.after = OperationCursor{FromTimestamp(page->back().create_time()), page->back().id()};
  }
  EXPECT_EQ(forward, std::vector<std::string>(seen.rbegin(), seen.rend()));
}

TEST_F(SqliteOperationStoreTest, WaitForChangeWakesOnUpdate) {
  v1::Operation op = MakeOperation(kAlice, v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE, 1);
  ASSERT_TRUE(store_->InsertOperation(op, {}).ok());
  uint64_t seen = store_->ChangeCount();
  std::thread writer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(store_->UpdateOperation(op.id(), [](v1::Operation& o, OperationInternals&) {
      o.set_state(v1::OPERATION_STATE_RUNNING);
      return absl::OkStatus();
    }).ok());
  });
  absl::Time start = absl::Now();
  store_->WaitForChange(seen, absl::Now() + absl::Seconds(20));
  EXPECT_LT(absl::Now() - start, absl::Seconds(10));
  writer.join();
  EXPECT_NE(store_->ChangeCount(), seen);
}

}  // namespace
}  // namespace controlplane
