// SqliteTemplateStore's list model: visibility across own, shared and public
// templates, filters, sort orders and pagination under churn, the list memos
// (shared and public branches) across writers, checked against a reference.
#include "controlplane/sqlite_template_store.h"

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <string>
#include <tuple>
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

// A viewer's page merges three index scans (own, shared with it, public) row
// by row; every page, in both orders and directions, must be the one sorted
// list of what the viewer may see, with ties on the key broken by id.
TEST_F(SqliteTemplateStoreTest, PagesMergeOwnSharedAndPublicInOrder) {
  std::vector<v1::ImageTemplate> visible;  // to alice
  auto add = [&](const std::string& owner, const std::string& name, int64_t time,
                 v1::Visibility visibility, bool share_with_alice, bool disabled,
                 bool expect_visible) {
    v1::ImageTemplate t = MakeTemplate(owner, name, time);
    t.set_visibility(visibility);
    t.set_disabled(disabled);
    ASSERT_TRUE(store_->InsertTemplate(t).ok());
    if (share_with_alice) {
      ASSERT_TRUE(store_->MutateTemplate(t.id(), [](TemplateTransaction& txn) {
        return txn.AddShare(kAlice, 1);
      }).ok());
    }
    if (expect_visible) visible.push_back(t);
  };
  for (int i = 0; i < 12; ++i) {
    // Create times repeat across branches (i / 3) and each name is used by
    // three owners, so the id decides many places.
    const int64_t time = 1000 + i / 3;
    const std::string name = absl::StrCat("n", i % 5);
    add(kAlice, absl::StrCat(name, "-", i), time, i % 2 ? v1::VISIBILITY_PUBLIC
                                                          : v1::VISIBILITY_PRIVATE,
        false, i % 4 == 0, true);
    add(kBob, absl::StrCat(name, "-", i), time + (i % 2), v1::VISIBILITY_PRIVATE, i % 3 != 0,
        false, i % 3 != 0);
    add(kCarol, absl::StrCat(name, "-", i), time, v1::VISIBILITY_PUBLIC, false, i % 5 == 0, i % 5 != 0);
    if (i % 4 == 1) {
      add(kCarol, absl::StrCat(name, "-c", i), time, v1::VISIBILITY_PRIVATE, true, false, true);
    }
  }
  for (TemplateOrder order : {TemplateOrder::kCreateTime, TemplateOrder::kName}) {
    for (bool descending : {false, true}) {
      auto key = [&](const v1::ImageTemplate& t) {
        return std::make_tuple(order == TemplateOrder::kName ? t.name() : std::string(),
                               FromTimestamp(t.create_time()), t.id());
      };
      std::vector<v1::ImageTemplate> want = visible;
      std::sort(want.begin(), want.end(), [&](const auto& a, const auto& b) {
        auto ka = key(a), kb = key(b);
        if (order == TemplateOrder::kName) {
          std::get<1>(ka) = std::get<1>(kb) = 0;
        }
        return descending ? kb < ka : ka < kb;
      });
      TemplateQuery q;
      q.viewer_account_id = kAlice;
      q.order = order;
      q.descending = descending;
      q.limit = 4;
      std::vector<std::string> got;
      for (int page = 0; page < 100; ++page) {
        auto rows = store_->ListTemplates(q);
        ASSERT_TRUE(rows.ok()) << rows.status();
        for (const auto& t : *rows) got.push_back(t.id());
        if (static_cast<int>(rows->size()) < q.limit) break;
        const v1::ImageTemplate& last = rows->back();
        q.after = TemplateCursor{last.name(), FromTimestamp(last.create_time()), last.id()};
      }
      std::vector<std::string> want_ids;
      for (const auto& t : want) want_ids.push_back(t.id());
      EXPECT_EQ(got, want_ids) << "order " << static_cast<int>(order) << " descending "
                               << descending;
    }
  }
}

// Ids of every page of `q` (walked with `q.limit` per page) from `store`.
std::vector<std::string> WalkIds(SqliteTemplateStore& store, TemplateQuery q) {
  std::vector<std::string> ids;
  for (int page = 0; page < 100; ++page) {
    auto rows = store.ListTemplates(q);
    EXPECT_TRUE(rows.ok()) << rows.status();
    if (!rows.ok()) break;
    for (const auto& t : *rows) ids.push_back(t.id());
    if (static_cast<int>(rows->size()) < q.limit) break;
    const v1::ImageTemplate& last = rows->back();
    q.after = TemplateCursor{last.name(), FromTimestamp(last.create_time()), last.id()};
  }
  return ids;
}

// The shared branch's rows are kept between pages (SharesMemo); every write
// in between must show on the next page. Here reads run on the writer
// connection (in-memory database), so its own writes must count.
TEST_F(SqliteTemplateStoreTest, SharedMemoFollowsEveryWrite) {
  v1::ImageTemplate b1 = Insert(kBob, "b1", 1), b2 = Insert(kBob, "b2", 2),
                    b3 = Insert(kBob, "b3", 3), hidden = Insert(kBob, "hidden", 4);
  auto share = [&](const v1::ImageTemplate& t, bool add) {
    auto r = store_->MutateTemplate(t.id(), [&](TemplateTransaction& txn) {
      return add ? txn.AddShare(kAlice, 1) : txn.RemoveShare(kAlice);
    });
    ASSERT_TRUE(r.ok()) << r.status();
  };
  share(b1, true);
  share(b2, true);
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  alice.limit = 1;
  const int64_t hits0 = store_->list_memo_hits();
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b1.id(), b2.id()}));
  // Pages 2 and 3 of that walk reused page 1's shared rows.
  EXPECT_GE(store_->list_memo_hits() - hits0, 2);

  share(b2, false);
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b1.id()}));
  share(b3, true);
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b1.id(), b3.id()}));
  ASSERT_TRUE(store_->MutateTemplate(b1.id(), [](TemplateTransaction& txn) {
                      txn.image_template().set_disabled(true);
                      return absl::OkStatus();
                    }).ok());
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b3.id()}));
  // A rename moves b3 in name order and shows its new name.
  share(b2, true);
  alice.order = TemplateOrder::kName;
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b2.id(), b3.id()}));
  ASSERT_TRUE(store_->MutateTemplate(b3.id(), [](TemplateTransaction& txn) {
                      txn.image_template().set_name("a3");
                      return absl::OkStatus();
                    }).ok());
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b3.id(), b2.id()}));
  alice.limit = 10;
  EXPECT_EQ(Names(alice), (std::vector<std::string>{"a3", "b2"}));
  // Each filter is its own memo entry.
  alice.tag = "nope";
  EXPECT_TRUE(Names(alice).empty());
  alice.tag.clear();
  alice.name_contains = "B";
  EXPECT_EQ(Names(alice), (std::vector<std::string>{"b2"}));
  // Carol sees none of Bob's shares with Alice, before or after Alice's list.
  TemplateQuery carol;
  carol.viewer_account_id = kCarol;
  EXPECT_TRUE(Names(carol).empty());
  for (const auto& id : WalkIds(*store_, alice)) EXPECT_NE(id, hidden.id());
}

// A commit by another connection or process (here a second SqliteDatabase
// over the same file) must show on this store's next page: its reads run on
// read-only connections, whose memos follow template_list_generation.
TEST(SqliteTemplateStoreFileTest, ListMemoSeesOtherWritersCommits) {
  const char* tmp = getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp ? tmp : "/tmp", "/shares_memo.db");
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
  auto db = SqliteDatabase::Open(path, Migrations());
  ASSERT_TRUE(db.ok()) << db.status();
  for (const auto& id : {kAlice, kBob}) ASSERT_TRUE(AddTestAccount(**db, id).ok());
  SqliteTemplateStore reader(db->get());
  auto other = SqliteDatabase::Open(path, Migrations());
  ASSERT_TRUE(other.ok()) << other.status();
  SqliteTemplateStore writer(other->get());

  std::vector<v1::ImageTemplate> bobs;
  for (int i = 0; i < 3; ++i) {
    bobs.push_back(MakeTemplate(kBob, absl::StrCat("b", i), i));
    ASSERT_TRUE(writer.InsertTemplate(bobs.back()).ok());
  }
  auto share = [&](int i, bool add) {
    auto r = writer.MutateTemplate(bobs[i].id(), [&](TemplateTransaction& txn) {
      return add ? txn.AddShare(kAlice, 1) : txn.RemoveShare(kAlice);
    });
    ASSERT_TRUE(r.ok()) << r.status();
  };
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  alice.limit = 1;
  EXPECT_TRUE(WalkIds(reader, alice).empty());
  share(0, true);
  share(2, true);
  // Several walks, so that more than one read connection holds a memo.
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(WalkIds(reader, alice), (std::vector<std::string>{bobs[0].id(), bobs[2].id()}));
  }
  EXPECT_GT(reader.list_memo_hits(), 0);
  share(0, false);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(WalkIds(reader, alice), (std::vector<std::string>{bobs[2].id()}));
  }
  share(1, true);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(WalkIds(reader, alice), (std::vector<std::string>{bobs[1].id(), bobs[2].id()}));
  }
  // The public memo (one for every viewer) follows the other writer too.
  auto set_visibility = [&](int i, v1::Visibility visibility) {
    auto r = writer.MutateTemplate(bobs[i].id(), [&](TemplateTransaction& txn) {
      txn.image_template().set_visibility(visibility);
      return absl::OkStatus();
    });
    ASSERT_TRUE(r.ok()) << r.status();
  };
  set_visibility(0, v1::VISIBILITY_PUBLIC);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(WalkIds(reader, alice),
              (std::vector<std::string>{bobs[0].id(), bobs[1].id(), bobs[2].id()}));
  }
  set_visibility(0, v1::VISIBILITY_PRIVATE);
  for (int i = 0; i < 4; ++i) {
    EXPECT_EQ(WalkIds(reader, alice), (std::vector<std::string>{bobs[1].id(), bobs[2].id()}));
  }
}

// In a live control plane audit rows, heartbeats and operations commit far
// more often than templates change; the memo is dropped only when a
// template, child row or share changes (template_list_generation, migration 9),
// whichever connection or process commits it, and such a change shows on
// the next page.
TEST(SqliteTemplateStoreFileTest, ListMemoOutlivesUnrelatedCommits) {
  const char* tmp = getenv("TEST_TMPDIR");
  const std::string path = absl::StrCat(tmp ? tmp : "/tmp", "/unrelated_commits.db");
  for (const char* suffix : {"", "-wal", "-shm"}) std::remove((path + suffix).c_str());
  auto db = SqliteDatabase::Open(path, Migrations());
  ASSERT_TRUE(db.ok()) << db.status();
  for (const auto& id : {kAlice, kBob}) ASSERT_TRUE(AddTestAccount(**db, id).ok());
  // One read connection, so that every page reads the same memo.
  auto reader_db = SqliteDatabase::Open(path, Migrations(), SqliteDatabase::Options{1});
  ASSERT_TRUE(reader_db.ok()) << reader_db.status();
  SqliteTemplateStore reader(reader_db->get(), SqliteTemplateStore::kDefaultCacheEntries,
                             /*public_memo_after_pages=*/0);
  SqliteTemplateStore writer(db->get());
  std::vector<v1::ImageTemplate> bobs;
  for (int i = 0; i < 4; ++i) {
    bobs.push_back(MakeTemplate(kBob, absl::StrCat("b", i), i));
    if (i < 2) bobs.back().set_visibility(v1::VISIBILITY_PUBLIC);
    ASSERT_TRUE(writer.InsertTemplate(bobs.back()).ok());
  }
  ASSERT_TRUE(writer
                  .MutateTemplate(bobs[2].id(),
                                  [&](TemplateTransaction& txn) { return txn.AddShare(kAlice, 1); })
                  .ok());
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  alice.limit = 2;
  const std::vector<std::string> before = {bobs[0].id(), bobs[1].id(), bobs[2].id()};
  EXPECT_EQ(WalkIds(reader, alice), before);
  const int64_t misses = reader.list_memo_misses(), hits = reader.list_memo_hits();
  EXPECT_GT(misses, 0);

  // Commits to other tables: an audit row, a storage node's heartbeat, an
  // account's change.
  auto run = [&](const std::string& sql) {
    ASSERT_TRUE((*db)->Transaction([&](SqliteConnection& conn) -> absl::Status {
                       ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
                       return stmt.Run();
                     }).ok())
        << sql;
  };
  run("INSERT INTO audit_events (id, time, account_id, user_id, api_key_id, method, "
      "target_type, target_id, outcome_code, outcome_message, request_id, operation_id, peer) "
      "VALUES ('e1', 1, '" + kAlice + "', 'u', 'k', 'm', 0, '', 0, '', '', '', 'p')");
  run("INSERT INTO datacenters (name, description, create_time) VALUES ('dc', '', 0)");
  run("INSERT INTO storage_nodes (id, datacenter, address, served_portals, state, "
      "last_heartbeat_time, capacity_bytes, free_bytes, create_time) "
      "VALUES ('n1', 'dc', 'a', '', 1, 1, 0, 0, 0)");
  for (int beat = 2; beat < 5; ++beat) {
    run(absl::StrCat("UPDATE storage_nodes SET last_heartbeat_time = ", beat));
    EXPECT_EQ(WalkIds(reader, alice), before);
  }
  run("UPDATE accounts SET name = 'renamed' WHERE id = '" + kBob + "'");
  EXPECT_EQ(WalkIds(reader, alice), before);
  // Every page of those walks answered from the memo.
  EXPECT_EQ(reader.list_memo_misses(), misses);
  EXPECT_GT(reader.list_memo_hits(), hits);

  // A share, a publish, a note and a tag each show on the next page.
  ASSERT_TRUE(writer
                  .MutateTemplate(bobs[3].id(),
                                  [&](TemplateTransaction& txn) { return txn.AddShare(kAlice, 2); })
                  .ok());
  EXPECT_EQ(WalkIds(reader, alice),
            (std::vector<std::string>{bobs[0].id(), bobs[1].id(), bobs[2].id(), bobs[3].id()}));
  EXPECT_GT(reader.list_memo_misses(), misses);
  ASSERT_TRUE(writer
                  .MutateTemplate(bobs[1].id(),
                                  [&](TemplateTransaction& txn) {
                                    txn.image_template().set_visibility(v1::VISIBILITY_PRIVATE);
                                    return absl::OkStatus();
                                  })
                  .ok());
  EXPECT_EQ(WalkIds(reader, alice),
            (std::vector<std::string>{bobs[0].id(), bobs[2].id(), bobs[3].id()}));
  ASSERT_TRUE(writer
                  .MutateTemplate(bobs[0].id(),
                                  [&](TemplateTransaction& txn) {
                                    txn.image_template().set_note("changed");
                                    txn.image_template().add_tags("fresh");
                                    return absl::OkStatus();
                                  })
                  .ok());
  auto page = reader.ListTemplates(alice);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_FALSE(page->empty());
  EXPECT_EQ((*page)[0].id(), bobs[0].id());
  EXPECT_EQ((*page)[0].note(), "changed");
  TemplateQuery tagged = alice;
  tagged.tag = "fresh";
  EXPECT_EQ(WalkIds(reader, tagged), (std::vector<std::string>{bobs[0].id()}));
  // A raw write to a template row that bypasses the store is seen too.
  run("UPDATE image_templates SET deprecated = 1 WHERE id = '" + bobs[2].id() + "'");
  EXPECT_EQ(WalkIds(reader, alice), (std::vector<std::string>{bobs[0].id(), bobs[3].id()}));
}

// The branches are disjoint by construction; if two ever yielded one id, the
// page would have an unfilled entry, which must be an error, not a null that
// the service dereferences.
TEST_F(SqliteTemplateStoreTest, DuplicateRowsOfOnePageAreAnInternalError) {
  v1::ImageTemplate t = Insert(kBob, "dup", 1);
  // Shares without their primary key, so that one share can be listed twice.
  ASSERT_TRUE(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
                   for (const char* sql :
                        {"DROP TABLE image_template_shares",
                         "CREATE TABLE image_template_shares (template_id TEXT, "
                         "account_id TEXT, create_time_us INTEGER)"}) {
                     ASSIGN_OR_RETURN(auto stmt, conn.Prepare(sql));
                     RETURN_IF_ERROR(stmt.Run());
                   }
                   for (int i = 0; i < 2; ++i) {
                     ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
                         "INSERT INTO image_template_shares VALUES (?1, ?2, 1)"));
                     stmt.Bind(1, t.id()).Bind(2, kAlice);
                     RETURN_IF_ERROR(stmt.Run());
                   }
                   return absl::OkStatus();
                 }).ok());
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  auto rows = store_->ListEncodedTemplates(alice);
  EXPECT_EQ(rows.status().code(), absl::StatusCode::kInternal) << rows.status();
}

TEST_F(SqliteTemplateStoreTest, TagFilterMatchesWholeTagsOnly) {
  v1::ImageTemplate a = MakeTemplate(kAlice, "a", 1);
  a.add_tags("web-prod");
  a.add_tags("x y");
  ASSERT_TRUE(store_->InsertTemplate(a).ok());
  v1::ImageTemplate b = MakeTemplate(kAlice, "b", 2);
  b.add_tags("prod");
  ASSERT_TRUE(store_->InsertTemplate(b).ok());
  TemplateQuery q;
  q.viewer_account_id = kAlice;
  q.tag = "prod";
  EXPECT_EQ(Names(q), std::vector<std::string>{"b"});
  q.tag = "web";
  EXPECT_TRUE(Names(q).empty());
  q.tag = "x y";
  EXPECT_EQ(Names(q), std::vector<std::string>{"a"});
  q.tag = std::string("web-prod\x1fx y");  // two tags are not one
  EXPECT_TRUE(Names(q).empty());
  // The separator of tag_list never enters a stored tag.
  v1::ImageTemplate bad = MakeTemplate(kAlice, "bad", 3);
  bad.add_tags(std::string("a\x1f" "b"));
  EXPECT_EQ(store_->InsertTemplate(bad).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SqliteTemplateStoreTest, NameContainsIgnoresCaseBeyondAscii) {
  Insert(kAlice, "\xc3\x84PFEL-Server", 1);           // ÄPFEL-Server
  Insert(kAlice, "Stra\xc3\x9f" "e-db", 2);            // Straße-db
  Insert(kAlice, "\xce\x94\xce\x95\xce\x9b\xce\xa4\xce\x91-web", 3);  // ΔΕΛΤΑ-web
  Insert(kAlice, "\xd0\x94\xd0\xbe\xd0\xbc", 4);       // Дом
  TemplateQuery q;
  q.viewer_account_id = kAlice;
  auto names = [&](const std::string& contains) {
    q.name_contains = contains;
    return Names(q);
  };
  EXPECT_EQ(names("\xc3\xa4pfel"), std::vector<std::string>{"\xc3\x84PFEL-Server"});  // äpfel
  EXPECT_EQ(names("\xc3\x84" "Pfel-SERVER"), std::vector<std::string>{"\xc3\x84PFEL-Server"});
  EXPECT_EQ(names("STRA\xe1\xba\x9e" "E"), std::vector<std::string>{"Stra\xc3\x9f" "e-db"});  // STRAẞE
  EXPECT_EQ(names("\xce\xb4\xce\xb5\xce\xbb\xcf\x84\xce\xb1"),                   // δελτα
            std::vector<std::string>{"\xce\x94\xce\x95\xce\x9b\xce\xa4\xce\x91-web"});
  EXPECT_EQ(names("\xd0\xb4\xd0\x9e\xd0\x9c"), std::vector<std::string>{"\xd0\x94\xd0\xbe\xd0\xbc"});
  EXPECT_TRUE(names("apfel").empty());  // ä is not a
  // A rename folds the new name.
  v1::ImageTemplate t = Insert(kAlice, "plain", 5);
  ASSERT_TRUE(store_->MutateTemplate(t.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_name("\xc3\x96L-Image");  // ÖL-Image
    return absl::OkStatus();
  }).ok());
  EXPECT_EQ(names("\xc3\xb6l-i"), std::vector<std::string>{"\xc3\x96L-Image"});
  EXPECT_TRUE(names("plain").empty());
}

// What a list must return, computed from the templates' records without SQL:
// the reference the list pages are checked against.
struct ReferenceModel {
  std::vector<v1::ImageTemplate> templates;
  std::map<std::string, std::set<std::string>> shares;  // template id -> accounts

  static std::string Lower(const std::string& s) {
    std::string out = s;
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  }

  std::vector<std::string> Ids(const TemplateQuery& q) const {
    std::vector<const v1::ImageTemplate*> rows;
    for (const auto& t : templates) {
      const bool own = t.owner_account_id() == q.viewer_account_id;
      if (!q.all_accounts && !own) {
        const bool shared = t.visibility() != v1::VISIBILITY_PUBLIC && shares.count(t.id()) &&
                            shares.at(t.id()).count(q.viewer_account_id);
        if (t.visibility() != v1::VISIBILITY_PUBLIC && !shared) continue;
        if (t.disabled() || t.status() == v1::IMAGE_TEMPLATE_STATUS_DELETING ||
            t.status() == v1::IMAGE_TEMPLATE_STATUS_DELETED) {
          continue;
        }
      }
      if (!q.include_deprecated && t.deprecated() && !own) continue;
      if (q.status == v1::IMAGE_TEMPLATE_STATUS_UNSPECIFIED
              ? t.status() == v1::IMAGE_TEMPLATE_STATUS_DELETED
              : t.status() != q.status) {
        continue;
      }
      if (!q.name_contains.empty() &&
          Lower(t.name()).find(Lower(q.name_contains)) == std::string::npos) {
        continue;
      }
      if (!q.owner_account_id.empty() && t.owner_account_id() != q.owner_account_id) continue;
      if (q.visibility != v1::VISIBILITY_UNSPECIFIED && t.visibility() != q.visibility) continue;
      if (!q.tag.empty() &&
          std::find(t.tags().begin(), t.tags().end(), q.tag) == t.tags().end()) {
        continue;
      }
      rows.push_back(&t);
    }
    std::sort(rows.begin(), rows.end(), [&](const auto* a, const auto* b) {
      auto key = [&](const v1::ImageTemplate* t) {
        return std::make_tuple(q.order == TemplateOrder::kName ? t->name() : std::string(),
                               q.order == TemplateOrder::kName ? 0 : FromTimestamp(t->create_time()),
                               t->id());
      };
      return q.descending ? key(b) < key(a) : key(a) < key(b);
    });
    std::vector<std::string> ids;
    for (const auto* t : rows) ids.push_back(t->id());
    return ids;
  }
};

// Every viewer, filter, order and page size over a varied set of templates
// (the branches, the list memo and the cursor together) against the
// reference; then again after writes that move rows in and out of the
// memoized branches.
TEST_F(SqliteTemplateStoreTest, ListPagesMatchTheReferenceForEveryViewerAndFilter) {
  const std::string kDave = "00000000-0000-4000-8000-00000000000d";
  ASSERT_TRUE(AddTestAccount(*db_, kDave).ok());
  const std::vector<std::string> accounts = {kAlice, kBob, kCarol, kDave};
  ReferenceModel model;
  std::mt19937 rng(7);
  auto pick = [&](int n) { return static_cast<int>(rng() % n); };
  const char* kNames[] = {"Web", "db", "web-DB", "cache", "WEBby"};
  const char* kTags[] = {"a", "b", "gpu"};
  const v1::ImageTemplateStatus kStatuses[] = {
      v1::IMAGE_TEMPLATE_STATUS_ACTIVE, v1::IMAGE_TEMPLATE_STATUS_ACTIVE,
      v1::IMAGE_TEMPLATE_STATUS_CREATING, v1::IMAGE_TEMPLATE_STATUS_FAILED,
      v1::IMAGE_TEMPLATE_STATUS_DELETING, v1::IMAGE_TEMPLATE_STATUS_DELETED};
  for (int i = 0; i < 90; ++i) {
    // Create times repeat (ties broken by id) and names repeat across owners.
    v1::ImageTemplate t = MakeTemplate(accounts[pick(4)],
                                       absl::StrCat(kNames[pick(5)], "-", i % 30), 1000 + pick(20));
    t.set_visibility(static_cast<v1::Visibility>(1 + pick(3)));
    t.set_status(kStatuses[pick(6)]);
    t.set_deprecated(pick(4) == 0);
    t.set_disabled(pick(6) == 0);
    for (const char* tag : kTags) {
      if (pick(2) == 0) t.add_tags(tag);
    }
    if (!store_->InsertTemplate(t).ok()) continue;  // a name taken by the same owner
    for (const auto& account : accounts) {
      if (account != t.owner_account_id() && pick(3) == 0) {
        ASSERT_TRUE(store_->MutateTemplate(t.id(), [&](TemplateTransaction& txn) {
                             return txn.AddShare(account, 1);
                           }).ok());
        model.shares[t.id()].insert(account);
      }
    }
    model.templates.push_back(t);
  }
  ASSERT_GT(model.templates.size(), 60u);

  std::vector<TemplateQuery> filters(9);
  filters[1].tag = "a";
  filters[2].name_contains = "WEB";
  filters[3].tag = "gpu";
  filters[3].name_contains = "db";
  filters[4].include_deprecated = true;
  filters[5].status = v1::IMAGE_TEMPLATE_STATUS_DELETING;
  filters[6].owner_account_id = kBob;
  filters[7].visibility = v1::VISIBILITY_PUBLIC;
  filters[8].status = v1::IMAGE_TEMPLATE_STATUS_ACTIVE;
  filters[8].include_deprecated = true;
  auto check_all = [&](const std::string& when) {
    int walks = 0;
    for (const auto& viewer : accounts) {
      for (const TemplateQuery& filter : filters) {
        for (TemplateOrder order : {TemplateOrder::kCreateTime, TemplateOrder::kName}) {
          for (bool descending : {false, true}) {
            for (int limit : {3, 100}) {
              TemplateQuery q = filter;
              q.viewer_account_id = viewer;
              q.order = order;
              q.descending = descending;
              q.limit = limit;
              ASSERT_EQ(WalkIds(*store_, q), model.Ids(q))
                  << when << ": viewer " << viewer << " tag " << q.tag << " name "
                  << q.name_contains << " order " << static_cast<int>(order) << " descending "
                  << descending << " limit " << limit;
              ++walks;
            }
          }
        }
      }
    }
    EXPECT_EQ(walks, 4 * 9 * 2 * 2 * 2);
  };
  // Also through a store with the default public-memo threshold over the
  // same database: pages before and after its memo is built.
  SqliteTemplateStore default_store(db_.get());
  auto check_default = [&](const std::string& when) {
    for (const auto& viewer : accounts) {
      for (int round = 0; round < 2; ++round) {
        for (const TemplateQuery& filter : filters) {
          TemplateQuery q = filter;
          q.viewer_account_id = viewer;
          q.limit = 3;
          ASSERT_EQ(WalkIds(default_store, q), model.Ids(q)) << when << ": viewer " << viewer;
        }
      }
    }
  };
  const int64_t hits0 = store_->list_memo_hits();
  check_all("as inserted");
  check_default("as inserted");
  // The walks of one query reused its memoized rows.
  EXPECT_GT(store_->list_memo_hits() - hits0, 100);

  // Writes that move rows across the memoized branches: publish, unpublish,
  // deprecate, disable, rename, delete, unshare.
  for (int i = 0; i < 30; ++i) {
    v1::ImageTemplate& t = model.templates[pick(static_cast<int>(model.templates.size()))];
    const int what = pick(6);
    auto r = store_->MutateTemplate(t.id(), [&](TemplateTransaction& txn) -> absl::Status {
      v1::ImageTemplate& m = txn.image_template();
      switch (what) {
        case 0:
          m.set_visibility(m.visibility() == v1::VISIBILITY_PUBLIC ? v1::VISIBILITY_SHARED
                                                                  : v1::VISIBILITY_PUBLIC);
          break;
        case 1:
          m.set_deprecated(!m.deprecated());
          break;
        case 2:
          m.set_disabled(!m.disabled());
          break;
        case 3:
          m.set_name(absl::StrCat("renamed-web-", i));
          break;
        case 4:
          m.set_status(m.status() == v1::IMAGE_TEMPLATE_STATUS_ACTIVE
                           ? v1::IMAGE_TEMPLATE_STATUS_DELETING
                           : v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
          break;
        default:
          RETURN_IF_ERROR(txn.RemoveAllShares());
          break;
      }
      return absl::OkStatus();
    });
    ASSERT_TRUE(r.ok()) << r.status();
    if (what == 5) model.shares.erase(t.id());
    const std::string id = t.id();
    t = *r;
    ASSERT_EQ(t.id(), id);
    if (i % 10 == 9) {
      check_all(absl::StrCat("after ", i + 1, " writes"));
      check_default(absl::StrCat("after ", i + 1, " writes"));
    }
  }
}

// A write to a public template (the public memo serves every viewer) shows on
// the next page of every viewer, the owner's own public templates come from
// the owner's branch once only, and another account's deprecated public
// template is hidden from the default list but not from its owner.
TEST_F(SqliteTemplateStoreTest, PublicMemoFollowsEveryWrite) {
  v1::ImageTemplate b1 = Insert(kBob, "b1", 1), b2 = Insert(kBob, "b2", 2),
                    c1 = Insert(kCarol, "c1", 3);
  auto set = [&](const v1::ImageTemplate& t, auto change) {
    auto r = store_->MutateTemplate(t.id(), [&](TemplateTransaction& txn) {
      change(txn.image_template());
      return absl::OkStatus();
    });
    ASSERT_TRUE(r.ok()) << r.status();
  };
  auto publish = [](v1::ImageTemplate& m) { m.set_visibility(v1::VISIBILITY_PUBLIC); };
  TemplateQuery alice, bob;
  alice.viewer_account_id = kAlice;
  alice.limit = 1;
  bob.viewer_account_id = kBob;
  bob.limit = 1;
  EXPECT_TRUE(WalkIds(*store_, alice).empty());
  set(b1, publish);
  set(c1, publish);
  const int64_t hits0 = store_->list_memo_hits();
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b1.id(), c1.id()}));
  EXPECT_GE(store_->list_memo_hits() - hits0, 2);
  EXPECT_EQ(WalkIds(*store_, bob), (std::vector<std::string>{b1.id(), b2.id(), c1.id()}));
  set(b1, [](v1::ImageTemplate& m) { m.set_deprecated(true); });
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{c1.id()}));
  EXPECT_EQ(WalkIds(*store_, bob), (std::vector<std::string>{b1.id(), b2.id(), c1.id()}));
  alice.include_deprecated = true;
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b1.id(), c1.id()}));
  set(c1, [](v1::ImageTemplate& m) { m.set_disabled(true); });
  EXPECT_EQ(WalkIds(*store_, alice), (std::vector<std::string>{b1.id()}));
  set(b1, [](v1::ImageTemplate& m) { m.set_visibility(v1::VISIBILITY_PRIVATE); });
  EXPECT_TRUE(WalkIds(*store_, alice).empty());
  set(b2, publish);
  set(b2, [](v1::ImageTemplate& m) { m.set_name("a2"); });
  alice.order = TemplateOrder::kName;
  alice.limit = 10;
  EXPECT_EQ(Names(alice), (std::vector<std::string>{"a2"}));
  set(b2, [](v1::ImageTemplate& m) { m.set_status(v1::IMAGE_TEMPLATE_STATUS_DELETING); });
  EXPECT_TRUE(Names(alice).empty());
  v1::ImageTemplate c2 = MakeTemplate(kCarol, "c2", 5);
  c2.set_visibility(v1::VISIBILITY_PUBLIC);
  ASSERT_TRUE(store_->InsertTemplate(c2).ok());
  EXPECT_EQ(Names(alice), (std::vector<std::string>{"c2"}));
  // Memoized rows hold the template they resolved to; a note-only update
  // (same place in every order) must still show the new content.
  auto note = [&]() {
    auto rows = store_->ListTemplates(alice);
    EXPECT_TRUE(rows.ok() && rows->size() == 1u);
    return rows.ok() && rows->size() == 1u ? (*rows)[0].note() : std::string("?");
  };
  EXPECT_EQ(note(), "");
  EXPECT_EQ(note(), "");
  set(c2, [](v1::ImageTemplate& m) { m.set_note("new note"); });
  EXPECT_EQ(note(), "new note");
}

// The public memo costs a read of every public row matching the query; a
// connection builds it only once list pages outnumber commits, and pages
// are right either way.
TEST_F(SqliteTemplateStoreTest, PublicMemoIsBuiltOnlyWhereCommitsAreRarerThanPages) {
  SqliteTemplateStore store(db_.get(), SqliteTemplateStore::kDefaultCacheEntries,
                            /*public_memo_after_pages=*/3);
  std::vector<std::string> want;
  auto add_public = [&](int i) {
    v1::ImageTemplate t = MakeTemplate(kCarol, absl::StrCat("c", i), i);
    t.set_visibility(v1::VISIBILITY_PUBLIC);
    ASSERT_TRUE(store_->InsertTemplate(t).ok());
    want.push_back(t.id());
  };
  TemplateQuery alice;
  alice.viewer_account_id = kAlice;
  alice.limit = 10;
  auto page = [&]() {
    auto rows = store.ListTemplates(alice);
    ASSERT_TRUE(rows.ok()) << rows.status();
    std::vector<std::string> ids;
    for (const auto& t : *rows) ids.push_back(t.id());
    EXPECT_EQ(ids, want);
  };
  add_public(1);
  const int64_t m0 = store.list_memo_misses(), h0 = store.list_memo_hits();
  // Pages 1-3 after a commit: the shared rows are memoized (one miss), the
  // public ones read page by page.
  for (int i = 0; i < 3; ++i) page();
  EXPECT_EQ(store.list_memo_misses() - m0, 1);
  EXPECT_EQ(store.list_memo_hits() - h0, 2);
  // Page 4 builds the public memo; page 5 uses it.
  page();
  EXPECT_EQ(store.list_memo_misses() - m0, 2);
  page();
  EXPECT_EQ(store.list_memo_misses() - m0, 2);
  EXPECT_EQ(store.list_memo_hits() - h0, 3 + 2);
  // Five pages came between the last two commits: the first page after the
  // next one builds it at once.
  add_public(2);
  page();
  EXPECT_EQ(store.list_memo_misses() - m0, 4);
  // One page per commit: no more public builds (the period before each
  // had one page), only the shared branch's reads.
  for (int i = 3; i < 8; ++i) {
    add_public(i);
    page();
    EXPECT_EQ(store.list_memo_misses() - m0, 4 + (i - 2));
  }
}

// More public templates than the memo keeps per query: the public branch is
// read page by page from its index instead, with the same pages.
TEST_F(SqliteTemplateStoreTest, PublicRowsPastTheMemoBoundArePagedFromTheIndex) {
  constexpr int kPublic = 4200;  // > ListMemo::kMaxRowsPerQuery
  std::vector<std::string> want;
  ASSERT_TRUE(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
                   for (int i = 0; i < kPublic; ++i) {
                     ASSIGN_OR_RETURN(
                         auto s, conn.Prepare("INSERT INTO image_templates (id, "
                                              "owner_account_id, name, note, visibility, status, "
                                              "source_server_id, configuration, deprecated, "
                                              "disabled, delete_protected, create_operation_id, "
                                              "create_time_us, update_time_us, tag_list, "
                                              "name_folded, version) VALUES (?1, ?2, ?3, '', 3, "
                                              "2, '', x'', 0, 0, 0, '', ?4, ?4, '', ?3, 1)"));
                     const std::string id = NewUuid();
                     s.Bind(1, id).Bind(2, i % 2 ? kBob : kCarol);
                     s.Bind(3, absl::StrCat("p", i)).Bind(4, static_cast<int64_t>(i / 3));
                     RETURN_IF_ERROR(s.Run());
                     if (i % 2 == 0) want.push_back(id);  // Carol's
                   }
                   return absl::OkStatus();
                 }).ok());
  // Bob sees Carol's (from the public branch) and his own (own branch).
  TemplateQuery bob;
  bob.viewer_account_id = kBob;
  bob.limit = 500;
  bob.owner_account_id = kCarol;
  const int64_t misses0 = store_->list_memo_misses();
  std::vector<std::string> got = WalkIds(*store_, bob);
  // One read found too many rows; later pages knew that without reading.
  EXPECT_EQ(store_->list_memo_misses() - misses0, 2);  // shared branch, public branch
  std::sort(want.begin(), want.end());
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, want);
  bob.owner_account_id.clear();
  bob.descending = true;
  EXPECT_EQ(WalkIds(*store_, bob).size(), static_cast<size_t>(kPublic));
}

}  // namespace
}  // namespace controlplane
