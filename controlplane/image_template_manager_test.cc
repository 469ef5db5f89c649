#include "controlplane/image_template_manager.h"

#include <atomic>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "controlplane/ids.h"
#include "controlplane/sqlite_operation_store.h"
#include "controlplane/sqlite_request_id_store.h"
#include "controlplane/sqlite_template_store.h"
#include "controlplane/testing/account_directory_fake.h"
#include "controlplane/testing/audit_log_fake.h"
#include "controlplane/testing/template_test_database.h"
#include "gtest/gtest.h"

namespace controlplane {
namespace {

namespace v1 = imagetemplates::v1;
using absl::StatusCode;

const std::string kA = "00000000-0000-4000-8000-00000000000a";
const std::string kB = "00000000-0000-4000-8000-00000000000b";
const std::string kC = "00000000-0000-4000-8000-00000000000c";
const std::string kOp = "00000000-0000-4000-8000-0000000000ff";

#define EXPECT_CODE(expr, expected)                                       \
  do {                                                                    \
    auto status_or_ = (expr);                                             \
    EXPECT_EQ(status_or_.status().code(), expected) << status_or_.status(); \
  } while (0)

// Expects INVALID_ARGUMENT whose message starts with `field`.
#define EXPECT_INVALID(expr, field)                                         \
  do {                                                                      \
    auto status_or_ = (expr);                                               \
    EXPECT_EQ(status_or_.status().code(), StatusCode::kInvalidArgument)     \
        << status_or_.status();                                             \
    EXPECT_EQ(status_or_.status().message().substr(0, std::string(field).size()), field) \
        << status_or_.status();                                             \
  } while (0)

Caller MakeCaller(const std::string& user, const std::string& account,
                  std::vector<v1::Permission> permissions) {
  Caller caller;
  caller.user_id = user;
  caller.account_id = account;
  caller.all_servers = true;
  for (auto p : permissions) caller.permissions.insert(p);
  return caller;
}

class ImageTemplateManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = OpenTemplateTestDatabase();
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = std::move(*db);
    for (const auto& id : {kA, kB, kC, kOp}) {
      ASSERT_TRUE(AddTestAccount(*db_, id).ok());
      directory_.AddAccount(id);
    }
    templates_ = std::make_unique<SqliteTemplateStore>(db_.get());
    operations_ = std::make_unique<SqliteOperationStore>(db_.get());
    request_ids_ = std::make_unique<SqliteRequestIdStore>(db_.get());
    ImageTemplateManager::Dependencies deps;
    deps.templates = templates_.get();
    deps.operations = operations_.get();
    deps.request_ids = request_ids_.get();
    deps.audit = &audit_;
    deps.quotas = &directory_;
    deps.accounts = &directory_;
    deps.now_micros = [this] { return now_ += 10; };
    manager_ = std::make_unique<ImageTemplateManager>(std::move(deps));

    alice_ = MakeCaller("user-alice", kA,
                        {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_PUBLIC_IMAGE_MANAGE,
                         v1::PERMISSION_SERVER_PROVISION, v1::PERMISSION_SERVER_VIEW});
    alice_viewer_ = MakeCaller("user-alice-viewer", kA, {});
    bob_ = MakeCaller("user-bob", kB,
                      {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE, v1::PERMISSION_PUBLIC_IMAGE_MANAGE,
                       v1::PERMISSION_SERVER_PROVISION, v1::PERMISSION_SERVER_VIEW});
    carol_ = MakeCaller("user-carol", kC, {v1::PERMISSION_SERVER_PROVISION});
    operator_ = MakeCaller("user-op", kOp, {});
    operator_.is_operator = true;
  }

  // An ACTIVE template with one boot disk, AVAILABLE in dal10.
  v1::ImageTemplate Seed(const std::string& owner, const std::string& name) {
    v1::ImageTemplate t;
    t.set_id(NewUuid());
    t.set_owner_account_id(owner);
    t.set_name(name);
    t.set_visibility(v1::VISIBILITY_PRIVATE);
    t.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
    now_ += 10;
    *t.mutable_create_time() = ToTimestamp(now_);
    *t.mutable_update_time() = ToTimestamp(now_);
    auto* disk = t.add_disks();
    disk->set_device_index(0);
    disk->set_boot(true);
    disk->set_logical_size_bytes(int64_t{1} << 30);
    disk->set_stored_size_bytes(1000);
    auto* location = t.add_locations();
    location->set_datacenter("dal10");
    location->set_status(v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
    *location->mutable_create_time() = ToTimestamp(now_);
    absl::Status status = templates_->InsertTemplate(t);
    EXPECT_TRUE(status.ok()) << status;
    return t;
  }

  v1::ImageTemplate Stored(const std::string& id) {
    auto t = templates_->GetTemplate(id);
    EXPECT_TRUE(t.ok()) << t.status();
    return t.ok() ? *t : v1::ImageTemplate();
  }

  std::vector<std::string> ListNames(const Caller& caller, v1::ListImageTemplatesRequest request) {
    auto response = manager_->ListImageTemplates(caller, request);
    EXPECT_TRUE(response.ok()) << response.status();
    std::vector<std::string> names;
    if (response.ok()) {
      for (const auto& t : response->image_templates()) names.push_back(t.name());
    }
    return names;
  }

  template <typename Request>
  Request WithId(const std::string& id) {
    Request request;
    request.set_id(id);
    return request;
  }

  v1::ShareImageTemplateResponse Share(const std::string& id, const std::string& account) {
    v1::ShareImageTemplateRequest request;
    request.set_id(id);
    request.add_account_ids(account);
    auto response = manager_->ShareImageTemplate(alice_, request);
    EXPECT_TRUE(response.ok()) << response.status();
    return response.ok() ? *response : v1::ShareImageTemplateResponse();
  }

  v1::DeployImageTemplateRequest Deploy(const std::string& id) {
    v1::DeployImageTemplateRequest request;
    request.set_image_template_id(id);
    request.set_datacenter("dal10");
    request.set_quantity(1);
    request.set_hostname_prefix("web");
    return request;
  }

  int64_t now_ = 1000000;
  std::unique_ptr<SqliteDatabase> db_;
  FakeAccountDirectory directory_;
  RecordingAuditLog audit_;
  std::unique_ptr<SqliteTemplateStore> templates_;
  std::unique_ptr<SqliteOperationStore> operations_;
  std::unique_ptr<SqliteRequestIdStore> request_ids_;
  std::unique_ptr<ImageTemplateManager> manager_;
  Caller alice_, alice_viewer_, bob_, carol_, operator_;
};

TEST_F(ImageTemplateManagerTest, AnotherAccountsPrivateTemplateIsNotFoundAndUnchanged) {
  v1::ImageTemplate t = Seed(kA, "private");
  const std::string before = Stored(t.id()).DebugString();
  const std::string id = t.id();

  EXPECT_CODE(manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(id)),
              StatusCode::kNotFound);
  v1::UpdateImageTemplateRequest update = WithId<v1::UpdateImageTemplateRequest>(id);
  update.set_name("stolen");
  update.mutable_update_mask()->add_paths("name");
  EXPECT_CODE(manager_->UpdateImageTemplate(bob_, update), StatusCode::kNotFound);
  EXPECT_CODE(manager_->DeleteImageTemplate(bob_, WithId<v1::DeleteImageTemplateRequest>(id)),
              StatusCode::kNotFound);
  v1::ShareImageTemplateRequest share = WithId<v1::ShareImageTemplateRequest>(id);
  share.add_account_ids(kB);
  EXPECT_CODE(manager_->ShareImageTemplate(bob_, share), StatusCode::kNotFound);
  v1::UnshareImageTemplateRequest unshare = WithId<v1::UnshareImageTemplateRequest>(id);
  unshare.add_account_ids(kB);
  EXPECT_CODE(manager_->UnshareImageTemplate(bob_, unshare), StatusCode::kNotFound);
  EXPECT_CODE(manager_->PublishImageTemplate(bob_, WithId<v1::PublishImageTemplateRequest>(id)),
              StatusCode::kNotFound);
  EXPECT_CODE(
      manager_->UnpublishImageTemplate(bob_, WithId<v1::UnpublishImageTemplateRequest>(id)),
      StatusCode::kNotFound);
  EXPECT_CODE(
      manager_->DeprecateImageTemplate(bob_, WithId<v1::DeprecateImageTemplateRequest>(id)),
      StatusCode::kNotFound);
  EXPECT_CODE(
      manager_->DisableImageTemplate(bob_, WithId<v1::DisableImageTemplateRequest>(id)),
      StatusCode::kNotFound);
  EXPECT_CODE(manager_->SetDeleteProtection(bob_, WithId<v1::SetDeleteProtectionRequest>(id)),
              StatusCode::kNotFound);
  EXPECT_CODE(manager_->ListImageTemplateShares(
                  bob_, WithId<v1::ListImageTemplateSharesRequest>(id)),
              StatusCode::kNotFound);
  EXPECT_CODE(manager_->ListImageTemplateLocations(
                  bob_, WithId<v1::ListImageTemplateLocationsRequest>(id)),
              StatusCode::kNotFound);
  EXPECT_CODE(manager_->DeployImageTemplate(bob_, Deploy(id)), StatusCode::kNotFound);
  // Same answer as for an id that does not exist, message included.
  auto ghost = manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(NewUuid()));
  auto real = manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(id));
  EXPECT_EQ(ghost.status().code(), real.status().code());
  EXPECT_EQ(absl::StrCat(ghost.status().message()).size(),
            absl::StrCat(real.status().message()).size());

  EXPECT_EQ(Stored(id).DebugString(), before);
  EXPECT_TRUE(ListNames(bob_, {}).empty());
  // Refusals are audited in the caller's own account, never the owner's.
  auto events = audit_.events();
  ASSERT_GE(events.size(), 10u);
  for (const auto& e : events) {
    EXPECT_EQ(e.code, StatusCode::kNotFound) << e.method;
    EXPECT_EQ(e.account_id, kB) << e.method;
    EXPECT_EQ(e.user_id, "user-bob");
  }
}

TEST_F(ImageTemplateManagerTest, GetAndListOwnTemplates) {
  v1::ImageTemplate t = Seed(kA, "mine");
  auto got = manager_->GetImageTemplate(alice_viewer_, WithId<v1::GetImageTemplateRequest>(t.id()));
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->image_template().DebugString(), t.DebugString());
  EXPECT_EQ(ListNames(alice_viewer_, {}), std::vector<std::string>{"mine"});
  // Operators see every account.
  EXPECT_EQ(ListNames(operator_, {}), std::vector<std::string>{"mine"});
  EXPECT_TRUE(manager_->GetImageTemplate(operator_, WithId<v1::GetImageTemplateRequest>(t.id()))
                  .ok());
}

TEST_F(ImageTemplateManagerTest, PermissionDenials) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::UpdateImageTemplateRequest update = WithId<v1::UpdateImageTemplateRequest>(t.id());
  update.set_note("n");
  update.mutable_update_mask()->add_paths("note");
  EXPECT_CODE(manager_->UpdateImageTemplate(alice_viewer_, update), StatusCode::kPermissionDenied);
  EXPECT_CODE(manager_->DeleteImageTemplate(alice_viewer_,
                                            WithId<v1::DeleteImageTemplateRequest>(t.id())),
              StatusCode::kPermissionDenied);
  EXPECT_CODE(manager_->DeployImageTemplate(alice_viewer_, Deploy(t.id())),
              StatusCode::kPermissionDenied);
  Caller manager_only = MakeCaller("u", kA, {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE});
  EXPECT_CODE(manager_->PublishImageTemplate(manager_only,
                                             WithId<v1::PublishImageTemplateRequest>(t.id())),
              StatusCode::kPermissionDenied);
  v1::CreateImageTemplateRequest create;
  create.set_server_id(NewUuid());
  create.set_name("new");
  EXPECT_CODE(manager_->CreateImageTemplate(alice_viewer_, create), StatusCode::kPermissionDenied);
  EXPECT_EQ(Stored(t.id()).note(), "");
  // Operators may change any account's template.
  auto by_operator = manager_->UpdateImageTemplate(operator_, update);
  ASSERT_TRUE(by_operator.ok()) << by_operator.status();
  EXPECT_EQ(Stored(t.id()).note(), "n");
  auto events = audit_.events();
  ASSERT_EQ(events.size(), 6u);
  EXPECT_EQ(events[0].method, "/imagetemplates.v1.ImageTemplateService/UpdateImageTemplate");
  EXPECT_EQ(events[0].code, StatusCode::kPermissionDenied);
  EXPECT_EQ(events[0].target.id(), t.id());
  EXPECT_EQ(events[5].code, StatusCode::kOk);
  EXPECT_EQ(events[5].account_id, kA);
  EXPECT_EQ(events[5].user_id, "user-op");
}

TEST_F(ImageTemplateManagerTest, ShareUnshareFlow) {
  v1::ImageTemplate t = Seed(kA, "shared");
  v1::ShareImageTemplateResponse shared = Share(t.id(), kB);
  EXPECT_EQ(shared.image_template().visibility(), v1::VISIBILITY_SHARED);
  EXPECT_GT(FromTimestamp(shared.image_template().update_time()), FromTimestamp(t.update_time()));
  // Sharing again is a no-op.
  EXPECT_EQ(Share(t.id(), kB).image_template().visibility(), v1::VISIBILITY_SHARED);

  // Bob sees it, may deploy it, may not change it.
  EXPECT_EQ(ListNames(bob_, {}), std::vector<std::string>{"shared"});
  EXPECT_TRUE(manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(t.id())).ok());
  EXPECT_CODE(manager_->DeployImageTemplate(bob_, Deploy(t.id())), StatusCode::kUnimplemented);
  EXPECT_CODE(manager_->DeleteImageTemplate(bob_, WithId<v1::DeleteImageTemplateRequest>(t.id())),
              StatusCode::kPermissionDenied);
  v1::ShareImageTemplateRequest reshare = WithId<v1::ShareImageTemplateRequest>(t.id());
  reshare.add_account_ids(kC);
  EXPECT_CODE(manager_->ShareImageTemplate(bob_, reshare), StatusCode::kPermissionDenied);
  EXPECT_CODE(manager_->PublishImageTemplate(bob_, WithId<v1::PublishImageTemplateRequest>(t.id())),
              StatusCode::kPermissionDenied);
  EXPECT_CODE(manager_->ListImageTemplateShares(
                  bob_, WithId<v1::ListImageTemplateSharesRequest>(t.id())),
              StatusCode::kPermissionDenied);
  // Refusals are audited in the caller's account, never the owner's: Alice's
  // log would otherwise show Bob's users, keys and addresses.
  int bobs = 0;
  for (const auto& e : audit_.events()) {
    if (e.user_id != "user-bob") continue;
    ++bobs;
    EXPECT_EQ(e.account_id, kB) << e.method;
  }
  EXPECT_GE(bobs, 3);  // at least the refused delete, share and publish
  // Carol does not see it.
  EXPECT_CODE(manager_->GetImageTemplate(carol_, WithId<v1::GetImageTemplateRequest>(t.id())),
              StatusCode::kNotFound);

  auto shares = manager_->ListImageTemplateShares(
      alice_, WithId<v1::ListImageTemplateSharesRequest>(t.id()));
  ASSERT_TRUE(shares.ok()) << shares.status();
  ASSERT_EQ(shares->shares_size(), 1);
  EXPECT_EQ(shares->shares(0).account_id(), kB);

  v1::UnshareImageTemplateRequest unshare = WithId<v1::UnshareImageTemplateRequest>(t.id());
  unshare.add_account_ids(kB);
  unshare.add_account_ids(kC);  // not shared: ignored
  auto unshared = manager_->UnshareImageTemplate(alice_, unshare);
  ASSERT_TRUE(unshared.ok()) << unshared.status();
  EXPECT_EQ(unshared->image_template().visibility(), v1::VISIBILITY_PRIVATE);
  EXPECT_CODE(manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(t.id())),
              StatusCode::kNotFound);
  EXPECT_TRUE(ListNames(bob_, {}).empty());
}

TEST_F(ImageTemplateManagerTest, ShareRefusals) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::ShareImageTemplateRequest request = WithId<v1::ShareImageTemplateRequest>(t.id());
  EXPECT_INVALID(manager_->ShareImageTemplate(alice_, request), "account_ids");
  request.add_account_ids(kA);
  EXPECT_INVALID(manager_->ShareImageTemplate(alice_, request), "account_ids");
  request.set_account_ids(0, "not-a-uuid");
  EXPECT_INVALID(manager_->ShareImageTemplate(alice_, request), "account_ids");
  request.set_account_ids(0, NewUuid());
  EXPECT_CODE(manager_->ShareImageTemplate(alice_, request), StatusCode::kNotFound);
  for (int i = 0; i < 101; ++i) request.add_account_ids(kB);
  EXPECT_INVALID(manager_->ShareImageTemplate(alice_, request), "account_ids");

  v1::ImageTemplate creating = Seed(kA, "creating");
  ASSERT_TRUE(templates_->MutateTemplate(creating.id(), [](TemplateTransaction& txn) {
    txn.image_template().set_status(v1::IMAGE_TEMPLATE_STATUS_CREATING);
    return absl::OkStatus();
  }).ok());
  v1::ShareImageTemplateRequest share_creating =
      WithId<v1::ShareImageTemplateRequest>(creating.id());
  share_creating.add_account_ids(kB);
  EXPECT_CODE(manager_->ShareImageTemplate(alice_, share_creating),
              StatusCode::kFailedPrecondition);
  EXPECT_EQ(Stored(t.id()).visibility(), v1::VISIBILITY_PRIVATE);
}

// A deploy of another account's public or shared template is the
// deployer's event, in the deployer's account; an operator's change to a
// template stays in the owner's log.
TEST_F(ImageTemplateManagerTest, DeploysOfOthersTemplatesAreAuditedForTheCaller) {
  v1::ImageTemplate t = Seed(kA, "golden");
  Share(t.id(), kB);
  ASSERT_TRUE(
      manager_->PublishImageTemplate(alice_, WithId<v1::PublishImageTemplateRequest>(t.id())).ok());
  audit_.Clear();
  v1::DeployImageTemplateRequest deploy = Deploy(t.id());
  deploy.set_request_id("deploy-1");
  EXPECT_CODE(manager_->DeployImageTemplate(carol_, deploy), StatusCode::kUnimplemented);
  EXPECT_CODE(manager_->DeployImageTemplate(bob_, deploy), StatusCode::kUnimplemented);
  EXPECT_CODE(manager_->DeployImageTemplate(alice_, deploy), StatusCode::kUnimplemented);
  v1::UpdateImageTemplateRequest update = WithId<v1::UpdateImageTemplateRequest>(t.id());
  update.set_note("n");
  update.mutable_update_mask()->add_paths("note");
  EXPECT_CODE(manager_->UpdateImageTemplate(bob_, update), StatusCode::kPermissionDenied);
  ASSERT_TRUE(manager_->UpdateImageTemplate(operator_, update).ok());

  auto events = audit_.events();
  ASSERT_EQ(events.size(), 5u);
  const std::string deploy_method = "/imagetemplates.v1.ImageTemplateService/DeployImageTemplate";
  EXPECT_EQ(events[0].method, deploy_method);
  EXPECT_EQ(events[0].user_id, "user-carol");
  EXPECT_EQ(events[0].account_id, kC);
  EXPECT_EQ(events[0].target.id(), t.id());
  EXPECT_EQ(events[0].request_id, "deploy-1");
  EXPECT_EQ(events[1].user_id, "user-bob");
  EXPECT_EQ(events[1].account_id, kB);
  EXPECT_EQ(events[2].user_id, "user-alice");
  EXPECT_EQ(events[2].account_id, kA);
  EXPECT_EQ(events[3].user_id, "user-bob");
  EXPECT_EQ(events[3].account_id, kB);
  EXPECT_EQ(events[4].user_id, "user-op");
  EXPECT_EQ(events[4].account_id, kA);
  // Nothing of Bob's or Carol's lands in Alice's account.
  for (const auto& e : events) {
    if (e.account_id == kA) {
      EXPECT_TRUE(e.user_id == "user-alice" || e.user_id == "user-op") << e.user_id;
    }
  }
}

TEST_F(ImageTemplateManagerTest, PublishAndUnpublish) {
  v1::ImageTemplate t = Seed(kA, "golden");
  Share(t.id(), kB);
  directory_.SetPolicy(kA, AccountPolicy{true});
  EXPECT_CODE(manager_->PublishImageTemplate(alice_, WithId<v1::PublishImageTemplateRequest>(t.id())),
              StatusCode::kFailedPrecondition);
  EXPECT_EQ(Stored(t.id()).visibility(), v1::VISIBILITY_SHARED);
  directory_.SetPolicy(kA, AccountPolicy{false});

  auto published =
      manager_->PublishImageTemplate(alice_, WithId<v1::PublishImageTemplateRequest>(t.id()));
  ASSERT_TRUE(published.ok()) << published.status();
  EXPECT_EQ(published->image_template().visibility(), v1::VISIBILITY_PUBLIC);
  EXPECT_EQ(ListNames(carol_, {}), std::vector<std::string>{"golden"});
  EXPECT_CODE(manager_->DeployImageTemplate(carol_, Deploy(t.id())), StatusCode::kUnimplemented);
  EXPECT_CODE(
      manager_->UnpublishImageTemplate(carol_, WithId<v1::UnpublishImageTemplateRequest>(t.id())),
      StatusCode::kPermissionDenied);

  auto unpublished =
      manager_->UnpublishImageTemplate(alice_, WithId<v1::UnpublishImageTemplateRequest>(t.id()));
  ASSERT_TRUE(unpublished.ok()) << unpublished.status();
  // Still shared with Bob.
  EXPECT_EQ(unpublished->image_template().visibility(), v1::VISIBILITY_SHARED);
  EXPECT_TRUE(ListNames(carol_, {}).empty());
  EXPECT_EQ(ListNames(bob_, {}), std::vector<std::string>{"golden"});
  EXPECT_CODE(
      manager_->UnpublishImageTemplate(alice_, WithId<v1::UnpublishImageTemplateRequest>(t.id())),
      StatusCode::kFailedPrecondition);

  // Disabled templates cannot be published.
  ASSERT_TRUE(
      manager_->DisableImageTemplate(alice_, WithId<v1::DisableImageTemplateRequest>(t.id())).ok());
  EXPECT_CODE(manager_->PublishImageTemplate(alice_, WithId<v1::PublishImageTemplateRequest>(t.id())),
              StatusCode::kFailedPrecondition);
}

TEST_F(ImageTemplateManagerTest, DeprecateHidesFromOthersDefaultListsOnly) {
  v1::ImageTemplate t = Seed(kA, "old");
  Share(t.id(), kB);
  auto deprecated =
      manager_->DeprecateImageTemplate(alice_, WithId<v1::DeprecateImageTemplateRequest>(t.id()));
  ASSERT_TRUE(deprecated.ok()) << deprecated.status();
  EXPECT_TRUE(deprecated->image_template().deprecated());
  EXPECT_TRUE(deprecated->image_template().has_deprecate_time());
  // Repeating is a no-op: the deprecate time stays.
  auto again =
      manager_->DeprecateImageTemplate(alice_, WithId<v1::DeprecateImageTemplateRequest>(t.id()));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->image_template().DebugString(), deprecated->image_template().DebugString());

  EXPECT_TRUE(ListNames(bob_, {}).empty());
  v1::ListImageTemplatesRequest with_deprecated;
  with_deprecated.set_include_deprecated(true);
  EXPECT_EQ(ListNames(bob_, with_deprecated), std::vector<std::string>{"old"});
  EXPECT_EQ(ListNames(alice_, {}), std::vector<std::string>{"old"});
  EXPECT_TRUE(manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(t.id())).ok());
  EXPECT_CODE(manager_->DeployImageTemplate(bob_, Deploy(t.id())), StatusCode::kUnimplemented);

  auto undeprecated = manager_->UndeprecateImageTemplate(
      alice_, WithId<v1::UndeprecateImageTemplateRequest>(t.id()));
  ASSERT_TRUE(undeprecated.ok());
  EXPECT_FALSE(undeprecated->image_template().deprecated());
  EXPECT_FALSE(undeprecated->image_template().has_deprecate_time());
  EXPECT_EQ(ListNames(bob_, {}), std::vector<std::string>{"old"});
}

TEST_F(ImageTemplateManagerTest, DisabledTemplatesAreHiddenAndNotDeployable) {
  v1::ImageTemplate t = Seed(kA, "off");
  Share(t.id(), kB);
  ASSERT_TRUE(
      manager_->DisableImageTemplate(alice_, WithId<v1::DisableImageTemplateRequest>(t.id())).ok());
  EXPECT_CODE(manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(t.id())),
              StatusCode::kNotFound);
  EXPECT_TRUE(ListNames(bob_, {}).empty());
  EXPECT_CODE(manager_->DeployImageTemplate(alice_, Deploy(t.id())),
              StatusCode::kFailedPrecondition);
  ASSERT_TRUE(
      manager_->EnableImageTemplate(alice_, WithId<v1::EnableImageTemplateRequest>(t.id())).ok());
  EXPECT_CODE(manager_->DeployImageTemplate(bob_, Deploy(t.id())), StatusCode::kUnimplemented);
}

TEST_F(ImageTemplateManagerTest, DeleteProtectionAndDelete) {
  v1::ImageTemplate t = Seed(kA, "keep");
  Share(t.id(), kB);
  v1::SetDeleteProtectionRequest protect = WithId<v1::SetDeleteProtectionRequest>(t.id());
  protect.set_delete_protected(true);
  ASSERT_TRUE(manager_->SetDeleteProtection(alice_, protect).ok());
  EXPECT_CODE(manager_->DeleteImageTemplate(alice_, WithId<v1::DeleteImageTemplateRequest>(t.id())),
              StatusCode::kFailedPrecondition);
  EXPECT_EQ(Stored(t.id()).status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);

  protect.set_delete_protected(false);
  ASSERT_TRUE(manager_->SetDeleteProtection(alice_, protect).ok());
  v1::DeleteImageTemplateRequest del = WithId<v1::DeleteImageTemplateRequest>(t.id());
  del.set_request_id("delete-1");
  auto op = manager_->DeleteImageTemplate(alice_, del);
  ASSERT_TRUE(op.ok()) << op.status();
  EXPECT_EQ(op->kind(), v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE);
  EXPECT_EQ(op->state(), v1::OPERATION_STATE_PENDING);
  EXPECT_EQ(op->account_id(), kA);
  EXPECT_EQ(op->user_id(), "user-alice");
  EXPECT_EQ(op->request_id(), "delete-1");
  EXPECT_EQ(op->image_template_id(), t.id());
  EXPECT_EQ(op->target().id(), t.id());
  EXPECT_EQ(operations_->GetOperation(op->id())->DebugString(), op->DebugString());

  v1::ImageTemplate deleting = Stored(t.id());
  EXPECT_EQ(deleting.status(), v1::IMAGE_TEMPLATE_STATUS_DELETING);
  EXPECT_EQ(deleting.visibility(), v1::VISIBILITY_PRIVATE);
  EXPECT_FALSE(*templates_->IsSharedWith(t.id(), kB));
  EXPECT_CODE(manager_->GetImageTemplate(bob_, WithId<v1::GetImageTemplateRequest>(t.id())),
              StatusCode::kNotFound);
  // The retry gets the same operation; a new delete is refused.
  auto retry = manager_->DeleteImageTemplate(alice_, del);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->id(), op->id());
  EXPECT_CODE(manager_->DeleteImageTemplate(alice_, WithId<v1::DeleteImageTemplateRequest>(t.id())),
              StatusCode::kFailedPrecondition);
  EXPECT_CODE(manager_->DisableImageTemplate(alice_, WithId<v1::DisableImageTemplateRequest>(t.id())),
              StatusCode::kFailedPrecondition);
  EXPECT_EQ(audit_.events().back().method,
            "/imagetemplates.v1.ImageTemplateService/DisableImageTemplate");
}

TEST_F(ImageTemplateManagerTest, DeleteRefusedWhileDeployRuns) {
  v1::ImageTemplate t = Seed(kA, "busy");
  v1::Operation deploy;
  deploy.set_id(NewUuid());
  deploy.set_kind(v1::OPERATION_KIND_DEPLOY_IMAGE_TEMPLATE);
  deploy.set_account_id(kB);
  deploy.set_state(v1::OPERATION_STATE_RUNNING);
  deploy.mutable_target()->set_type(v1::RESOURCE_TYPE_IMAGE_TEMPLATE);
  deploy.mutable_target()->set_id(t.id());
  ASSERT_TRUE(operations_->InsertOperation(deploy, {}).ok());
  EXPECT_CODE(manager_->DeleteImageTemplate(alice_, WithId<v1::DeleteImageTemplateRequest>(t.id())),
              StatusCode::kFailedPrecondition);
  EXPECT_EQ(Stored(t.id()).status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  ASSERT_TRUE(operations_->UpdateOperation(deploy.id(), [](v1::Operation& op, OperationInternals&) {
    op.set_state(v1::OPERATION_STATE_SUCCEEDED);
    return absl::OkStatus();
  }).ok());
  EXPECT_TRUE(
      manager_->DeleteImageTemplate(alice_, WithId<v1::DeleteImageTemplateRequest>(t.id())).ok());
}

TEST_F(ImageTemplateManagerTest, CreateChecksQuotaNameAndDeviceAccess) {
  Seed(kA, "existing");
  v1::CreateImageTemplateRequest create;
  create.set_server_id(NewUuid());
  create.set_name("existing");
  EXPECT_CODE(manager_->CreateImageTemplate(alice_, create), StatusCode::kAlreadyExists);
  create.set_name("  fresh  ");
  EXPECT_CODE(manager_->CreateImageTemplate(alice_, create), StatusCode::kUnimplemented);

  directory_.SetQuota(kA, TemplateQuota{1, 0});
  EXPECT_CODE(manager_->CreateImageTemplate(alice_, create), StatusCode::kResourceExhausted);
  directory_.SetQuota(kA, TemplateQuota{0, 1000});
  EXPECT_CODE(manager_->CreateImageTemplate(alice_, create), StatusCode::kResourceExhausted);
  directory_.SetQuota(kA, TemplateQuota{2, 1001});
  EXPECT_CODE(manager_->CreateImageTemplate(alice_, create), StatusCode::kUnimplemented);

  Caller limited = alice_;
  limited.all_servers = false;
  limited.server_ids = {NewUuid()};
  EXPECT_CODE(manager_->CreateImageTemplate(limited, create), StatusCode::kNotFound);

  create.add_data_disk_indexes(1);
  create.add_data_disk_indexes(1);
  EXPECT_INVALID(manager_->CreateImageTemplate(alice_, create), "data_disk_indexes");
  auto events = audit_.events();
  ASSERT_FALSE(events.empty());
  EXPECT_EQ(events.back().method, "/imagetemplates.v1.ImageTemplateService/CreateImageTemplate");
  EXPECT_EQ(events.back().target.type(), v1::RESOURCE_TYPE_SERVER);
  EXPECT_EQ(events.back().code, StatusCode::kInvalidArgument);
}

TEST_F(ImageTemplateManagerTest, DeployChecks) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::DeployImageTemplateRequest request = Deploy(t.id());
  request.set_quantity(0);
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "quantity");
  request.set_quantity(21);
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "quantity");
  request.set_quantity(2);
  request.add_hostnames("a");
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "hostnames");
  request.clear_hostname_prefix();
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "hostnames");
  request.add_hostnames("-bad");
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "hostnames");
  request.set_hostnames(1, "b");
  request.set_datacenter("DAL 10");
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "datacenter");
  request.set_datacenter("ams01");
  EXPECT_CODE(manager_->DeployImageTemplate(alice_, request), StatusCode::kFailedPrecondition);
  request.set_datacenter("dal10");
  auto* size = request.add_disk_sizes();
  size->set_device_index(0);
  size->set_size_bytes(512);
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "disk_sizes");
  size->set_size_bytes(int64_t{2} << 30);
  size->set_device_index(3);
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "disk_sizes");
  size->set_device_index(0);
  request.set_image_template_id("NOT-A-UUID");
  EXPECT_INVALID(manager_->DeployImageTemplate(alice_, request), "image_template_id");
  request.set_image_template_id(t.id());
  EXPECT_CODE(manager_->DeployImageTemplate(alice_, request), StatusCode::kUnimplemented);
}

TEST_F(ImageTemplateManagerTest, BadInputsNameTheField) {
  v1::ImageTemplate t = Seed(kA, "t");
  EXPECT_INVALID(manager_->GetImageTemplate(alice_, WithId<v1::GetImageTemplateRequest>("x")), "id");
  EXPECT_INVALID(manager_->GetImageTemplate(alice_, WithId<v1::GetImageTemplateRequest>("")), "id");

  v1::UpdateImageTemplateRequest update = WithId<v1::UpdateImageTemplateRequest>(t.id());
  EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, update), "update_mask");
  update.mutable_update_mask()->add_paths("owner_account_id");
  EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, update), "update_mask");
  update.mutable_update_mask()->set_paths(0, "name");
  for (const std::string& bad :
       {std::string(""), std::string("   "), std::string(101, 'x'), std::string("a\x01z"),
        std::string("tab\there"), std::string("\xff\xfe")}) {
    update.set_name(bad);
    EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, update), "name");
  }
  update.mutable_update_mask()->set_paths(0, "note");
  update.set_note(std::string(1001, 'n'));
  EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, update), "note");
  update.mutable_update_mask()->set_paths(0, "tags");
  for (int i = 0; i < 51; ++i) update.add_tags(absl::StrCat("t", i));
  EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, update), "tags");
  update.clear_tags();
  update.add_tags(std::string(65, 'g'));
  EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, update), "tags");
  update.clear_tags();
  update.add_tags("dup");
  update.add_tags("dup");
  EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, update), "tags");
  EXPECT_EQ(Stored(t.id()).DebugString(), t.DebugString());

  // SQL-looking and non-ASCII names are stored and returned literally; a
  // 100-character name is fine.
  update.clear_tags();
  update.mutable_update_mask()->set_paths(0, "name");
  for (const std::string& name : {std::string("x'); DROP TABLE image_templates; --"),
                                  std::string("名前 ✓ \"quoted\" 100%_"), std::string(100, 'y')}) {
    update.set_name(name);
    auto updated = manager_->UpdateImageTemplate(alice_, update);
    ASSERT_TRUE(updated.ok()) << updated.status();
    EXPECT_EQ(updated->image_template().name(), name);
    EXPECT_EQ(Stored(t.id()).name(), name);
  }
  update.set_name("  padded  ");
  EXPECT_EQ(manager_->UpdateImageTemplate(alice_, update)->image_template().name(), "padded");

  v1::ListImageTemplatesRequest list;
  list.set_page_size(-1);
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "page_size");
  list.set_page_size(1000000);
  EXPECT_TRUE(manager_->ListImageTemplates(alice_, list).ok());
  list.set_page_size(0);
  list.set_visibility(static_cast<v1::Visibility>(42));
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "visibility");
  list.set_visibility(v1::VISIBILITY_UNSPECIFIED);
  list.set_status(static_cast<v1::ImageTemplateStatus>(-3));
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "status");
  list.set_status(v1::IMAGE_TEMPLATE_STATUS_UNSPECIFIED);
  list.set_order_by(static_cast<v1::ImageTemplateOrderBy>(9));
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "order_by");
  list.set_order_by(v1::IMAGE_TEMPLATE_ORDER_BY_NAME);
  list.set_page_token("garbage!!");
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "page_token");
  list.set_page_token("");
  list.set_owner_account_id("acct");
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "owner_account_id");
  list.set_owner_account_id("");
  list.set_name_contains(std::string(101, 'a'));
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "name_contains");
  list.set_name_contains("");
  list.set_tag("a\nb");
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, list), "tag");

  v1::DeprecateImageTemplateRequest bad_request_id =
      WithId<v1::DeprecateImageTemplateRequest>(t.id());
  bad_request_id.set_request_id("has space");
  EXPECT_INVALID(manager_->DeprecateImageTemplate(alice_, bad_request_id), "request_id");
  EXPECT_FALSE(Stored(t.id()).deprecated());
}

TEST_F(ImageTemplateManagerTest, PagesStayCorrectWhileTemplatesComeAndGo) {
  std::vector<v1::ImageTemplate> initial;
  for (int i = 0; i < 23; ++i) initial.push_back(Seed(kA, absl::StrCat("n", 100 + i)));
  v1::ListImageTemplatesRequest request;
  request.set_page_size(5);
  request.set_order_by(v1::IMAGE_TEMPLATE_ORDER_BY_NAME);
  std::vector<std::string> seen;
  std::set<std::string> deleted;
  int page = 0;
  do {
    auto response = manager_->ListImageTemplates(alice_, request);
    ASSERT_TRUE(response.ok()) << response.status();
    for (const auto& t : response->image_templates()) seen.push_back(t.name());
    request.set_page_token(response->next_page_token());
    // A name before the cursor, one after it, and a deletion ahead.
    ++page;
    Seed(kA, absl::StrCat("a", page));
    Seed(kA, absl::StrCat("z", page));
    const v1::ImageTemplate& victim = initial[(page * 7) % initial.size()];
    if (!deleted.count(victim.name()) &&
        std::find(seen.begin(), seen.end(), victim.name()) == seen.end()) {
      ASSERT_TRUE(manager_->DeleteImageTemplate(alice_, WithId<v1::DeleteImageTemplateRequest>(
                                                            victim.id()))
                      .ok());
      deleted.insert(victim.name());
    }
  } while (!request.page_token().empty());
  std::set<std::string> unique(seen.begin(), seen.end());
  EXPECT_EQ(unique.size(), seen.size());
  EXPECT_TRUE(std::is_sorted(seen.begin(), seen.end()));
  for (const auto& t : initial) {
    // Deleting templates are still listed (not DELETED); none is skipped.
    EXPECT_TRUE(unique.count(t.name())) << t.name();
  }
  // A token is bound to its filters.
  request.set_page_size(2);
  request.set_page_token("");
  auto first = manager_->ListImageTemplates(alice_, request);
  ASSERT_TRUE(first.ok());
  request.set_page_token(first->next_page_token());
  request.set_descending(true);
  EXPECT_INVALID(manager_->ListImageTemplates(alice_, request), "page_token");
  request.set_descending(false);
  EXPECT_INVALID(manager_->ListImageTemplates(bob_, request), "page_token");
}

TEST_F(ImageTemplateManagerTest, RequestIdReturnsFirstResultAndRejectsOtherRequests) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::UpdateImageTemplateRequest update = WithId<v1::UpdateImageTemplateRequest>(t.id());
  update.set_name("first");
  update.mutable_update_mask()->add_paths("name");
  update.set_request_id("rename-1");
  auto first = manager_->UpdateImageTemplate(alice_, update);
  ASSERT_TRUE(first.ok()) << first.status();

  // Someone renames it meanwhile; the retry must not rename it back.
  v1::UpdateImageTemplateRequest other = update;
  other.set_name("second");
  other.clear_request_id();
  ASSERT_TRUE(manager_->UpdateImageTemplate(alice_, other).ok());
  auto retry = manager_->UpdateImageTemplate(alice_, update);
  ASSERT_TRUE(retry.ok()) << retry.status();
  EXPECT_EQ(retry->DebugString(), first->DebugString());
  EXPECT_EQ(Stored(t.id()).name(), "second");

  other.set_request_id("rename-1");
  EXPECT_INVALID(manager_->UpdateImageTemplate(alice_, other), "request_id");
  // The same id in another account is another request.
  v1::ImageTemplate b = Seed(kB, "b");
  v1::UpdateImageTemplateRequest bobs = WithId<v1::UpdateImageTemplateRequest>(b.id());
  bobs.set_name("bob");
  bobs.mutable_update_mask()->add_paths("name");
  bobs.set_request_id("rename-1");
  EXPECT_TRUE(manager_->UpdateImageTemplate(bob_, bobs).ok());
  // A failed call is not remembered: a retry may succeed.
  v1::SetDeleteProtectionRequest protect = WithId<v1::SetDeleteProtectionRequest>(t.id());
  protect.set_delete_protected(true);
  protect.set_request_id("protect-1");
  EXPECT_CODE(manager_->SetDeleteProtection(alice_viewer_, protect),
              StatusCode::kPermissionDenied);
  EXPECT_TRUE(manager_->SetDeleteProtection(alice_, protect).ok());
}

// A stored response is the calling user's: another user of the account
// cannot get it (without the permission the call needs, or at all), and the
// user's own repeat passes the call's permission checks again.
TEST_F(ImageTemplateManagerTest, RequestIdRepeatsAreCheckedAgain) {
  v1::ImageTemplate t = Seed(kA, "t");
  v1::UpdateImageTemplateRequest update = WithId<v1::UpdateImageTemplateRequest>(t.id());
  update.set_name("renamed");
  update.mutable_update_mask()->add_paths("name");
  update.set_request_id("rename-r");
  ASSERT_TRUE(manager_->UpdateImageTemplate(alice_, update).ok());
  // The request_id is the account's: a manager of the account repeating it
  // gets Alice's response (nothing changes twice); a viewer (no
  // IMAGE_TEMPLATE_MANAGE) is refused as a fresh call would be.
  Caller colleague = MakeCaller("user-alice-colleague", kA,
                                {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE});
  auto replay = manager_->UpdateImageTemplate(colleague, update);
  ASSERT_TRUE(replay.ok()) << replay.status();
  EXPECT_EQ(replay->image_template().name(), "renamed");
  EXPECT_CODE(manager_->UpdateImageTemplate(alice_viewer_, update), StatusCode::kPermissionDenied);
  // Alice loses IMAGE_TEMPLATE_MANAGE: her repeat is refused like a fresh call.
  Caller demoted = MakeCaller(alice_.user_id, kA, {v1::PERMISSION_SERVER_VIEW});
  EXPECT_CODE(manager_->UpdateImageTemplate(demoted, update), StatusCode::kPermissionDenied);
  ASSERT_TRUE(manager_->UpdateImageTemplate(alice_, update).ok());

  // A delete operation: the viewer cannot read it through the request_id.
  v1::ImageTemplate d = Seed(kA, "d");
  v1::DeleteImageTemplateRequest del = WithId<v1::DeleteImageTemplateRequest>(d.id());
  del.set_request_id("delete-r");
  auto deleting = manager_->DeleteImageTemplate(alice_, del);
  ASSERT_TRUE(deleting.ok()) << deleting.status();
  EXPECT_CODE(manager_->DeleteImageTemplate(alice_viewer_, del), StatusCode::kPermissionDenied);
  EXPECT_CODE(manager_->DeleteImageTemplate(demoted, del), StatusCode::kPermissionDenied);
  auto again = manager_->DeleteImageTemplate(alice_, del);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->id(), deleting->id());
}

TEST_F(ImageTemplateManagerTest, IdenticalCallsRacingActOnce) {
  v1::ImageTemplate t = Seed(kA, "raced");
  v1::DeleteImageTemplateRequest request = WithId<v1::DeleteImageTemplateRequest>(t.id());
  request.set_request_id("delete-raced-1");
  constexpr int kThreads = 8;
  std::vector<absl::StatusOr<v1::Operation>> results(kThreads);
  std::atomic<int> ready{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      ready.fetch_add(1);
      while (ready.load() < kThreads) std::this_thread::yield();
      results[i] = manager_->DeleteImageTemplate(alice_, request);
    });
  }
  for (auto& thread : threads) thread.join();
  // Every caller gets the one operation; a second delete would have been
  // refused (the template is DELETING) or started a second operation.
  ASSERT_TRUE(results[0].ok()) << results[0].status();
  for (const auto& result : results) {
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->id(), results[0]->id());
  }
  int64_t operations = -1;
  ASSERT_TRUE(db_->Read([&](SqliteConnection& conn) -> absl::Status {
                   auto s = conn.Prepare("SELECT COUNT(*) FROM operations WHERE target_id = ?");
                   if (!s.ok()) return s.status();
                   s->Bind(1, t.id());
                   auto row = s->Step();
                   if (!row.ok()) return row.status();
                   operations = s->ColumnInt(0);
                   return absl::OkStatus();
                 }).ok());
  EXPECT_EQ(operations, 1);
  EXPECT_EQ(Stored(t.id()).status(), v1::IMAGE_TEMPLATE_STATUS_DELETING);
}

TEST_F(ImageTemplateManagerTest, LocationsAndCopyChecks) {
  v1::ImageTemplate t = Seed(kA, "t");
  auto locations = manager_->ListImageTemplateLocations(
      bob_, WithId<v1::ListImageTemplateLocationsRequest>(t.id()));
  EXPECT_EQ(locations.status().code(), StatusCode::kNotFound);
  locations = manager_->ListImageTemplateLocations(
      alice_, WithId<v1::ListImageTemplateLocationsRequest>(t.id()));
  ASSERT_TRUE(locations.ok());
  ASSERT_EQ(locations->locations_size(), 1);
  EXPECT_EQ(locations->locations(0).datacenter(), "dal10");

  v1::AddImageTemplateLocationsRequest add = WithId<v1::AddImageTemplateLocationsRequest>(t.id());
  EXPECT_INVALID(manager_->AddImageTemplateLocations(alice_, add), "datacenters");
  add.add_datacenters("dal10");
  EXPECT_CODE(manager_->AddImageTemplateLocations(alice_, add), StatusCode::kAlreadyExists);
  add.set_datacenters(0, "ams01");
  EXPECT_CODE(manager_->AddImageTemplateLocations(alice_, add), StatusCode::kUnimplemented);
  v1::RemoveImageTemplateLocationsRequest remove =
      WithId<v1::RemoveImageTemplateLocationsRequest>(t.id());
  remove.add_datacenters("dal10");
  EXPECT_CODE(manager_->RemoveImageTemplateLocations(alice_, remove),
              StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace controlplane
