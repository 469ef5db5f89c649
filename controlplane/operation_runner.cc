#include "controlplane/operation_runner.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "controlplane/ids.h"
#include "google/protobuf/util/time_util.h"

namespace controlplane {

namespace v1 = imagetemplates::v1;

// ------------------------------------------------------------ Progress

int ProgressTracker::Add(uint64_t total, uint64_t done) {
  absl::MutexLock lock(&mu_);
  slots_.emplace_back(std::min(done, total), total);
  return static_cast<int>(slots_.size()) - 1;
}

void ProgressTracker::Update(int slot, uint64_t done, uint64_t total) {
  absl::MutexLock lock(&mu_);
  if (slot < 0 || slot >= static_cast<int>(slots_.size())) return;
  if (total > 0) slots_[slot].second = total;
  // A retried transfer starts over; progress never runs backwards.
  slots_[slot].first =
      std::max(slots_[slot].first, std::min(done, slots_[slot].second));
}

void ProgressTracker::Complete(int slot) {
  absl::MutexLock lock(&mu_);
  if (slot < 0 || slot >= static_cast<int>(slots_.size())) return;
  slots_[slot].first = slots_[slot].second;
}

std::pair<uint64_t, uint64_t> ProgressTracker::Totals() const {
  absl::MutexLock lock(&mu_);
  std::pair<uint64_t, uint64_t> sum = {0, 0};
  for (const auto& [done, total] : slots_) {
    sum.first += done;
    sum.second += total;
  }
  return sum;
}

std::function<void(const TransferProgress&)> ProgressTracker::Callback(
    int slot) {
  return [this, slot](const TransferProgress& p) {
    Update(slot, p.bytes_done, p.bytes_total);
  };
}

// ------------------------------------------------------------ Context

namespace {

// What SqliteDatabase appends to the ABORTED it returns for SQLITE_BUSY and
// SQLITE_LOCKED (sqlite_database.cc).
constexpr absl::string_view kDatabaseBusy = "(database busy; retry)";

// Whether another attempt of a step may succeed: UNAVAILABLE (a node down or
// restarting) and a busy database. Other ABORTEDs are final: a storage
// node's (an image deleted under a copy, a capture of the same id already
// running) and RunStep's own "stopping", which the caller checks first.
bool Retryable(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kUnavailable:
      return true;
    case absl::StatusCode::kAborted:
      return absl::StrContains(status.message(), kDatabaseBusy);
    default:
      return false;
  }
}

}  // namespace

OperationContext::OperationContext(OperationStore* store,
                                   const OperationRunnerOptions& options,
                                   v1::Operation operation,
                                   OperationInternals internals)
    : store_(store),
      options_(options),
      operation_(std::move(operation)),
      internals_(std::move(internals)) {
  if (internals_.cancel_requested ||
      operation_.state() == v1::OPERATION_STATE_CANCELLING) {
    cancelled_ = true;
    interrupted_ = true;
  }
}

void OperationContext::RequestCancel() {
  absl::MutexLock lock(&wake_mu_);
  cancelled_ = true;
  interrupted_ = true;
}

void OperationContext::RequestStop() {
  absl::MutexLock lock(&wake_mu_);
  stopping_ = true;
  interrupted_ = true;
}

void OperationContext::Sleep(absl::Duration duration, StepKind kind) {
  absl::MutexLock lock(&wake_mu_);
  wake_mu_.AwaitWithTimeout(
      absl::Condition(
          +[](std::atomic<bool>* flag) { return flag->load(); },
          kind == StepKind::kForward ? &interrupted_ : &stopping_),
      duration);
}

void OperationContext::SetCheckpointSource(
    std::function<std::string()> source) {
  absl::MutexLock lock(&mu_);
  checkpoint_source_ = std::move(source);
}

absl::Status OperationContext::SaveCheckpoint() {
  std::function<std::string()> source;
  {
    absl::MutexLock lock(&mu_);
    source = checkpoint_source_;
  }
  if (!source) return absl::OkStatus();
  // Taken inside the write: parallel steps' writes land in the order of
  // their snapshots, so an older snapshot never overwrites a newer one.
  return store_
      ->UpdateOperation(id(),
                        [&](v1::Operation&, OperationInternals& internals) {
                          internals.checkpoint = source();
                          return absl::OkStatus();
                        })
      .status();
}

absl::Status OperationContext::Update(const OperationStore::Mutator& mutate) {
  return store_->UpdateOperation(id(), mutate).status();
}

absl::Status OperationContext::RunStep(
    const std::string& name, const std::string& server_id,
    const std::function<absl::Status()>& body, StepKind kind) {
  auto interrupted = [&] {
    return stopping() || (kind == StepKind::kForward && cancelled());
  };
  auto interruption = [&] {
    return stopping() ? absl::AbortedError(
                            "the control plane is stopping; resumed at restart")
                      : absl::CancelledError("the operation was cancelled");
  };
  if (interrupted()) return interruption();
  const int64_t start = NowMicros();
  RETURN_IF_ERROR(
      store_
          ->UpdateOperation(id(),
                            [&](v1::Operation& op, OperationInternals&) {
                              op.set_step(name);
                              return absl::OkStatus();
                            })
          .status());
  absl::Status status;
  int attempts = 0;
  absl::Duration backoff = options_.step_initial_backoff;
  while (true) {
    ++attempts;
    status = body();
    if (status.ok() || interrupted() || !Retryable(status) ||
        attempts >= options_.step_max_attempts) {
      break;
    }
    common::LogWarning("operation %s step %s attempt %d: %s; retrying in %s",
                       id(), name, attempts, status.ToString(),
                       absl::FormatDuration(backoff));
    Sleep(backoff, kind);
    if (interrupted()) break;
    backoff = std::min(backoff * 2, options_.step_max_backoff);
  }
  // A call cut short by the interruption reports that, not its own error.
  if (!status.ok() && interrupted()) status = interruption();
  // A failed or interrupted step is recorded when it runs again. One that
  // succeeded is recorded even while stopping: its effects are committed,
  // and a resume that ran it again could not tell them from another's.
  if (stopping() && !status.ok()) return status;

  std::function<std::string()> source;
  {
    absl::MutexLock lock(&mu_);
    source = checkpoint_source_;
  }
  const int64_t end = NowMicros();
  absl::Status recorded =
      store_
          ->UpdateOperation(
              id(),
              [&](v1::Operation& op, OperationInternals& internals) {
                v1::OperationStep* step = op.add_finished_steps();
                step->set_name(name);
                step->set_server_id(server_id);
                step->set_attempt_count(attempts);
                *step->mutable_start_time() = ToTimestamp(start);
                *step->mutable_end_time() = ToTimestamp(end);
                if (status.ok()) {
                  step->set_state(v1::OPERATION_STATE_SUCCEEDED);
                } else {
                  step->set_state(status.code() == absl::StatusCode::kCancelled
                                      ? v1::OPERATION_STATE_CANCELLED
                                      : v1::OPERATION_STATE_FAILED);
                  step->mutable_error()->set_code(
                      static_cast<int>(status.code()));
                  step->mutable_error()->set_message(
                      std::string(status.message()));
                }
                // Inside the write, as in SaveCheckpoint.
                if (source) internals.checkpoint = source();
                return absl::OkStatus();
              })
          .status();
  if (!recorded.ok()) {
    common::LogError("operation %s: recording step %s: %s", id(), name,
                     recorded.ToString());
    if (status.ok()) return recorded;
  }
  return status;
}

absl::Status OperationContext::RetryStepUntilDone(const std::string& name,
                                                  const std::function<absl::Status()>& body,
                                                  absl::Duration max_backoff) {
  auto stopped = [] {
    return absl::AbortedError("the control plane is stopping; resumed at restart");
  };
  absl::Duration backoff = options_.step_initial_backoff;
  while (true) {
    Sleep(backoff, StepKind::kUndo);
    if (stopping()) return stopped();
    const absl::Status status = body();
    if (!status.ok() && stopping()) return stopped();
    std::function<std::string()> source;
    if (status.ok()) {
      absl::MutexLock lock(&mu_);
      source = checkpoint_source_;
    }
    const int64_t now = NowMicros();
    int attempts = 0;
    absl::Status recorded =
        store_
            ->UpdateOperation(
                id(),
                [&](v1::Operation& op, OperationInternals& internals) {
                  op.set_step(name);
                  v1::OperationStep* step = nullptr;
                  for (int i = op.finished_steps_size() - 1; i >= 0 && step == nullptr; --i) {
                    if (op.finished_steps(i).name() == name) step = op.mutable_finished_steps(i);
                  }
                  if (step == nullptr) {
                    step = op.add_finished_steps();
                    step->set_name(name);
                    *step->mutable_start_time() = ToTimestamp(now);
                  }
                  step->set_attempt_count(step->attempt_count() + 1);
                  attempts = step->attempt_count();
                  *step->mutable_end_time() = ToTimestamp(now);
                  if (status.ok()) {
                    step->set_state(v1::OPERATION_STATE_SUCCEEDED);
                    step->clear_error();
                    if (source) internals.checkpoint = source();
                  } else {
                    step->set_state(v1::OPERATION_STATE_FAILED);
                    step->mutable_error()->set_code(static_cast<int>(status.code()));
                    step->mutable_error()->set_message(std::string(status.message()));
                  }
                  return absl::OkStatus();
                })
            .status();
    if (!recorded.ok()) {
      common::LogError("operation %s: recording step %s: %s", id(), name, recorded.ToString());
    }
    // Done even if the record was not updated: the work is committed.
    if (status.ok()) return status;
    backoff = std::min(backoff * 2, max_backoff);
    common::LogWarning("operation %s step %s attempt %d: %s; retrying in %s", id(), name,
                       attempts, status.ToString(), absl::FormatDuration(backoff));
  }
}

void OperationContext::FlushProgress(absl::Time now) {
  const auto [done, total] = progress_.Totals();
  int64_t rate = 0;
  std::optional<int64_t> eta_ms;
  {
    absl::MutexLock lock(&mu_);
    samples_.emplace_back(now, done);
    while (samples_.size() > 2 &&
           now - samples_.front().first > options_.rate_window) {
      samples_.pop_front();
    }
    const auto& [first_time, first_done] = samples_.front();
    const double seconds = absl::ToDoubleSeconds(now - first_time);
    if (seconds > 0 && done >= first_done) {
      rate = static_cast<int64_t>((done - first_done) / seconds);
    }
    if (rate > 0 && total >= done) eta_ms = (total - done) * 1000 / rate;
    // Unchanged bytes are written once more when the rate drops to zero, so
    // a stalled transfer shows no rate and no ETA rather than its last ones.
    if (last_written_ == std::make_pair(done, total) &&
        (rate != 0 || last_written_rate_ == 0)) {
      return;
    }
    last_written_ = {done, total};
    last_written_rate_ = rate;
  }
  absl::Status status =
      store_
          ->UpdateOperation(
              id(),
              [&](v1::Operation& op, OperationInternals&) {
                if (IsTerminal(op.state())) return absl::OkStatus();
                auto* p = op.mutable_progress();
                p->set_bytes_done(static_cast<int64_t>(done));
                p->set_bytes_total(static_cast<int64_t>(total));
                p->set_bytes_per_second(rate);
                if (eta_ms) {
                  *p->mutable_eta() = google::protobuf::util::TimeUtil::MillisecondsToDuration(*eta_ms);
                } else {
                  p->clear_eta();
                }
                return absl::OkStatus();
              })
          .status();
  if (!status.ok())
    common::LogWarning("operation %s progress: %s", id(), status.ToString());
}

// ------------------------------------------------------------ Runner

OperationRunner::OperationRunner(OperationStore* store,
                                 OperationRunnerOptions options)
    : store_(store), options_(std::move(options)) {}

OperationRunner::~OperationRunner() { Stop(); }

void OperationRunner::Register(v1::OperationKind kind, Workflow* workflow) {
  workflows_[kind] = workflow;
}

void OperationRunner::Start() {
  poller_ = std::thread([this] {
    while (!stop_.HasBeenNotified()) {
      const uint64_t seen = store_->ChangeCount();
      PollOnce();
      store_->WaitForChange(seen, absl::Now() + options_.poll_interval);
    }
  });
  monitor_ = std::thread([this] { Monitor(); });
}

void OperationRunner::Stop() {
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    for (auto& [id, context] : active_) context->RequestStop();
  }
  if (!stop_.HasBeenNotified()) stop_.Notify();
  store_->NotifyChange();  // wakes the poller
  if (poller_.joinable()) poller_.join();
  if (monitor_.joinable()) monitor_.join();
  absl::flat_hash_map<std::string, std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    threads.swap(threads_);
  }
  for (auto& [id, thread] : threads) thread.join();
}

void OperationRunner::PollOnce() {
  // Reap threads whose operations ended.
  std::vector<std::thread> done;
  {
    absl::MutexLock lock(&mu_);
    for (const std::string& id : finished_) {
      auto it = threads_.find(id);
      if (it != threads_.end()) {
        done.push_back(std::move(it->second));
        threads_.erase(it);
      }
    }
    finished_.clear();
  }
  for (std::thread& thread : done) thread.join();

  OperationQuery query;
  query.states = {v1::OPERATION_STATE_PENDING, v1::OPERATION_STATE_RUNNING,
                  v1::OPERATION_STATE_CANCELLING};
  // Oldest first, so the queue is fair (the newest 500 would starve the
  // oldest while more wait).
  query.oldest_first = true;
  query.limit = 500;
  absl::StatusOr<std::vector<v1::Operation>> rows =
      store_->ListOperations(query);
  if (!rows.ok()) {
    common::LogWarning("operation runner: listing operations: %s",
                       rows.status().ToString());
    return;
  }
  for (v1::Operation& op : *rows) {
    auto workflow = workflows_.find(op.kind());
    if (workflow == workflows_.end()) continue;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_ || active_.contains(op.id()) || threads_.contains(op.id()))
        continue;
      // A cancelled operation never waits for a slot: its undo gives back
      // what it holds (volumes, addresses) and is short.
      if (static_cast<int>(active_.size()) >= options_.max_concurrent &&
          op.state() != v1::OPERATION_STATE_CANCELLING) {
        continue;
      }
    }
    absl::StatusOr<OperationInternals> internals =
        store_->GetInternals(op.id());
    if (!internals.ok()) continue;
    if (op.state() == v1::OPERATION_STATE_PENDING) {
      absl::StatusOr<v1::Operation> started = store_->UpdateOperation(
          op.id(), [](v1::Operation& row, OperationInternals&) {
            if (row.state() == v1::OPERATION_STATE_PENDING) {
              row.set_state(v1::OPERATION_STATE_RUNNING);
            }
            return absl::OkStatus();
          });
      if (!started.ok()) continue;
      op = *std::move(started);
    } else {
      common::LogInfo("resuming operation %s (%s, %s)", op.id(),
                      v1::OperationKind_Name(op.kind()),
                      v1::OperationState_Name(op.state()));
    }
    auto context = std::make_shared<OperationContext>(store_, options_, op,
                                                      *std::move(internals));
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    active_[op.id()] = context;
    threads_[op.id()] =
        std::thread(&OperationRunner::Execute, this, context, workflow->second);
  }
}

void OperationRunner::Execute(std::shared_ptr<OperationContext> context,
                              Workflow* workflow) {
  absl::Status status = workflow->Run(*context);
  if (!context->stopping() || status.ok()) {
    context->FlushProgress(absl::Now());
    Finish(*context, status);
  }
  absl::MutexLock lock(&mu_);
  active_.erase(context->id());
  finished_.push_back(context->id());
}

void OperationRunner::Finish(OperationContext& context,
                             const absl::Status& status) {
  // A workflow that failed for its own reason before or while the cancel came
  // (its undo then ran anyway) ends FAILED with that cause, not CANCELLED.
  const bool cancelled = context.cancelled() && absl::IsCancelled(status);
  absl::StatusOr<v1::Operation> ended = store_->UpdateOperation(
      context.id(), [&](v1::Operation& op, OperationInternals&) {
        if (IsTerminal(op.state())) return absl::OkStatus();
        op.set_step("");
        op.clear_error();
        if (status.ok()) {
          op.set_state(v1::OPERATION_STATE_SUCCEEDED);
          op.mutable_progress()->set_bytes_done(op.progress().bytes_total());
          op.mutable_progress()->clear_eta();
        } else if (cancelled) {
          op.set_state(v1::OPERATION_STATE_CANCELLED);
        } else {
          op.set_state(v1::OPERATION_STATE_FAILED);
          op.mutable_error()->set_code(static_cast<int>(status.code()));
          op.mutable_error()->set_message(std::string(status.message()));
        }
        op.mutable_progress()->set_bytes_per_second(0);
        return absl::OkStatus();
      });
  if (!ended.ok()) {
    common::LogError("operation %s: recording its end: %s", context.id(),
                     ended.status().ToString());
    return;
  }
  common::LogInfo("operation %s ended %s%s", context.id(),
                  v1::OperationState_Name(ended->state()),
                  status.ok() ? "" : absl::StrCat(": ", status.ToString()));
}

void OperationRunner::Monitor() {
  absl::Time last_cancel_check = absl::InfinitePast();
  while (!stop_.WaitForNotificationWithTimeout(options_.progress_interval)) {
    std::vector<std::shared_ptr<OperationContext>> contexts;
    {
      absl::MutexLock lock(&mu_);
      for (auto& [id, context] : active_) contexts.push_back(context);
    }
    const absl::Time now = absl::Now();
    const bool check_cancel =
        now - last_cancel_check >= options_.progress_interval;
    if (check_cancel) last_cancel_check = now;
    for (auto& context : contexts) {
      if (check_cancel && !context->cancelled()) {
        absl::StatusOr<OperationInternals> internals =
            store_->GetInternals(context->id());
        if (internals.ok() && internals->cancel_requested) {
          common::LogInfo("operation %s: cancel requested", context->id());
          context->RequestCancel();
        }
      }
      context->FlushProgress(now);
    }
  }
}

bool OperationRunner::WaitIdle(absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    {
      absl::MutexLock lock(&mu_);
      if (active_.empty()) return true;
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return false;
}

}  // namespace controlplane
