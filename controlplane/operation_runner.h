// The engine behind every long-running operation: picks up operation rows
// (PENDING ones, and RUNNING or CANCELLING ones left by a previous process),
// runs each on its own thread through the Workflow of its kind, records steps
// as they finish, retries UNAVAILABLE and a busy database with backoff,
// passes cancellation through, writes progress a few times a second and ends
// the row.
//
// Resume rule: a workflow keeps its own state in the row's checkpoint,
// written with every finished step. After a restart the workflow starts again
// from that checkpoint: finished steps are skipped, an interrupted step is run
// again (every step is idempotent: storaged calls are idempotent by image id,
// allocations by server), and an operation that was CANCELLING is undone.
#ifndef CONTROLPLANE_OPERATION_RUNNER_H_
#define CONTROLPLANE_OPERATION_RUNNER_H_

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "controlplane/operation_store.h"
#include "controlplane/storage_node_client.h"
#include "imagetemplates/v1/operations.pb.h"

namespace controlplane {

// Bytes moved by the transfers of one operation. Thread-safe.
class ProgressTracker {
 public:
  // Adds a transfer of `total` bytes of which `done` are done; returns its
  // slot.
  int Add(uint64_t total, uint64_t done = 0);
  void Update(int slot, uint64_t done, uint64_t total);
  void Complete(int slot);
  // Sum of done and total bytes over all transfers.
  std::pair<uint64_t, uint64_t> Totals() const;
  // A progress callback for StorageNodeClient calls that feeds `slot`.
  std::function<void(const TransferProgress&)> Callback(int slot);

 private:
  mutable absl::Mutex mu_;
  std::vector<std::pair<uint64_t, uint64_t>> slots_ ABSL_GUARDED_BY(mu_);
};

struct OperationRunnerOptions {
  // How often rows are looked for without a local change notification.
  absl::Duration poll_interval = absl::Seconds(1);
  // Operations running at once; others wait in PENDING.
  int max_concurrent = 32;
  // Attempts per step when it fails with UNAVAILABLE or a busy database,
  // and the backoff between them (doubling up to max_backoff).
  int step_max_attempts = 6;
  absl::Duration step_initial_backoff = absl::Seconds(1);
  absl::Duration step_max_backoff = absl::Seconds(15);
  // Progress is written at most this often; cancellation is noticed within
  // about the same time.
  absl::Duration progress_interval = absl::Milliseconds(250);
  // Throughput is measured over this window.
  absl::Duration rate_window = absl::Seconds(3);
};

class OperationRunner;

// What a workflow sees of its operation. Thread-safe: parallel steps share it.
class OperationContext {
 public:
  OperationContext(OperationStore* store, const OperationRunnerOptions& options,
                   imagetemplates::v1::Operation operation,
                   OperationInternals internals);
  OperationContext(const OperationContext&) = delete;
  OperationContext& operator=(const OperationContext&) = delete;

  const std::string& id() const { return operation_.id(); }
  // The row as it was picked up.
  const imagetemplates::v1::Operation& operation() const { return operation_; }
  // The serialized request that started the operation.
  const std::string& params() const { return internals_.params; }
  // The checkpoint as it was picked up (empty for a fresh operation).
  const std::string& initial_checkpoint() const {
    return internals_.checkpoint;
  }

  // The user asked to cancel: undo and end.
  bool cancelled() const { return cancelled_.load(); }
  // The control plane shuts down: return ABORTED at once, undoing nothing;
  // the operation resumes at the next start.
  bool stopping() const { return stopping_.load(); }
  // For calls that must stop on cancel or shutdown (forward work).
  const std::atomic<bool>* interrupt_flag() const { return &interrupted_; }
  // For calls that must stop only on shutdown (undo work).
  const std::atomic<bool>* stop_flag() const { return &stopping_; }

  ProgressTracker& progress() { return progress_; }

  // Where checkpoints come from: called (under no lock of the context)
  // whenever a step finishes and on SaveCheckpoint.
  void SetCheckpointSource(std::function<std::string()> source);
  absl::Status SaveCheckpoint();

  enum class StepKind {
    // Skipped with CANCELLED once the operation is cancelled.
    kForward,
    // Part of undoing: runs even when cancelled (not when stopping).
    kUndo,
  };
  // Runs one step: names it as the current step, runs `body`, retries it on
  // UNAVAILABLE and on a busy database (ABORTED from SqliteDatabase; other
  // ABORTEDs are final) with backoff, then records it with its attempts, times and
  // outcome together with the checkpoint. Returns the last status of `body`;
  // CANCELLED if interrupted before or between attempts; ABORTED when
  // stopping, unless `body` succeeded: then the step and the checkpoint are
  // recorded as usual.
  absl::Status RunStep(const std::string& name, const std::string& server_id,
                       const std::function<absl::Status()>& body,
                       StepKind kind = StepKind::kForward);

  // After RunStep(name, ...) failed, for undo work that must not be given
  // up: runs `body` again with backoff (step_initial_backoff doubling to
  // `max_backoff`), whatever it fails with, until it succeeds or the control
  // plane stops; a cancel does not stop it. Adds no record per attempt: the
  // last record of `name` (one is added if there is none) is updated in place
  // with the attempt count, end time and latest outcome, and the checkpoint
  // is written with the success. Returns OK, or ABORTED when stopping.
  absl::Status RetryStepUntilDone(const std::string& name,
                                  const std::function<absl::Status()>& body,
                                  absl::Duration max_backoff);

  // Changes the row (for results); the runner owns state, step and progress.
  absl::Status Update(const OperationStore::Mutator& mutate);

  // Sleeps up to `duration`; returns early once interrupted, or for an undo
  // step only once stopping (a cancel does not cut an undo's backoff short).
  void Sleep(absl::Duration duration, StepKind kind = StepKind::kForward);

 private:
  friend class OperationRunner;
  void RequestCancel();
  void RequestStop();
  // Writes progress if it changed; computes throughput and ETA.
  void FlushProgress(absl::Time now);

  OperationStore* const store_;
  const OperationRunnerOptions options_;
  const imagetemplates::v1::Operation operation_;
  const OperationInternals internals_;
  std::atomic<bool> cancelled_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<bool> interrupted_{false};
  ProgressTracker progress_;
  absl::Mutex wake_mu_;
  absl::Mutex mu_;
  std::function<std::string()> checkpoint_source_ ABSL_GUARDED_BY(mu_);
  std::deque<std::pair<absl::Time, uint64_t>> samples_ ABSL_GUARDED_BY(mu_);
  std::pair<uint64_t, uint64_t> last_written_ ABSL_GUARDED_BY(mu_) = {0, 0};
  int64_t last_written_rate_ ABSL_GUARDED_BY(mu_) = 0;
};

// Drives operations of one kind. Implementations are thread-safe.
class Workflow {
 public:
  virtual ~Workflow() = default;
  // Runs the operation from its checkpoint to the end, undoing its work on
  // failure or cancel before returning. OK ends it SUCCEEDED; otherwise the
  // status is the operation's error (CANCELLED when it was cancelled). While
  // context.stopping(), returns ABORTED promptly without undoing.
  virtual absl::Status Run(OperationContext& context) = 0;
};

// Thread-safe. Does not own the store or the workflows; they must outlive it.
// One runner per database: it assumes no other process drives the rows.
class OperationRunner {
 public:
  OperationRunner(OperationStore* store, OperationRunnerOptions options);
  // Stops (see Stop).
  ~OperationRunner();
  OperationRunner(const OperationRunner&) = delete;
  OperationRunner& operator=(const OperationRunner&) = delete;

  // Before Start.
  void Register(imagetemplates::v1::OperationKind kind, Workflow* workflow);
  // Picks up work in the background.
  void Start();
  // Tells every running workflow to stop where it is and waits for them;
  // their rows stay as they are, to be resumed by the next runner.
  void Stop();
  // One pass: starts every runnable operation not running yet.
  void PollOnce();
  // Waits until no operation runs or `timeout` passes; true if idle.
  bool WaitIdle(absl::Duration timeout);

 private:
  void Execute(std::shared_ptr<OperationContext> context, Workflow* workflow);
  void Finish(OperationContext& context, const absl::Status& status);
  void Monitor();

  OperationStore* const store_;
  const OperationRunnerOptions options_;
  std::map<int, Workflow*> workflows_;
  absl::Notification stop_;
  std::thread poller_;
  std::thread monitor_;
  absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  absl::flat_hash_map<std::string, std::shared_ptr<OperationContext>> active_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::thread> threads_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> finished_ ABSL_GUARDED_BY(mu_);
};

}  // namespace controlplane

#endif  // CONTROLPLANE_OPERATION_RUNNER_H_
