// What SqliteTemplateStore's tests share: three accounts, a template record
// builder and a fixture with a store over an in-memory database.
#ifndef CONTROLPLANE_TESTING_SQLITE_TEMPLATE_STORE_FIXTURE_H_
#define CONTROLPLANE_TESTING_SQLITE_TEMPLATE_STORE_FIXTURE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "controlplane/ids.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_template_store.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {

inline const std::string kAlice = "00000000-0000-4000-8000-00000000000a";
inline const std::string kBob = "00000000-0000-4000-8000-00000000000b";
inline const std::string kCarol = "00000000-0000-4000-8000-00000000000c";

// An ACTIVE private template of `owner` created (and updated) at
// `create_time_us`, with one 1 GiB boot disk; a fresh id.
inline imagetemplates::v1::ImageTemplate MakeTemplate(const std::string& owner,
                                                      const std::string& name,
                                                      int64_t create_time_us) {
  imagetemplates::v1::ImageTemplate t;
  t.set_id(NewUuid());
  t.set_owner_account_id(owner);
  t.set_name(name);
  t.set_visibility(imagetemplates::v1::VISIBILITY_PRIVATE);
  t.set_status(imagetemplates::v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
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

// A store over an in-memory database with accounts kAlice, kBob and kCarol.
class SqliteTemplateStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenTemplateTestDatabase();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    for (const auto& id : {kAlice, kBob, kCarol}) ASSERT_TRUE(AddTestAccount(*db_, id).ok());
    // The public memo from the first page on, so that every list test
    // exercises it (PublicMemoIsBuiltOnlyWhereCommitsAreRarerThanPages
    // checks the default).
    store_ = std::make_unique<SqliteTemplateStore>(
        db_.get(), SqliteTemplateStore::kDefaultCacheEntries, /*public_memo_after_pages=*/0);
  }

  imagetemplates::v1::ImageTemplate Insert(const std::string& owner, const std::string& name,
                                           int64_t time) {
    imagetemplates::v1::ImageTemplate t = MakeTemplate(owner, name, time);
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

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_SQLITE_TEMPLATE_STORE_FIXTURE_H_
