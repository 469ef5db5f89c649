// Volume over iSCSI with libiscsi 1.19 (no threading API): one I/O thread per
// volume owns the iscsi_context and drives its poll loop, so commands keep
// flowing while the caller works on data; commands in flight are capped by
// the read/write options, and every buffer outlives its command.
#ifndef STORAGED_ISCSI_VOLUME_H_
#define STORAGED_ISCSI_VOLUME_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "storaged/volume.h"

namespace storaged {

// iscsi://[user%password@]host[:port]/IQN/LUN
struct IscsiUrl {
  std::string host;  // IPv4, name, or IPv6 without brackets
  int port = 3260;
  std::string iqn;
  int lun = 0;
  std::string user;      // CHAP; empty = no authentication
  std::string password;  // never logged

  std::string Portal() const;    // "host:port" ("[v6]:port")
  std::string Redacted() const;  // the URL without the password
};

// INVALID_ARGUMENT naming what is wrong (never echoing the password).
absl::StatusOr<IscsiUrl> ParseIscsiUrl(absl::string_view url);

struct IscsiVolumeOptions {
  std::string initiator_name = "iqn.2026-11.imagetemplates:storaged";
  absl::Duration connect_timeout = absl::Seconds(10);
  // Per-command limit; a command that takes longer counts as a lost
  // connection.
  absl::Duration command_timeout = absl::Seconds(60);
  // After a connection loss, how long to keep trying to log in again before
  // the unfinished commands fail with UNAVAILABLE.
  absl::Duration reconnect_timeout = absl::Seconds(30);
  // A command sent this many times, each attempt ending without an answer
  // (timed out, or its connection lost), fails UNAVAILABLE naming its LBA
  // range instead of being sent again: a target that never answers one
  // command would otherwise keep it going forever. With the default timeout,
  // about 5 minutes.
  int max_command_attempts = 5;
  // Tests: treat the LUN as thin with LBPRZ whatever it reports, to see how
  // zeroing copes with a target that rejects WRITE SAME with UNMAP.
  bool assume_thin_lbprz_for_testing = false;
};

namespace iscsi_internal {
class Session;
}

// Not thread-safe (see Volume). Owns its connection; destroying it waits for
// commands in flight and logs out.
class IscsiVolume final : public Volume {
 public:
  // Connects, logs in (CHAP when the URL has credentials), checks the LUN and
  // reads its geometry. Errors: INVALID_ARGUMENT (malformed URL),
  // UNAVAILABLE (portal unreachable / login timed out), NOT_FOUND (no such
  // target IQN, or no such LUN on it), UNAUTHENTICATED (CHAP credentials
  // missing or rejected), PERMISSION_DENIED (initiator not authorized).
  static absl::StatusOr<std::unique_ptr<IscsiVolume>> Open(
      absl::string_view url, const IscsiVolumeOptions& options = {});

  IscsiVolume(const IscsiVolume&) = delete;
  IscsiVolume& operator=(const IscsiVolume&) = delete;
  ~IscsiVolume() override;

  const VolumeInfo& info() const override { return info_; }
  absl::StatusOr<std::vector<Extent>> MappedExtents(uint64_t offset,
                                                    uint64_t length) override;
  absl::Status ReadExtents(const std::vector<Extent>& extents, const ReadOptions& options,
                           const ReadSink& sink) override;
  std::unique_ptr<VolumeWriter> NewWriter(const WriteOptions& options) override;

  // Reconnections so far (after transient connection losses).
  int reconnects() const;

  // Tests: shuts the TCP connection down under libiscsi, as a network
  // failure would; the next I/O notices and reconnects.
  void BreakConnectionForTesting();

 private:
  IscsiVolume(std::unique_ptr<iscsi_internal::Session> session, VolumeInfo info);

  std::unique_ptr<iscsi_internal::Session> session_;
  VolumeInfo info_;
  // Whether the target takes WRITE SAME with UNMAP: 0 not yet known, 1 yes,
  // -1 rejected (zeroes are then written explicitly).
  std::atomic<int> write_same_{0};
};

}  // namespace storaged

#endif  // STORAGED_ISCSI_VOLUME_H_
