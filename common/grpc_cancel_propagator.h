// Cancels a client call when a caller's flag turns true: a blocked Read or
// Write on a stream returns then, so a job's cancel reaches the peer.
#ifndef COMMON_GRPC_CANCEL_PROPAGATOR_H_
#define COMMON_GRPC_CANCEL_PROPAGATOR_H_

#include <atomic>
#include <thread>

#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "grpcpp/client_context.h"

namespace common {

// Watches `flag` (may be null: then it does nothing) every 50 ms until
// destroyed. `context` must outlive it.
class GrpcCancelPropagator {
 public:
  GrpcCancelPropagator(grpc::ClientContext* context, const std::atomic<bool>* flag) {
    if (flag == nullptr) return;
    thread_ = std::thread([this, context, flag] {
      while (!done_.WaitForNotificationWithTimeout(absl::Milliseconds(50))) {
        if (flag->load()) {
          context->TryCancel();
          return;
        }
      }
    });
  }
  GrpcCancelPropagator(const GrpcCancelPropagator&) = delete;
  GrpcCancelPropagator& operator=(const GrpcCancelPropagator&) = delete;
  ~GrpcCancelPropagator() {
    done_.Notify();
    if (thread_.joinable()) thread_.join();
  }

 private:
  absl::Notification done_;
  std::thread thread_;
};

}  // namespace common

#endif  // COMMON_GRPC_CANCEL_PROPAGATOR_H_
