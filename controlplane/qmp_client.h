// A client of the QEMU Machine Protocol (QMP) over a unix socket: JSON
// objects, one per line. Enough of it for a compute driver: negotiate,
// execute commands, and follow asynchronous events until QEMU closes the
// socket.
#ifndef CONTROLPLANE_QMP_CLIENT_H_
#define CONTROLPLANE_QMP_CLIENT_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "google/protobuf/struct.pb.h"

namespace controlplane {

// One connection. Not thread-safe: one caller at a time. Closes the socket
// when destroyed.
class QmpClient {
 public:
  // Connects to `socket_path`, reads QEMU's greeting and leaves capability
  // negotiation mode. UNAVAILABLE if nobody listens there (QEMU not running);
  // DEADLINE_EXCEEDED if QEMU does not answer by `deadline`.
  static absl::StatusOr<std::unique_ptr<QmpClient>> Connect(
      const std::string& socket_path, absl::Time deadline);
  ~QmpClient();
  QmpClient(const QmpClient&) = delete;
  QmpClient& operator=(const QmpClient&) = delete;

  // Runs `command` (with `arguments_json`, an object, if not empty) and
  // returns its "return" value. Events arriving meanwhile are kept (see
  // events()). FAILED_PRECONDITION with QEMU's description if it answers
  // with an error; UNAVAILABLE if the socket closes first; DEADLINE_EXCEEDED.
  absl::StatusOr<google::protobuf::Value> Execute(
      const std::string& command, const std::string& arguments_json = "",
      absl::Time deadline = absl::InfiniteFuture());

  // Reads events until QEMU closes the socket (it exits) or `deadline`.
  // True if the socket closed.
  bool WaitUntilClosed(absl::Time deadline);

  // Names of the events seen so far ("SHUTDOWN", "STOP", ...), oldest first.
  const std::vector<std::string>& events() const { return events_; }
  bool closed() const { return closed_; }

 private:
  explicit QmpClient(int fd) : fd_(fd) {}
  // Reads one JSON object (a line). UNAVAILABLE once the socket closed;
  // DEADLINE_EXCEEDED.
  absl::StatusOr<google::protobuf::Struct> ReadMessage(absl::Time deadline);
  absl::Status Send(const std::string& line);

  int fd_;
  std::string buffer_;
  std::vector<std::string> events_;
  bool closed_ = false;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_QMP_CLIENT_H_
