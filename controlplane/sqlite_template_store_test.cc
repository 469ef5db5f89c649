#include "controlplane/sqlite_template_store.h"

#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/migrations.h"
#include "controlplane/testing/sqlite_template_store_fixture.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

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

// TemplateCache: every read checks the row's version in its own snapshot, so
// a write (through this store or another one on the same database, as
// another process would) is seen by the very next get and list.
TEST_F(SqliteTemplateStoreTest, CachedTemplatesAreNeverServedStale) {
  v1::ImageTemplate t = MakeTemplate(kAlice, "before", 100);
  t.add_tags("web");
  t.add_tags("prod");
  ASSERT_TRUE(store_->InsertTemplate(t).ok());
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  alice.tag = "web";
  TemplateQuery bob;
  bob.viewer_account_id = kBob;
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(store_->GetTemplate(t.id())->DebugString(), t.DebugString());
    ASSERT_EQ(Names(alice), std::vector<std::string>{"before"});
    ASSERT_TRUE(Names(bob).empty());
  }
  // The reads above were answered from the cache, so what follows tests it.
  ASSERT_GE(store_->cache().hits(), 2);

  auto changed = store_->MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    v1::ImageTemplate& m = txn.image_template();
    m.set_name("after");
    m.set_note("new note");
    m.clear_tags();
    m.add_tags("db");
    m.mutable_disks(0)->set_stored_size_bytes(4242);
    auto* location = m.add_locations();
    location->set_datacenter("fra02");
    location->set_status(v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
    *location->mutable_create_time() = ToTimestamp(7000);
    m.set_visibility(v1::VISIBILITY_PUBLIC);
    return absl::OkStatus();
  });
  ASSERT_TRUE(changed.ok()) << changed.status();
  EXPECT_EQ(store_->GetTemplate(t.id())->DebugString(), changed->DebugString());
  EXPECT_TRUE(Names(alice).empty());  // no longer tagged web
  alice.tag = "db";
  auto listed = store_->ListTemplates(alice);
  ASSERT_TRUE(listed.ok()) << listed.status();
  ASSERT_EQ(listed->size(), 1u);
  EXPECT_EQ((*listed)[0].DebugString(), changed->DebugString());
  EXPECT_EQ(Names(bob), std::vector<std::string>{"after"});  // published

  // Another store on the same database has its own cache; its write still
  // reaches this store's readers.
  SqliteTemplateStore other(db_.get());
  ASSERT_EQ(other.GetTemplate(t.id())->name(), "after");
  auto unpublished = other.MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_visibility(v1::VISIBILITY_PRIVATE);
    txn.image_template().set_name("again");
    return absl::OkStatus();
  });
  ASSERT_TRUE(unpublished.ok()) << unpublished.status();
  EXPECT_EQ(store_->GetTemplate(t.id())->DebugString(), unpublished->DebugString());
  EXPECT_EQ(Names(alice), std::vector<std::string>{"again"});
  EXPECT_TRUE(Names(bob).empty());
  EXPECT_EQ(other.GetTemplate(t.id())->name(), "again");
}

// The encoded path (what ListImageTemplates sends): the wire bytes are the
// template's current encoding after any write, through this store or another
// store on the same database, and a row that stops being visible is gone.
TEST_F(SqliteTemplateStoreTest, EncodedTemplatesFollowEveryWrite) {
  v1::ImageTemplate t = MakeTemplate(kAlice, "enc", 100);
  t.add_tags("web");
  t.set_note("first");
  t.mutable_configuration()->set_cpu_count(2);
  ASSERT_TRUE(store_->InsertTemplate(t).ok());
  ASSERT_TRUE(store_->MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    return txn.AddShare(kBob, 5);
  }).ok());
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  TemplateQuery bob;
  bob.viewer_account_id = kBob;
  auto wire_of = [&](const TemplateQuery& q) -> std::vector<v1::ImageTemplate> {
    auto rows = store_->ListEncodedTemplates(q);
    EXPECT_TRUE(rows.ok()) << rows.status();
    std::vector<v1::ImageTemplate> out;
    if (!rows.ok()) return out;
    for (const auto& row : *rows) {
      v1::ImageTemplate parsed;
      EXPECT_TRUE(parsed.ParseFromString(row->wire));
      // The bytes and the decoded message are the same template.
      EXPECT_EQ(parsed.DebugString(), row->image_template.DebugString());
      out.push_back(parsed);
    }
    return out;
  };
  for (int i = 0; i < 2; ++i) {  // the second round is answered from the cache
    auto listed = wire_of(bob);
    ASSERT_EQ(listed.size(), 1u);
    EXPECT_EQ(listed[0].DebugString(), t.DebugString());
  }
  const int64_t hits = store_->cache().hits();

  // A write through another store (another process, as far as this store's
  // cache knows) shows in the very next list.
  SqliteTemplateStore other(db_.get());
  auto changed = other.MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    v1::ImageTemplate& m = txn.image_template();
    m.set_note("second");
    m.add_tags("db");
    m.mutable_configuration()->set_cpu_count(8);
    m.mutable_disks(0)->set_stored_size_bytes(777);
    return absl::OkStatus();
  });
  ASSERT_TRUE(changed.ok()) << changed.status();
  auto listed = wire_of(bob);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].DebugString(), changed->DebugString());
  EXPECT_EQ(listed[0].note(), "second");
  EXPECT_EQ(listed[0].configuration().cpu_count(), 8);
  listed = wire_of(alice);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_EQ(listed[0].DebugString(), changed->DebugString());
  EXPECT_GT(store_->cache().hits(), hits);  // alice's list hit bob's fresh entry

  // Disabled: the owner still lists it (new bytes), the share holder does not.
  auto disabled = other.MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_disabled(true);
    return absl::OkStatus();
  });
  ASSERT_TRUE(disabled.ok()) << disabled.status();
  EXPECT_TRUE(wire_of(bob).empty());
  listed = wire_of(alice);
  ASSERT_EQ(listed.size(), 1u);
  EXPECT_TRUE(listed[0].disabled());
  EXPECT_EQ(listed[0].DebugString(), disabled->DebugString());
  // Unshared and enabled again: still nothing for bob.
  ASSERT_TRUE(other.MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_disabled(false);
    return txn.RemoveShare(kBob);
  }).ok());
  EXPECT_TRUE(wire_of(bob).empty());
}

TEST_F(SqliteTemplateStoreTest, CacheEvictsPastItsSizeAndStillAnswers) {
  SqliteTemplateStore small(db_.get(), /*cache_entries=*/16);
  std::vector<v1::ImageTemplate> all;
  for (int i = 0; i < 100; ++i) all.push_back(Insert(kAlice, absl::StrCat("t", i), i));
  for (int round = 0; round < 2; ++round) {
    for (const v1::ImageTemplate& t : all) {
      auto got = small.GetTemplate(t.id());
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->DebugString(), t.DebugString());
    }
  }
  EXPECT_LE(small.cache().size(), 16u);
}

// Migration 6 fills tag_list for templates written before it.
TEST(SqliteTemplateStoreMigrationTest, TagListIsBackfilled) {
  const std::string path = ::testing::TempDir() + "/tag_list_backfill.db";
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
  const std::string id = NewUuid();
  {
    std::vector<std::string> before(Migrations().begin(), Migrations().begin() + 5);
    auto db = SqliteDatabase::Open(path, before);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(AddTestAccount(**db, kAlice).ok());
    ASSERT_TRUE((*db)->Transaction([&](SqliteConnection& conn) -> absl::Status {
      ASSIGN_OR_RETURN(SqliteStatement s,
                       conn.Prepare("INSERT INTO image_templates (id, owner_account_id, name, "
                                    "visibility, status, create_time_us, update_time_us) "
                                    "VALUES (?, ?, 'old', 1, 2, 5, 5)"));
      RETURN_IF_ERROR(s.Bind(1, id).Bind(2, kAlice).Run());
      int position = 0;
      for (const char* tag : {"linux", "gpu"}) {
        ASSIGN_OR_RETURN(SqliteStatement t,
                         conn.Prepare("INSERT INTO image_template_tags (template_id, position, "
                                      "tag) VALUES (?, ?, ?)"));
        RETURN_IF_ERROR(t.Bind(1, id).Bind(2, position++).Bind(3, tag).Run());
      }
      return absl::OkStatus();
    }).ok());
  }
  auto db = SqliteDatabase::Open(path, Migrations());
  ASSERT_TRUE(db.ok()) << db.status();
  SqliteTemplateStore store(db->get());
  TemplateQuery q;
  q.viewer_account_id = kAlice;
  for (const char* tag : {"gpu", "linux"}) {
    q.tag = tag;
    auto rows = store.ListTemplates(q);
    ASSERT_TRUE(rows.ok()) << rows.status();
    ASSERT_EQ(rows->size(), 1u) << tag;
    EXPECT_EQ((*rows)[0].tags_size(), 2);
  }
  q.tag = "lin";
  EXPECT_TRUE(store.ListTemplates(q)->empty());
}

// Names written before migration 6 that SQL could not lowercase are folded
// when the store starts.
TEST(SqliteTemplateStoreMigrationTest, NonAsciiNamesAreFoldedAtStart) {
  const std::string path = ::testing::TempDir() + "/name_fold_backfill.db";
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
  {
    std::vector<std::string> before(Migrations().begin(), Migrations().begin() + 5);
    auto db = SqliteDatabase::Open(path, before);
    ASSERT_TRUE(db.ok()) << db.status();
    ASSERT_TRUE(AddTestAccount(**db, kAlice).ok());
    ASSERT_TRUE((*db)->Transaction([&](SqliteConnection& conn) -> absl::Status {
      for (const char* name : {"\xc3\x84PFEL", "Plain-ASCII"}) {
        ASSIGN_OR_RETURN(SqliteStatement s,
                         conn.Prepare("INSERT INTO image_templates (id, owner_account_id, name, "
                                      "visibility, status, create_time_us, update_time_us) "
                                      "VALUES (?, ?, ?, 1, 2, 5, 5)"));
        RETURN_IF_ERROR(s.Bind(1, NewUuid()).Bind(2, kAlice).Bind(3, name).Run());
      }
      return absl::OkStatus();
    }).ok());
  }
  auto db = SqliteDatabase::Open(path, Migrations());
  ASSERT_TRUE(db.ok()) << db.status();
  SqliteTemplateStore store(db->get());
  TemplateQuery q;
  q.viewer_account_id = kAlice;
  for (const char* contains : {"\xc3\xa4pfel", "plain"}) {
    q.name_contains = contains;
    auto rows = store.ListTemplates(q);
    ASSERT_TRUE(rows.ok()) << rows.status();
    EXPECT_EQ(rows->size(), 1u) << contains;
  }
}

}  // namespace
}  // namespace controlplane
