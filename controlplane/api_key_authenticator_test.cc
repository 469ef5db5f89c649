// ApiKeyAuthenticator's throttle of unknown keys, against a real database.
#include "controlplane/api_key_authenticator.h"

#include <string>

#include "controlplane/testing/bootstrapped_database.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

TEST(ApiKeyAuthenticatorTest, UnknownKeysAreThrottledPerAddress) {
  absl::StatusOr<BootstrappedDatabase> db = OpenBootstrappedDatabase("auth_throttle");
  ASSERT_TRUE(db.ok()) << db.status();
  const std::string good = db->operator_header;

  absl::Time now = absl::FromUnixSeconds(1000);
  FailedAuthLimiter::Options options;
  options.burst = 3;
  options.per_second = 1;
  ApiKeyAuthenticator auth(db->db.get(), options, [&] { return now; });
  const std::string attacker = "ipv4:192.0.2.7:40000";
  const std::string attacker_other_port = "ipv4:192.0.2.7:40001";
  const std::string neighbour = "ipv4:192.0.2.8:40000";
  // Well-formed keys the table does not have.
  const std::string guess =
      "Bearer itk_00000000-0000-4000-8000-000000000001_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

  // The good key, proven once from the attacker's address, is cached.
  ASSERT_TRUE(auth.AuthenticateHeader(good, attacker).ok());
  for (int i = 0; i < 3; ++i) {
    absl::StatusOr<Caller> refused = auth.AuthenticateHeader(guess, attacker);
    EXPECT_EQ(refused.status().code(), absl::StatusCode::kUnauthenticated);
    EXPECT_NE(refused.status().message().find("unknown API key"), absl::string_view::npos);
  }
  // The fourth guess, from any port of that address, is refused unread.
  absl::StatusOr<Caller> throttled = auth.AuthenticateHeader(guess, attacker_other_port);
  EXPECT_EQ(throttled.status().code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(throttled.status().message().find("too many failed authentications from "
                                              "ipv4:192.0.2.7"),
            absl::string_view::npos)
      << throttled.status();
  // A key that authenticated before still works from there; another address
  // is not throttled at all.
  EXPECT_TRUE(auth.AuthenticateHeader(good, attacker).ok());
  EXPECT_NE(auth.AuthenticateHeader(guess, neighbour).status().message().find("unknown API key"),
            absl::string_view::npos);
  // No peer (internal callers): never throttled.
  EXPECT_NE(auth.AuthenticateHeader(guess).status().message().find("unknown API key"),
            absl::string_view::npos);
  // After a second, one more try is let through to the table.
  now += absl::Seconds(1);
  EXPECT_NE(auth.AuthenticateHeader(guess, attacker).status().message().find("unknown API key"),
            absl::string_view::npos);
  EXPECT_NE(auth.AuthenticateHeader(guess, attacker).status().message().find("too many"),
            absl::string_view::npos);

  // An identity change (a new key) makes the good key's cache entry stale:
  // it is read again, still not throttled, while guesses still are.
  ASSERT_TRUE(db->db.get()
                  ->Transaction([&](SqliteConnection& conn) {
                    auto stmt = conn.Prepare("SELECT id FROM users LIMIT 1");
                    if (!stmt.ok()) return stmt.status();
                    auto row = stmt->Step();
                    if (!row.ok()) return row.status();
                    return InsertApiKey(conn, GenerateApiKey(), stmt->ColumnText(0), "new", 1);
                  })
                  .ok());
  const int64_t hits = auth.cache_hits();
  EXPECT_TRUE(auth.AuthenticateHeader(good, attacker).ok());
  EXPECT_EQ(auth.cache_hits(), hits);  // read from the table
  EXPECT_TRUE(auth.AuthenticateHeader(good, attacker).ok());
  EXPECT_EQ(auth.cache_hits(), hits + 1);
  EXPECT_NE(auth.AuthenticateHeader(guess, attacker).status().message().find("too many"),
            absl::string_view::npos);
}

TEST(ApiKeyAuthenticatorTest, MissingAndMalformedKeysAreSummarizedButThrottleNoKey) {
  absl::StatusOr<BootstrappedDatabase> db = OpenBootstrappedDatabase("auth_malformed");
  ASSERT_TRUE(db.ok()) << db.status();
  const std::string good = db->operator_header;
  absl::Time now = absl::FromUnixSeconds(1000);
  FailedAuthLimiter::Options options;
  options.burst = 2;
  options.per_second = 1;
  ApiKeyAuthenticator auth(db->db.get(), options, [&] { return now; });
  const std::string peer = "ipv4:192.0.2.9:1234";
  absl::Status first = auth.AuthenticateHeader("Bearer nope", peer).status();
  EXPECT_NE(first.message().find("malformed API key"), absl::string_view::npos) << first;
  EXPECT_FALSE(ThrottledAddress(first).has_value());
  absl::Status second = auth.AuthenticateHeader("Basic abc", peer).status();
  EXPECT_NE(second.message().find("is not \"Bearer <api key>\""), absl::string_view::npos)
      << second;
  EXPECT_FALSE(ThrottledAddress(second).has_value());
  // Past the burst of 2 (200 calls from a shared address: no key, or a
  // malformed one) each refusal still says why and is marked for the audit
  // summary, but nothing is throttled: they read nothing and guess nothing.
  for (int i = 0; i < 200; ++i) {
    absl::Status refused = auth.AuthenticateHeader(i % 2 ? "Bearer nope" : "", peer).status();
    ASSERT_EQ(refused.code(), absl::StatusCode::kUnauthenticated) << i;
    EXPECT_EQ(refused.message().find("too many"), absl::string_view::npos) << refused;
    EXPECT_EQ(ThrottledAddress(refused), "ipv4:192.0.2.9") << i;
  }
  // A key never used before (none is proven right after a restart) works
  // from that address, and a guess from there is still looked up.
  EXPECT_TRUE(auth.AuthenticateHeader(good, peer).ok());
  absl::Status guess =
      auth.AuthenticateHeader("Bearer itk_00000000-0000-4000-8000-000000000001_"
                              "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                              peer)
          .status();
  EXPECT_NE(guess.message().find("unknown API key"), absl::string_view::npos) << guess;
  // Still flooding: the guess is marked too (one audit budget per address).
  EXPECT_EQ(ThrottledAddress(guess), "ipv4:192.0.2.9");
  // Quiet until its burst is back: no longer marked.
  now += absl::Seconds(3);
  absl::Status later = auth.AuthenticateHeader("Bearer nope", peer).status();
  EXPECT_NE(later.message().find("malformed API key"), absl::string_view::npos) << later;
  EXPECT_FALSE(ThrottledAddress(later).has_value());
}

// A revoked key is no guess: refused from memory after the first read, its
// flood summarized like keyless calls, and no other key of its address pays.
TEST(ApiKeyAuthenticatorTest, RevokedKeysAreRefusedFromMemoryAndThrottleNoKey) {
  absl::StatusOr<BootstrappedDatabase> db = OpenBootstrappedDatabase("auth_revoked");
  ASSERT_TRUE(db.ok()) << db.status();
  const GeneratedApiKey key = GenerateApiKey();
  auto write = [&](const std::string& sql) {
    return db->db->Transaction([&](SqliteConnection& conn) -> absl::Status {
      auto stmt = conn.Prepare(sql);
      if (!stmt.ok()) return stmt.status();
      stmt->Bind(1, key.id);
      return stmt->Run();
    });
  };
  ASSERT_TRUE(db->db
                  ->Transaction([&](SqliteConnection& conn) -> absl::Status {
                    auto stmt = conn.Prepare("SELECT id FROM users LIMIT 1");
                    if (!stmt.ok()) return stmt.status();
                    auto row = stmt->Step();
                    if (!row.ok()) return row.status();
                    return InsertApiKey(conn, key, stmt->ColumnText(0), "soon revoked", 1);
                  })
                  .ok());
  absl::Time now = absl::FromUnixSeconds(1000);
  FailedAuthLimiter::Options options;
  options.burst = 3;
  options.per_second = 1;
  ApiKeyAuthenticator auth(db->db.get(), options, [&] { return now; });
  const std::string peer = "ipv4:192.0.2.10:5000";
  const std::string header = "Bearer " + key.secret;
  ASSERT_TRUE(auth.AuthenticateHeader(header, peer).ok());
  ASSERT_TRUE(write("UPDATE api_keys SET revoke_time = 2 WHERE id = ?1").ok());

  const int64_t hits = auth.cache_hits();
  absl::Status first = auth.AuthenticateHeader(header, peer).status();
  EXPECT_EQ(first.code(), absl::StatusCode::kUnauthenticated);
  EXPECT_NE(first.message().find("API key revoked"), absl::string_view::npos) << first;
  EXPECT_EQ(auth.cache_hits(), hits);  // read from the table
  for (int i = 1; i < 50; ++i) {
    absl::Status again = auth.AuthenticateHeader(header, peer).status();
    ASSERT_NE(again.message().find("API key revoked"), absl::string_view::npos) << again;
    // Past the burst of 3 the refusals are marked for the audit summary.
    EXPECT_EQ(ThrottledAddress(again).has_value(), i >= 3) << i;
  }
  EXPECT_EQ(auth.cache_hits(), hits + 49);  // never read again
  // Even with the row gone, the answer stays "revoked" (it cannot change).
  ASSERT_TRUE(write("DELETE FROM api_keys WHERE id = ?1").ok());
  EXPECT_NE(auth.AuthenticateHeader(header, peer).status().message().find("API key revoked"),
            absl::string_view::npos);
  // A wrong secret under the revoked key's id is still a guess, read and told "unknown".
  std::string wrong = header;
  wrong.back() = wrong.back() == 'A' ? 'B' : 'A';
  EXPECT_NE(auth.AuthenticateHeader(wrong, peer).status().message().find("unknown API key"),
            absl::string_view::npos);
  // The flood spent no guessing budget: a new good key from there works.
  EXPECT_TRUE(auth.AuthenticateHeader(db->operator_header, peer).ok());
}

}  // namespace
}  // namespace controlplane
