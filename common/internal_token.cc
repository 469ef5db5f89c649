#include "common/internal_token.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/key_file.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "common/tls.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"

namespace common {

namespace {

constexpr char kAuthorization[] = "authorization";
constexpr char kBearer[] = "Bearer ";

void Sha256(absl::string_view text, unsigned char out[SHA256_DIGEST_LENGTH]) {
  SHA256(reinterpret_cast<const unsigned char*>(text.data()), text.size(), out);
}

// Adds the authorization header to every call of its channel.
class BearerInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit BearerInterceptor(std::string header) : header_(std::move(header)) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(
            grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->emplace(kAuthorization, header_);
    }
    methods->Proceed();
  }

 private:
  const std::string header_;
};

// Owned by the channel; each call gets its own interceptor.
class BearerInterceptorFactory final
    : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit BearerInterceptorFactory(const std::string& token)
      : header_(absl::StrCat(kBearer, token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(
      grpc::experimental::ClientRpcInfo*) override {
    return new BearerInterceptor(header_);
  }

 private:
  const std::string header_;
};

}  // namespace

absl::StatusOr<std::string> ReadInternalTokenFile(const std::string& path) {
  const std::string what = absl::StrCat("internal token file ", path);
  ASSIGN_OR_RETURN(std::string contents, ReadSecretFile(path, what, kMaxInternalTokenFileBytes));
  absl::string_view token = contents;
  token = token.substr(0, token.find('\n'));
  token = absl::StripAsciiWhitespace(token);
  if (token.size() < kMinInternalTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        what, ": the token on its first line has ", token.size(), " bytes; at least ",
        kMinInternalTokenBytes,
        " are needed (for example: head -c 32 /dev/urandom | base64 > FILE)"));
  }
  if (token.size() > kMaxInternalTokenBytes) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": the token is longer than ",
                                                   kMaxInternalTokenBytes, " bytes"));
  }
  for (char c : token) {
    if (c <= ' ' || c > '~') {
      return absl::InvalidArgumentError(absl::StrCat(
          what, ": the token must be printable ASCII without blanks (it is sent in a header)"));
    }
  }
  return std::string(token);
}

InternalTokenVerifier::InternalTokenVerifier(absl::string_view token)
    : enabled_(!token.empty()) {
  if (enabled_) Sha256(absl::StrCat(kBearer, token), digest_);
}

grpc::Status InternalTokenVerifier::Check(const grpc::ServerContext& context,
                                          absl::string_view method) const {
  if (!enabled_) return grpc::Status::OK;
  const auto& metadata = context.client_metadata();
  auto it = metadata.find(kAuthorization);
  const char* problem = "no internal token";
  if (it != metadata.end()) {
    // Digests have one length whatever was sent, so CRYPTO_memcmp compares
    // the whole secret in constant time without leaking its length.
    unsigned char presented[SHA256_DIGEST_LENGTH];
    Sha256(absl::string_view(it->second.data(), it->second.size()), presented);
    if (CRYPTO_memcmp(presented, digest_, sizeof(digest_)) == 0) return grpc::Status::OK;
    problem = "wrong internal token";
  }
  bool log = false;
  int64_t unlogged = 0;
  {
    absl::MutexLock lock(&refusals_->mu);
    const absl::Time now = absl::Now();
    if (now - refusals_->window_start >= absl::Seconds(10)) {
      unlogged = refusals_->unlogged;
      refusals_->window_start = now;
      refusals_->logged = 0;
      refusals_->unlogged = 0;
    }
    log = refusals_->logged < kLoggedRefusals;
    if (log) {
      ++refusals_->logged;
    } else {
      ++refusals_->unlogged;
    }
  }
  if (log) {
    LogWarning("refused %s from %s: %s%s", method, context.peer(), problem,
               unlogged > 0 ? absl::StrCat(" (and ", unlogged, " more refusals not logged)")
                            : std::string());
  }
  return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                      absl::StrCat(problem, " for the internal API: send authorization: "
                                            "Bearer <the --internal-token-file token>"));
}

std::shared_ptr<grpc::Channel> CreateInternalChannel(const std::string& target,
                                                     const std::string& token,
                                                     const grpc::ChannelArguments& caller_args,
                                                     const Keepalive& keepalive) {
  grpc::ChannelArguments args = caller_args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, absl::ToInt64Milliseconds(keepalive.time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, absl::ToInt64Milliseconds(keepalive.timeout));
  // A capture's client sends nothing after its request: without this the
  // pings would stop after two.
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  if (token.empty()) {
    return grpc::CreateCustomChannel(target, InternalChannelCredentials(), args);
  }
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> creators;
  creators.push_back(std::make_unique<BearerInterceptorFactory>(token));
  return grpc::experimental::CreateCustomChannelWithInterceptors(
      target, InternalChannelCredentials(), args, std::move(creators));
}

}  // namespace common
