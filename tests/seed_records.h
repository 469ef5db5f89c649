// Records that tests write straight into a controlplane's database, as a
// finished capture leaves them: fresh ids, timestamps and ACTIVE templates.
#ifndef TESTS_SEED_RECORDS_H_
#define TESTS_SEED_RECORDS_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "controlplane/sqlite_database.h"
#include "google/protobuf/timestamp.pb.h"
#include "imagetemplates/v1/image_templates.pb.h"

namespace tests {

// A running controlplane's database file at `path`, opened (and migrated)
// from the test process as well, without a read pool.
absl::StatusOr<std::unique_ptr<controlplane::SqliteDatabase>> OpenSeedDatabase(
    const std::string& path);

// A random version 4 UUID. Thread-safe.
std::string NewUuid();

// `us` microseconds after the Unix epoch.
google::protobuf::Timestamp MicrosToTimestamp(int64_t us);
// Now, to the microsecond.
google::protobuf::Timestamp NowTimestamp();

// An ACTIVE private template of `owner` created (and updated) at
// `create_time`, with one 8 MiB boot disk of `stored_bytes` and a location
// AVAILABLE in dal10.
imagetemplates::v1::ImageTemplate ActiveTemplate(const std::string& owner,
                                                 const std::string& name,
                                                 const google::protobuf::Timestamp& create_time,
                                                 int64_t stored_bytes = 1000);

}  // namespace tests

#endif  // TESTS_SEED_RECORDS_H_
