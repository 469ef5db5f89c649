#include "controlplane/template_cache.h"

#include <utility>

#include "absl/hash/hash.h"

namespace controlplane {

TemplateCache::TemplateCache(size_t max_entries)
    : max_per_shard_(max_entries / kShards > 0 ? max_entries / kShards : 1) {}

TemplateCache::Shard& TemplateCache::ShardFor(absl::string_view id) {
  return shards_[absl::Hash<absl::string_view>()(id) % kShards];
}

std::shared_ptr<const EncodedTemplate> TemplateCache::Find(absl::string_view id,
                                                          int64_t version) {
  Shard& shard = ShardFor(id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.entries.find(id);
  if (it == shard.entries.end() || it->second.version != version) {
    ++shard.misses;
    return nullptr;
  }
  ++shard.hits;
  return it->second.image_template;
}

void TemplateCache::Put(int64_t version, std::shared_ptr<const EncodedTemplate> t) {
  const std::string& id = t->image_template.id();
  Shard& shard = ShardFor(id);
  absl::MutexLock lock(&shard.mu);
  auto it = shard.entries.find(id);
  if (it != shard.entries.end()) {
    it->second = Entry{version, std::move(t)};
    return;
  }
  // Full: drop whichever entry iterates first (hash order, so arbitrary).
  if (shard.entries.size() >= max_per_shard_) shard.entries.erase(shard.entries.begin());
  std::string key = id;
  shard.entries.emplace(std::move(key), Entry{version, std::move(t)});
}

size_t TemplateCache::size() const {
  size_t n = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    n += shard.entries.size();
  }
  return n;
}

int64_t TemplateCache::hits() const {
  int64_t n = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    n += shard.hits;
  }
  return n;
}

int64_t TemplateCache::misses() const {
  int64_t n = 0;
  for (const Shard& shard : shards_) {
    absl::MutexLock lock(&shard.mu);
    n += shard.misses;
  }
  return n;
}

}  // namespace controlplane
