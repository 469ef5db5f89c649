#include "tests/seed_records.h"

#include "absl/random/random.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "controlplane/migrations.h"

namespace tests {

namespace v1 = imagetemplates::v1;

absl::StatusOr<std::unique_ptr<controlplane::SqliteDatabase>> OpenSeedDatabase(
    const std::string& path) {
  controlplane::SqliteDatabase::Options options;
  options.read_connections = 0;
  return controlplane::SqliteDatabase::Open(path, controlplane::Migrations(), options);
}

std::string NewUuid() {
  static absl::Mutex mu(absl::kConstInit);
  static absl::BitGen* gen = new absl::BitGen();
  absl::MutexLock lock(&mu);
  uint64_t hi = absl::Uniform<uint64_t>(*gen), lo = absl::Uniform<uint64_t>(*gen);
  hi = (hi & ~0xF000ull) | 0x4000ull;                   // version 4
  lo = (lo & ~(0xC000ull << 48)) | (0x8000ull << 48);  // RFC 4122 variant
  std::string hex = absl::StrFormat("%016x%016x", hi, lo);
  return absl::StrCat(hex.substr(0, 8), "-", hex.substr(8, 4), "-", hex.substr(12, 4), "-",
                      hex.substr(16, 4), "-", hex.substr(20));
}

google::protobuf::Timestamp MicrosToTimestamp(int64_t us) {
  google::protobuf::Timestamp t;
  t.set_seconds(us / 1000000);
  t.set_nanos(static_cast<int32_t>(us % 1000000) * 1000);
  return t;
}

google::protobuf::Timestamp NowTimestamp() {
  return MicrosToTimestamp(absl::ToUnixMicros(absl::Now()));
}

v1::ImageTemplate ActiveTemplate(const std::string& owner, const std::string& name,
                                 const google::protobuf::Timestamp& create_time,
                                 int64_t stored_bytes) {
  v1::ImageTemplate t;
  t.set_id(NewUuid());
  t.set_owner_account_id(owner);
  t.set_name(name);
  t.set_visibility(v1::VISIBILITY_PRIVATE);
  t.set_status(v1::IMAGE_TEMPLATE_STATUS_ACTIVE);
  *t.mutable_create_time() = create_time;
  *t.mutable_update_time() = create_time;
  auto* disk = t.add_disks();
  disk->set_device_index(0);
  disk->set_boot(true);
  disk->set_logical_size_bytes(int64_t{8} << 20);
  disk->set_stored_size_bytes(stored_bytes);
  disk->set_manifest_digest(std::string(64, 'a'));
  auto* location = t.add_locations();
  location->set_datacenter("dal10");
  location->set_status(v1::IMAGE_TEMPLATE_LOCATION_STATUS_AVAILABLE);
  *location->mutable_create_time() = create_time;
  return t;
}

}  // namespace tests
