#include "controlplane/sqlite_template_store.h"

#include <algorithm>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

const std::string kAlice = "00000000-0000-4000-8000-00000000000a";
const std::string kBob = "00000000-0000-4000-8000-00000000000b";
const std::string kCarol = "00000000-0000-4000-8000-00000000000c";

v1::ImageTemplate MakeTemplate(const std::string& owner, const std::string& name,
                               int64_t create_time_us) {
  v1::ImageTemplate t;
  t.set_id(NewUuid());
  t.set_owner_account_id(owner);
  t.set_name(name);
  t.set_visibility(v1::VISIBILITY_PRIVATE);
  t.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  *t.mutable_create_time() = ToTimestamp(create_time_us);
  *t.mutable_update_time() = ToTimestamp(create_time_us);
  auto* disk = t.add_disks();
  disk->set_device_index(0);
  disk->set_boot(true);
  disk->set_logical_size_bytes(1 << 30);
  disk->set_stored_size_bytes(1000);
  disk->set_manifest_digest("sha256:" + std::string(64, 'a'));
  return t;
}

class SqliteTemplateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenTemplateTestDatabase();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    for (const auto& id : {kAlice, kBob, kCarol}) ASSERT_TRUE(AddTestAccount(*db_, id).ok());
    store_ = std::make_unique<SqliteTemplateStore>(db_.get());
  }

  v1::ImageTemplate Insert(const std::string& owner, const std::string& name, int64_t time) {
    v1::ImageTemplate t = MakeTemplate(owner, name, time);
    absl::Status status = store_->InsertTemplate(t);
    EXPECT_TRUE(status.ok()) << status;
    return t;
  }

  std::vector<std::string> Names(const TemplateQuery& query) {
    auto rows = store_->ListTemplates(query);
    EXPECT_TRUE(rows.ok()) << rows.status();
    std::vector<std::string> names;
    if (rows.ok()) {
      for (const auto& t : *rows) names.push_back(t.name());
    }
    return names;
  }

  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteTemplateStore> store_;
};

TEST_F(SqliteTemplateStoreTest, InsertAndGetRoundTripEveryField) {
  v1::ImageTemplate t = MakeTemplate(kAlice, "x'); DROP TABLE image_templates; --", 1000);
  t.set_note("line one\nline two");
  t.add_tags("web");
  t.add_tags("prod");
  t.set_source_server_id(NewUuid());
  t.set_create_operation_id(NewUuid());
  t.mutable_configuration()->set_cpu_count(4);
  t.mutable_configuration()->set_memory_mib(8192);
  t.mutable_configuration()->set_os_reference("UBUNTU_22_64");
  auto* data = t.add_disks();
  data->set_device_index(2);
  data->set_logical_size_bytes(2 << 20);
  data->set_stored_size_bytes(77);
  auto* loc = t.add_locations();
  loc->set_datacenter("dal10");
  loc->set_status(v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
  *loc->mutable_create_time() = ToTimestamp(1000);
  auto* loc2 = t.add_locations();
  loc2->set_datacenter("ams01");
  loc2->set_status(v1::IMAGE_TEMPLATE_LOCATION_STATUS_COPYING);
  loc2->set_operation_id(NewUuid());
  *loc2->mutable_create_time() = ToTimestamp(2000);
  t.set_deprecated(true);
  *t.mutable_deprecate_time() = ToTimestamp(3000);
  t.set_delete_protected(true);
  ASSERT_TRUE(store_->InsertTemplate(t).ok());

  auto got = store_->GetTemplate(t.id());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->DebugString(), t.DebugString());
}

TEST_F(SqliteTemplateStoreTest, GetUnknownIsNotFound) {
  EXPECT_EQ(store_->GetTemplate(NewUuid()).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SqliteTemplateStoreTest, NamesAreUniquePerAccountAmongNotDeleted) {
  v1::ImageTemplate first = Insert(kAlice, "base", 1);
  absl::Status again = store_->InsertTemplate(MakeTemplate(kAlice, "base", 2));
  EXPECT_EQ(again.code(), absl::StatusCode::kAlreadyExists) << again;
  EXPECT_NE(again.message().find("name"), absl::string_view::npos);
  EXPECT_TRUE(store_->InsertTemplate(MakeTemplate(kBob, "base", 3)).ok());
  EXPECT_EQ(store_->InsertTemplate(first).code(), absl::StatusCode::kAlreadyExists);

  // Once DELETED, the name is free again.
  ASSERT_TRUE(store_
                  ->MutateTemplate(first.id(),
                                   [](TemplateTransaction& txn) {
                                     txn.image_template().set_status(
                                         v1::IMAGE_TEMPLATE_STATUS_DELETED);
                                     return absl::OkStatus();
                                   })
                  .ok());
  EXPECT_TRUE(store_->InsertTemplate(MakeTemplate(kAlice, "base", 4)).ok());
}

TEST_F(SqliteTemplateStoreTest, UnknownOwnerIsFailedPrecondition) {
  absl::Status status = store_->InsertTemplate(MakeTemplate(NewUuid(), "x", 1));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
}

TEST_F(SqliteTemplateStoreTest, MutateRenamesRollsBackOnErrorAndRejectsTakenName) {
  v1::ImageTemplate a = Insert(kAlice, "a", 1);
  Insert(kAlice, "b", 2);
  absl::Status refused = store_->MutateTemplate(a.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_name("changed");
    return absl::FailedPreconditionError("no");
  }).status();
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->GetTemplate(a.id())->name(), "a");

  absl::Status taken = store_->MutateTemplate(a.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_name("b");
    return absl::OkStatus();
  }).status();
  EXPECT_EQ(taken.code(), absl::StatusCode::kAlreadyExists) << taken;

  auto renamed = store_->MutateTemplate(a.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_name("c");
    txn.image_template().clear_tags();
    txn.image_template().add_tags("t1");
    return absl::OkStatus();
  });
  ASSERT_TRUE(renamed.ok()) << renamed.status();
  EXPECT_EQ(renamed->name(), "c");
  EXPECT_EQ(store_->GetTemplate(a.id())->tags_size(), 1);
  EXPECT_EQ(store_->GetTemplate(a.id())->disks_size(), 1);
}

TEST_F(SqliteTemplateStoreTest, ListShowsOwnSharedAndPublicButNotOthers) {
  v1::ImageTemplate own = Insert(kBob, "bob-own", 1);
  v1::ImageTemplate hidden = Insert(kAlice, "alice-private", 2);
  v1::ImageTemplate shared = Insert(kAlice, "alice-shared", 3);
  v1::ImageTemplate pub = Insert(kAlice, "alice-public", 4);
  v1::ImageTemplate disabled = Insert(kAlice, "alice-disabled-public", 5);
  v1::ImageTemplate deprecated = Insert(kAlice, "alice-deprecated-public", 6);
  ASSERT_TRUE(store_->MutateTemplate(shared.id(), [&](TemplateTransaction& txn) {
    txn.image_template().set_visibility(v1::VISIBILITY_SHARED);
    return txn.AddShare(kBob, 10);
  }).ok());
  for (const auto* t : {&pub, &disabled, &deprecated}) {
    ASSERT_TRUE(store_->MutateTemplate(t->id(), [&](TemplateTransaction& txn) {
      txn.image_template().set_visibility(v1::VISIBILITY_PUBLIC);
      txn.image_template().set_disabled(t == &disabled);
      txn.image_template().set_deprecated(t == &deprecated);
      return absl::OkStatus();
    }).ok());
  }
  TemplateQuery bob;
  bob.viewer_account_id = kBob;
  EXPECT_EQ(Names(bob), (std::vector<std::string>{"bob-own", "alice-shared", "alice-public"}));
  bob.include_deprecated = true;
  EXPECT_EQ(Names(bob), (std::vector<std::string>{"bob-own", "alice-shared", "alice-public",
                                                  "alice-deprecated-public"}));
  EXPECT_TRUE(*store_->IsSharedWith(shared.id(), kBob));
  EXPECT_FALSE(*store_->IsSharedWith(hidden.id(), kBob));

  // The owner sees its deprecated and disabled templates by default.
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  EXPECT_EQ(Names(alice).size(), 5u);

  TemplateQuery op;
  op.viewer_account_id = kCarol;
  op.all_accounts = true;
  op.include_deprecated = true;
  EXPECT_EQ(Names(op).size(), 6u);
}

TEST_F(SqliteTemplateStoreTest, FiltersTreatWildcardsLiterally) {
  Insert(kAlice, "100% real", 1);
  Insert(kAlice, "1000 real", 2);
  Insert(kAlice, "a_b", 3);
  Insert(kAlice, "axb", 4);
  v1::ImageTemplate tagged = Insert(kAlice, "Tagged", 5);
  ASSERT_TRUE(store_->MutateTemplate(tagged.id(), [](TemplateTransaction& txn) {
    txn.image_template().add_tags("prod");
    return absl::OkStatus();
  }).ok());
  TemplateQuery q;
  q.viewer_account_id = kAlice;
  q.name_contains = "0%";
  EXPECT_EQ(Names(q), std::vector<std::string>{"100% real"});
  q.name_contains = "_";
  EXPECT_EQ(Names(q), std::vector<std::string>{"a_b"});
  q.name_contains = "TAGG";
  EXPECT_EQ(Names(q), std::vector<std::string>{"Tagged"});
  q.name_contains = "";
  q.tag = "prod";
  EXPECT_EQ(Names(q), std::vector<std::string>{"Tagged"});
  q.tag = "";
  q.order = TemplateOrder::kName;
  q.descending = true;
  EXPECT_EQ(Names(q),
            (std::vector<std::string>{"axb", "a_b", "Tagged", "1000 real", "100% real"}));
  q.owner_account_id = kBob;
  EXPECT_TRUE(Names(q).empty());
  q.owner_account_id = "";
  q.status = v1::IMAGE_TEMPLATE_STATUS_CREATING;
  EXPECT_TRUE(Names(q).empty());
}

// Walks every page while rows come and go between pages: each row that
// exists throughout appears exactly once, in order.
void CheckPagingUnderChurn(SqliteTemplateStore* store,
                           TemplateOrder order, bool descending) {
  std::vector<v1::ImageTemplate> initial;
  for (int i = 0; i < 40; ++i) {
    // Equal create times in pairs: the id breaks ties.
    v1::ImageTemplate t = MakeTemplate(kAlice, absl::StrCat("t", 100 + i), 1000 + i / 2);
    ASSERT_TRUE(store->InsertTemplate(t).ok());
    initial.push_back(t);
  }
  std::set<std::string> deleted;
  TemplateQuery q;
  q.viewer_account_id = kAlice;
  q.order = order;
  q.descending = descending;
  q.limit = 7;
  std::vector<v1::ImageTemplate> seen;
  int page = 0;
  while (true) {
    auto rows = store->ListTemplates(q);
    ASSERT_TRUE(rows.ok()) << rows.status();
    for (const auto& t : *rows) seen.push_back(t);
    if (static_cast<int>(rows->size()) < q.limit) break;
    const v1::ImageTemplate& last = rows->back();
    q.after = TemplateCursor{last.name(), FromTimestamp(last.create_time()), last.id()};
    // Churn: new rows on both sides of the cursor, and deletions of a seen
    // row and of a not yet seen one.
    ++page;
    for (int k = 0; k < 3; ++k) {
      ASSERT_TRUE(store
                      ->InsertTemplate(MakeTemplate(kAlice, absl::StrCat("n", page, "-", k),
                                                    500 + page * 100 + k * 400))
                      .ok());
    }
    const v1::ImageTemplate& victim_seen = seen[seen.size() / 2];
    const v1::ImageTemplate& victim_unseen = initial[(page * 11) % initial.size()];
    for (const auto* victim : {&victim_seen, &victim_unseen}) {
      if (victim->name()[0] != 't' || deleted.count(victim->id())) continue;
      ASSERT_TRUE(store->MutateTemplate(victim->id(), [](TemplateTransaction& txn) {
        txn.image_template().set_status(v1::IMAGE_TEMPLATE_STATUS_DELETED);
        return absl::OkStatus();
      }).ok());
      deleted.insert(victim->id());
    }
  }
  std::map<std::string, int> count;
  for (const auto& t : seen) ++count[t.id()];
  for (const auto& [id, n] : count) EXPECT_EQ(n, 1) << "duplicate " << id;
  for (const auto& t : initial) {
    if (!deleted.count(t.id())) {
      EXPECT_EQ(count[t.id()], 1) << "skipped " << t.name();
    }
  }
  // In order.
  for (size_t i = 1; i < seen.size(); ++i) {
    const auto& a = seen[i - 1];
    const auto& b = seen[i];
    auto key = [&](const v1::ImageTemplate& t) {
      return order == TemplateOrder::kName
                 ? std::make_pair(t.name(), t.id())
                 : std::make_pair(absl::StrCat(1000000 + FromTimestamp(t.create_time())), t.id());
    };
    EXPECT_TRUE(descending ? key(a) > key(b) : key(a) < key(b)) << a.name() << " " << b.name();
  }
}

TEST_F(SqliteTemplateStoreTest, PagingByCreateTimeSurvivesInsertsAndDeletes) {
  CheckPagingUnderChurn(store_.get(), TemplateOrder::kCreateTime, false);
}

TEST_F(SqliteTemplateStoreTest, PagingByNameDescendingSurvivesInsertsAndDeletes) {
  CheckPagingUnderChurn(store_.get(), TemplateOrder::kName, true);
}

TEST_F(SqliteTemplateStoreTest, SharesAndUsage) {
  v1::ImageTemplate t = Insert(kAlice, "a", 1);
  Insert(kAlice, "b", 2);
  ASSERT_TRUE(store_->MutateTemplate(t.id(), [&](TemplateTransaction& txn) -> absl::Status {
    RETURN_IF_ERROR(txn.AddShare(kCarol, 5));
    RETURN_IF_ERROR(txn.AddShare(kBob, 6));
    RETURN_IF_ERROR(txn.AddShare(kBob, 7));  // no-op
    EXPECT_EQ(*txn.ShareCount(), 2);
    return absl::OkStatus();
  }).ok());
  auto shares = store_->ListShares(t.id(), "", 10);
  ASSERT_TRUE(shares.ok());
  ASSERT_EQ(shares->size(), 2u);
  EXPECT_EQ((*shares)[0].account_id(), kBob);
  EXPECT_EQ(FromTimestamp((*shares)[0].create_time()), 6);
  EXPECT_EQ(store_->ListShares(t.id(), kBob, 10)->size(), 1u);
  // Sharing with an account that does not exist violates the foreign key.
  absl::Status ghost = store_->MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    return txn.AddShare(NewUuid(), 1);
  }).status();
  EXPECT_EQ(ghost.code(), absl::StatusCode::kFailedPrecondition) << ghost;

  auto usage = store_->GetUsage(kAlice);
  ASSERT_TRUE(usage.ok());
  EXPECT_EQ(usage->template_count, 2);
  EXPECT_EQ(usage->stored_bytes, 2000);
  EXPECT_EQ(store_->GetUsage(kBob)->template_count, 0);
  EXPECT_TRUE(*store_->NameInUse(kAlice, "a"));
  EXPECT_FALSE(*store_->NameInUse(kBob, "a"));
}

}  // namespace
}  // namespace controlplane
