// A flood of unauthenticated mutating calls from one address against the
// real controlplane binary over gRPC: every call is refused, the audit log
// gets at most the burst (100) of single rows plus a few summaries whose
// counts add up to exactly the refused calls, a legitimate caller behind the
// same address is still served and audited row by row, and the summary of
// a window still open at shutdown (SIGTERM) is written.
#include <cmath>
#include <signal.h>
#include <sys/wait.h>

#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "controlplane/testing/audit_summary.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "imagetemplates/v1/audit.grpc.pb.h"
#include "imagetemplates/v1/image_templates.grpc.pb.h"
#include "imagetemplates/v1/inventory.grpc.pb.h"
#include "tests/process.h"
#include "tests/rpc.h"
#include "tests/stack.h"

namespace tests {
namespace {

namespace v1 = imagetemplates::v1;

constexpr char kCreateDatacenter[] = "/imagetemplates.v1.InventoryService/CreateDatacenter";
// A well-formed key the database does not have, and a malformed one.
constexpr char kUnknownKey[] =
    "itk_00000000-0000-4000-8000-000000000001_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
constexpr char kMalformedKey[] = "let-me-in";

using ::controlplane::SummaryCount;

struct Refused {
  int singles = 0;
  int summaries = 0;
  int64_t summarized = 0;
};

class AuditThrottleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = MakeTempDir("auditthrottle");
    ASSERT_FALSE(WriteInternalToken(dir_ + "/internal.token").empty());
    Start();
    admin_ = ReadFirstLine(dir_ + "/admin.key");
    ASSERT_FALSE(admin_.empty());
  }

  void Start() {
    auto process = StartControlPlane(dir_);
    ASSERT_TRUE(process.ok()) << process.status();
    cp_ = std::make_unique<Process>(*std::move(process));
    auto channel = grpc::CreateChannel(cp_->address(), grpc::InsecureChannelCredentials());
    audit_ = v1::AuditService::NewStub(channel);
    inventory_ = v1::InventoryService::NewStub(channel);
    templates_ = v1::ImageTemplateService::NewStub(channel);
  }

  // Every audit event, newest first, read as the operator.
  std::vector<v1::AuditEvent> Events() {
    std::vector<v1::AuditEvent> events;
    v1::ListAuditEventsRequest request;
    request.set_page_size(1000);
    while (true) {
      v1::ListAuditEventsResponse page;
      grpc::Status status = Call(*audit_, &v1::AuditService::Stub::ListAuditEvents, admin_,
                                 request, &page);
      EXPECT_TRUE(status.ok()) << status.error_message();
      if (!status.ok()) break;
      events.insert(events.end(), page.audit_events().begin(), page.audit_events().end());
      if (page.next_page_token().empty()) break;
      request.set_page_token(page.next_page_token());
    }
    return events;
  }

  Refused CountRefused() {
    Refused refused;
    for (const v1::AuditEvent& event : Events()) {
      if (event.outcome().code() != grpc::StatusCode::UNAUTHENTICATED) continue;
      EXPECT_TRUE(absl::StartsWith(event.peer(), "ipv4:127.0.0.1")) << event.peer();
      EXPECT_EQ(event.user_id(), "");
      const int64_t count = SummaryCount(event);
      if (count > 0) {
        EXPECT_EQ(event.peer(), "ipv4:127.0.0.1");
        ++refused.summaries;
        refused.summarized += count;
      } else {
        ++refused.singles;
      }
    }
    return refused;
  }

  // Waits until the refusals in the log add up to `total`.
  Refused WaitForRefused(int64_t total, absl::Duration timeout) {
    const absl::Time deadline = absl::Now() + timeout;
    Refused refused = CountRefused();
    while (refused.singles + refused.summarized < total && absl::Now() < deadline) {
      absl::SleepFor(absl::Milliseconds(250));
      refused = CountRefused();
    }
    return refused;
  }

  // A mutating call with a bad key: CreateDatacenter (RpcRunner) for even
  // `i`, ShareImageTemplate (ImageTemplateManager) for odd; malformed and
  // unknown keys in turn.
  grpc::Status BadCall(int i) {
    const std::string key = (i / 2) % 2 ? kMalformedKey : kUnknownKey;
    if (i % 2 == 0) {
      v1::CreateDatacenterRequest request;
      request.set_name("dc-" + std::to_string(i));
      v1::CreateDatacenterResponse response;
      return Call(*inventory_, &v1::InventoryService::Stub::CreateDatacenter, key, request,
                  &response);
    }
    v1::ShareImageTemplateRequest request;
    request.set_id("00000000-0000-4000-8000-00000000000a");
    request.add_account_ids("00000000-0000-4000-8000-00000000000b");
    v1::ShareImageTemplateResponse response;
    return Call(*templates_, &v1::ImageTemplateService::Stub::ShareImageTemplate, key, request,
                &response);
  }

  std::string dir_;
  std::unique_ptr<Process> cp_;
  std::string admin_;
  std::unique_ptr<v1::AuditService::Stub> audit_;
  std::unique_ptr<v1::InventoryService::Stub> inventory_;
  std::unique_ptr<v1::ImageTemplateService::Stub> templates_;
};

// Tokens a 10-per-second limiter gains over `d` (rounded up, plus one for
// a refill landing between two reads of the clock).
int RefilledDuring(absl::Duration d) {
  return static_cast<int>(std::ceil(absl::ToDoubleSeconds(d) * 10)) + 1;
}

TEST_F(AuditThrottleTest, FloodIsRefusedAndAuditedInSummaries) {
  // The operator's key is proven before the flood, from the same address.
  ASSERT_TRUE(Events().empty());

  constexpr int kFlood = 1000;
  int unauthenticated = 0;
  int throttled = 0;
  const absl::Time flood_start = absl::Now();
  for (int i = 0; i < kFlood; ++i) {
    if (i == kFlood / 2) {
      // A legitimate mutating call in the middle of the flood.
      v1::CreateDatacenterRequest request;
      request.set_name("legit-dc");
      request.set_request_id("legit-request");
      v1::CreateDatacenterResponse response;
      grpc::Status status = Call(*inventory_, &v1::InventoryService::Stub::CreateDatacenter,
                                 admin_, request, &response);
      ASSERT_TRUE(status.ok()) << status.error_message();
      EXPECT_EQ(response.datacenter().name(), "legit-dc");
    }
    grpc::Status status = BadCall(i);
    unauthenticated += status.error_code() == grpc::StatusCode::UNAUTHENTICATED;
    const bool too_many = absl::StrContains(
        status.error_message(), "too many failed authentications from ipv4:127.0.0.1");
    // Unknown keys (half the flood) are throttled; malformed ones cost no
    // read and never are, so they cannot lock out the address's good keys.
    if ((i / 2) % 2) {
      EXPECT_FALSE(too_many) << i << ": " << status.error_message();
    } else {
      throttled += too_many;
    }
  }
  // Both limiters allow a burst of 100 and then 10 a second, so what gets
  // through grows with how long the flood took on this (shared) machine.
  const absl::Time flood_end = absl::Now();
  const int refilled = RefilledDuring(flood_end - flood_start);
  EXPECT_EQ(unauthenticated, kFlood);
  EXPECT_GE(throttled, kFlood / 2 - 100 - refilled) << "the flood was never throttled";

  // Summaries are written once their window spans 10 s.
  Refused refused = WaitForRefused(kFlood, absl::Seconds(40));
  std::fprintf(stderr,
               "%d single rows + %d summaries of %lld calls, written %.1f s after the flood\n",
               refused.singles, refused.summaries, static_cast<long long>(refused.summarized),
               absl::ToDoubleSeconds(absl::Now() - flood_end));
  EXPECT_EQ(refused.singles + refused.summarized, kFlood);
  EXPECT_LE(refused.singles, 100 + refilled);
  EXPECT_GE(refused.summaries, 2);  // one per method at least
  EXPECT_LE(refused.summaries, 6);

  // The legitimate call is audited as itself.
  int legit = 0;
  for (const v1::AuditEvent& event : Events()) {
    if (event.request_id() != "legit-request") continue;
    ++legit;
    EXPECT_EQ(event.method(), kCreateDatacenter);
    EXPECT_EQ(event.outcome().code(), 0);
    EXPECT_EQ(event.target().id(), "legit-dc");
    EXPECT_FALSE(event.user_id().empty());
    EXPECT_FALSE(event.api_key_id().empty());
  }
  EXPECT_EQ(legit, 1);

  // A second flood whose last window is still open at SIGTERM: its summary
  // is written at shutdown, and the counts still add up after a restart.
  constexpr int kSecond = 300;
  const absl::Time second_start = absl::Now();
  for (int i = 0; i < kSecond; ++i) {
    EXPECT_EQ(BadCall(i).error_code(), grpc::StatusCode::UNAUTHENTICATED) << i;
  }
  const int second_refilled = RefilledDuring(absl::Now() - second_start);
  absl::StatusOr<int> exit = cp_->Stop(SIGTERM, absl::Seconds(30));
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_TRUE(WIFEXITED(*exit) && WEXITSTATUS(*exit) == 0) << *exit;
  Start();
  refused = CountRefused();
  std::fprintf(stderr, "after the restart: %d single rows + %d summaries of %lld calls\n",
               refused.singles, refused.summaries, static_cast<long long>(refused.summarized));
  EXPECT_EQ(refused.singles + refused.summarized, kFlood + kSecond);
  EXPECT_LE(refused.singles, 200 + refilled + second_refilled);
}

}  // namespace
}  // namespace tests
