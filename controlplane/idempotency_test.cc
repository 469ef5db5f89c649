// request_id bookkeeping: entries past the 24-hour window are deleted as new
// ones are written, so the table does not keep every request_id ever sent.
#include "controlplane/idempotency.h"

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

constexpr int64_t kHourMicros = int64_t{3600} * 1000000;

class IdempotencyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenTemplateTestDatabase();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
  }

  // `count` finished entries written `age_micros` ago.
  void AddEntries(const std::string& prefix, int count, int64_t age_micros) {
    ASSERT_TRUE(db_->Transaction([&](SqliteConnection& conn) -> absl::Status {
                     for (int i = 0; i < count; ++i) {
                       ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
                           "INSERT INTO idempotent_requests (account_id, request_id, "
                           "fingerprint, response, create_time, pending) "
                           "VALUES ('acct', ?1, 'f', 'r', ?2, 0)"));
                       RETURN_IF_ERROR(stmt.Bind(1, absl::StrCat(prefix, i))
                                           .Bind(2, NowMicros() - age_micros)
                                           .Run());
                     }
                     return absl::OkStatus();
                   }).ok());
  }

  int64_t Count(const std::string& prefix) {
    int64_t n = -1;
    EXPECT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                     ASSIGN_OR_RETURN(auto stmt, conn.Prepare(
                         "SELECT COUNT(*) FROM idempotent_requests WHERE request_id LIKE ?1"));
                     stmt.Bind(1, prefix + "%");
                     ASSIGN_OR_RETURN(bool row, stmt.Step());
                     if (row) n = stmt.ColumnInt(0);
                     return absl::OkStatus();
                   }).ok());
    return n;
  }

  std::unique_ptr<SqliteDatabase> db_;
};

TEST_F(IdempotencyTest, ExpiredEntriesAreDeletedAsNewOnesAreWritten) {
  AddEntries("old-", 100, 25 * kHourMicros);
  AddEntries("live-", 10, 23 * kHourMicros);
  auto remember = [&](const std::string& id) {
    return db_->Transaction([&](SqliteConnection& conn) {
      return RememberRequest(conn, "acct", id, "fp", "response");
    });
  };
  // Writes without a request_id write nothing and delete nothing.
  ASSERT_TRUE(remember("").ok());
  EXPECT_EQ(Count("old-"), 100);
  // Each write deletes a bounded batch, so no single call pays for a backlog.
  ASSERT_TRUE(remember("new-1").ok());
  EXPECT_EQ(Count("old-"), 36);
  ASSERT_TRUE(db_->Transaction([&](SqliteConnection& conn) {
                   return ClaimRequest(conn, "acct", "new-2", "fp", "holder").status();
                 }).ok());
  EXPECT_EQ(Count("old-"), 0);
  // Entries still inside the window, and the new ones, stay answerable.
  EXPECT_EQ(Count("live-"), 10);
  EXPECT_EQ(Count("new-"), 2);
  ASSERT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                   ASSIGN_OR_RETURN(auto found, FindRequest(conn, "acct", "live-3", "f"));
                   EXPECT_EQ(found, std::optional<std::string>("r"));
                   return absl::OkStatus();
                 }).ok());
}

}  // namespace
}  // namespace controlplane
