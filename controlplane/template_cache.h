// Decoded image templates (row, tags, disks, locations, configuration) kept
// between reads, so a list page or a get whose rows have not changed skips
// reading the children and parsing the configuration again, and sends each
// template's cached encoding (EncodedTemplate::wire) instead of serializing
// it again.
//
// An entry is valid for one value of its row's `version` column
// (image_templates.version, migration 6): SqliteTemplateStore bumps it in the
// same transaction as every write to the row or its children, and readers
// look an entry up with the version they read in their own snapshot, so a
// stale entry is never served, whichever process wrote.
#ifndef CONTROLPLANE_TEMPLATE_CACHE_H_
#define CONTROLPLANE_TEMPLATE_CACHE_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "controlplane/template_store.h"

namespace controlplane {

// Thread-safe; sharded so concurrent readers rarely share a lock.
class TemplateCache {
 public:
  // Holds at most about `max_entries` templates; past that, inserting evicts
  // an arbitrary entry of the same shard.
  explicit TemplateCache(size_t max_entries);
  TemplateCache(const TemplateCache&) = delete;
  TemplateCache& operator=(const TemplateCache&) = delete;

  // The template cached for `id` at `version`, or null (absent, or cached at
  // another version).
  std::shared_ptr<const EncodedTemplate> Find(absl::string_view id, int64_t version);
  // Caches `t` as the content of its row at `version`, replacing any other
  // version.
  void Put(int64_t version, std::shared_ptr<const EncodedTemplate> t);

  // For tests and logs.
  size_t size() const;
  int64_t hits() const;
  int64_t misses() const;

 private:
  static constexpr size_t kShards = 16;
  struct Entry {
    int64_t version;
    std::shared_ptr<const EncodedTemplate> image_template;
  };
  struct Shard {
    mutable absl::Mutex mu;
    absl::flat_hash_map<std::string, Entry> entries ABSL_GUARDED_BY(mu);
    int64_t hits ABSL_GUARDED_BY(mu) = 0;
    int64_t misses ABSL_GUARDED_BY(mu) = 0;
  };
  Shard& ShardFor(absl::string_view id);

  const size_t max_per_shard_;
  std::array<Shard, kShards> shards_;
};

}  // namespace controlplane

#endif  // CONTROLPLANE_TEMPLATE_CACHE_H_
