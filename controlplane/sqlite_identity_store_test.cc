// IdentityStore rules, the authenticator, bootstrap and the audit log, against
// a real SQLite file with the real migrations.
#include "controlplane/sqlite_identity_store.h"

#include <sys/stat.h>

#include <fstream>
#include <set>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "controlplane/api_key_authenticator.h"
#include "controlplane/bootstrap.h"
#include "controlplane/ids.h"
#include "controlplane/migrations.h"
#include "controlplane/sqlite_audit_log.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;

std::string TempDir() {
  const char* dir = getenv("TEST_TMPDIR");
  return dir ? dir : "/tmp";
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::string s;
  std::getline(in, s);
  return s;
}

class IdentityStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int n = 0;
    std::string base = absl::StrCat(TempDir(), "/identity", ++n, "_", getpid());
    key_file_ = base + ".key";
    auto db = SqliteDatabase::Open(base + ".db", Migrations());
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    auto boot = Bootstrap(db_.get(), key_file_);
    ASSERT_TRUE(boot.ok()) << boot.status();
    ASSERT_TRUE(boot->created);
    store_ = std::make_unique<SqliteIdentityStore>(db_.get());
    auth_ = std::make_unique<ApiKeyAuthenticator>(db_.get());
    auto op = auth_->AuthenticateHeader("Bearer " + ReadFile(key_file_));
    ASSERT_TRUE(op.ok()) << op.status();
    op_ = *op;
    ASSERT_TRUE(op_.is_operator);
  }

  Caller CallerFor(const std::string& user_id) {
    Caller caller;
    EXPECT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                     ASSIGN_OR_RETURN(caller, LoadCaller(conn, user_id));
                     return absl::OkStatus();
                   }).ok());
    return caller;
  }

  std::string NewAccount(const std::string& name) {
    v1::CreateAccountRequest request;
    request.set_name(name);
    auto response = store_->CreateAccount(op_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->account().id() : "";
  }

  std::string NewUser(const Caller& as, const std::string& account, const std::string& name,
                      std::vector<v1::Permission> permissions) {
    v1::CreateUserRequest request;
    request.set_account_id(account);
    request.set_username(name);
    for (auto p : permissions) request.add_permissions(p);
    auto response = store_->CreateUser(as, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? response->user().id() : "";
  }

  std::string key_file_;
  std::unique_ptr<SqliteDatabase> db_;
  std::unique_ptr<SqliteIdentityStore> store_;
  std::unique_ptr<ApiKeyAuthenticator> auth_;
  Caller op_;
};

TEST_F(IdentityStoreTest, BootstrapWritesKeyOnceWithMode0600) {
  struct stat st;
  ASSERT_EQ(stat(key_file_.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600);
  std::string key = ReadFile(key_file_);
  auto again = Bootstrap(db_.get(), key_file_);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->created);
  EXPECT_EQ(ReadFile(key_file_), key);
  // An empty database whose key file exists refuses instead of overwriting.
  auto fresh = SqliteDatabase::Open(":memory:", Migrations());
  ASSERT_TRUE(fresh.ok());
  EXPECT_EQ(Bootstrap(fresh->get(), key_file_).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(ReadFile(key_file_), key);
}

TEST_F(IdentityStoreTest, AuthenticatorRejectsMissingMalformedUnknownAndRevokedKeys) {
  for (const std::string& header :
       {std::string(""), std::string("Basic x"), std::string("Bearer "),
        std::string("Bearer itk_not-a-key"),
        "Bearer itk_00000000-0000-4000-8000-000000000000_" + std::string(43, 'A')}) {
    EXPECT_EQ(auth_->AuthenticateHeader(header).status().code(),
              absl::StatusCode::kUnauthenticated)
        << header;
  }
  // Right id, wrong secret.
  std::string key = ReadFile(key_file_);
  std::string forged = key;
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(auth_->AuthenticateHeader("Bearer " + forged).status().code(),
            absl::StatusCode::kUnauthenticated);

  v1::CreateApiKeyRequest create;
  create.set_description("ci");
  auto created = store_->CreateApiKey(op_, create);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_GE(created->secret().size(), 4 + 36 + 1 + 43u);
  ASSERT_TRUE(auth_->AuthenticateHeader("Bearer " + created->secret()).ok());
  v1::RevokeApiKeyRequest revoke;
  revoke.set_id(created->api_key().id());
  auto revoked = store_->RevokeApiKey(op_, revoke);
  ASSERT_TRUE(revoked.ok()) << revoked.status();
  EXPECT_TRUE(revoked->api_key().revoked());
  EXPECT_EQ(auth_->AuthenticateHeader("Bearer " + created->secret()).status().code(),
            absl::StatusCode::kUnauthenticated);
  // Revoking again is a no-op.
  EXPECT_TRUE(store_->RevokeApiKey(op_, revoke).ok());
}

TEST_F(IdentityStoreTest, CachedCallerFollowsRevocationPermissionsAndDeletionAtOnce) {
  std::string account = NewAccount("cache");
  std::string user = NewUser(op_, account, "cached", {v1::PERMISSION_SERVER_VIEW});
  v1::CreateApiKeyRequest create;
  create.set_user_id(user);
  auto created = store_->CreateApiKey(op_, create);
  ASSERT_TRUE(created.ok()) << created.status();
  const std::string header = "Bearer " + created->secret();
  ASSERT_TRUE(auth_->AuthenticateHeader(header).ok());
  const int64_t hits = auth_->cache_hits();
  auto again = auth_->AuthenticateHeader(header);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(auth_->cache_hits(), hits + 1);  // served from the cache
  EXPECT_EQ(again->user_id, user);
  EXPECT_EQ(again->api_key_id, created->api_key().id());
  EXPECT_TRUE(again->Has(v1::PERMISSION_SERVER_VIEW));
  EXPECT_FALSE(again->Has(v1::PERMISSION_IMAGE_TEMPLATE_MANAGE));
  // A wrong secret with the cached key's id is still refused.
  std::string forged = header;
  forged.back() = forged.back() == 'A' ? 'B' : 'A';
  EXPECT_EQ(auth_->AuthenticateHeader(forged).status().code(),
            absl::StatusCode::kUnauthenticated);

  // A permission change shows on the very next call.
  v1::SetUserPermissionsRequest permissions;
  permissions.set_user_id(user);
  permissions.add_permissions(v1::PERMISSION_IMAGE_TEMPLATE_MANAGE);
  ASSERT_TRUE(store_->SetUserPermissions(op_, permissions).ok());
  auto changed = auth_->AuthenticateHeader(header);
  ASSERT_TRUE(changed.ok());
  EXPECT_TRUE(changed->Has(v1::PERMISSION_IMAGE_TEMPLATE_MANAGE));
  EXPECT_FALSE(changed->Has(v1::PERMISSION_SERVER_VIEW));
  ASSERT_TRUE(auth_->AuthenticateHeader(header).ok());  // cached again

  // So does a revocation: the cached entry is not served.
  v1::RevokeApiKeyRequest revoke;
  revoke.set_id(created->api_key().id());
  ASSERT_TRUE(store_->RevokeApiKey(op_, revoke).ok());
  EXPECT_EQ(auth_->AuthenticateHeader(header).status().code(),
            absl::StatusCode::kUnauthenticated);

  // And the deletion of a user whose key was cached.
  auto second = store_->CreateApiKey(op_, create);
  ASSERT_TRUE(second.ok()) << second.status();
  const std::string second_header = "Bearer " + second->secret();
  ASSERT_TRUE(auth_->AuthenticateHeader(second_header).ok());
  ASSERT_TRUE(auth_->AuthenticateHeader(second_header).ok());
  v1::DeleteUserRequest remove;
  remove.set_id(user);
  ASSERT_TRUE(store_->DeleteUser(op_, remove).ok());
  EXPECT_EQ(auth_->AuthenticateHeader(second_header).status().code(),
            absl::StatusCode::kUnauthenticated);
}

TEST_F(IdentityStoreTest, UserManagerManagesOwnAccountOnly) {
  std::string a = NewAccount("acme");
  std::string b = NewAccount("globex");
  std::string manager_id = NewUser(op_, a, "boss", {v1::PERMISSION_USER_MANAGE,
                                                    v1::PERMISSION_SERVER_VIEW});
  std::string b_user = NewUser(op_, b, "bob", {v1::PERMISSION_SERVER_VIEW});
  Caller manager = CallerFor(manager_id);

  // Creates users in its own account (empty account_id), with what it holds.
  std::string worker_id = NewUser(manager, "", "worker", {v1::PERMISSION_SERVER_VIEW});
  EXPECT_EQ(CallerFor(worker_id).account_id, a);
  v1::CreateUserRequest grant_more;
  grant_more.set_username("greedy");
  grant_more.add_permissions(v1::PERMISSION_SERVER_PROVISION);
  EXPECT_EQ(store_->CreateUser(manager, grant_more).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::CreateUserRequest operator_grant;
  operator_grant.set_account_id(a);
  operator_grant.set_username("root");
  operator_grant.add_permissions(v1::PERMISSION_PLATFORM_OPERATOR);
  auto bad = store_->CreateUser(op_, operator_grant);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("permissions"), absl::string_view::npos);

  // Another account's user: NOT_FOUND everywhere, and unchanged.
  v1::GetUserRequest get_b;
  get_b.set_id(b_user);
  EXPECT_EQ(store_->GetUser(manager, get_b).status().code(), absl::StatusCode::kNotFound);
  v1::SetUserPermissionsRequest set_b;
  set_b.set_user_id(b_user);
  EXPECT_EQ(store_->SetUserPermissions(manager, set_b).status().code(),
            absl::StatusCode::kNotFound);
  v1::DeleteUserRequest delete_b;
  delete_b.set_id(b_user);
  EXPECT_EQ(store_->DeleteUser(manager, delete_b).status().code(), absl::StatusCode::kNotFound);
  v1::CreateUserRequest in_b;
  in_b.set_account_id(b);
  in_b.set_username("spy");
  EXPECT_EQ(store_->CreateUser(manager, in_b).status().code(), absl::StatusCode::kNotFound);
  auto b_after = store_->GetUser(op_, get_b);
  ASSERT_TRUE(b_after.ok());
  ASSERT_EQ(b_after->user().permissions_size(), 1);
  EXPECT_EQ(b_after->user().permissions(0), v1::PERMISSION_SERVER_VIEW);
  v1::GetAccountRequest get_account_b;
  get_account_b.set_id(b);
  EXPECT_EQ(store_->GetAccount(manager, get_account_b).status().code(),
            absl::StatusCode::kNotFound);

  // A plain user sees itself, not its colleagues.
  Caller worker = CallerFor(worker_id);
  v1::GetUserRequest get_manager;
  get_manager.set_id(manager_id);
  EXPECT_EQ(store_->GetUser(worker, get_manager).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::GetUserRequest get_self;
  get_self.set_id(worker_id);
  EXPECT_TRUE(store_->GetUser(worker, get_self).ok());
  v1::CreateAccountRequest create_account;
  create_account.set_name("nope");
  EXPECT_EQ(store_->CreateAccount(manager, create_account).status().code(),
            absl::StatusCode::kPermissionDenied);

  // The last user manager cannot be demoted or deleted, nor delete itself.
  v1::SetUserPermissionsRequest demote;
  demote.set_user_id(manager_id);
  EXPECT_EQ(store_->SetUserPermissions(op_, demote).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::DeleteUserRequest delete_self;
  delete_self.set_id(manager_id);
  EXPECT_EQ(store_->DeleteUser(manager, delete_self).status().code(),
            absl::StatusCode::kFailedPrecondition);
  v1::DeleteUserRequest delete_worker;
  delete_worker.set_id(worker_id);
  EXPECT_TRUE(store_->DeleteUser(manager, delete_worker).ok());
  EXPECT_EQ(store_->GetUser(manager, get_self).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IdentityStoreTest, RequestIdReturnsFirstResultAndRejectsOtherRequests) {
  v1::CreateAccountRequest request;
  request.set_name("initech");
  request.set_request_id("req-1");
  auto first = store_->CreateAccount(op_, request);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = store_->CreateAccount(op_, request);
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(first->account().id(), second->account().id());
  request.set_name("other");
  auto clash = store_->CreateAccount(op_, request);
  EXPECT_EQ(clash.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(clash.status().message().find("request_id"), absl::string_view::npos);
  request.set_request_id("bad id!");
  EXPECT_EQ(store_->CreateAccount(op_, request).status().code(),
            absl::StatusCode::kInvalidArgument);

  // A repeated CreateApiKey returns the key without its secret.
  v1::CreateApiKeyRequest key;
  key.set_request_id("key-1");
  auto k1 = store_->CreateApiKey(op_, key);
  auto k2 = store_->CreateApiKey(op_, key);
  ASSERT_TRUE(k1.ok() && k2.ok());
  EXPECT_EQ(k1->api_key().id(), k2->api_key().id());
  EXPECT_FALSE(k1->secret().empty());
  EXPECT_TRUE(k2->secret().empty());
}

// A stored response belongs to the user who made the call: another user of
// the account repeating its request_id learns nothing from it, and a repeat
// passes the call's permission checks again.
TEST_F(IdentityStoreTest, RequestIdRepeatsAreCheckedAgainAndMeIsTheCallers) {
  const std::string a = NewAccount("acme");
  const std::string alice_id =
      NewUser(op_, a, "alice", {v1::PERMISSION_USER_MANAGE, v1::PERMISSION_SERVER_VIEW});
  const std::string bob_id =
      NewUser(op_, a, "bob", {v1::PERMISSION_USER_MANAGE, v1::PERMISSION_SERVER_VIEW});
  const std::string carol_id = NewUser(op_, a, "carol", {});
  const std::string worker_id = NewUser(op_, a, "worker", {});
  const Caller alice = CallerFor(alice_id);
  const Caller bob = CallerFor(bob_id);
  const Caller carol = CallerFor(carol_id);

  // Alice's own key ("me": no user_id). The same bytes from Bob or Carol
  // mean their own keys: a different request, not Alice's key.
  v1::CreateApiKeyRequest own;
  own.set_request_id("key-req");
  auto alice_key = store_->CreateApiKey(alice, own);
  ASSERT_TRUE(alice_key.ok()) << alice_key.status();
  EXPECT_EQ(alice_key->api_key().user_id(), alice_id);
  for (const Caller& other : {bob, carol}) {
    auto replay = store_->CreateApiKey(other, own);
    EXPECT_EQ(replay.status().code(), absl::StatusCode::kInvalidArgument) << replay.status();
    EXPECT_NE(replay.status().message().find("different request"), absl::string_view::npos);
  }
  // Alice still gets her own key back (without the secret).
  auto alice_again = store_->CreateApiKey(alice, own);
  ASSERT_TRUE(alice_again.ok()) << alice_again.status();
  EXPECT_EQ(alice_again->api_key().id(), alice_key->api_key().id());
  EXPECT_TRUE(alice_again->secret().empty());

  // A key Alice made for the worker, and the worker's permissions she set:
  // Carol (no USER_MANAGE) cannot read them back through the request_id.
  v1::CreateApiKeyRequest for_worker;
  for_worker.set_user_id(worker_id);
  for_worker.set_request_id("worker-key");
  auto worker_key = store_->CreateApiKey(alice, for_worker);
  ASSERT_TRUE(worker_key.ok()) << worker_key.status();
  // The request_id is the account's: Bob (USER_MANAGE) repeating it gets the
  // same key back, Carol (without) is refused as a fresh call would be.
  auto bob_replay = store_->CreateApiKey(bob, for_worker);
  ASSERT_TRUE(bob_replay.ok()) << bob_replay.status();
  EXPECT_EQ(bob_replay->api_key().id(), worker_key->api_key().id());
  EXPECT_TRUE(bob_replay->secret().empty());
  EXPECT_EQ(store_->CreateApiKey(carol, for_worker).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::SetUserPermissionsRequest grant;
  grant.set_user_id(worker_id);
  grant.add_permissions(v1::PERMISSION_SERVER_VIEW);
  grant.set_request_id("grant");
  auto granted = store_->SetUserPermissions(alice, grant);
  ASSERT_TRUE(granted.ok()) << granted.status();
  EXPECT_EQ(store_->SetUserPermissions(carol, grant).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Bob may change the worker: his repeat gets the stored answer. Dave
  // manages users but lacks SERVER_VIEW, which the worker now holds: a fresh
  // call would be refused, so is his repeat.
  auto bob_grant = store_->SetUserPermissions(bob, grant);
  ASSERT_TRUE(bob_grant.ok()) << bob_grant.status();
  EXPECT_EQ(bob_grant->user().id(), worker_id);
  const Caller dave = CallerFor(NewUser(op_, a, "dave", {v1::PERMISSION_USER_MANAGE}));
  EXPECT_EQ(store_->SetUserPermissions(dave, grant).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->CreateApiKey(dave, for_worker).status().code(),
            absl::StatusCode::kPermissionDenied);
  v1::DeleteUserRequest remove;
  remove.set_id(worker_id);
  remove.set_request_id("remove");
  auto removed = store_->DeleteUser(alice, remove);
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(store_->DeleteUser(carol, remove).status().code(),
            absl::StatusCode::kPermissionDenied);

  // Alice loses USER_MANAGE: her repeats of calls that needed it are refused
  // as a fresh call would be; her repeat on her own key still answers.
  v1::SetUserPermissionsRequest demote;
  demote.set_user_id(alice_id);
  demote.set_request_id("demote");
  auto demoted_user = store_->SetUserPermissions(bob, demote);
  ASSERT_TRUE(demoted_user.ok()) << demoted_user.status();
  const Caller demoted = CallerFor(alice_id);
  // The worker is deleted by now: a fresh call would not find it either.
  EXPECT_EQ(store_->CreateApiKey(demoted, for_worker).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->SetUserPermissions(demoted, grant).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->DeleteUser(demoted, remove).status().code(),
            absl::StatusCode::kPermissionDenied);
  auto own_again = store_->CreateApiKey(demoted, own);
  ASSERT_TRUE(own_again.ok()) << own_again.status();
  EXPECT_EQ(own_again->api_key().id(), alice_key->api_key().id());
}

TEST_F(IdentityStoreTest, NamesAreValidatedAndStoredLiterally) {
  for (const std::string& bad : {std::string(""), std::string("   "), std::string(101, 'x'),
                                 std::string("tab\there"), std::string("nul\0x", 5),
                                 std::string("\xff\xfe")}) {
    v1::CreateAccountRequest request;
    request.set_name(bad);
    auto response = store_->CreateAccount(op_, request);
    EXPECT_EQ(response.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(response.status().message().substr(0, 4), "name");
  }
  const std::string sql = "x'); DROP TABLE accounts; --";
  std::string id = NewAccount(sql);
  v1::GetAccountRequest get;
  get.set_id(id);
  auto account = store_->GetAccount(op_, get);
  ASSERT_TRUE(account.ok());
  EXPECT_EQ(account->account().name(), sql);
  v1::GetAccountRequest malformed;
  malformed.set_id("NOT-A-UUID");
  auto bad_id = store_->GetAccount(op_, malformed);
  EXPECT_EQ(bad_id.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad_id.status().message().substr(0, 2), "id");
  v1::CreateUserRequest unknown_enum;
  unknown_enum.set_username("u");
  unknown_enum.add_permissions(static_cast<v1::Permission>(99));
  EXPECT_EQ(store_->CreateUser(op_, unknown_enum).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(IdentityStoreTest, ListAccountsChecksItsNameFilter) {
  NewAccount("Acme Widgets");
  v1::ListAccountsRequest list;
  list.set_name_contains(std::string(101, 'a'));
  absl::Status status = store_->ListAccounts(op_, list).status();
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StartsWith(status.message(), "name_contains")) << status;
  list.set_name_contains("widgets");
  auto page = store_->ListAccounts(op_, list);
  ASSERT_TRUE(page.ok()) << page.status();
  ASSERT_EQ(page->accounts_size(), 1);
  EXPECT_EQ(page->accounts(0).name(), "Acme Widgets");
}

TEST_F(IdentityStoreTest, ListUsersPagesStayCorrectUnderInsertsAndDeletes) {
  std::string a = NewAccount("paged");
  std::set<std::string> original;
  for (int i = 0; i < 25; ++i) {
    std::string name = absl::StrCat("user", i < 10 ? "0" : "", i);
    original.insert(NewUser(op_, a, name, {}));
  }
  std::set<std::string> seen;
  v1::ListUsersRequest request;
  request.set_account_id(a);
  request.set_page_size(4);
  int pages = 0;
  std::set<std::string> deleted;
  while (true) {
    auto page = store_->ListUsers(op_, request);
    ASSERT_TRUE(page.ok()) << page.status();
    for (const auto& user : page->users()) {
      EXPECT_TRUE(seen.insert(user.id()).second) << "duplicate " << user.username();
    }
    // Between pages: new users before and after the cursor, and one deleted
    // that was not seen yet.
    NewUser(op_, a, absl::StrCat("aaa", pages), {});
    NewUser(op_, a, absl::StrCat("zzz", pages), {});
    for (const std::string& id : original) {
      if (!seen.count(id) && !deleted.count(id) && pages == 1) {
        v1::DeleteUserRequest del;
        del.set_id(id);
        ASSERT_TRUE(store_->DeleteUser(op_, del).ok());
        deleted.insert(id);
        break;
      }
    }
    ++pages;
    if (page->next_page_token().empty()) break;
    request.set_page_token(page->next_page_token());
  }
  for (const std::string& id : original) {
    if (!deleted.count(id)) {
      EXPECT_TRUE(seen.count(id)) << "lost " << id;
    }
  }
  request.set_page_token("garbage");
  EXPECT_EQ(store_->ListUsers(op_, request).status().code(), absl::StatusCode::kInvalidArgument);
  request.set_page_token("");
  request.set_page_size(-1);
  EXPECT_EQ(store_->ListUsers(op_, request).status().code(), absl::StatusCode::kInvalidArgument);
  request.set_page_size(1 << 30);
  auto all = store_->ListUsers(op_, request);
  ASSERT_TRUE(all.ok());
  EXPECT_LE(all->users_size(), 500);
}

TEST_F(IdentityStoreTest, QuotasAreOperatorsOnlyAndValidated) {
  std::string a = NewAccount("quota");
  std::string manager_id = NewUser(op_, a, "boss", {v1::PERMISSION_USER_MANAGE});
  Caller manager = CallerFor(manager_id);
  v1::SetQuotaRequest set;
  set.set_account_id(a);
  set.set_max_image_templates(5);
  set.mutable_update_mask()->add_paths("max_image_templates");
  EXPECT_EQ(store_->SetQuota(manager, set).status().code(), absl::StatusCode::kPermissionDenied);
  auto set_ok = store_->SetQuota(op_, set);
  ASSERT_TRUE(set_ok.ok()) << set_ok.status();
  EXPECT_EQ(set_ok->quota().max_image_templates(), 5);
  v1::GetQuotaRequest get;
  auto own = store_->GetQuota(manager, get);
  ASSERT_TRUE(own.ok());
  EXPECT_EQ(own->quota().max_image_templates(), 5);
  auto limits = store_->GetQuotaLimits(a);
  ASSERT_TRUE(limits.ok());
  EXPECT_EQ(limits->max_image_templates, 5);
  set.set_max_image_templates(-1);
  EXPECT_EQ(store_->SetQuota(op_, set).status().code(), absl::StatusCode::kInvalidArgument);
  set.mutable_update_mask()->add_paths("bogus");
  EXPECT_EQ(store_->SetQuota(op_, set).status().code(), absl::StatusCode::kInvalidArgument);
  get.set_account_id(op_.account_id);
  EXPECT_EQ(store_->GetQuota(manager, get).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(IdentityStoreTest, AuditLogIsReadableByOperatorAndOwnManagers) {
  SqliteAuditLog log(db_.get());
  std::string a = NewAccount("audited");
  std::string b = NewAccount("other");
  Caller manager = CallerFor(NewUser(op_, a, "boss", {v1::PERMISSION_USER_MANAGE}));
  Caller plain = CallerFor(NewUser(op_, a, "plain", {}));
  v1::ResourceReference target;
  target.set_type(v1::RESOURCE_TYPE_USER);
  target.set_id("t1");
  log.Record(manager, a, "/m/A", target, absl::OkStatus(), "r1");
  log.Record(manager, a, "/m/B", target, absl::PermissionDeniedError("no"), "");
  log.Record(op_, b, "/m/C", target, absl::OkStatus(), "");

  v1::ListAuditEventsRequest request;
  auto own = log.List(manager, request);
  ASSERT_TRUE(own.ok()) << own.status();
  ASSERT_EQ(own->audit_events_size(), 2);
  EXPECT_EQ(own->audit_events(0).method(), "/m/B");  // newest first
  EXPECT_EQ(own->audit_events(0).outcome().code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_EQ(own->audit_events(1).request_id(), "r1");
  EXPECT_EQ(log.List(plain, request).status().code(), absl::StatusCode::kPermissionDenied);
  request.set_account_id(b);
  EXPECT_EQ(log.List(manager, request).status().code(), absl::StatusCode::kNotFound);
  auto other = log.List(op_, request);
  ASSERT_TRUE(other.ok());
  ASSERT_EQ(other->audit_events_size(), 1);
  request.clear_account_id();
  request.set_method("/m/A");
  request.set_page_size(1);
  auto filtered = log.List(op_, request);
  ASSERT_TRUE(filtered.ok());
  ASSERT_EQ(filtered->audit_events_size(), 1);
  EXPECT_TRUE(filtered->next_page_token().empty());
  *request.mutable_start_time() = ToTimestamp(10);
  *request.mutable_end_time() = ToTimestamp(5);
  EXPECT_EQ(log.List(op_, request).status().code(), absl::StatusCode::kInvalidArgument);
}


// A user manager changes only users it outranks: a helpdesk user of the
// operator account cannot mint a key for, strip, delete or lock out the
// platform operator.
TEST_F(IdentityStoreTest, UserManagersChangeOnlyUsersTheyOutrank) {
  const std::string helpdesk_id =
      NewUser(op_, op_.account_id, "helpdesk", {v1::PERMISSION_USER_MANAGE});
  const Caller helpdesk = CallerFor(helpdesk_id);
  ASSERT_FALSE(helpdesk.is_operator);
  constexpr auto kDenied = absl::StatusCode::kPermissionDenied;

  v1::CreateApiKeyRequest key;
  key.set_user_id(op_.user_id);
  absl::Status minted = store_->CreateApiKey(helpdesk, key).status();
  EXPECT_EQ(minted.code(), kDenied) << minted;
  EXPECT_NE(minted.message().find("PERMISSION_"), std::string::npos) << minted;
  v1::SetUserPermissionsRequest strip;
  strip.set_user_id(op_.user_id);
  strip.add_permissions(v1::PERMISSION_USER_MANAGE);
  EXPECT_EQ(store_->SetUserPermissions(helpdesk, strip).status().code(), kDenied);
  v1::SetDeviceAccessRequest narrow;
  narrow.set_user_id(op_.user_id);
  EXPECT_EQ(store_->SetDeviceAccess(helpdesk, narrow).status().code(), kDenied);
  v1::DeleteUserRequest remove;
  remove.set_id(op_.user_id);
  EXPECT_EQ(store_->DeleteUser(helpdesk, remove).status().code(), kDenied);
  v1::RevokeApiKeyRequest revoke;
  revoke.set_id(op_.api_key_id);
  EXPECT_EQ(store_->RevokeApiKey(helpdesk, revoke).status().code(), kDenied);
  v1::ListApiKeysRequest survey;
  survey.set_user_id(op_.user_id);
  EXPECT_EQ(store_->ListApiKeys(helpdesk, survey).status().code(), kDenied);
  // Nothing changed: the operator's key still makes an operator.
  auto still = auth_->AuthenticateHeader("Bearer " + ReadFile(key_file_));
  ASSERT_TRUE(still.ok()) << still.status();
  EXPECT_TRUE(still->is_operator);

  // A user holding nothing beyond the helpdesk's own it does manage.
  const std::string clerk = NewUser(helpdesk, op_.account_id, "clerk", {});
  key.set_user_id(clerk);
  EXPECT_TRUE(store_->CreateApiKey(helpdesk, key).ok());
  survey.set_user_id(clerk);
  auto clerk_keys = store_->ListApiKeys(helpdesk, survey);
  ASSERT_TRUE(clerk_keys.ok()) << clerk_keys.status();
  EXPECT_EQ(clerk_keys->api_keys_size(), 1);
  v1::SetUserPermissionsRequest grant;
  grant.set_user_id(clerk);
  grant.add_permissions(v1::PERMISSION_USER_MANAGE);
  EXPECT_TRUE(store_->SetUserPermissions(helpdesk, grant).ok());
  remove.set_id(clerk);
  EXPECT_TRUE(store_->DeleteUser(helpdesk, remove).ok());
}

// Device access handed out (to others or oneself) is at most the caller's.
TEST_F(IdentityStoreTest, DeviceAccessGrantedIsAtMostTheCallers) {
  const std::string account = NewAccount("devices");
  const std::string manager_id = NewUser(op_, account, "mgr", {v1::PERMISSION_USER_MANAGE});
  Caller manager = CallerFor(manager_id);
  ASSERT_FALSE(manager.all_servers);
  constexpr auto kDenied = absl::StatusCode::kPermissionDenied;

  v1::SetDeviceAccessRequest widen;
  widen.set_user_id(manager_id);
  widen.mutable_device_access()->set_all_servers(true);
  EXPECT_EQ(store_->SetDeviceAccess(manager, widen).status().code(), kDenied);
  v1::CreateUserRequest create;
  create.set_account_id(account);
  create.set_username("wide");
  create.mutable_device_access()->set_all_servers(true);
  EXPECT_EQ(store_->CreateUser(manager, create).status().code(), kDenied);
  create.mutable_device_access()->set_all_servers(false);
  create.mutable_device_access()->add_server_ids(NewUuid());
  absl::Status one = store_->CreateUser(manager, create).status();
  EXPECT_EQ(one.code(), kDenied) << one;
  EXPECT_NE(one.message().find("cannot access"), std::string::npos) << one;

  // Once an operator gives it every server, it may hand them out.
  ASSERT_TRUE(store_->SetDeviceAccess(op_, widen).ok());
  manager = CallerFor(manager_id);
  create.mutable_device_access()->Clear();
  create.mutable_device_access()->set_all_servers(true);
  auto created = store_->CreateUser(manager, create);
  ASSERT_TRUE(created.ok()) << created.status();
  EXPECT_TRUE(created->user().device_access().all_servers());
}

TEST_F(IdentityStoreTest, TheLastPlatformOperatorCannotStepDown) {
  v1::SetUserPermissionsRequest demote;
  demote.set_user_id(op_.user_id);
  demote.add_permissions(v1::PERMISSION_USER_MANAGE);
  absl::Status alone = store_->SetUserPermissions(op_, demote).status();
  EXPECT_EQ(alone.code(), absl::StatusCode::kFailedPrecondition) << alone;
  EXPECT_NE(alone.message().find("PERMISSION_PLATFORM_OPERATOR"), std::string::npos) << alone;
  NewUser(op_, op_.account_id, "op2",
          {v1::PERMISSION_PLATFORM_OPERATOR, v1::PERMISSION_USER_MANAGE});
  EXPECT_TRUE(store_->SetUserPermissions(op_, demote).ok());
}

}  // namespace
}  // namespace controlplane
