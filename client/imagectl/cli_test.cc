#include "client/imagectl/cli.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "gtest/gtest.h"

namespace imagectl {
namespace {

TEST(ResolveGlobalsTest, FlagsBeatEnvironmentBeatConfigFile) {
  const std::string config = std::string(getenv("TEST_TMPDIR")) + "/config";
  std::ofstream(config) << "# comment\nendpoint = file:1\napi_key=file-key\noutput=json\n";
  unsetenv("IMAGECTL_ENDPOINT");
  setenv("IMAGECTL_API_KEY", "env-key", 1);
  std::vector<std::string> args = {"image", "--config=" + config, "list", "-o", "table",
                                   "--name-contains=x", "--endpoint", "flag:2"};
  absl::StatusOr<GlobalOptions> globals = ResolveGlobals(&args);
  ASSERT_TRUE(globals.ok()) << globals.status();
  EXPECT_EQ(globals->endpoint, "flag:2");
  EXPECT_EQ(globals->api_key, "env-key");
  EXPECT_EQ(globals->output, "table");
  EXPECT_EQ(args, (std::vector<std::string>{"image", "list", "--name-contains=x"}));

  args = {"--config", config};
  unsetenv("IMAGECTL_API_KEY");
  globals = ResolveGlobals(&args);
  ASSERT_TRUE(globals.ok()) << globals.status();
  EXPECT_EQ(globals->endpoint, "file:1");
  EXPECT_EQ(globals->api_key, "file-key");
  EXPECT_EQ(globals->output, "json");
}

TEST(ResolveGlobalsTest, RejectsBadValues) {
  std::vector<std::string> args = {"-o", "yaml"};
  EXPECT_EQ(ResolveGlobals(&args).status().code(), absl::StatusCode::kInvalidArgument);
  args = {"--config=/nonexistent/file"};
  EXPECT_EQ(ResolveGlobals(&args).status().code(), absl::StatusCode::kInvalidArgument);
  args = {"--endpoint"};
  EXPECT_EQ(ResolveGlobals(&args).status().code(), absl::StatusCode::kInvalidArgument);
  args = {"--tls-cert=client.pem", "whoami"};
  EXPECT_EQ(ResolveGlobals(&args).status().code(), absl::StatusCode::kInvalidArgument);
  args = {"--tls-key", "client.key", "whoami"};
  EXPECT_EQ(ResolveGlobals(&args).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ResolveGlobalsTest, ClientCertificateImpliesTls) {
  unsetenv("IMAGECTL_CONFIG");
  std::vector<std::string> args = {"whoami", "--tls-cert", "client.pem", "--tls-key=client.key"};
  absl::StatusOr<GlobalOptions> globals = ResolveGlobals(&args);
  ASSERT_TRUE(globals.ok()) << globals.status();
  EXPECT_TRUE(globals->tls);
  EXPECT_EQ(globals->tls_cert_file, "client.pem");
  EXPECT_EQ(globals->tls_key_file, "client.key");
  EXPECT_EQ(args, (std::vector<std::string>{"whoami"}));
}

TEST(ParseTest, SizesAndEnums) {
  EXPECT_EQ(*ParseSize("4096"), 4096);
  EXPECT_EQ(*ParseSize("512M"), 512LL << 20);
  EXPECT_EQ(*ParseSize("1.5GiB"), 3LL << 29);
  EXPECT_FALSE(ParseSize("ten").ok());
  EXPECT_EQ(*ParseEnum(imagetemplates::v1::Visibility_descriptor(), "VISIBILITY_", "visibility",
                       "public"),
            imagetemplates::v1::VISIBILITY_PUBLIC);
  EXPECT_EQ(*ParseEnum(imagetemplates::v1::Permission_descriptor(), "PERMISSION_", "permissions",
                       "server-view"),
            imagetemplates::v1::PERMISSION_SERVER_VIEW);
  absl::StatusOr<int> bad = ParseEnum(imagetemplates::v1::Visibility_descriptor(), "VISIBILITY_",
                                      "visibility", "unspecified");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("private, shared, public"), std::string::npos)
      << bad.status();
}

TEST(ParseTest, SetEnumSetsOrAddsAndNamesTheFlag) {
  imagetemplates::v1::ListServersRequest servers;
  ASSERT_TRUE(SetEnum(&servers, &imagetemplates::v1::ListServersRequest::set_state,
                      "SERVER_STATE_", "state", "active")
                  .ok());
  EXPECT_EQ(servers.state(), imagetemplates::v1::SERVER_STATE_ACTIVE);
  absl::Status bad = SetEnum(&servers, &imagetemplates::v1::ListServersRequest::set_state,
                             "SERVER_STATE_", "state", "asleep");
  EXPECT_EQ(bad.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(bad.message().find("--state: \"asleep\""), std::string::npos) << bad;
  EXPECT_EQ(servers.state(), imagetemplates::v1::SERVER_STATE_ACTIVE);

  imagetemplates::v1::ListOperationsRequest ops;
  for (const char* state : {"running", "failed"}) {
    ASSERT_TRUE(SetEnum(&ops, &imagetemplates::v1::ListOperationsRequest::add_states,
                        "OPERATION_STATE_", "states", state)
                    .ok());
  }
  ASSERT_EQ(ops.states_size(), 2);
  EXPECT_EQ(ops.states(0), imagetemplates::v1::OPERATION_STATE_RUNNING);
  EXPECT_EQ(ops.states(1), imagetemplates::v1::OPERATION_STATE_FAILED);
}

TEST(ParseTest, Credential) {
  imagetemplates::v1::SoftwareCredential credential;
  ASSERT_TRUE(ParseCredential("mysql:admin:pa:ss", &credential));
  EXPECT_EQ(credential.software(), "mysql");
  EXPECT_EQ(credential.username(), "admin");
  EXPECT_EQ(credential.password(), "pa:ss");
  EXPECT_FALSE(ParseCredential("os:root", &credential));
  EXPECT_FALSE(ParseCredential("", &credential));
}

TEST(ExitCodeTest, ByWhatTheUserShouldDo) {
  EXPECT_EQ(ExitCodeFor(absl::StatusCode::kOk), 0);
  EXPECT_EQ(ExitCodeFor(absl::StatusCode::kInvalidArgument), 2);
  EXPECT_EQ(ExitCodeFor(absl::StatusCode::kNotFound), 3);
  EXPECT_EQ(ExitCodeFor(absl::StatusCode::kPermissionDenied), 3);
  EXPECT_EQ(ExitCodeFor(absl::StatusCode::kUnauthenticated), 3);
  EXPECT_EQ(ExitCodeFor(absl::StatusCode::kUnavailable), 1);
  EXPECT_EQ(ExitCodeFor(absl::StatusCode::kFailedPrecondition), 1);
}

}  // namespace
}  // namespace imagectl
