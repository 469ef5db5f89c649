// ImageTemplateService and OperationService against the real controlplane
// binary over gRPC, with real accounts, users and API keys made through the
// IdentityService: authentication on every RPC, account isolation (NOT_FOUND,
// row unchanged), share/publish/deprecate/disable/protect, quotas,
// pagination while rows are inserted, bad input and audit entries.
//
// ACTIVE templates come from a capture, which needs storaged and a SAN
// (tests/create_deploy_test does that end to end); here they are written
// straight into the controlplane's database file with SqliteTemplateStore,
// as the records a finished capture leaves, while the controlplane runs.
#include <signal.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "controlplane/sqlite_database.h"
#include "controlplane/sqlite_template_store.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/audit.grpc.pb.h"
#include "imagetemplates/v1/identity.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/operations.grpc.pb.h"
#include "tests/identity_setup.h"
#include "tests/process.h"
#include "tests/rpc.h"
#include "tests/seed_records.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;
using Templates = v1::ImageTemplateService::Stub;
using Operations = v1::OperationService::Stub;

std::unique_ptr<grpc::ClientContext> Context(const std::string& key) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  if (!key.empty()) context->AddMetadata("authorization", "Bearer " + key);
  return context;
}

#define EXPECT_CODE(status, code_) \
  EXPECT_EQ((status).error_code(), grpc::StatusCode::code_) << (status).error_message()
#define ASSERT_OK(status) ASSERT_TRUE((status).ok()) << (status).error_message()
// INVALID_ARGUMENT whose message starts with the field's name.
#define EXPECT_INVALID(status, field)                                                \
  do {                                                                               \
    grpc::Status s_ = (status);                                                      \
    EXPECT_EQ(s_.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s_.error_message(); \
    EXPECT_EQ(s_.error_message().substr(0, std::string(field).size()), field)       \
        << s_.error_message();                                                       \
  } while (0)

class TemplateRpcTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("tplrpc");
    ASSERT_FALSE(WriteInternalToken(dir_ + "/internal.token").empty());
    auto process = StartControlPlane(dir_);
    ASSERT_TRUE(process.ok()) << process.status();
    cp_ = std::make_unique<Process>(*std::move(process));
    auto channel = grpc::CreateChannel(cp_->address(), grpc::InsecureChannelCredentials());
    identity_ = v1::IdentityService::NewStub(channel);
    audit_ = v1::AuditService::NewStub(channel);
    templates_ = v1::ImageTemplateService::NewStub(channel);
    operations_ = v1::OperationService::NewStub(channel);
    admin_ = ReadFirstLine(dir_ + "/admin.key");
    ASSERT_FALSE(admin_.empty());

    // The records are written from this process too; no read pool needed.
    auto db = OpenSeedDatabase(dir_ + "/cp.db");
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    store_ = std::make_unique<controlplane::SqliteTemplateStore>(db_.get());

    a_ = CreateAccount("acme");
    b_ = CreateAccount("globex");
    c_ = CreateAccount("initech");
    alice_ = NewKey(NewUser(a_, "alice",
                            {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE,
                             v1::PERMISSION_PUBLIC_IMAGE_MANAGE, v1::PERMISSION_SERVER_PROVISION,
                             v1::PERMISSION_SERVER_VIEW}));
    alice_plain_ = NewKey(NewUser(a_, "alice-plain", {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE}));
    alice_viewer_ = NewKey(NewUser(a_, "alice-viewer", {}));
    bob_ = NewKey(NewUser(b_, "bob",
                          {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE,
                           v1::PERMISSION_PUBLIC_IMAGE_MANAGE, v1::PERMISSION_SERVER_PROVISION,
                           v1::PERMISSION_SERVER_VIEW}));
    carol_ = NewKey(NewUser(c_, "carol", {v1::PERMISSION_SERVER_PROVISION}));
    // A key of alice's that is revoked before use.
    std::string revoked_user = NewUser(a_, "alice-revoked",
                                       {v1::PERMISSION_IMAGE_TEMPLATE_MANAGE});
    v1::CreateApiKeyRequest create;
    create.set_user_id(revoked_user);
    v1::CreateApiKeyResponse created;
    ASSERT_OK(Call(*identity_, &v1::IdentityService::Stub::CreateApiKey, admin_, create,
                   &created));
    revoked_ = created.secret();
    v1::GetImageTemplateRequest probe;
    probe.set_id(NewUuid());
    v1::GetImageTemplateResponse probe_response;
    // The key works (NOT_FOUND, not UNAUTHENTICATED) until it is revoked.
    EXPECT_CODE(Call(*templates_, &Templates::GetImageTemplate, revoked_, probe, &probe_response),
                NOT_FOUND);
    v1::RevokeApiKeyRequest revoke;
    revoke.set_id(created.api_key().id());
    v1::RevokeApiKeyResponse revoke_response;
    ASSERT_OK(Call(*identity_, &v1::IdentityService::Stub::RevokeApiKey, admin_, revoke,
                   &revoke_response));
  }

  void TearDown() override {
    store_.reset();
    db_.reset();
    if (cp_) {
      auto status = cp_->Stop(SIGTERM);
      EXPECT_TRUE(status.ok()) << status.status();
    }
  }

  std::string CreateAccount(const std::string& name) {
    return tests::CreateAccount(*identity_, admin_, name);
  }

  std::string NewUser(const std::string& account, const std::string& name,
                      const std::vector<v1::Permission>& permissions) {
    return CreateUser(*identity_, admin_, account, name, permissions);
  }

  std::string NewKey(const std::string& user_id) {
    return CreateApiKey(*identity_, admin_, user_id);
  }

  // An ACTIVE private template with one boot disk available in dal10, as a
  // finished capture records it.
  v1::ImageTemplate Seed(const std::string& owner, const std::string& name,
                         int64_t stored_bytes = 1000) {
    const int64_t now = absl::ToUnixMicros(absl::Now()) + seeded_++;
    v1::ImageTemplate t = ActiveTemplate(owner, name, MicrosToTimestamp(now), stored_bytes);
    t.set_note("seeded");
    t.add_tags("web");
    absl::Status status = store_->InsertTemplate(t);
    EXPECT_TRUE(status.ok()) << status;
    return t;
  }

  // The template as its owner reads it over the API.
  std::string Snapshot(const std::string& owner_key, const std::string& id) {
    v1::GetImageTemplateRequest request;
    request.set_id(id);
    v1::GetImageTemplateResponse response;
    grpc::Status status =
        Call(*templates_, &Templates::GetImageTemplate, owner_key, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.image_template().DebugString();
  }

  grpc::Status Get(const std::string& key, const std::string& id,
                   v1::ImageTemplate* out = nullptr) {
    v1::GetImageTemplateRequest request;
    request.set_id(id);
    v1::GetImageTemplateResponse response;
    grpc::Status status = Call(*templates_, &Templates::GetImageTemplate, key, request, &response);
    if (out != nullptr) *out = response.image_template();
    return status;
  }

  std::set<std::string> ListIds(const std::string& key, v1::ListImageTemplatesRequest request) {
    std::set<std::string> ids;
    do {
      v1::ListImageTemplatesResponse response;
      grpc::Status status =
          Call(*templates_, &Templates::ListImageTemplates, key, request, &response);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      for (const auto& t : response.image_templates()) ids.insert(t.id());
      request.set_page_token(response.next_page_token());
    } while (!request.page_token().empty());
    return ids;
  }

  grpc::Status Watch(const std::string& key, const std::string& id) {
    auto context = Context(key);
    v1::WatchOperationRequest request;
    request.set_id(id);
    auto reader = operations_->WatchOperation(context.get(), request);
    v1::Operation op;
    // A visible operation streams until it ends; the refusals here end at once.
    while (reader->Read(&op)) {
      if (op.state() >= v1::OPERATION_STATE_SUCCEEDED) context->TryCancel();
    }
    return reader->Finish();
  }

  // Every RPC that names a template, called with `key` on template `id`.
  std::map<std::string, std::function<grpc::Status(const std::string& key)>> TemplateRpcs(
      const std::string& id) {
    std::map<std::string, std::function<grpc::Status(const std::string&)>> rpcs;
    rpcs["GetImageTemplate"] = [this, id](const std::string& key) { return Get(key, id); };
    rpcs["UpdateImageTemplate"] = [this, id](const std::string& key) {
      v1::UpdateImageTemplateRequest r;
      r.set_id(id);
      r.set_name("hijacked");
      r.mutable_update_mask()->add_paths("name");
      v1::UpdateImageTemplateResponse out;
      return Call(*templates_, &Templates::UpdateImageTemplate, key, r, &out);
    };
    rpcs["DeleteImageTemplate"] = [this, id](const std::string& key) {
      v1::DeleteImageTemplateRequest r;
      r.set_id(id);
      v1::Operation out;
      return Call(*templates_, &Templates::DeleteImageTemplate, key, r, &out);
    };
    rpcs["DeployImageTemplate"] = [this, id](const std::string& key) {
      v1::DeployImageTemplateRequest r;
      r.set_image_template_id(id);
      r.set_datacenter("dal10");
      r.set_quantity(1);
      r.set_hostname_prefix("web");
      v1::Operation out;
      return Call(*templates_, &Templates::DeployImageTemplate, key, r, &out);
    };
    rpcs["ShareImageTemplate"] = [this, id](const std::string& key) {
      v1::ShareImageTemplateRequest r;
      r.set_id(id);
      r.add_account_ids(c_);
      v1::ShareImageTemplateResponse out;
      return Call(*templates_, &Templates::ShareImageTemplate, key, r, &out);
    };
    rpcs["UnshareImageTemplate"] = [this, id](const std::string& key) {
      v1::UnshareImageTemplateRequest r;
      r.set_id(id);
      r.add_account_ids(c_);
      v1::UnshareImageTemplateResponse out;
      return Call(*templates_, &Templates::UnshareImageTemplate, key, r, &out);
    };
    rpcs["ListImageTemplateShares"] = [this, id](const std::string& key) {
      v1::ListImageTemplateSharesRequest r;
      r.set_id(id);
      v1::ListImageTemplateSharesResponse out;
      return Call(*templates_, &Templates::ListImageTemplateShares, key, r, &out);
    };
    rpcs["PublishImageTemplate"] = [this, id](const std::string& key) {
      v1::PublishImageTemplateRequest r;
      r.set_id(id);
      v1::PublishImageTemplateResponse out;
      return Call(*templates_, &Templates::PublishImageTemplate, key, r, &out);
    };
    rpcs["UnpublishImageTemplate"] = [this, id](const std::string& key) {
      v1::UnpublishImageTemplateRequest r;
      r.set_id(id);
      v1::UnpublishImageTemplateResponse out;
      return Call(*templates_, &Templates::UnpublishImageTemplate, key, r, &out);
    };
    rpcs["ListImageTemplateLocations"] = [this, id](const std::string& key) {
      v1::ListImageTemplateLocationsRequest r;
      r.set_id(id);
      v1::ListImageTemplateLocationsResponse out;
      return Call(*templates_, &Templates::ListImageTemplateLocations, key, r, &out);
    };
    rpcs["AddImageTemplateLocations"] = [this, id](const std::string& key) {
      v1::AddImageTemplateLocationsRequest r;
      r.set_id(id);
      r.add_datacenters("ams01");
      v1::Operation out;
      return Call(*templates_, &Templates::AddImageTemplateLocations, key, r, &out);
    };
    rpcs["RemoveImageTemplateLocations"] = [this, id](const std::string& key) {
      v1::RemoveImageTemplateLocationsRequest r;
      r.set_id(id);
      r.add_datacenters("dal10");
      v1::RemoveImageTemplateLocationsResponse out;
      return Call(*templates_, &Templates::RemoveImageTemplateLocations, key, r, &out);
    };
    rpcs["DeprecateImageTemplate"] = [this, id](const std::string& key) {
      v1::DeprecateImageTemplateRequest r;
      r.set_id(id);
      v1::DeprecateImageTemplateResponse out;
      return Call(*templates_, &Templates::DeprecateImageTemplate, key, r, &out);
    };
    rpcs["UndeprecateImageTemplate"] = [this, id](const std::string& key) {
      v1::UndeprecateImageTemplateRequest r;
      r.set_id(id);
      v1::UndeprecateImageTemplateResponse out;
      return Call(*templates_, &Templates::UndeprecateImageTemplate, key, r, &out);
    };
    rpcs["DisableImageTemplate"] = [this, id](const std::string& key) {
      v1::DisableImageTemplateRequest r;
      r.set_id(id);
      v1::DisableImageTemplateResponse out;
      return Call(*templates_, &Templates::DisableImageTemplate, key, r, &out);
    };
    rpcs["EnableImageTemplate"] = [this, id](const std::string& key) {
      v1::EnableImageTemplateRequest r;
      r.set_id(id);
      v1::EnableImageTemplateResponse out;
      return Call(*templates_, &Templates::EnableImageTemplate, key, r, &out);
    };
    rpcs["SetDeleteProtection"] = [this, id](const std::string& key) {
      v1::SetDeleteProtectionRequest r;
      r.set_id(id);
      r.set_delete_protected(true);
      v1::SetDeleteProtectionResponse out;
      return Call(*templates_, &Templates::SetDeleteProtection, key, r, &out);
    };
    return rpcs;
  }

  // Every RPC that names an operation.
  std::map<std::string, std::function<grpc::Status(const std::string& key)>> OperationRpcs(
      const std::string& id) {
    std::map<std::string, std::function<grpc::Status(const std::string&)>> rpcs;
    rpcs["GetOperation"] = [this, id](const std::string& key) {
      v1::GetOperationRequest r;
      r.set_id(id);
      v1::Operation out;
      return Call(*operations_, &Operations::GetOperation, key, r, &out);
    };
    rpcs["CancelOperation"] = [this, id](const std::string& key) {
      v1::CancelOperationRequest r;
      r.set_id(id);
      v1::Operation out;
      return Call(*operations_, &Operations::CancelOperation, key, r, &out);
    };
    rpcs["WatchOperation"] = [this, id](const std::string& key) { return Watch(key, id); };
    return rpcs;
  }

  // An operation of alice's account: the delete of a template of its own.
  v1::Operation AliceOperation() {
    v1::ImageTemplate doomed = Seed(a_, "doomed");
    v1::DeleteImageTemplateRequest r;
    r.set_id(doomed.id());
    v1::Operation op;
    grpc::Status status = Call(*templates_, &Templates::DeleteImageTemplate, alice_, r, &op);
    EXPECT_TRUE(status.ok()) << status.error_message();
    EXPECT_EQ(op.kind(), v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE);
    return op;
  }

  std::string dir_;
  std::unique_ptr<Process> cp_;
  std::unique_ptr<v1::IdentityService::Stub> identity_;
  std::unique_ptr<v1::AuditService::Stub> audit_;
  std::unique_ptr<Templates> templates_;
  std::unique_ptr<Operations> operations_;
  std::unique_ptr<controlplane::SqliteDatabase> db_;
  std::unique_ptr<controlplane::SqliteTemplateStore> store_;
  std::string admin_, a_, b_, c_;
  std::string alice_, alice_plain_, alice_viewer_, bob_, carol_, revoked_;
  int64_t seeded_ = 0;
};

TEST_F(TemplateRpcTest, EveryRpcRefusesMissingRevokedAndUnknownKeys) {
  v1::ImageTemplate t = Seed(a_, "guarded");
  const std::string before = Snapshot(alice_, t.id());
  v1::Operation op = AliceOperation();
  auto rpcs = TemplateRpcs(t.id());
  for (auto& [name, rpc] : OperationRpcs(op.id())) rpcs[name] = rpc;
  rpcs["CreateImageTemplate"] = [this](const std::string& key) {
    v1::CreateImageTemplateRequest r;
    r.set_server_id(NewUuid());
    r.set_name("new");
    v1::Operation out;
    return Call(*templates_, &Templates::CreateImageTemplate, key, r, &out);
  };
  rpcs["ListImageTemplates"] = [this](const std::string& key) {
    v1::ListImageTemplatesResponse out;
    return Call(*templates_, &Templates::ListImageTemplates, key,
                v1::ListImageTemplatesRequest(), &out);
  };
  rpcs["ListOperations"] = [this](const std::string& key) {
    v1::ListOperationsResponse out;
    return Call(*operations_, &Operations::ListOperations, key, v1::ListOperationsRequest(),
                &out);
  };
  EXPECT_EQ(rpcs.size(), 19u + 4u);  // every RPC of both services
  const std::string unknown =
      "itk_" + NewUuid() + "_" + std::string(43, 'A');
  for (const std::string& key : {std::string(), revoked_, unknown, std::string("garbage")}) {
    for (auto& [name, rpc] : rpcs) {
      grpc::Status status = rpc(key);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAUTHENTICATED)
          << name << " with key \"" << key.substr(0, 12) << "\": " << status.error_message();
    }
  }
  EXPECT_EQ(Snapshot(alice_, t.id()), before);
}

TEST_F(TemplateRpcTest, AnotherAccountsPrivateTemplateAndOperationAreNotFoundAndUnchanged) {
  v1::ImageTemplate t = Seed(a_, "private");
  const std::string before = Snapshot(alice_, t.id());
  v1::Operation op = AliceOperation();
  for (auto& [name, rpc] : TemplateRpcs(t.id())) {
    for (const std::string& key : {bob_, carol_}) {
      grpc::Status status = rpc(key);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND)
          << name << ": " << status.error_message();
      // The message names nothing of the other account.
      EXPECT_EQ(status.error_message().find(a_), std::string::npos) << name;
    }
  }
  EXPECT_EQ(Snapshot(alice_, t.id()), before);
  v1::ListImageTemplateSharesRequest shares;
  shares.set_id(t.id());
  v1::ListImageTemplateSharesResponse shares_response;
  ASSERT_OK(Call(*templates_, &Templates::ListImageTemplateShares, alice_, shares,
                 &shares_response));
  EXPECT_EQ(shares_response.shares_size(), 0);

  for (auto& [name, rpc] : OperationRpcs(op.id())) {
    grpc::Status status = rpc(bob_);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::NOT_FOUND)
        << name << ": " << status.error_message();
  }
  v1::GetOperationRequest get_op;
  get_op.set_id(op.id());
  v1::Operation after;
  ASSERT_OK(Call(*operations_, &Operations::GetOperation, alice_, get_op, &after));
  EXPECT_EQ(after.account_id(), a_);
  EXPECT_FALSE(after.state() == v1::OPERATION_STATE_CANCELLED ||
               after.state() == v1::OPERATION_STATE_CANCELLING);
  // Bob's lists hold none of it; an unknown id is NOT_FOUND just the same.
  v1::ListImageTemplatesRequest all;
  all.set_include_deprecated(true);
  EXPECT_EQ(ListIds(bob_, all).count(t.id()), 0u);
  v1::ListOperationsResponse ops;
  ASSERT_OK(Call(*operations_, &Operations::ListOperations, bob_, v1::ListOperationsRequest(),
                 &ops));
  EXPECT_EQ(ops.operations_size(), 0);
  EXPECT_CODE(Get(bob_, NewUuid()), NOT_FOUND);
}

TEST_F(TemplateRpcTest, ShareUnsharePublishDeprecateDisableProtect) {
  v1::ImageTemplate t = Seed(a_, "golden");
  auto rpcs = TemplateRpcs(t.id());
  v1::ListImageTemplatesRequest list;

  // Shared with bob's account: bob sees and may deploy it, not change it.
  v1::ShareImageTemplateRequest share;
  share.set_id(t.id());
  share.add_account_ids(b_);
  v1::ShareImageTemplateResponse shared;
  EXPECT_CODE(Call(*templates_, &Templates::ShareImageTemplate, alice_viewer_, share, &shared),
              PERMISSION_DENIED);
  ASSERT_OK(Call(*templates_, &Templates::ShareImageTemplate, alice_, share, &shared));
  EXPECT_CODE(Get(bob_, t.id()), OK);
  EXPECT_EQ(ListIds(bob_, list).count(t.id()), 1u);
  EXPECT_CODE(Get(carol_, t.id()), NOT_FOUND);
  for (const char* change : {"UpdateImageTemplate", "DeleteImageTemplate", "ShareImageTemplate",
                             "PublishImageTemplate", "DeprecateImageTemplate",
                             "SetDeleteProtection"}) {
    EXPECT_CODE(rpcs[change](bob_), PERMISSION_DENIED) << change;
  }
  v1::ImageTemplate seen;
  ASSERT_OK(Get(alice_, t.id(), &seen));
  EXPECT_EQ(seen.name(), "golden");
  v1::UnshareImageTemplateRequest unshare;
  unshare.set_id(t.id());
  unshare.add_account_ids(b_);
  v1::UnshareImageTemplateResponse unshared;
  ASSERT_OK(Call(*templates_, &Templates::UnshareImageTemplate, alice_, unshare, &unshared));
  EXPECT_CODE(Get(bob_, t.id()), NOT_FOUND);
  EXPECT_EQ(ListIds(bob_, list).count(t.id()), 0u);

  // Publishing needs PUBLIC_IMAGE_MANAGE; then every account sees it.
  EXPECT_CODE(rpcs["PublishImageTemplate"](alice_plain_), PERMISSION_DENIED);
  EXPECT_CODE(Get(carol_, t.id()), NOT_FOUND);
  ASSERT_OK(rpcs["PublishImageTemplate"](alice_));
  ASSERT_OK(Get(carol_, t.id(), &seen));
  EXPECT_EQ(seen.visibility(), v1::VISIBILITY_PUBLIC);
  EXPECT_EQ(ListIds(carol_, list).count(t.id()), 1u);

  // Deprecated: gone from others' default lists, still readable by id.
  ASSERT_OK(rpcs["DeprecateImageTemplate"](alice_));
  EXPECT_EQ(ListIds(carol_, list).count(t.id()), 0u);
  v1::ListImageTemplatesRequest with_deprecated;
  with_deprecated.set_include_deprecated(true);
  EXPECT_EQ(ListIds(carol_, with_deprecated).count(t.id()), 1u);
  EXPECT_EQ(ListIds(alice_, list).count(t.id()), 1u);  // the owner still lists it
  ASSERT_OK(Get(carol_, t.id(), &seen));
  EXPECT_TRUE(seen.deprecated());
  ASSERT_OK(rpcs["UndeprecateImageTemplate"](alice_));
  EXPECT_EQ(ListIds(carol_, list).count(t.id()), 1u);

  // Disabled: hidden from others and not deployable.
  ASSERT_OK(rpcs["DisableImageTemplate"](alice_));
  EXPECT_CODE(Get(carol_, t.id()), NOT_FOUND);
  EXPECT_CODE(rpcs["DeployImageTemplate"](carol_), NOT_FOUND);
  EXPECT_CODE(rpcs["DeployImageTemplate"](alice_), FAILED_PRECONDITION);
  ASSERT_OK(rpcs["EnableImageTemplate"](alice_));
  EXPECT_CODE(Get(carol_, t.id()), OK);

  // Unpublished: private again.
  ASSERT_OK(rpcs["UnpublishImageTemplate"](alice_));
  EXPECT_CODE(Get(carol_, t.id()), NOT_FOUND);

  // Delete protection refuses the delete until lifted.
  ASSERT_OK(rpcs["SetDeleteProtection"](alice_));
  EXPECT_CODE(rpcs["DeleteImageTemplate"](alice_), FAILED_PRECONDITION);
  ASSERT_OK(Get(alice_, t.id(), &seen));
  EXPECT_EQ(seen.status(), v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  EXPECT_TRUE(seen.delete_protected());
  v1::SetDeleteProtectionRequest unprotect;
  unprotect.set_id(t.id());
  unprotect.set_delete_protected(false);
  v1::SetDeleteProtectionResponse unprotected;
  ASSERT_OK(Call(*templates_, &Templates::SetDeleteProtection, alice_, unprotect, &unprotected));
  v1::DeleteImageTemplateRequest del;
  del.set_id(t.id());
  v1::Operation op;
  ASSERT_OK(Call(*templates_, &Templates::DeleteImageTemplate, alice_, del, &op));
  EXPECT_EQ(op.kind(), v1::OPERATION_KIND_DELETE_IMAGE_TEMPLATE);
  EXPECT_EQ(op.target().id(), t.id());
}

TEST_F(TemplateRpcTest, QuotasAnswerResourceExhausted) {
  Seed(a_, "one", 4000);
  Seed(a_, "two", 4000);
  v1::CreateImageTemplateRequest create;
  create.set_server_id(NewUuid());
  create.set_name("three");
  v1::Operation op;
  auto set_quota = [&](int64_t templates, int64_t bytes) {
    v1::SetQuotaRequest request;
    request.set_account_id(a_);
    request.set_max_image_templates(templates);
    request.set_max_stored_bytes(bytes);
    request.mutable_update_mask()->add_paths("max_image_templates");
    request.mutable_update_mask()->add_paths("max_stored_bytes");
    v1::SetQuotaResponse response;
    grpc::Status status =
        Call(*identity_, &v1::IdentityService::Stub::SetQuota, admin_, request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
  };
  set_quota(2, 0);
  EXPECT_CODE(Call(*templates_, &Templates::CreateImageTemplate, alice_, create, &op),
              RESOURCE_EXHAUSTED);
  set_quota(10, 8000);
  EXPECT_CODE(Call(*templates_, &Templates::CreateImageTemplate, alice_, create, &op),
              RESOURCE_EXHAUSTED);
  // Within both quotas the create gets past them (the server does not exist).
  set_quota(10, 8001);
  EXPECT_CODE(Call(*templates_, &Templates::CreateImageTemplate, alice_, create, &op), NOT_FOUND);
  // Another account's quota is its own.
  v1::CreateImageTemplateRequest bobs = create;
  EXPECT_CODE(Call(*templates_, &Templates::CreateImageTemplate, bob_, bobs, &op), NOT_FOUND);
}

TEST_F(TemplateRpcTest, PagesStayCorrectWhileTemplatesAreInserted) {
  std::set<std::string> initial;
  for (int i = 0; i < 60; ++i) initial.insert(Seed(a_, absl::StrCat("t", 100 + i)).id());
  for (bool by_name : {false, true}) {
    for (bool descending : {false, true}) {
      std::atomic<bool> stop{false};
      std::set<std::string> inserted;
      std::thread writer([&] {
        for (int i = 0; !stop.load() && i < 200; ++i) {
          inserted.insert(Seed(a_, absl::StrCat("new-", by_name, descending, "-", i)).id());
          absl::SleepFor(absl::Milliseconds(2));
        }
      });
      v1::ListImageTemplatesRequest request;
      request.set_page_size(7);
      request.set_order_by(by_name ? v1::IMAGE_TEMPLATE_ORDER_BY_NAME
                                   : v1::IMAGE_TEMPLATE_ORDER_BY_CREATE_TIME);
      request.set_descending(descending);
      std::vector<std::string> seen_order;
      std::set<std::string> seen;
      int pages = 0;
      do {
        v1::ListImageTemplatesResponse response;
        grpc::Status status =
            Call(*templates_, &Templates::ListImageTemplates, alice_, request, &response);
        ASSERT_OK(status);
        EXPECT_LE(response.image_templates_size(), 7);
        for (const auto& t : response.image_templates()) {
          EXPECT_TRUE(seen.insert(t.id()).second) << "listed twice: " << t.name();
          seen_order.push_back(by_name ? t.name() : std::to_string(t.create_time().seconds() *
                                                                       1000000000LL +
                                                                   t.create_time().nanos()));
        }
        request.set_page_token(response.next_page_token());
        ++pages;
        absl::SleepFor(absl::Milliseconds(3));
      } while (!request.page_token().empty() && pages < 1000);
      stop = true;
      writer.join();
      for (const std::string& id : initial) {
        EXPECT_EQ(seen.count(id), 1u) << "missing a template that existed throughout";
      }
      for (const std::string& id : seen) {
        EXPECT_TRUE(initial.count(id) || inserted.count(id)) << id;
      }
      // In order across pages.
      for (size_t i = 1; i < seen_order.size(); ++i) {
        if (by_name) {
          EXPECT_TRUE(descending ? seen_order[i - 1] >= seen_order[i]
                                 : seen_order[i - 1] <= seen_order[i])
              << seen_order[i - 1] << " then " << seen_order[i];
        }
      }
      for (const std::string& id : inserted) initial.insert(id);
    }
  }
}

TEST_F(TemplateRpcTest, BadInputIsInvalidArgumentNamingTheFieldAndNamesAreStoredLiterally) {
  v1::ImageTemplate t = Seed(a_, "plain");
  const std::string before = Snapshot(alice_, t.id());
  auto rename = [&](const std::string& name) {
    v1::UpdateImageTemplateRequest r;
    r.set_id(t.id());
    r.set_name(name);
    r.mutable_update_mask()->add_paths("name");
    v1::UpdateImageTemplateResponse out;
    grpc::Status status = Call(*templates_, &Templates::UpdateImageTemplate, alice_, r, &out);
    return std::make_pair(status, out.image_template().name());
  };
  EXPECT_INVALID(rename("").first, "name");
  EXPECT_INVALID(rename("   ").first, "name");
  EXPECT_INVALID(rename(std::string(101, 'x')).first, "name");
  EXPECT_INVALID(rename("bad\nname").first, "name");
  EXPECT_INVALID(rename(std::string("nul\0name", 8)).first, "name");
  EXPECT_EQ(Snapshot(alice_, t.id()), before);  // nothing half-written

  for (const std::string& literal :
       {std::string("x'); DROP TABLE image_templates;--"), std::string("%_*' OR 1=1 --"),
        std::string(100, 'y'), std::string("Ünïcödé 模板")}) {
    auto [status, stored] = rename(literal);
    ASSERT_OK(status);
    EXPECT_EQ(stored, literal);
    v1::ImageTemplate got;
    ASSERT_OK(Get(alice_, t.id(), &got));
    EXPECT_EQ(got.name(), literal);
    v1::ListImageTemplatesRequest by_name;
    by_name.set_name_contains(literal);
    EXPECT_EQ(ListIds(alice_, by_name).count(t.id()), 1u) << literal;
  }
  // Names are trimmed, then kept as given.
  auto [trimmed_status, trimmed] = rename("  spaced  ");
  ASSERT_OK(trimmed_status);
  EXPECT_EQ(trimmed, "spaced");

  v1::ListImageTemplatesResponse listed;
  v1::ListImageTemplatesRequest list;
  list.set_page_size(-1);
  EXPECT_INVALID(Call(*templates_, &Templates::ListImageTemplates, alice_, list, &listed),
                 "page_size");
  list.set_page_size(2147483647);  // clamped, not refused
  ASSERT_OK(Call(*templates_, &Templates::ListImageTemplates, alice_, list, &listed));
  EXPECT_EQ(listed.image_templates_size(), 1);
  list.set_page_size(0);
  list.set_page_token("garbage-token");
  EXPECT_INVALID(Call(*templates_, &Templates::ListImageTemplates, alice_, list, &listed),
                 "page_token");
  list.clear_page_token();
  list.set_visibility(static_cast<v1::Visibility>(99));
  EXPECT_INVALID(Call(*templates_, &Templates::ListImageTemplates, alice_, list, &listed),
                 "visibility");
  list.clear_visibility();
  list.set_status(static_cast<v1::ImageTemplateStatus>(-3));
  EXPECT_INVALID(Call(*templates_, &Templates::ListImageTemplates, alice_, list, &listed),
                 "status");
  list.clear_status();
  list.set_order_by(static_cast<v1::ImageTemplateOrderBy>(42));
  EXPECT_INVALID(Call(*templates_, &Templates::ListImageTemplates, alice_, list, &listed),
                 "order_by");

  // Malformed UUIDs, in every RPC that takes one.
  for (const std::string& bad : {std::string("not-a-uuid"), std::string("' OR 1=1 --"),
                                 std::string(), t.id() + "0"}) {
    for (auto& [name, rpc] : TemplateRpcs(bad)) {
      grpc::Status status = rpc(alice_);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT)
          << name << " " << bad << ": " << status.error_message();
    }
    EXPECT_INVALID(Get(alice_, bad), "id");
    v1::DeployImageTemplateRequest deploy;
    deploy.set_image_template_id(bad);
    deploy.set_datacenter("dal10");
    deploy.set_quantity(1);
    deploy.set_hostname_prefix("web");
    v1::Operation op;
    EXPECT_INVALID(Call(*templates_, &Templates::DeployImageTemplate, alice_, deploy, &op),
                   "image_template_id");
    v1::GetOperationRequest get_op;
    get_op.set_id(bad);
    EXPECT_INVALID(Call(*operations_, &Operations::GetOperation, alice_, get_op, &op), "id");
  }
  v1::ShareImageTemplateRequest share;
  share.set_id(t.id());
  share.add_account_ids("not-an-account");
  v1::ShareImageTemplateResponse shared;
  EXPECT_INVALID(Call(*templates_, &Templates::ShareImageTemplate, alice_, share, &shared),
                 "account_ids");
  v1::DeployImageTemplateRequest deploy;
  deploy.set_image_template_id(t.id());
  deploy.set_datacenter("dal10");
  deploy.set_quantity(-1);
  v1::Operation op;
  EXPECT_INVALID(Call(*templates_, &Templates::DeployImageTemplate, alice_, deploy, &op),
                 "quantity");
}

TEST_F(TemplateRpcTest, MutatingCallsAreAuditedAllowedOrRefused) {
  v1::ImageTemplate t = Seed(a_, "audited");
  v1::ShareImageTemplateRequest share;
  share.set_id(t.id());
  share.add_account_ids(b_);
  share.set_request_id("share-audit-1");
  v1::ShareImageTemplateResponse shared;
  ASSERT_OK(Call(*templates_, &Templates::ShareImageTemplate, alice_, share, &shared));
  // Bob may see it now but not change it: refused, and audited.
  auto rpcs = TemplateRpcs(t.id());
  EXPECT_CODE(rpcs["UpdateImageTemplate"](bob_), PERMISSION_DENIED);
  EXPECT_CODE(rpcs["DeleteImageTemplate"](""), UNAUTHENTICATED);

  v1::ListAuditEventsRequest request;
  request.set_target_id(t.id());
  request.set_page_size(100);
  v1::ListAuditEventsResponse response;
  ASSERT_OK(Call(*audit_, &v1::AuditService::Stub::ListAuditEvents, admin_, request, &response));
  std::map<std::string, v1::AuditEvent> by_method;
  for (const auto& e : response.audit_events()) by_method[e.method()] = e;
  auto find = [&](const std::string& method) -> const v1::AuditEvent* {
    for (const auto& [name, e] : by_method) {
      if (name.find(method) != std::string::npos) return &e;
    }
    return nullptr;
  };
  const v1::AuditEvent* share_event = find("ShareImageTemplate");
  ASSERT_NE(share_event, nullptr);
  // The full gRPC method name, as ListAuditEvents' method filter takes it.
  EXPECT_EQ(share_event->method(), "/imagetemplates.v1.ImageTemplateService/ShareImageTemplate");
  EXPECT_EQ(share_event->outcome().code(), 0);
  EXPECT_EQ(share_event->account_id(), a_);
  EXPECT_EQ(share_event->request_id(), "share-audit-1");
  EXPECT_EQ(share_event->target().id(), t.id());
  EXPECT_FALSE(share_event->user_id().empty());
  EXPECT_FALSE(share_event->api_key_id().empty());
  const v1::AuditEvent* update_event = find("UpdateImageTemplate");
  ASSERT_NE(update_event, nullptr);
  EXPECT_EQ(update_event->outcome().code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(update_event->user_id(), share_event->user_id());
  const v1::AuditEvent* delete_event = find("DeleteImageTemplate");
  ASSERT_NE(delete_event, nullptr);
  EXPECT_EQ(delete_event->outcome().code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(delete_event->method(), "/imagetemplates.v1.ImageTemplateService/DeleteImageTemplate");

  // The account's own log shows its calls; another account's user sees none.
  v1::ListAuditEventsRequest own;
  own.set_target_id(t.id());
  v1::ListAuditEventsResponse refused;
  EXPECT_CODE(Call(*audit_, &v1::AuditService::Stub::ListAuditEvents, carol_, own, &refused),
              PERMISSION_DENIED);
  // Reads are not audited.
  ASSERT_OK(Get(alice_, t.id()));
  ASSERT_OK(Call(*audit_, &v1::AuditService::Stub::ListAuditEvents, admin_, request, &response));
  for (const auto& e : response.audit_events()) {
    EXPECT_EQ(e.method().find("GetImageTemplate"), std::string::npos);
  }
}

}  // namespace
}  // namespace tests
