// An Authenticator for tests: maps the bearer key of a call to a Caller.
#ifndef CONTROLPLANE_TESTING_AUTHENTICATOR_FAKE_H_
#define CONTROLPLANE_TESTING_AUTHENTICATOR_FAKE_H_

#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/authenticator.h"

namespace controlplane {

// Thread-safe.
class FakeAuthenticator final : public Authenticator {
 public:
  void AddKey(const std::string& key, const Caller& caller) {
    absl::MutexLock lock(&mu_);
    callers_[key] = caller;
  }
  void RevokeKey(const std::string& key) {
    absl::MutexLock lock(&mu_);
    callers_.erase(key);
  }

  absl::StatusOr<Caller> Authenticate(const grpc::ServerContextBase& context) override {
    const auto& metadata = context.client_metadata();
    auto it = metadata.find("authorization");
    if (it == metadata.end()) {
      return absl::UnauthenticatedError("send authorization: Bearer <api key>");
    }
    std::string value(it->second.data(), it->second.size());
    const std::string prefix = "Bearer ";
    if (value.compare(0, prefix.size(), prefix) != 0) {
      return absl::UnauthenticatedError("authorization must be Bearer <api key>");
    }
    absl::MutexLock lock(&mu_);
    auto found = callers_.find(value.substr(prefix.size()));
    if (found == callers_.end()) return absl::UnauthenticatedError("unknown or revoked key");
    return found->second;
  }

 private:
  absl::Mutex mu_;
  absl::flat_hash_map<std::string, Caller> callers_ ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_TESTING_AUTHENTICATOR_FAKE_H_
