// Test double: forwards to a real Volume and injects failures after a byte
// budget, as leveldb's SpecialEnv does for Env. Not thread-safe.
#ifndef STORAGED_VOLUME_FAULT_H_
#define STORAGED_VOLUME_FAULT_H_

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "storaged/volume.h"

namespace storaged {

class FaultVolume final : public Volume {
 public:
  explicit FaultVolume(Volume* base) : base_(base) {}  // base not owned

  // Once `bytes` more bytes have reached read sinks, the read fails with
  // `status` (the sink is not called for the piece that crosses the budget).
  void FailReadsAfter(uint64_t bytes, absl::Status status) {
    read_budget_ = bytes;
    read_error_ = std::move(status);
  }
  // Writes (and WriteZeroes) beyond `bytes` more bytes fail with `status`,
  // which then sticks in that writer like a real I/O error.
  void FailWritesAfter(uint64_t bytes, absl::Status status) {
    write_budget_ = bytes;
    write_error_ = std::move(status);
  }
  void FailMappedExtents(absl::Status status) { mapped_error_ = std::move(status); }
  // StartFlush calls made on this volume's writers so far.
  int start_flushes() const { return start_flushes_; }

  const VolumeInfo& info() const override { return base_->info(); }

  absl::StatusOr<std::vector<Extent>> MappedExtents(uint64_t offset,
                                                    uint64_t length) override {
    if (!mapped_error_.ok()) return mapped_error_;
    return base_->MappedExtents(offset, length);
  }

  absl::Status ReadExtents(const std::vector<Extent>& extents, const ReadOptions& options,
                           const ReadSink& sink) override {
    return base_->ReadExtents(extents, options,
                              [&](uint64_t offset, absl::string_view data) -> absl::Status {
                                if (read_budget_.has_value()) {
                                  if (data.size() > *read_budget_) return read_error_;
                                  *read_budget_ -= data.size();
                                }
                                return sink(offset, data);
                              });
  }

  std::unique_ptr<VolumeWriter> NewWriter(const WriteOptions& options) override {
    return std::make_unique<Writer>(this, base_->NewWriter(options));
  }

 private:
  class Writer final : public VolumeWriter {
   public:
    Writer(FaultVolume* owner, std::unique_ptr<VolumeWriter> base)
        : owner_(owner), base_(std::move(base)) {}

    using VolumeWriter::Write;
    absl::Status Write(uint64_t offset, std::shared_ptr<const std::string> data) override {
      if (absl::Status s = Charge(data->size()); !s.ok()) return sticky_ = s;
      return base_->Write(offset, std::move(data));
    }
    absl::Status WriteZeroes(uint64_t offset, uint64_t length) override {
      if (absl::Status s = Charge(length); !s.ok()) return sticky_ = s;
      return base_->WriteZeroes(offset, length);
    }
    absl::Status Flush() override {
      if (!sticky_.ok()) return sticky_;
      return base_->Flush();
    }
    absl::Status StartFlush() override {
      if (!sticky_.ok()) return sticky_;
      ++owner_->start_flushes_;
      return base_->StartFlush();
    }

   private:
    absl::Status Charge(uint64_t bytes) {
      if (!sticky_.ok()) return sticky_;
      if (!owner_->write_budget_.has_value()) return absl::OkStatus();
      if (bytes > *owner_->write_budget_) return owner_->write_error_;
      *owner_->write_budget_ -= bytes;
      return absl::OkStatus();
    }

    FaultVolume* owner_;
    std::unique_ptr<VolumeWriter> base_;
    absl::Status sticky_;
  };

  Volume* base_;
  std::optional<uint64_t> read_budget_;
  absl::Status read_error_;
  std::optional<uint64_t> write_budget_;
  absl::Status write_error_;
  absl::Status mapped_error_;
  int start_flushes_ = 0;
};

}  // namespace storaged

#endif  // STORAGED_VOLUME_FAULT_H_
