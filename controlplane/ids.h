// Random identifiers, hashes and time helpers shared by the stores.
#ifndef CONTROLPLANE_IDS_H_
#define CONTROLPLANE_IDS_H_

#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/timestamp.pb.h"

namespace controlplane {

// `n` bytes from OpenSSL's CSPRNG. Aborts if the generator fails: nothing
// secure can be made without it.
std::string RandomBytes(size_t n);

// A lowercase UUIDv4 string from RandomBytes.
std::string NewUuid();

// True for a lowercase 8-4-4-4-12 hex UUID string.
bool IsUuid(absl::string_view id);

// Raw 32-byte SHA-256 digest.
std::string Sha256(absl::string_view data);

// Microseconds since the Unix epoch, the time unit of every stored time.
int64_t NowMicros();
google::protobuf::Timestamp ToTimestamp(int64_t micros);
int64_t FromTimestamp(const google::protobuf::Timestamp& timestamp);

}  // namespace controlplane

#endif  // CONTROLPLANE_IDS_H_
