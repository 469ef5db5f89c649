#include "storaged/iscsi_volume.h"

#include <iscsi/iscsi.h>
#include <iscsi/scsi-lowlevel.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "storaged/internal/lba_status.h"
#include "storaged/internal/scsi_checks.h"

namespace storaged {

// ---------------------------------------------------------------------------
// URL

std::string IscsiUrl::Portal() const {
  return absl::StrContains(host, ':') ? absl::StrCat("[", host, "]:", port)
                                      : absl::StrCat(host, ":", port);
}

std::string IscsiUrl::Redacted() const {
  return absl::StrCat("iscsi://", user.empty() ? "" : absl::StrCat(user, "@"), Portal(),
                      "/", iqn, "/", lun);
}

namespace {

constexpr char kUrlSyntax[] = "iscsi://[user%password@]host[:port]/IQN/LUN";

absl::Status BadUrl(absl::string_view what) {
  return absl::InvalidArgumentError(
      absl::StrCat("malformed iSCSI URL: ", what, " (expected ", kUrlSyntax, ")"));
}

bool AllDigits(absl::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), absl::ascii_isdigit);
}

}  // namespace

absl::StatusOr<IscsiUrl> ParseIscsiUrl(absl::string_view url) {
  IscsiUrl out;
  absl::string_view rest = url;
  if (!absl::ConsumePrefix(&rest, "iscsi://")) return BadUrl("it must start with iscsi://");
  // IQNs never contain '@', so the last one ends the credentials even when
  // the password contains '@' or '/'.
  size_t at = rest.rfind('@');
  if (at != absl::string_view::npos) {
    absl::string_view userinfo = rest.substr(0, at);
    rest.remove_prefix(at + 1);
    size_t pct = userinfo.find('%');
    if (pct == absl::string_view::npos) {
      return BadUrl("credentials must be user%password");
    }
    out.user = std::string(userinfo.substr(0, pct));
    out.password = std::string(userinfo.substr(pct + 1));
    if (out.user.empty() || out.password.empty()) {
      return BadUrl("CHAP user and password must both be non-empty");
    }
  }
  size_t slash = rest.find('/');
  if (slash == absl::string_view::npos) return BadUrl("missing /IQN/LUN after the host");
  absl::string_view hostport = rest.substr(0, slash);
  absl::string_view path = rest.substr(slash + 1);

  absl::string_view port_text;
  if (absl::ConsumePrefix(&hostport, "[")) {
    size_t close = hostport.find(']');
    if (close == absl::string_view::npos) return BadUrl("unterminated [IPv6] host");
    out.host = std::string(hostport.substr(0, close));
    absl::string_view after = hostport.substr(close + 1);
    if (!after.empty() && !absl::ConsumePrefix(&after, ":")) {
      return BadUrl("junk after [IPv6] host");
    }
    port_text = after;
    if (port_text.empty() && hostport.size() > close + 1) return BadUrl("empty port");
  } else {
    size_t colon = hostport.find(':');
    if (colon != absl::string_view::npos) {
      if (hostport.find(':', colon + 1) != absl::string_view::npos) {
        return BadUrl("IPv6 hosts must be in [brackets]");
      }
      port_text = hostport.substr(colon + 1);
      if (port_text.empty()) return BadUrl("empty port");
      hostport = hostport.substr(0, colon);
    }
    out.host = std::string(hostport);
  }
  if (out.host.empty()) return BadUrl("missing host");
  if (!port_text.empty()) {
    int port = 0;
    if (!AllDigits(port_text) || !absl::SimpleAtoi(port_text, &port) || port < 1 ||
        port > 65535) {
      return BadUrl(absl::StrCat("port '", port_text, "' is not a number in 1..65535"));
    }
    out.port = port;
  }

  size_t last = path.rfind('/');
  if (last == absl::string_view::npos) return BadUrl("missing /LUN after the IQN");
  absl::string_view iqn = path.substr(0, last);
  absl::string_view lun_text = path.substr(last + 1);
  if (iqn.empty()) return BadUrl("empty target name");
  if (absl::StrContains(iqn, '/')) return BadUrl("target name contains '/'");
  if (!absl::StartsWith(iqn, "iqn.") && !absl::StartsWith(iqn, "eui.") &&
      !absl::StartsWith(iqn, "naa.")) {
    return BadUrl(absl::StrCat("target name '", iqn, "' is not an iqn./eui./naa. name"));
  }
  out.iqn = std::string(iqn);
  int lun = -1;
  if (!AllDigits(lun_text) || !absl::SimpleAtoi(lun_text, &lun) || lun > 16383) {
    return BadUrl(absl::StrCat("LUN '", lun_text, "' is not a number in 0..16383"));
  }
  out.lun = lun;
  return out;
}

// ---------------------------------------------------------------------------
// Session: one iscsi_context, owned and driven by its own I/O thread, so the
// connection keeps moving (completions received, queued commands issued)
// while the caller hashes, compresses or waits for decoded data.

namespace iscsi_internal {

enum class CommandState {
  kIdle,       // not started
  kInFlight,   // issued, or waiting to be re-issued after a reconnect
  kCompleted,  // callback ran; the session has not looked at it yet
  kDone,       // final
};

// One SCSI command that can be (re-)issued on any context. Owns its task;
// any buffer the issue function references must outlive the command.
// `state`, `task`, `scsi_status`, `retries`, `lost` and `timed_out` belong to
// the I/O thread while the command is submitted; `finished` and `status` are
// published under the session's lock, and once `finished` the caller owns
// everything again.
struct Command {
  using IssueFn = std::function<scsi_task*(iscsi_context*, int lun, Command*)>;

  Command(std::string what, IssueFn issue) : what(std::move(what)), issue(std::move(issue)) {}
  Command(const Command&) = delete;
  Command& operator=(const Command&) = delete;
  ~Command() { FreeTask(); }

  void FreeTask() {
    if (task != nullptr) scsi_free_scsi_task(task);
    task = nullptr;
  }

  std::string what;  // "READ(16) lba 8 blocks 512", for errors
  IssueFn issue;
  scsi_task* task = nullptr;
  CommandState state = CommandState::kIdle;
  int scsi_status = 0;
  int retries = 0;
  // Attempts that ended without an answer (see max_command_attempts), and
  // whether the last one ended by timing out rather than a lost connection.
  int lost = 0;
  bool timed_out = false;
  // Submitted commands issued at once while fewer than this many are
  // outstanding on the session.
  int max_inflight = 1;
  bool submitted = false;
  bool finished = false;
  // Set (under the session's lock) by a cancelled Drain: the next reconnect
  // finishes the command CANCELLED instead of issuing it again.
  bool withdrawn = false;
  absl::Status status;
};

namespace {

// libiscsi calls back with the task in command_data, or null when the
// command was cancelled; the Command keeps its own pointer either way.
void OnCommandDone(iscsi_context*, int status, void*, void* private_data) {
  auto* cmd = static_cast<Command*>(private_data);
  cmd->scsi_status = status;
  cmd->state = CommandState::kCompleted;
}

struct Step {
  bool done = false;
  int status = 0;
};

void OnStepDone(iscsi_context*, int status, void*, void* private_data) {
  auto* step = static_cast<Step*>(private_data);
  step->done = true;
  step->status = status;
}

int Milliseconds(absl::Duration d) {
  return static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(d)));
}

// Services `ctx` once: waits up to `max_wait` for its socket, or for
// `wake_fd` (an eventfd; -1 for none) to become readable. UNAVAILABLE when
// libiscsi reports the connection broken.
absl::Status PumpContext(iscsi_context* ctx, absl::Duration max_wait, int wake_fd = -1) {
  int events = iscsi_which_events(ctx);
  pollfd pfds[2];
  int nfds = 0;
  if (events != 0) pfds[nfds++] = pollfd{iscsi_get_fd(ctx), static_cast<short>(events), 0};
  if (wake_fd >= 0) pfds[nfds++] = pollfd{wake_fd, POLLIN, 0};
  if (events == 0) {
    // libiscsi wants a pause (e.g. between its own retries).
    max_wait = std::min(max_wait, absl::Milliseconds(100));
  }
  int n = nfds == 0 ? 0 : poll(pfds, nfds, Milliseconds(max_wait));
  if (nfds == 0) absl::SleepFor(max_wait);
  if (n < 0) {
    if (errno == EINTR) return absl::OkStatus();
    return absl::InternalError(absl::StrCat("poll: ", strerror(errno)));
  }
  short revents = 0;
  for (int i = 0; i < nfds; ++i) {
    if (pfds[i].fd == wake_fd) {
      if (pfds[i].revents & POLLIN) {
        uint64_t count;
        (void)!read(wake_fd, &count, sizeof(count));
      }
    } else {
      revents = pfds[i].revents;
    }
  }
  // libiscsi checks POLLHUP before reading, so a PDU that arrived just before
  // the peer closed (a login reject: "target not found") would be lost; read
  // it first.
  if ((revents & POLLIN) && (revents & (POLLHUP | POLLERR))) {
    if (iscsi_service(ctx, POLLIN) < 0) return absl::UnavailableError(iscsi_get_error(ctx));
  }
  // revents 0 still runs libiscsi's timeout processing.
  if (iscsi_service(ctx, revents) < 0) {
    return absl::UnavailableError(iscsi_get_error(ctx));
  }
  return absl::OkStatus();
}

absl::Status LoginError(absl::string_view target, absl::string_view error) {
  std::string message = absl::StrCat("login to ", target, " failed: ", error);
  if (absl::StrContains(error, "Target not found") ||
      absl::StrContains(error, "Target removed")) {
    return absl::NotFoundError(message);
  }
  if (absl::StrContains(error, "Authentication") || absl::StrContains(error, "CHAP")) {
    return absl::UnauthenticatedError(message);
  }
  if (absl::StrContains(error, "Authorization")) {
    return absl::PermissionDeniedError(message);
  }
  return absl::UnavailableError(message);
}

}  // namespace

class Session {
 public:
  Session(IscsiUrl url, IscsiVolumeOptions options)
      : url_(std::move(url)), options_(std::move(options)), target_(url_.Redacted()) {
    wake_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  }

  Session(const Session&) = delete;
  Session& operator=(const Session&) = delete;

  ~Session() {
    if (thread_.joinable()) {
      {
        absl::MutexLock lock(&mu_);
        stop_ = true;
      }
      Wake();
      thread_.join();  // finishes what is outstanding, logs out
    }
    if (ctx_ != nullptr) iscsi_destroy_context(ctx_);
    if (wake_fd_ >= 0) close(wake_fd_);
  }

  const std::string& target() const { return target_; }
  int lun() const { return url_.lun; }
  int reconnects() const {
    absl::MutexLock lock(&mu_);
    return reconnects_;
  }

  // First login on the calling thread, no retries; then the I/O thread
  // takes the connection over.
  absl::Status Connect() {
    if (wake_fd_ < 0) return absl::InternalError(absl::StrCat("eventfd: ", strerror(errno)));
    RETURN_IF_ERROR(ConnectOnce(absl::Now() + options_.connect_timeout));
    thread_ = std::thread([this] { Loop(); });
    return absl::OkStatus();
  }

  // Hands `cmd` to the I/O thread, which issues it (in submission order)
  // once fewer than `max_inflight` commands are outstanding. The caller keeps
  // `cmd` alive until Finished(cmd). Thread-safe.
  void Submit(Command* cmd, int max_inflight) {
    cmd->max_inflight = std::max(1, max_inflight);
    {
      absl::MutexLock lock(&mu_);
      cmd->submitted = true;
      cmd->finished = false;
      cmd->status = absl::OkStatus();
      cmd->withdrawn = false;
      cmd->lost = 0;
      cmd->timed_out = false;
      queued_.push_back(cmd);
    }
    Wake();
  }

  bool Finished(const Command* cmd) const {
    absl::MutexLock lock(&mu_);
    return !cmd->submitted || cmd->finished;
  }

  // Waits until `cmd` finished; CANCELLED as soon as `*cancelled` is set
  // (the command stays submitted: Drain it).
  absl::Status Wait(const Command* cmd, const std::atomic<bool>* cancelled = nullptr) {
    absl::MutexLock lock(&mu_);
    auto finished = [cmd]() { return !cmd->submitted || cmd->finished; };
    while (!finished()) {
      if (cancelled != nullptr && cancelled->load()) {
        return absl::CancelledError("I/O cancelled");
      }
      mu_.AwaitWithTimeout(absl::Condition(&finished), absl::Milliseconds(100));
    }
    return absl::OkStatus();
  }

  // Submit + wait; returns the command's status. Once `*cancelled` (may be
  // null) is set: CANCELLED, with `cmd` drained (the caller may free it).
  absl::Status Execute(Command* cmd, const std::atomic<bool>* cancelled = nullptr) {
    Submit(cmd, kMaxInflight);
    if (absl::Status waited = Wait(cmd, cancelled); !waited.ok()) {
      Drain({cmd}, cancelled);
      return waited;
    }
    return cmd->status;
  }

  // Takes the commands of `cmds` the I/O thread has not issued yet back
  // (they finish CANCELLED), then waits until none references its buffers.
  // Once `*cancelled` (may be null) is set it stops waiting for the target:
  // the connection is dropped, which frees the buffers, and the commands in
  // flight finish CANCELLED.
  void Drain(const std::vector<Command*>& cmds,
             const std::atomic<bool>* cancelled = nullptr) {
    absl::MutexLock lock(&mu_);
    for (Command* cmd : cmds) {
      auto it = std::find(queued_.begin(), queued_.end(), cmd);
      if (it == queued_.end()) continue;
      queued_.erase(it);
      cmd->finished = true;
      cmd->status = absl::CancelledError(absl::StrCat(cmd->what, " withdrawn"));
    }
    auto all_finished = [&cmds]() {
      return std::all_of(cmds.begin(), cmds.end(), [](const Command* c) {
        return !c->submitted || c->finished;
      });
    };
    // A failed reconnect finishes every command, so this terminates.
    bool abandoned = false;
    while (!mu_.AwaitWithTimeout(absl::Condition(&all_finished), absl::Milliseconds(100))) {
      if (abandoned || cancelled == nullptr || !cancelled->load()) continue;
      // A hung target would hold us for command_timeout, then the reconnect.
      for (Command* cmd : cmds) {
        if (cmd->submitted && !cmd->finished) cmd->withdrawn = true;
      }
      abandoned = true;
      BreakConnection();
    }
  }

  // The I/O thread shuts the socket down, as a network failure would.
  void BreakConnection() {
    break_requested_ = true;
    Wake();
  }

  static constexpr int kMaxInflight = 256;

 private:
  void Wake() {
    uint64_t one = 1;
    (void)!write(wake_fd_, &one, sizeof(one));
  }

  // The I/O thread: issues queued commands within their in-flight limits,
  // services the socket, publishes completions, reconnects after losses.
  void Loop() {
    std::vector<Command*> issue;
    while (true) {
      issue.clear();
      {
        absl::MutexLock lock(&mu_);
        if (stop_ && queued_.empty() && inflight_.empty()) break;
        while (!queued_.empty() && static_cast<int>(inflight_.size() + issue.size()) <
                                       queued_.front()->max_inflight) {
          issue.push_back(queued_.front());
          queued_.pop_front();
        }
      }
      if (break_requested_.exchange(false) && ctx_ != nullptr) {
        shutdown(iscsi_get_fd(ctx_), SHUT_RDWR);
      }
      for (Command* cmd : issue) {
        inflight_.push_back(cmd);
        Issue(cmd);
      }
      if (ctx_ == nullptr && !inflight_.empty()) transport_failed_ = true;
      if (!transport_failed_ && ctx_ != nullptr) {
        absl::Status pumped = PumpContext(ctx_, absl::Milliseconds(100), wake_fd_);
        if (!pumped.ok()) {
          transport_failed_ = true;
          last_transport_error_ = pumped;
        }
        ProcessCompletions();
      } else if (!transport_failed_) {
        // No connection and nothing to do: wait for work.
        pollfd pfd{wake_fd_, POLLIN, 0};
        if (poll(&pfd, 1, 100) > 0) {
          uint64_t count;
          (void)!read(wake_fd_, &count, sizeof(count));
        }
      }
      if (transport_failed_) Reconnect();
    }
    if (ctx_ == nullptr) return;
    // Polite logout, bounded: the target may already be gone.
    Step logout;
    if (iscsi_logout_async(ctx_, OnStepDone, &logout) == 0) {
      absl::Time deadline = absl::Now() + absl::Seconds(1);
      while (!logout.done && absl::Now() < deadline) {
        if (!PumpContext(ctx_, absl::Milliseconds(100)).ok()) break;
      }
    }
  }

  // Logs in on a new context that becomes ctx_. `abandon` (may be empty) is
  // asked every 100 ms; once it says true the attempt stops with CANCELLED.
  absl::Status ConnectOnce(absl::Time deadline,
                           const std::function<bool()>& abandon = nullptr) {
    iscsi_context* ctx = iscsi_create_context(options_.initiator_name.c_str());
    if (ctx == nullptr) return absl::InternalError("iscsi_create_context failed");
    absl::Cleanup destroy = [&ctx] {
      if (ctx != nullptr) iscsi_destroy_context(ctx);
    };
    iscsi_set_targetname(ctx, url_.iqn.c_str());
    iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL);
    iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE);
    if (!url_.user.empty()) {
      iscsi_set_initiator_username_pwd(ctx, url_.user.c_str(), url_.password.c_str());
    }
    // We reconnect ourselves: libiscsi 1.19's automatic reconnect blocks in
    // sleep() and retries forever.
    iscsi_set_noautoreconnect(ctx, 1);
    iscsi_set_timeout(ctx, static_cast<int>(std::max<int64_t>(
                               1, absl::ToInt64Seconds(options_.command_timeout))));

    // Steps live in the session: libiscsi may call a connect callback again
    // when the connection drops later.
    connect_step_ = Step();
    if (iscsi_connect_async(ctx, url_.Portal().c_str(), OnStepDone, &connect_step_) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot connect to iSCSI portal ",
                                                 url_.Portal(), ": ", iscsi_get_error(ctx)));
    }
    RETURN_IF_ERROR(WaitStep(ctx, connect_step_, deadline, "connect to", abandon));
    if (connect_step_.status != SCSI_STATUS_GOOD) {
      return absl::UnavailableError(absl::StrCat("cannot connect to iSCSI portal ",
                                                 url_.Portal(), ": ", iscsi_get_error(ctx)));
    }
    login_step_ = Step();
    if (iscsi_login_async(ctx, OnStepDone, &login_step_) != 0) {
      return LoginError(target_, iscsi_get_error(ctx));
    }
    RETURN_IF_ERROR(WaitStep(ctx, login_step_, deadline, "log in to", abandon));
    if (login_step_.status != SCSI_STATUS_GOOD) {
      return LoginError(target_, iscsi_get_error(ctx));
    }
    ctx_ = ctx;
    ctx = nullptr;
    return absl::OkStatus();
  }

  absl::Status WaitStep(iscsi_context* ctx, const Step& step, absl::Time deadline,
                        absl::string_view verb, const std::function<bool()>& abandon) {
    while (!step.done) {
      if (abandon && abandon()) {
        return absl::CancelledError(absl::StrCat("gave up trying to ", verb, " ", target_));
      }
      absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) {
        return absl::UnavailableError(absl::StrCat("timed out trying to ", verb, " ",
                                                   target_));
      }
      absl::Status pumped = PumpContext(ctx, std::min(left, absl::Milliseconds(100)));
      if (!pumped.ok() && !step.done) {
        // The target closed the socket; a login reject arrives first when
        // there is one, so this is a transport failure.
        return absl::UnavailableError(
            absl::StrCat("cannot ", verb, " ", target_, ": ", pumped.message()));
      }
    }
    return absl::OkStatus();
  }

  void Issue(Command* cmd) {
    cmd->FreeTask();
    cmd->state = CommandState::kInFlight;
    cmd->timed_out = false;
    if (ctx_ == nullptr) {
      transport_failed_ = true;
      return;
    }
    cmd->task = cmd->issue(ctx_, url_.lun, cmd);
    if (cmd->task == nullptr) {
      // Out of memory or a dead socket; a reconnect sorts out either. It
      // counts as an attempt, or a command libiscsi always refuses would
      // reconnect in a tight loop.
      ++cmd->lost;
      transport_failed_ = true;
      last_transport_error_ = absl::UnavailableError(
          absl::StrCat("cannot queue ", cmd->what, ": ", iscsi_get_error(ctx_)));
    }
  }

  absl::Status SenseError(const Command& cmd) const {
    const scsi_sense& sense = cmd.task->sense;
    std::string message = absl::StrFormat(
        "%s on %s: %s, %s (asc/ascq 0x%04x)", cmd.what, target_,
        scsi_sense_key_str(sense.key), scsi_sense_ascq_str(sense.ascq), sense.ascq);
    switch (sense.key) {
      case SCSI_SENSE_ILLEGAL_REQUEST:
        if (sense.ascq == SCSI_SENSE_ASCQ_LOGICAL_UNIT_NOT_SUPPORTED) {
          return absl::NotFoundError(message);
        }
        if (sense.ascq == SCSI_SENSE_ASCQ_LBA_OUT_OF_RANGE) {
          return absl::OutOfRangeError(message);
        }
        if (sense.ascq == SCSI_SENSE_ASCQ_INVALID_OPERATION_CODE) {
          return absl::UnimplementedError(message);
        }
        return absl::InvalidArgumentError(message);
      case SCSI_SENSE_NOT_READY:
        return absl::UnavailableError(message);
      case SCSI_SENSE_MEDIUM_ERROR:
        return absl::DataLossError(message);
      case SCSI_SENSE_DATA_PROTECTION:
        return absl::FailedPreconditionError(message);
      default:
        return absl::InternalError(message);
    }
  }

  // Finishes (CANCELLED) the commands in flight a cancelled Drain gave up
  // on. Only while no context holds their tasks.
  void FinishWithdrawn() {
    std::vector<Command*> withdrawn;
    {
      absl::MutexLock lock(&mu_);
      for (Command* cmd : inflight_) {
        if (cmd->withdrawn) withdrawn.push_back(cmd);
      }
    }
    if (withdrawn.empty()) return;
    for (Command* cmd : withdrawn) {
      cmd->FreeTask();
      Finish(cmd, absl::CancelledError(absl::StrCat(cmd->what, " withdrawn")));
    }
    inflight_.erase(std::remove_if(inflight_.begin(), inflight_.end(),
                                   [](Command* c) { return c->state == CommandState::kDone; }),
                    inflight_.end());
    Publish();
  }

  void Finish(Command* cmd, absl::Status status) {
    cmd->state = CommandState::kDone;
    finished_.emplace_back(cmd, std::move(status));
  }

  // Publishes finished commands to their waiters.
  void Publish() {
    if (finished_.empty()) return;
    absl::MutexLock lock(&mu_);
    for (auto& [cmd, status] : finished_) {
      cmd->status = std::move(status);
      cmd->finished = true;
    }
    finished_.clear();
  }

  void ProcessCompletions() {
    for (Command* cmd : inflight_) {
      if (cmd->state != CommandState::kCompleted) continue;
      switch (cmd->scsi_status) {
        case SCSI_STATUS_GOOD:
          Finish(cmd, absl::OkStatus());
          break;
        case SCSI_STATUS_CHECK_CONDITION: {
          scsi_sense_key key = cmd->task->sense.key;
          // Unit attentions (reset, I_T nexus loss after a reconnect,
          // capacity change) and aborted commands are worth another try.
          if ((key == SCSI_SENSE_UNIT_ATTENTION || key == SCSI_SENSE_COMMAND_ABORTED) &&
              cmd->retries++ < 10) {
            Issue(cmd);
          } else {
            Finish(cmd, SenseError(*cmd));
          }
          break;
        }
        case SCSI_STATUS_BUSY:
        case SCSI_STATUS_TASK_SET_FULL:
          if (cmd->retries++ < 1000) {
            Issue(cmd);
          } else {
            Finish(cmd, absl::UnavailableError(
                            absl::StrCat(cmd->what, " on ", target_, ": target stays busy")));
          }
          break;
        case SCSI_STATUS_CANCELLED:
        case SCSI_STATUS_ERROR:
        case SCSI_STATUS_TIMEOUT:
          // The connection is gone or hung: re-issue on a new one.
          cmd->state = CommandState::kInFlight;
          cmd->timed_out = cmd->scsi_status == SCSI_STATUS_TIMEOUT;
          transport_failed_ = true;
          if (last_transport_error_.ok()) {
            // Only ERROR leaves a fresh message in iscsi_get_error().
            last_transport_error_ = absl::UnavailableError(
                cmd->scsi_status == SCSI_STATUS_TIMEOUT
                    ? absl::StrCat(cmd->what, " timed out")
                : cmd->scsi_status == SCSI_STATUS_CANCELLED
                    ? absl::StrCat(cmd->what, " cancelled by a connection loss")
                    : absl::StrCat(cmd->what, " failed: ",
                                   ctx_ ? iscsi_get_error(ctx_) : "no connection"));
          }
          break;
        default:
          Finish(cmd, absl::InternalError(absl::StrCat(cmd->what, " on ", target_,
                                                       ": SCSI status 0x",
                                                       absl::Hex(cmd->scsi_status))));
      }
    }
    inflight_.erase(std::remove_if(inflight_.begin(), inflight_.end(),
                                   [](Command* c) { return c->state == CommandState::kDone; }),
                    inflight_.end());
    Publish();
  }

  // Whether any submitted command still needs the connection.
  bool NothingToResume() {
    if (!inflight_.empty()) return false;
    absl::MutexLock lock(&mu_);
    return queued_.empty();
  }

  // Drops the context (which cancels its tasks, releasing our buffers),
  // fails the commands that used up their attempts, logs in again with
  // backoff, and re-issues every unfinished command. If that fails, every
  // submitted command finishes UNAVAILABLE. With nothing left to resume
  // (all withdrawn by a cancelled Drain, say) it stops without a context:
  // the next command logs in again, and a hung target does not hold the
  // session's release.
  void Reconnect() {
    absl::Status cause = last_transport_error_.ok()
                             ? absl::UnavailableError("no connection")
                             : last_transport_error_;
    transport_failed_ = false;
    last_transport_error_ = absl::OkStatus();
    // A command the dead context held was an attempt that got no answer.
    for (Command* cmd : inflight_) {
      if (cmd->task != nullptr) ++cmd->lost;
    }
    if (ctx_ != nullptr) {
      iscsi_destroy_context(ctx_);
      ctx_ = nullptr;
    }
    // Cancellation callbacks above only mark commands; all still need to run.
    for (Command* cmd : inflight_) cmd->state = CommandState::kInFlight;
    // The old context is gone: nothing writes into withdrawn commands'
    // buffers any more.
    FinishWithdrawn();
    FinishExhausted();

    auto abandon = [this] {
      FinishWithdrawn();
      return NothingToResume();
    };
    absl::Time deadline = absl::Now() + options_.reconnect_timeout;
    absl::Duration backoff = absl::Milliseconds(100);
    absl::Status connected = absl::CancelledError("nothing to resume");
    for (;;) {
      while (!abandon()) {
        connected = ConnectOnce(std::min(deadline, absl::Now() + options_.connect_timeout),
                                abandon);
        if (connected.ok() || absl::IsCancelled(connected) ||
            absl::Now() + backoff > deadline) {
          break;
        }
        // Woken early by a Drain that gives up on its commands.
        pollfd pfd{wake_fd_, POLLIN, 0};
        if (poll(&pfd, 1, Milliseconds(backoff)) > 0) {
          uint64_t count;
          (void)!read(wake_fd_, &count, sizeof(count));
        }
        backoff = std::min(backoff * 2, absl::Seconds(2));
      }
      // A command submitted while the login was being given up: log in for
      // it after all (within the same deadline) rather than fail it.
      if (!absl::IsCancelled(connected) || NothingToResume() || absl::Now() >= deadline) break;
    }
    if (absl::IsCancelled(connected) && NothingToResume()) {
      common::LogWarning("connection to %s lost (%s); nothing to resume, logging in again "
                         "with the next command",
                         target_, cause.message());
      return;
    }
    if (!connected.ok()) {
      absl::Status failure = absl::UnavailableError(absl::StrCat(
          "lost the connection to ", target_, " (", cause.message(),
          ") and could not log in again within ",
          absl::FormatDuration(options_.reconnect_timeout), ": ", connected.message()));
      common::LogWarning("%s", failure.message());
      for (Command* cmd : inflight_) {
        cmd->FreeTask();
        Finish(cmd, failure);
      }
      inflight_.clear();
      // Commands queued behind them would only wait out the same timeout.
      {
        absl::MutexLock lock(&mu_);
        for (Command* cmd : queued_) {
          cmd->status = failure;
          cmd->finished = true;
        }
        queued_.clear();
      }
      Publish();
      return;
    }
    {
      absl::MutexLock lock(&mu_);
      ++reconnects_;
    }
    common::LogWarning("reconnected to %s after: %s; resuming %d commands", target_,
                       cause.message(), inflight_.size());
    FinishWithdrawn();  // withdrawn while we logged in
    for (Command* cmd : inflight_) Issue(cmd);
  }

  // Fails (UNAVAILABLE) the commands in flight that got no answer in
  // max_command_attempts attempts. Only while no context holds their tasks.
  void FinishExhausted() {
    const int limit = std::max(1, options_.max_command_attempts);
    bool any = false;
    for (Command* cmd : inflight_) {
      if (cmd->lost < limit) continue;
      absl::Status failure = absl::UnavailableError(absl::StrCat(
          cmd->what, " on ", target_, ": no answer in ", cmd->lost, " attempts (the last ",
          cmd->timed_out ? absl::StrCat("timed out after ",
                                        absl::FormatDuration(options_.command_timeout))
                         : "lost with its connection",
          "); giving up"));
      common::LogWarning("%s", failure.message());
      cmd->FreeTask();
      Finish(cmd, std::move(failure));
      any = true;
    }
    if (!any) return;
    inflight_.erase(std::remove_if(inflight_.begin(), inflight_.end(),
                                   [](Command* c) { return c->state == CommandState::kDone; }),
                    inflight_.end());
    Publish();
  }

  const IscsiUrl url_;
  const IscsiVolumeOptions options_;
  const std::string target_;  // redacted URL for messages
  int wake_fd_ = -1;
  std::thread thread_;
  std::atomic<bool> break_requested_{false};

  // The I/O thread's own state (before the thread starts: Connect's).
  iscsi_context* ctx_ = nullptr;
  std::vector<Command*> inflight_;  // issued, not finished; owned by callers
  std::vector<std::pair<Command*, absl::Status>> finished_;  // to publish
  bool transport_failed_ = false;
  absl::Status last_transport_error_;
  Step connect_step_;
  Step login_step_;

  mutable absl::Mutex mu_;
  std::deque<Command*> queued_ ABSL_GUARDED_BY(mu_);  // submitted, not issued
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  int reconnects_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace iscsi_internal

// ---------------------------------------------------------------------------
// Volume

namespace {

using iscsi_internal::Command;
using iscsi_internal::OnCommandDone;
using iscsi_internal::Session;

// Bytes per command: io_bytes rounded down to blocks, within the target's
// maximum transfer.
uint32_t PieceBytes(uint32_t io_bytes, const VolumeInfo& info) {
  uint64_t bytes = io_bytes;
  if (info.max_transfer_bytes != 0) bytes = std::min<uint64_t>(bytes, info.max_transfer_bytes);
  bytes = bytes / info.block_size * info.block_size;
  return static_cast<uint32_t>(std::max<uint64_t>(bytes, info.block_size));
}

int Depth(int queue_depth) { return std::clamp(queue_depth, 1, 256); }

// Reads completed but not yet consumed, beyond the commands in flight: the
// I/O thread keeps the target busy while the caller's sink is slow. 32
// pieces of 256 KiB = 8 MiB per read.
size_t ReadWindow(int depth, uint32_t piece) {
  size_t by_bytes = (8u << 20) / piece;
  return std::clamp<size_t>(std::max<size_t>(2 * depth, by_bytes), depth, 512);
}

absl::Status CheckRange(const VolumeInfo& info, uint64_t offset, uint64_t length) {
  if (offset % info.block_size != 0 || length % info.block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "range [", offset, ", +", length, ") is not aligned to the block size ",
        info.block_size));
  }
  if (offset > info.size_bytes || length > info.size_bytes - offset) {
    return absl::OutOfRangeError(absl::StrCat("range [", offset, ", +", length,
                                              ") ends past the volume size ",
                                              info.size_bytes));
  }
  return absl::OkStatus();
}

std::string Describe(absl::string_view op, uint64_t lba, uint64_t blocks) {
  return absl::StrCat(op, " lba ", lba, " blocks ", blocks);
}

std::unique_ptr<Command> ReadCommand(uint64_t offset, uint32_t length, uint32_t block_size,
                                     unsigned char* buffer) {
  uint64_t lba = offset / block_size;
  return std::make_unique<Command>(
      Describe("READ(16)", lba, length / block_size),
      [=](iscsi_context* ctx, int lun, Command* cmd) {
        scsi_task* task = iscsi_read16_task(ctx, lun, lba, length, block_size, 0, 0, 0, 0,
                                            0, OnCommandDone, cmd);
        // Data-In lands straight in our buffer, no copy.
        if (task != nullptr) scsi_task_add_data_in_buffer(task, length, buffer);
        return task;
      });
}

class IscsiVolumeWriter final : public VolumeWriter {
 public:
  IscsiVolumeWriter(Session* session, const VolumeInfo& info, const WriteOptions& options,
                    std::atomic<int>* write_same)
      : session_(session),
        info_(info),
        piece_bytes_(PieceBytes(options.io_bytes, info)),
        depth_(Depth(options.queue_depth)),
        // Queued beyond the commands in flight, so Write returns while the
        // target still has work: 4x the depth.
        outstanding_(4 * depth_),
        cancelled_(options.cancelled),
        write_same_(write_same) {}

  ~IscsiVolumeWriter() override {
    std::vector<Command*> pending;
    for (auto& cmd : inflight_) pending.push_back(cmd.get());
    if (background_sync_ != nullptr) pending.push_back(background_sync_.get());
    session_->Drain(pending, cancelled_);
  }

  using VolumeWriter::Write;
  absl::Status Write(uint64_t offset, std::shared_ptr<const std::string> shared) override {
    RETURN_IF_ERROR(sticky_);
    RETURN_IF_ERROR(CheckRange(info_, offset, shared->size()));
    for (uint64_t pos = 0; pos < shared->size(); pos += piece_bytes_) {
      uint32_t length =
          static_cast<uint32_t>(std::min<uint64_t>(piece_bytes_, shared->size() - pos));
      uint64_t lba = (offset + pos) / info_.block_size;
      uint32_t block_size = info_.block_size;
      auto* bytes = reinterpret_cast<unsigned char*>(const_cast<char*>(shared->data() + pos));
      // The lambda holds `shared`, so the buffer lives until the command dies.
      RETURN_IF_ERROR(Submit(std::make_unique<Command>(
          Describe("WRITE(16)", lba, length / block_size),
          [=](iscsi_context* ctx, int lun, Command* cmd) {
            (void)shared;
            return iscsi_write16_task(ctx, lun, lba, bytes, length, block_size, 0, 0, 0, 0,
                                      0, OnCommandDone, cmd);
          })));
    }
    return absl::OkStatus();
  }

  // Each command's Data-Out goes out with writev straight from `pieces`
  // (libiscsi builds no copy of an iovec write).
  absl::Status WriteGather(uint64_t offset, std::vector<absl::string_view> pieces,
                           std::shared_ptr<const void> keep) override {
    RETURN_IF_ERROR(sticky_);
    uint64_t total = 0;
    for (absl::string_view p : pieces) total += p.size();
    RETURN_IF_ERROR(CheckRange(info_, offset, total));
    const uint32_t block_size = info_.block_size;
    size_t piece = 0;
    size_t used = 0;  // bytes of pieces[piece] already in a command
    for (uint64_t pos = 0; pos < total; pos += piece_bytes_) {
      const uint32_t length = static_cast<uint32_t>(std::min<uint64_t>(piece_bytes_, total - pos));
      auto iov = std::make_shared<std::vector<scsi_iovec>>();
      for (uint32_t need = length; need > 0;) {
        if (used == pieces[piece].size()) {
          ++piece;
          used = 0;
          continue;
        }
        const size_t take = std::min<size_t>(need, pieces[piece].size() - used);
        iov->push_back(
            scsi_iovec{const_cast<char*>(pieces[piece].data() + used), take});
        used += take;
        need -= take;
      }
      const uint64_t lba = (offset + pos) / block_size;
      // The lambda holds `keep` and `iov` until the command dies; libiscsi
      // points at the iovec array, and adjusts it only while it sends.
      RETURN_IF_ERROR(Submit(std::make_unique<Command>(
          Describe("WRITE(16)", lba, length / block_size),
          [=](iscsi_context* ctx, int lun, Command* cmd) {
            (void)keep;
            return iscsi_write16_iov_task(ctx, lun, lba, nullptr, length, block_size, 0, 0, 0,
                                          0, 0, OnCommandDone, cmd, iov->data(),
                                          static_cast<int>(iov->size()));
          })));
    }
    return absl::OkStatus();
  }

  absl::Status WriteZeroes(uint64_t offset, uint64_t length) override {
    RETURN_IF_ERROR(sticky_);
    RETURN_IF_ERROR(CheckRange(info_, offset, length));
    if (length == 0) return absl::OkStatus();
    if (info_.thin && info_.zeroes_unmapped && write_same_->load() >= 0) {
      if (write_same_->load() == 0) {
        // First use on this volume: find out whether the target takes WRITE
        // SAME with UNMAP before relying on it. Some targets with LBPRZ
        // reject it; they get explicit zero writes instead.
        RETURN_IF_ERROR(Fail(DrainAll()));
        absl::Status probe = WriteSameBatch(offset, length, /*wait=*/true);
        if (probe.ok()) {
          write_same_->store(1);
          return absl::OkStatus();
        }
        if (!absl::IsInvalidArgument(probe) && !absl::IsUnimplemented(probe)) {
          return Fail(probe);
        }
        write_same_->store(-1);
        common::LogWarning("%s; writing zeroes explicitly instead", probe.message());
      } else {
        return WriteSameBatch(offset, length, /*wait=*/false);
      }
    }
    // Thick (or unmapped blocks do not read zero): write zeroes. WRITE SAME
    // without UNMAP is one write per block on tgt, far slower.
    const uint32_t block_size = info_.block_size;
    if (zero_piece_ == nullptr) zero_piece_ = std::make_shared<std::string>(piece_bytes_, '\0');
    auto zero = zero_piece_;
    for (uint64_t pos = 0; pos < length; pos += piece_bytes_) {
      uint32_t bytes_now = static_cast<uint32_t>(std::min<uint64_t>(piece_bytes_, length - pos));
      uint64_t lba = (offset + pos) / block_size;
      auto* bytes = reinterpret_cast<unsigned char*>(const_cast<char*>(zero->data()));
      RETURN_IF_ERROR(Submit(std::make_unique<Command>(
          Describe("WRITE(16) zeroes", lba, bytes_now / block_size),
          [=](iscsi_context* ctx, int lun, Command* cmd) {
            (void)zero;
            return iscsi_write16_task(ctx, lun, lba, bytes, bytes_now, block_size, 0, 0, 0,
                                      0, 0, OnCommandDone, cmd);
          })));
    }
    return absl::OkStatus();
  }

  absl::Status Flush() override {
    RETURN_IF_ERROR(sticky_);
    RETURN_IF_ERROR(Fail(DrainAll()));
    std::unique_ptr<Command> sync = SyncCommand();
    return Fail(session_->Execute(sync.get(), cancelled_));
  }

  absl::Status StartFlush() override {
    RETURN_IF_ERROR(Reap());
    if (background_sync_ != nullptr) return absl::OkStatus();
    // Kept out of inflight_: it takes far longer than a write, and the
    // queue is bounded by its front.
    background_sync_ = SyncCommand();
    session_->Submit(background_sync_.get(), depth_);
    return absl::OkStatus();
  }

 private:
  // WRITE SAME(16) with UNMAP: deallocates where the target can and writes
  // the zero block where it cannot, so the range reads zero. With `wait`,
  // returns the commands' own status (not sticky).
  absl::Status WriteSameBatch(uint64_t offset, uint64_t length, bool wait) {
    const uint32_t block_size = info_.block_size;
    if (zero_block_ == nullptr) zero_block_ = std::make_shared<std::string>(block_size, '\0');
    auto zero = zero_block_;
    const uint64_t max_blocks = 1 << 20;  // one command per 512 MiB..4 GiB
    std::vector<std::unique_ptr<Command>> probes;
    for (uint64_t lba = offset / block_size, end = (offset + length) / block_size;
         lba < end;) {
      uint32_t blocks = static_cast<uint32_t>(std::min(max_blocks, end - lba));
      auto* bytes = reinterpret_cast<unsigned char*>(const_cast<char*>(zero->data()));
      auto cmd = std::make_unique<Command>(
          Describe("WRITE SAME(16) UNMAP", lba, blocks),
          [=](iscsi_context* ctx, int lun, Command* cmd) {
            (void)zero;
            return iscsi_writesame16_task(ctx, lun, lba, bytes, block_size, blocks, 0, 1, 0,
                                          0, OnCommandDone, cmd);
          });
      if (wait) {
        absl::Status s = session_->Execute(cmd.get(), cancelled_);
        if (!s.ok()) return s;
      } else {
        RETURN_IF_ERROR(Submit(std::move(cmd)));
      }
      lba += blocks;
    }
    return absl::OkStatus();
  }

  absl::Status Fail(absl::Status status) {
    if (sticky_.ok()) sticky_ = std::move(status);
    return sticky_;
  }

  static std::unique_ptr<Command> SyncCommand() {
    return std::make_unique<Command>(
        "SYNCHRONIZE CACHE(16)", [](iscsi_context* ctx, int lun, Command* cmd) {
          return iscsi_synchronizecache16_task(ctx, lun, 0, 0, 0, 0, OnCommandDone, cmd);
        });
  }

  // Frees finished commands from the front; the first failure becomes
  // sticky. Completions come (nearly) in order, so looking at the front is
  // enough to bound the queue; Flush looks at all of them.
  absl::Status Reap() {
    if (background_sync_ != nullptr && session_->Finished(background_sync_.get())) {
      Fail(background_sync_->status).IgnoreError();
      background_sync_.reset();
    }
    while (!inflight_.empty() && session_->Finished(inflight_.front().get())) {
      Fail(inflight_.front()->status).IgnoreError();
      inflight_.pop_front();
    }
    return sticky_;
  }

  absl::Status DrainAll() {
    while (!inflight_.empty()) {
      RETURN_IF_ERROR(session_->Wait(inflight_.front().get(), cancelled_));
      RETURN_IF_ERROR(Reap());
    }
    if (background_sync_ != nullptr) {
      RETURN_IF_ERROR(session_->Wait(background_sync_.get(), cancelled_));
      RETURN_IF_ERROR(Reap());
    }
    return sticky_;
  }

  absl::Status Submit(std::unique_ptr<Command> cmd) {
    RETURN_IF_ERROR(Reap());
    while (static_cast<int>(inflight_.size()) >= outstanding_) {
      RETURN_IF_ERROR(Fail(session_->Wait(inflight_.front().get(), cancelled_)));
      RETURN_IF_ERROR(Reap());
    }
    Command* raw = cmd.get();
    inflight_.push_back(std::move(cmd));
    session_->Submit(raw, depth_);
    return absl::OkStatus();
  }

  Session* const session_;
  const VolumeInfo info_;
  const uint32_t piece_bytes_;
  const int depth_;
  const int outstanding_;
  const std::atomic<bool>* const cancelled_;  // may be null
  // The volume's: 0 unknown, 1 WRITE SAME+UNMAP works, -1 rejected.
  std::atomic<int>* const write_same_;
  std::deque<std::unique_ptr<Command>> inflight_;  // submitted, not reaped
  std::unique_ptr<Command> background_sync_;       // StartFlush's, not reaped
  std::shared_ptr<std::string> zero_block_;
  std::shared_ptr<std::string> zero_piece_;
  absl::Status sticky_;
};

}  // namespace

IscsiVolume::IscsiVolume(std::unique_ptr<Session> session, VolumeInfo info)
    : session_(std::move(session)), info_(info) {}

IscsiVolume::~IscsiVolume() = default;

int IscsiVolume::reconnects() const { return session_->reconnects(); }

void IscsiVolume::BreakConnectionForTesting() { session_->BreakConnection(); }

absl::StatusOr<std::unique_ptr<IscsiVolume>> IscsiVolume::Open(
    absl::string_view url, const IscsiVolumeOptions& options) {
  ASSIGN_OR_RETURN(IscsiUrl parsed, ParseIscsiUrl(url));
  auto session = std::make_unique<Session>(parsed, options);
  RETURN_IF_ERROR(session->Connect());

  // TEST UNIT READY proves the LUN exists (and eats the unit attention a
  // fresh login brings).
  Command tur("TEST UNIT READY", [](iscsi_context* ctx, int lun, Command* cmd) {
    return iscsi_testunitready_task(ctx, lun, OnCommandDone, cmd);
  });
  absl::Status ready = session->Execute(&tur);
  if (absl::IsNotFound(ready)) {
    return absl::NotFoundError(absl::StrCat("target ", parsed.iqn, " has no LUN ",
                                            parsed.lun, " (", ready.message(), ")"));
  }
  RETURN_IF_ERROR(ready);

  Command capacity("READ CAPACITY(16)", [](iscsi_context* ctx, int lun, Command* cmd) {
    return iscsi_readcapacity16_task(ctx, lun, OnCommandDone, cmd);
  });
  RETURN_IF_ERROR(session->Execute(&capacity));
  // Bytes 0-15 hold everything used here (last LBA, block length, LBPME/LBPRZ).
  RETURN_IF_ERROR(internal::CheckReplyLength("READ CAPACITY(16)", session->target(),
                                             std::max(0, capacity.task->datain.size), 16));
  auto* rc16 = static_cast<scsi_readcapacity16*>(scsi_datain_unmarshall(capacity.task));
  if (rc16 == nullptr) {
    return absl::InternalError(
        absl::StrCat("unparsable READ CAPACITY(16) answer from ", session->target()));
  }
  VolumeInfo info;
  info.block_size = rc16->block_length;
  ASSIGN_OR_RETURN(info.size_bytes, internal::VolumeSizeFromCapacity(
                                        rc16->returned_lba, rc16->block_length,
                                        session->target()));
  info.thin = rc16->lbpme != 0;
  info.zeroes_unmapped = rc16->lbprz != 0;
  if (options.assume_thin_lbprz_for_testing) info.thin = info.zeroes_unmapped = true;

  // Block Limits VPD is optional; without it the target states no limit.
  Command limits("INQUIRY Block Limits VPD", [](iscsi_context* ctx, int lun, Command* cmd) {
    return iscsi_inquiry_task(ctx, lun, 1, SCSI_INQUIRY_PAGECODE_BLOCK_LIMITS, 64,
                              OnCommandDone, cmd);
  });
  if (session->Execute(&limits).ok()) {
    auto* bl = static_cast<scsi_inquiry_block_limits*>(scsi_datain_unmarshall(limits.task));
    if (bl != nullptr && bl->max_xfer_len != 0) {
      info.max_transfer_bytes = static_cast<uint32_t>(std::min<uint64_t>(
          uint64_t{bl->max_xfer_len} * info.block_size, uint64_t{1} << 31));
    }
  }
  return std::unique_ptr<IscsiVolume>(new IscsiVolume(std::move(session), info));
}

absl::StatusOr<std::vector<Extent>> IscsiVolume::MappedExtents(uint64_t offset,
                                                               uint64_t length) {
  std::vector<Extent> out;
  uint64_t end = std::min(info_.size_bytes, offset + std::min(length, ~offset));
  if (offset >= end) return out;
  if (!info_.thin) {
    out.push_back({offset, end - offset});
    return out;
  }
  const uint64_t bs = info_.block_size;
  const uint64_t end_lba = (end + bs - 1) / bs;
  // One call answers up to this many ranges; tgt walks SEEK_DATA/SEEK_HOLE.
  constexpr uint32_t kDescriptors = 4096;
  constexpr uint64_t kProbeBytes = 1 << 20;
  // At most this many ranges (16 MiB) are kept; see CoarsenRanges.
  constexpr size_t kMaxRanges = 1 << 20;
  uint64_t gap_blocks = 1;
  bool coarsened = false;
  std::vector<internal::BlockRange> mapped;
  std::vector<internal::LbaStatus> answer;
  for (uint64_t lba = offset / bs; lba < end_lba;) {
    Command cmd(Describe("GET LBA STATUS", lba, 0), [lba](iscsi_context* ctx, int lun,
                                                         Command* c) {
      return iscsi_get_lba_status_task(ctx, lun, lba, 8 + 16 * kDescriptors, OnCommandDone,
                                       c);
    });
    RETURN_IF_ERROR(session_->Execute(&cmd));
    const uint64_t received = std::max(0, cmd.task->datain.size);
    RETURN_IF_ERROR(internal::CheckReplyLength(cmd.what, session_->target(), received, 8));
    auto* status = static_cast<scsi_get_lba_status*>(scsi_datain_unmarshall(cmd.task));
    if (status == nullptr) {
      return absl::InternalError(
          absl::StrCat("unparsable GET LBA STATUS answer from ", session_->target()));
    }
    // Descriptors past what arrived would be read from nowhere.
    RETURN_IF_ERROR(internal::CheckReplyLength(cmd.what, session_->target(), received,
                                               8 + uint64_t{16} * status->num_descriptors));
    if (status->num_descriptors == 0) {
      common::LogWarning("GET LBA STATUS at lba %u on %s returned no descriptors; reading "
                         "lba %u..%u as if mapped",
                         lba, session_->target(), lba, end_lba);
    }
    answer.clear();
    for (uint32_t i = 0; i < status->num_descriptors; ++i) {
      const scsi_lba_status_descriptor& d = status->descriptors[i];
      answer.push_back({d.lba, d.num_blocks, d.provisioning == SCSI_PROVISIONING_TYPE_MAPPED});
    }
    const uint64_t next = internal::AddLbaStatus(
        answer, lba, end_lba, std::max<uint64_t>(1, kProbeBytes / bs), &mapped);
    if (mapped.size() > kMaxRanges) {
      internal::CoarsenRanges(kMaxRanges, &gap_blocks, &mapped);
      if (!coarsened) {
        common::LogWarning("%s is mapped in more than %u pieces; joining pieces less than %u "
                           "blocks apart (their gaps are read or zeroed as if mapped)",
                           session_->target(), kMaxRanges, gap_blocks / 2);
      }
      coarsened = true;
    }
    if (next <= lba) {
      return absl::InternalError(absl::StrCat("GET LBA STATUS at lba ", lba, " on ",
                                              session_->target(), " made no progress"));
    }
    lba = next;
  }
  for (const internal::BlockRange& r : mapped) {
    const uint64_t begin_bytes = std::max(r.first * bs, offset);
    const uint64_t end_bytes = std::min(r.end * bs, end);
    if (begin_bytes < end_bytes) out.push_back({begin_bytes, end_bytes - begin_bytes});
  }
  return out;
}

absl::Status IscsiVolume::ReadExtents(const std::vector<Extent>& extents,
                                      const ReadOptions& options, const ReadSink& sink) {
  uint64_t previous_end = 0;
  for (const Extent& e : extents) {
    RETURN_IF_ERROR(CheckRange(info_, e.offset, e.length));
    if (e.offset < previous_end) {
      return absl::InvalidArgumentError(absl::StrCat(
          "extents must be sorted and disjoint; [", e.offset, ", +", e.length, ") is not"));
    }
    previous_end = e.offset + e.length;
  }
  const uint32_t piece = PieceBytes(options.io_bytes, info_);
  const int depth = Depth(options.queue_depth);
  const size_t window_size = ReadWindow(depth, piece);

  struct Slot {
    uint64_t offset;
    uint32_t length;
    std::unique_ptr<unsigned char[]> buffer;
    std::unique_ptr<Command> cmd;
  };
  std::deque<Slot> window;
  std::vector<std::unique_ptr<unsigned char[]>> spare;
  // Declared after the buffers, so it runs first: nothing may return while
  // libiscsi still writes into them.
  absl::Cleanup drain = [&] {
    std::vector<Command*> pending;
    for (Slot& slot : window) pending.push_back(slot.cmd.get());
    session_->Drain(pending, options.cancelled);
  };

  size_t next_extent = 0;
  uint64_t next_pos = extents.empty() ? 0 : extents[0].offset;
  while (true) {
    // Every slot is submitted at once; the I/O thread keeps `depth` of them
    // in flight and the rest wait for their turn, so the target stays busy
    // while the sink works.
    while (window.size() < window_size && next_extent < extents.size()) {
      const Extent& e = extents[next_extent];
      if (next_pos >= e.offset + e.length) {
        if (++next_extent < extents.size()) next_pos = extents[next_extent].offset;
        continue;
      }
      uint32_t length =
          static_cast<uint32_t>(std::min<uint64_t>(piece, e.offset + e.length - next_pos));
      Slot slot{next_pos, length, nullptr, nullptr};
      if (!spare.empty()) {
        slot.buffer = std::move(spare.back());
        spare.pop_back();
      } else {
        slot.buffer.reset(new unsigned char[piece]);
      }
      slot.cmd = ReadCommand(next_pos, length, info_.block_size, slot.buffer.get());
      Command* raw = slot.cmd.get();
      window.push_back(std::move(slot));
      session_->Submit(raw, depth);
      next_pos += length;
    }
    if (window.empty()) break;
    Slot& head = window.front();
    RETURN_IF_ERROR(session_->Wait(head.cmd.get(), options.cancelled));
    RETURN_IF_ERROR(head.cmd->status);
    // GOOD but short: the end of the buffer is stale, not the volume's data.
    if (head.cmd->task != nullptr) {
      RETURN_IF_ERROR(internal::CheckFullTransfer(
          head.cmd->what, session_->target(),
          head.cmd->task->residual_status == SCSI_RESIDUAL_UNDERFLOW,
          head.cmd->task->residual));
    }
    // Wait checks only while the head is unfinished: a sink slower than the
    // target would never see the cancel.
    if (options.cancelled != nullptr && options.cancelled->load()) {
      return absl::CancelledError("I/O cancelled");
    }
    RETURN_IF_ERROR(sink(head.offset, absl::string_view(reinterpret_cast<const char*>(
                                                            head.buffer.get()),
                                                        head.length)));
    spare.push_back(std::move(head.buffer));
    window.pop_front();
  }
  return absl::OkStatus();
}

std::unique_ptr<VolumeWriter> IscsiVolume::NewWriter(const WriteOptions& options) {
  return std::make_unique<IscsiVolumeWriter>(session_.get(), info_, options, &write_same_);
}

}  // namespace storaged
