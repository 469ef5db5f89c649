#include "controlplane/qmp_client.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "google/protobuf/util/json_util.h"

namespace controlplane {

absl::StatusOr<std::unique_ptr<QmpClient>> QmpClient::Connect(
    const std::string& socket_path, absl::Time deadline) {
  sockaddr_un addr{};
  if (socket_path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrCat("QMP socket path too long: ", socket_path));
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  }
  addr.sun_family = AF_UNIX;
  memcpy(addr.sun_path, socket_path.c_str(), socket_path.size() + 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    int err = errno;
    close(fd);
    return absl::UnavailableError(
        absl::StrCat("QMP socket ", socket_path, ": ", strerror(err)));
  }
  std::unique_ptr<QmpClient> client(new QmpClient(fd));
  // The greeting: {"QMP": {"version": ..., "capabilities": [...]}}.
  ASSIGN_OR_RETURN(google::protobuf::Struct greeting,
                   client->ReadMessage(deadline));
  if (!greeting.fields().contains("QMP")) {
    return absl::InternalError(
        absl::StrCat("no QMP greeting on ", socket_path));
  }
  RETURN_IF_ERROR(
      client->Execute("qmp_capabilities", "", deadline).status());
  return client;
}

QmpClient::~QmpClient() { close(fd_); }

absl::Status QmpClient::Send(const std::string& line) {
  size_t sent = 0;
  while (sent < line.size()) {
    ssize_t n = send(fd_, line.data() + sent, line.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      closed_ = true;
      return absl::UnavailableError(
          absl::StrCat("QMP send: ", strerror(errno)));
    }
    sent += static_cast<size_t>(n);
  }
  return absl::OkStatus();
}

absl::StatusOr<google::protobuf::Struct> QmpClient::ReadMessage(
    absl::Time deadline) {
  while (true) {
    size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.empty()) continue;
      google::protobuf::Struct message;
      auto parsed = google::protobuf::util::JsonStringToMessage(line, &message);
      if (!parsed.ok()) {
        return absl::InternalError(
            absl::StrCat("QMP sent something that is not JSON: ", line));
      }
      return message;
    }
    if (closed_) return absl::UnavailableError("QMP socket closed");
    absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError("QMP did not answer in time");
    }
    pollfd p{fd_, POLLIN, 0};
    int wait_ms = static_cast<int>(
        std::min<int64_t>(absl::ToInt64Milliseconds(left) + 1, 1000));
    int ready = poll(&p, 1, wait_ms);
    if (ready < 0 && errno != EINTR) {
      return absl::InternalError(absl::StrCat("poll: ", strerror(errno)));
    }
    if (ready <= 0) continue;
    char chunk[4096];
    ssize_t n = recv(fd_, chunk, sizeof(chunk), 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      closed_ = true;
    } else if (n == 0) {
      closed_ = true;
    } else {
      buffer_.append(chunk, static_cast<size_t>(n));
    }
  }
}

absl::StatusOr<google::protobuf::Value> QmpClient::Execute(
    const std::string& command, const std::string& arguments_json,
    absl::Time deadline) {
  std::string line = absl::StrCat("{\"execute\": \"", command, "\"");
  if (!arguments_json.empty()) absl::StrAppend(&line, ", \"arguments\": ", arguments_json);
  absl::StrAppend(&line, "}\n");
  RETURN_IF_ERROR(Send(line));
  while (true) {
    ASSIGN_OR_RETURN(google::protobuf::Struct message, ReadMessage(deadline));
    const auto& fields = message.fields();
    if (auto it = fields.find("event"); it != fields.end()) {
      events_.push_back(it->second.string_value());
      continue;
    }
    if (auto it = fields.find("return"); it != fields.end()) return it->second;
    if (auto it = fields.find("error"); it != fields.end()) {
      const auto& error = it->second.struct_value().fields();
      auto desc = error.find("desc");
      return absl::FailedPreconditionError(absl::StrCat(
          "QMP ", command, ": ",
          desc != error.end() ? desc->second.string_value() : "error"));
    }
  }
}

bool QmpClient::WaitUntilClosed(absl::Time deadline) {
  while (true) {
    absl::StatusOr<google::protobuf::Struct> message = ReadMessage(deadline);
    if (!message.ok()) return closed_;
    auto it = message->fields().find("event");
    if (it != message->fields().end()) {
      events_.push_back(it->second.string_value());
    }
  }
}

}  // namespace controlplane
