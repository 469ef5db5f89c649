// Large byte buffers handed out again after use.
#ifndef STORAGED_BUFFER_POOL_H_
#define STORAGED_BUFFER_POOL_H_

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace storaged {

// glibc maps each buffer of 128 KiB or more afresh and unmaps it when freed,
// so a restore writing 4 MiB batches paid page faults and kernel zeroing on
// every one (~10% of its CPU). Buffers from a pool keep their pages.
// Thread-safe; buffers may outlive the pool.
class BufferPool {
 public:
  // Keeps at most `max_free` returned buffers; more are freed.
  explicit BufferPool(size_t max_free) : state_(std::make_shared<State>(max_free)) {}

  // A buffer of `size` bytes with unspecified contents; it comes back to the
  // pool when the last reference is dropped.
  std::shared_ptr<std::string> Take(size_t size) {
    std::unique_ptr<std::string> buffer = state_->Pop();
    buffer->resize(size);
    std::shared_ptr<State> state = state_;
    return std::shared_ptr<std::string>(
        buffer.release(), [state](std::string* b) { state->Push(std::unique_ptr<std::string>(b)); });
  }

 private:
  class State {
   public:
    explicit State(size_t max_free) : max_free_(max_free) {}
    std::unique_ptr<std::string> Pop() {
      absl::MutexLock lock(&mu_);
      if (free_.empty()) return std::make_unique<std::string>();
      std::unique_ptr<std::string> b = std::move(free_.back());
      free_.pop_back();
      return b;
    }
    void Push(std::unique_ptr<std::string> b) {
      absl::MutexLock lock(&mu_);
      if (free_.size() < max_free_) free_.push_back(std::move(b));
    }

   private:
    const size_t max_free_;
    absl::Mutex mu_;
    std::vector<std::unique_ptr<std::string>> free_ ABSL_GUARDED_BY(mu_);
  };

  std::shared_ptr<State> state_;
};

}  // namespace storaged

#endif  // STORAGED_BUFFER_POOL_H_
