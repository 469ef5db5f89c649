#include "storaged/image_store.h"

#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <tuple>
#include <deque>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/container/btree_map.h"
#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "storaged/internal/frame_cache.h"
#include "storaged/internal/image_store_parts.h"
#include "storaged/internal/pack.h"

namespace storaged {
namespace internal {
namespace {

constexpr absl::string_view kManifestSuffix = ".manifest";
constexpr size_t kMaxReportedErrors = 16;

}  // namespace

ZSTD_DCtx* ThreadDecompressor() {
  struct Holder {
    ZSTD_DCtx* dctx = ZSTD_createDCtx();
    ~Holder() { ZSTD_freeDCtx(dctx); }
  };
  thread_local Holder holder;
  return holder.dctx;
}

bool ValidImageId(absl::string_view id) {
  if (id.empty() || id.size() > 128) return false;
  for (char c : id) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}



void OpenPacks::Touch(const std::shared_ptr<PackState>& pack) {
  std::vector<std::shared_ptr<PackState>> to_close;
  {
    absl::MutexLock lock(&mu);
    if (!lru.empty() && lru.front().lock() == pack) return;
    for (auto it = lru.begin(); it != lru.end();) {
      std::shared_ptr<PackState> p = it->lock();
      if (p == nullptr || p == pack) {
        it = lru.erase(it);
      } else {
        ++it;
      }
    }
    lru.push_front(pack);
    while (lru.size() > limit) {
      if (std::shared_ptr<PackState> p = lru.back().lock()) {
        to_close.push_back(std::move(p));
      }
      lru.pop_back();
    }
  }
  for (const std::shared_ptr<PackState>& p : to_close) p->Close();
}

// The capture pipeline: callers hash chunks and decide dedup under the store
// lock; new chunks gather into a frame; full frames go through a bounded
// queue to compression workers, which append them to the capture's current
// pack and seal it when full. Memory is bounded by the queue, whatever the
// volume size, beyond 32 bytes per data chunk for the manifest (zero chunks
// cost nothing: a 2 TiB thin volume with little data takes kilobytes).
class ImageWriterImpl final : public ImageWriter {
 public:
  ImageWriterImpl(ImageStore* store, std::string id, uint64_t volume_size,
                  uint32_t block_size, int compression_level)
      : compression_level_(compression_level),
        store_(store),
        id_(std::move(id)),
        volume_size_(volume_size),
        block_size_(block_size),
        chunk_size_(store->options_.chunk_size),
        chunk_count_(ChunkCountFor(volume_size, chunk_size_)),
        queue_capacity_(2 * NumThreads()),
        chunks_(chunk_count_) {}

  ~ImageWriterImpl() override { Abort(); }
  ImageWriterImpl(const ImageWriterImpl&) = delete;
  ImageWriterImpl& operator=(const ImageWriterImpl&) = delete;

  void Start() {
    for (size_t i = 0; i < NumThreads(); ++i) {
      workers_.emplace_back([this] { WorkerLoop(); });
    }
  }

  const std::string& image_id() const override { return id_; }
  uint64_t chunk_count() const override { return chunk_count_; }
  uint32_t ChunkLength(uint64_t index) const override {
    uint64_t left = volume_size_ - index * chunk_size_;
    return static_cast<uint32_t>(left < chunk_size_ ? left : chunk_size_);
  }

  absl::Status AddChunk(uint64_t index, absl::string_view plain) override {
    if (index >= chunk_count_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk index ", index, " is past the volume's ", chunk_count_,
          " chunks"));
    }
    if (plain.size() != ChunkLength(index)) {
      return absl::InvalidArgumentError(
          absl::StrCat("chunk ", index, " has ", plain.size(),
                       " bytes; expected ", ChunkLength(index)));
    }
    const bool zero = IsAllZero(plain);
    const Digest digest = zero ? Digest() : Sha256(plain);
    bool write = false;
    {
      absl::MutexLock store_lock(&store_->mu_);
      absl::MutexLock lock(&mu_);
      RETURN_IF_ERROR(CheckOpenLocked());
      if (const Digest* old = AddedLocked(index)) {
        if (*old == digest) return absl::OkStatus();
        return absl::InvalidArgumentError(absl::StrCat(
            "chunk ", index, " was already added with other content"));
      }
      if (zero) {
        AddZeroRangeLocked(index, index + 1);
      } else {
        ahead_.emplace(index, digest);
      }
      AdvanceLocked();
      // Registered in chunks_ under the store lock, so a collection that
      // sees the index entry also sees this capture's reference to it.
      if (!zero && !store_->HoldsUsableLocked(digest) &&
          pending_.insert(digest).second) {
        write = true;
        ++active_adds_;
        ++new_chunks_;
      }
    }
    if (!write) return absl::OkStatus();
    absl::Status s = AppendToFrame(index, digest, plain);
    absl::MutexLock lock(&mu_);
    --active_adds_;
    if (!s.ok() && error_.ok()) error_ = s;
    return s;
  }

  absl::Status AddZeroChunks(uint64_t first_index, uint64_t count) override {
    if (first_index > chunk_count_ || count > chunk_count_ - first_index) {
      return absl::InvalidArgumentError(
          absl::StrCat("zero chunks ", first_index, "+", count,
                       " are past the volume's ", chunk_count_, " chunks"));
    }
    absl::MutexLock lock(&mu_);
    RETURN_IF_ERROR(CheckOpenLocked());
    if (count == 0) return absl::OkStatus();
    const uint64_t end = first_index + count;
    // A data chunk already added inside the range: in the table or ahead.
    uint64_t conflict = end;
    size_t r = chunks_.FindRun(first_index);
    if (r < chunks_.run_count()) {
      conflict = std::max(first_index, chunks_.run(r).first);
    }
    auto it = ahead_.lower_bound(first_index);
    if (it != ahead_.end()) conflict = std::min(conflict, it->first);
    if (conflict < end) {
      return absl::InvalidArgumentError(absl::StrCat(
          "chunk ", conflict, " was already added with other content"));
    }
    AddZeroRangeLocked(std::max(first_index, frontier_), end);
    AdvanceLocked();
    return absl::OkStatus();
  }

  absl::StatusOr<ManifestSummary> Commit() override {
    absl::StatusOr<ManifestSummary> result = CommitInternal();
    if (!result.ok()) Abort();
    return result;
  }

  void Abort() override {
    {
      absl::MutexLock lock(&mu_);
      if (state_ == State::kDone) return;
      state_ = State::kDone;
      if (error_.ok()) error_ = absl::AbortedError("capture aborted");
    }
    StopWorkers(/*discard=*/true);
    {
      absl::MutexLock lock(&mu_);
      mu_.Await(absl::Condition(
          +[](int* n) { return *n == 0; }, &active_adds_));
    }
    {
      absl::MutexLock lock(&pack_mu_);
      if (pack_ != nullptr) {
        pack_->Abandon();
        pack_.reset();
      }
    }
    absl::MutexLock store_lock(&store_->mu_);
    store_->writers_.erase(this);
    store_->reserved_ids_.erase(id_);
  }

  // Adds every chunk this capture references to `live`. Called by garbage
  // collection with the store lock held.
  void MarkLive(absl::flat_hash_set<Digest, DigestHash>* live) {
    absl::MutexLock lock(&mu_);
    chunks_.ForEachData([&](uint64_t, const Digest& d) { live->insert(d); });
    for (const auto& [index, d] : ahead_) live->insert(d);
    if (committing_ != nullptr) {
      committing_->chunks.ForEachData([&](uint64_t, const Digest& d) { live->insert(d); });
    }
  }

 private:
  enum class State { kOpen, kCommitting, kDone };
  struct PendingChunk {
    uint64_t index;
    Digest digest;
    std::string data;
  };
  using Frame = std::vector<PendingChunk>;

  size_t NumThreads() const {
    return static_cast<size_t>(
        std::max(1, store_->options_.compression_threads));
  }

  // The digest chunk `index` was added with (zero for an all-zero chunk), or
  // null if it was not added yet.
  const Digest* AddedLocked(uint64_t index) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    static const Digest kZero;
    if (index < frontier_) return &chunks_.At(index);
    auto it = ahead_.find(index);
    if (it != ahead_.end()) return &it->second;
    auto z = ahead_zero_.upper_bound(index);
    if (z != ahead_zero_.begin() && std::prev(z)->second > index) return &kZero;
    return nullptr;
  }

  // Marks [begin, end) all-zero, merging with the ranges it touches; every
  // index in it is at or past frontier_ and holds no data chunk.
  void AddZeroRangeLocked(uint64_t begin, uint64_t end)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (begin >= end) return;
    auto it = ahead_zero_.upper_bound(begin);
    if (it != ahead_zero_.begin() && std::prev(it)->second >= begin) {
      --it;
      begin = it->first;
    }
    while (it != ahead_zero_.end() && it->first <= end) {
      end = std::max(end, it->second);
      it = ahead_zero_.erase(it);
    }
    ahead_zero_.emplace(begin, end);
  }

  // Moves what was added in order from frontier_ on into chunks_.
  void AdvanceLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (;;) {
      if (!ahead_.empty() && ahead_.begin()->first == frontier_) {
        chunks_.Append(frontier_++, ahead_.begin()->second);
        ahead_.erase(ahead_.begin());
      } else if (!ahead_zero_.empty() && ahead_zero_.begin()->first == frontier_) {
        frontier_ = ahead_zero_.begin()->second;
        ahead_zero_.erase(ahead_zero_.begin());
      } else {
        return;
      }
    }
  }

  absl::Status CheckOpenLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    RETURN_IF_ERROR(error_);
    if (state_ != State::kOpen) {
      return absl::FailedPreconditionError(
          absl::StrCat("capture of image ", id_, " is already committing"));
    }
    return absl::OkStatus();
  }

  absl::Status AppendToFrame(uint64_t index, const Digest& digest,
                             absl::string_view plain) {
    Frame full;
    {
      absl::MutexLock lock(&frame_mu_);
      frame_.push_back(PendingChunk{index, digest, std::string(plain)});
      frame_bytes_ += plain.size();
      if (frame_bytes_ >= store_->options_.frame_size) {
        full.swap(frame_);
        frame_bytes_ = 0;
      }
    }
    if (full.empty()) return absl::OkStatus();
    return Enqueue(std::move(full));
  }

  // Blocks while the queue is full: the capture runs at the speed of
  // compression and the disk, with bounded memory.
  absl::Status Enqueue(Frame frame) {
    absl::MutexLock lock(&queue_mu_);
    auto has_room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
      return queue_closed_ || queue_.size() < queue_capacity_;
    };
    queue_mu_.Await(absl::Condition(&has_room));
    if (queue_closed_) return absl::AbortedError("capture aborted");
    queue_.push_back(std::move(frame));
    return absl::OkStatus();
  }

  void StopWorkers(bool discard) {
    {
      absl::MutexLock lock(&queue_mu_);
      queue_closed_ = true;
      if (discard) queue_.clear();
    }
    for (std::thread& t : workers_) {
      if (t.joinable()) t.join();
    }
  }

  void WorkerLoop() {
    CCtxPtr cctx(ZSTD_createCCtx());
    for (;;) {
      Frame frame;
      {
        absl::MutexLock lock(&queue_mu_);
        auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
          return queue_closed_ || !queue_.empty();
        };
        queue_mu_.Await(absl::Condition(&ready));
        if (queue_.empty()) return;
        frame = std::move(queue_.front());
        queue_.pop_front();
      }
      {
        absl::MutexLock lock(&mu_);
        if (!error_.ok()) continue;  // Drain so producers never block.
      }
      absl::Status s = WriteFrame(cctx.get(), std::move(frame));
      if (!s.ok()) {
        absl::MutexLock lock(&mu_);
        if (error_.ok()) error_ = s;
      }
    }
  }

  absl::Status WriteFrame(ZSTD_CCtx* cctx, Frame frame) {
    // Volume order inside a frame: neighbouring data compresses together.
    std::sort(frame.begin(), frame.end(),
              [](const PendingChunk& a, const PendingChunk& b) {
                return a.index < b.index;
              });
    std::string plain;
    size_t total = 0;
    for (const PendingChunk& c : frame) total += c.data.size();
    plain.reserve(total);
    std::vector<FrameChunk> chunks;
    chunks.reserve(frame.size());
    for (PendingChunk& c : frame) {
      chunks.push_back(FrameChunk{c.digest, static_cast<uint32_t>(plain.size()),
                                  static_cast<uint32_t>(c.data.size())});
      plain.append(c.data);
      std::string().swap(c.data);
    }
    const ImageStoreOptions& o = store_->options_;
    CompressedFrame compressed =
        CompressFrame(cctx, compression_level_, o.min_compression_saving,
                      plain, std::move(chunks));
    std::string().swap(plain);

    absl::MutexLock lock(&pack_mu_);
    if (pack_ == nullptr) {
      ASSIGN_OR_RETURN(pack_, PackWriter::Create(store_->fs_, store_->packs_dir_,
                                                 store_->NewPackName()));
    }
    if (absl::Status s = pack_->AddFrame(compressed); !s.ok()) {
      pack_->Abandon();
      pack_.reset();
      return s;
    }
    new_stored_bytes_ += compressed.stored.size();
    if (pack_->size() >= o.pack_size) return SealPackLocked();
    return absl::OkStatus();
  }

  absl::Status SealPackLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pack_mu_) {
    std::unique_ptr<PackWriter> pack = std::move(pack_);
    uint64_t file_size = 0;
    ASSIGN_OR_RETURN(PackIndex index, pack->Seal(&file_size));
    absl::MutexLock store_lock(&store_->mu_);
    {
      // The store's index dedups these from now on: pending_ holds only
      // chunks not sealed yet, not every new chunk of a dense volume.
      absl::MutexLock lock(&mu_);
      for (const PackChunk& c : index.chunks) pending_.erase(c.digest);
    }
    store_->RegisterPackLocked(pack->name(), std::move(index), file_size);
    return absl::OkStatus();
  }

  absl::StatusOr<ManifestSummary> CommitInternal() {
    {
      absl::MutexLock lock(&mu_);
      RETURN_IF_ERROR(CheckOpenLocked());
      if (frontier_ != chunk_count_) {
        return absl::FailedPreconditionError(absl::StrCat(
            "cannot commit image ", id_, ": chunk ", frontier_, " of ",
            chunk_count_, " was never added"));
      }
      state_ = State::kCommitting;
      mu_.Await(absl::Condition(
          +[](int* n) { return *n == 0; }, &active_adds_));
    }
    Frame last;
    {
      absl::MutexLock lock(&frame_mu_);
      last.swap(frame_);
      frame_bytes_ = 0;
    }
    if (!last.empty()) RETURN_IF_ERROR(Enqueue(std::move(last)));
    StopWorkers(/*discard=*/false);
    {
      absl::MutexLock lock(&mu_);
      RETURN_IF_ERROR(error_);
    }
    uint64_t new_stored_bytes = 0;
    {
      absl::MutexLock lock(&pack_mu_);
      if (pack_ != nullptr) RETURN_IF_ERROR(SealPackLocked());
      new_stored_bytes = new_stored_bytes_;
    }

    // Every pack of this capture is sealed: now the manifest.
    auto manifest = std::make_shared<Manifest>();
    Manifest& m = *manifest;
    m.image_id = id_;
    m.volume_size = volume_size_;
    m.block_size = block_size_;
    m.chunk_size = chunk_size_;
    m.create_time = absl::Now();
    m.new_stored_bytes = new_stored_bytes;
    ManifestSummary summary;
    {
      absl::ReaderMutexLock store_lock(&store_->mu_);
      absl::MutexLock lock(&mu_);
      // Adding is over (the state is kCommitting): the table moves, no copy.
      m.chunks = std::move(chunks_);
      chunks_ = ChunkTable(chunk_count_);
      committing_ = manifest;  // MarkLive's until the image is listed
      m.new_chunks = new_chunks_;
      summary.data_chunks = m.chunks.data_count();
      summary.zero_chunks = m.chunks.zero_count();
      // Distinct chunks by their index entry, which stays put while the
      // store lock is held: 8 bytes each instead of a 32-byte digest.
      absl::flat_hash_set<const ImageStore::Location*> seen;
      absl::Status lost;
      m.chunks.ForEachData([&](uint64_t i, const Digest& d) {
        m.logical_bytes += ChunkLength(i);
        if (!lost.ok()) return;
        auto it = store_->index_.find(d);
        if (it == store_->index_.end()) {
          lost = absl::InternalError(absl::StrCat(
              "capture of image ", id_, " lost chunk ", i, " (sha256 ",
              d.ToHex(), ") before commit"));
          return;
        }
        if (!seen.insert(&it->second).second) return;
        m.referenced_stored_bytes += store_->StoredShareLocked(it->second);
      });
      RETURN_IF_ERROR(lost);
      summary.unique_chunks = seen.size();
    }
    std::string encoded = EncodeManifest(m, &summary.manifest_digest);
    RETURN_IF_ERROR(WriteFileDurably(store_->fs_, store_->images_dir_,
                                     store_->ManifestPath(id_), encoded));

    {
      absl::MutexLock store_lock(&store_->mu_);
      store_->images_[id_] = ImageStore::InfoOf(m, summary.manifest_digest, encoded.size());
      store_->reserved_ids_.erase(id_);
      store_->writers_.erase(this);
      if (store_->gc_marking_) {
        store_->committed_while_marking_.push_back(manifest);
      }
      absl::MutexLock lock(&mu_);
      state_ = State::kDone;
    }
    summary.image_id = id_;
    summary.volume_size = volume_size_;
    summary.chunk_count = chunk_count_;
    summary.new_chunks = m.new_chunks;
    summary.logical_bytes = m.logical_bytes;
    summary.stored_bytes = m.referenced_stored_bytes;
    summary.new_stored_bytes = m.new_stored_bytes;
    return summary;
  }

  const int compression_level_;  // initialized first: see the constructor
  ImageStore* const store_;
  const std::string id_;
  const uint64_t volume_size_;
  const uint32_t block_size_;
  const uint32_t chunk_size_;
  const uint64_t chunk_count_;
  const size_t queue_capacity_;

  // Lock order: pack_mu_, then store_->mu_, then mu_; frame_mu_ and
  // queue_mu_ are never held with another lock.
  absl::Mutex mu_;
  State state_ ABSL_GUARDED_BY(mu_) = State::kOpen;
  absl::Status error_ ABSL_GUARDED_BY(mu_);
  // Chunks are added slightly out of order (several hashing threads): those
  // below frontier_ (every index there added) are in chunks_, the rest wait
  // in ahead_ (data) and ahead_zero_ ([begin, end) ranges, disjoint and not
  // touching) until the indexes before them arrive. Memory follows the data
  // chunks and the disorder, never the volume size.
  ChunkTable chunks_ ABSL_GUARDED_BY(mu_);
  uint64_t frontier_ ABSL_GUARDED_BY(mu_) = 0;
  absl::btree_map<uint64_t, Digest> ahead_ ABSL_GUARDED_BY(mu_);
  absl::btree_map<uint64_t, uint64_t> ahead_zero_ ABSL_GUARDED_BY(mu_);
  // The manifest being committed: chunks_ moved into it.
  std::shared_ptr<const Manifest> committing_ ABSL_GUARDED_BY(mu_);
  // Chunks this capture stores itself and has not sealed into a pack yet
  // (dedup within the capture; sealed ones are in the store's index).
  absl::flat_hash_set<Digest, DigestHash> pending_ ABSL_GUARDED_BY(mu_);
  uint64_t new_chunks_ ABSL_GUARDED_BY(mu_) = 0;  // distinct chunks stored
  // AddChunk calls between the dedup decision and the frame append.
  int active_adds_ ABSL_GUARDED_BY(mu_) = 0;

  absl::Mutex frame_mu_;
  Frame frame_ ABSL_GUARDED_BY(frame_mu_);
  uint64_t frame_bytes_ ABSL_GUARDED_BY(frame_mu_) = 0;

  absl::Mutex queue_mu_;
  std::deque<Frame> queue_ ABSL_GUARDED_BY(queue_mu_);
  bool queue_closed_ ABSL_GUARDED_BY(queue_mu_) = false;

  absl::Mutex pack_mu_;
  std::unique_ptr<PackWriter> pack_ ABSL_GUARDED_BY(pack_mu_);
  uint64_t new_stored_bytes_ ABSL_GUARDED_BY(pack_mu_) = 0;

  std::vector<std::thread> workers_;
};


}  // namespace internal

absl::Status CheckImageId(absl::string_view id) {
  if (internal::ValidImageId(id)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "image_id \"", absl::CHexEscape(id.substr(0, 200)),
      "\" must be 1-128 characters of A-Z, a-z, 0-9, '_' or '-'"));
}

absl::Status ImageReader::ReadChunkTo(uint64_t index, char* out) {
  ASSIGN_OR_RETURN(std::string data, ReadChunk(index));
  if (data.empty()) {
    std::memset(out, 0, manifest().ChunkLength(index));
  } else {
    std::memcpy(out, data.data(), data.size());
  }
  return absl::OkStatus();
}

absl::Status ImageReader::ReadChunkView(uint64_t index, absl::string_view* data,
                                        std::shared_ptr<const void>* keep) {
  ASSIGN_OR_RETURN(std::string bytes, ReadChunk(index));
  if (bytes.empty()) {
    *data = absl::string_view();
    keep->reset();
    return absl::OkStatus();
  }
  auto owned = std::make_shared<const std::string>(std::move(bytes));
  *data = *owned;
  *keep = std::move(owned);
  return absl::OkStatus();
}

using internal::FrameCache;
using internal::PackIndex;
using internal::PackState;

ImageStore::ImageStore(std::string dir, ImageStoreOptions options)
    : dir_(std::move(dir)),
      packs_dir_(absl::StrCat(dir_, "/packs")),
      images_dir_(absl::StrCat(dir_, "/images")),
      options_(options),
      fs_(options.filesystem != nullptr ? options.filesystem
                                        : PosixFilesystem()),
      open_packs_(std::make_unique<internal::OpenPacks>(options.max_open_packs)),
      shared_frames_(std::make_unique<internal::FrameCache>(options.reader_cache_frames)),
      // A decode takes the buffer of the frame the cache just dropped, so a
      // couple of spare buffers are enough.
      frame_buffers_(std::make_unique<BufferPool>(2)) {}

ImageStore::~ImageStore() = default;

absl::StatusOr<std::unique_ptr<ImageStore>> ImageStore::Open(
    const std::string& dir, ImageStoreOptions options) {
  if (options.chunk_size == 0 || options.frame_size < options.chunk_size ||
      options.pack_size == 0) {
    return absl::InvalidArgumentError(
        "chunk_size, frame_size >= chunk_size and pack_size must be set");
  }
  std::unique_ptr<ImageStore> store(new ImageStore(dir, options));
  RETURN_IF_ERROR(store->Load());
  return store;
}

std::string ImageStore::ManifestPath(absl::string_view image_id) const {
  return absl::StrCat(images_dir_, "/", image_id, internal::kManifestSuffix);
}

absl::Status ImageStore::Load() {
  RETURN_IF_ERROR(fs_->CreateDir(dir_));
  RETURN_IF_ERROR(fs_->CreateDir(packs_dir_));
  RETURN_IF_ERROR(fs_->CreateDir(images_dir_));
  for (const std::string* d : {&packs_dir_, &images_dir_}) {
    ASSIGN_OR_RETURN(std::vector<std::string> names, fs_->ListDir(*d));
    bool removed = false;
    for (const std::string& name : names) {
      if (absl::EndsWith(name, internal::kTempSuffix)) {
        // Left by a crash before its rename: never part of any image.
        RETURN_IF_ERROR(fs_->Remove(absl::StrCat(*d, "/", name)));
        removed = true;
      }
    }
    if (removed) RETURN_IF_ERROR(fs_->SyncDir(*d));
  }

  ASSIGN_OR_RETURN(std::vector<std::string> packs, fs_->ListDir(packs_dir_));
  std::sort(packs.begin(), packs.end());
  for (const std::string& name : packs) {
    if (!absl::EndsWith(name, internal::kPackSuffix)) continue;
    std::string path = absl::StrCat(packs_dir_, "/", name);
    absl::StatusOr<PackIndex> index;
    uint64_t size = 0;
    {
      // A damaged pack is skipped: the node still serves, its chunks read as
      // missing and verify names them. An I/O error (EACCES, EIO, EMFILE)
      // fails the open instead: it may pass, and storaged tries again (health
      // NOT_SERVING meanwhile) rather than serving without the pack for good.
      absl::StatusOr<std::unique_ptr<RandomAccessFile>> file =
          fs_->OpenForRead(path);
      absl::StatusOr<uint64_t> file_size =
          file.ok() ? (*file)->Size() : absl::StatusOr<uint64_t>(file.status());
      if (file_size.ok()) size = *file_size;
      index = file_size.ok() ? internal::ReadPackIndex(**file, size)
                             : absl::StatusOr<PackIndex>(file_size.status());
    }
    if (!index.ok()) {
      const absl::StatusCode code = index.status().code();
      if (code != absl::StatusCode::kDataLoss && code != absl::StatusCode::kOutOfRange) {
        return index.status();
      }
      common::LogWarning("image store %s: skipping pack %s: %s", dir_, name,
                         index.status().ToString());
      // Its name stays taken: a new pack must not overwrite it.
      absl::MutexLock lock(&mu_);
      pack_names_.insert(
          name.substr(0, name.size() - internal::kPackSuffix.size()));
      continue;
    }
    absl::MutexLock lock(&mu_);
    RegisterPackLocked(
        name.substr(0, name.size() - internal::kPackSuffix.size()),
        std::move(index).value(), size, /*at_load=*/true);
  }

  ASSIGN_OR_RETURN(std::vector<std::string> images, fs_->ListDir(images_dir_));
  for (const std::string& name : images) {
    if (!absl::EndsWith(name, internal::kManifestSuffix)) continue;
    std::string id =
        name.substr(0, name.size() - internal::kManifestSuffix.size());
    if (!internal::ValidImageId(id)) continue;
    Digest digest;
    absl::StatusOr<Manifest> m = ReadManifest(id, &digest);
    ImageInfo info;
    absl::StatusOr<uint64_t> bytes = fs_->FileSize(ManifestPath(id));
    if (m.ok() && bytes.ok()) {
      info = InfoOf(*m, digest, *bytes);
    } else {
      // Still listed, so it can be deleted; OpenImage reports DATA_LOSS.
      common::LogWarning("image store %s: manifest of %s: %s", dir_, id,
                         (m.ok() ? bytes.status() : m.status()).ToString());
    }
    absl::MutexLock lock(&mu_);
    images_[id] = info;
  }
  return absl::OkStatus();
}

uint32_t ImageStore::RegisterPackLocked(std::string name, PackIndex index,
                                        uint64_t file_size, bool at_load) {
  auto pack = std::make_shared<PackState>();
  pack->number = next_pack_number_++;
  pack->path = absl::StrCat(packs_dir_, "/", name, internal::kPackSuffix);
  pack->name = std::move(name);
  pack->file_size = file_size;
  pack->open_packs = open_packs_.get();
  for (const internal::FrameInfo& f : index.frames) {
    pack->plain_bytes += f.plain_len;
  }
  pack->frames = std::move(index.frames);
  for (const internal::PackChunk& c : index.chunks) {
    const Location loc{pack->number, c.frame, c.offset, c.length};
    auto [it, inserted] = index_.try_emplace(c.digest, loc);
    if (inserted) continue;
    if (damaged_.erase(c.digest) > 0) {
      it->second = loc;
    } else if (at_load) {
      other_copies_[c.digest].push_back(loc);
    }
  }
  pack_names_.insert(pack->name);
  packs_[pack->number] = std::move(pack);
  return next_pack_number_ - 1;
}

std::string ImageStore::NewPackName() {
  absl::BitGen gen;
  for (;;) {
    std::string name = absl::StrFormat("%016x", absl::Uniform<uint64_t>(gen));
    absl::MutexLock lock(&mu_);
    if (!pack_names_.contains(name)) return name;
  }
}

uint64_t ImageStore::StoredShareLocked(const Location& loc) const {
  auto it = packs_.find(loc.pack);
  if (it == packs_.end()) return 0;
  const internal::FrameInfo& f = it->second->frames[loc.frame];
  if (f.plain_len == 0) return 0;
  return uint64_t{f.stored_len} * loc.length / f.plain_len;
}

absl::StatusOr<Manifest> ImageStore::ReadManifest(const std::string& image_id,
                                                  Digest* digest) const {
  absl::StatusOr<std::string> data =
      ReadWholeFile(fs_, ManifestPath(image_id));
  if (absl::IsNotFound(data.status())) {
    return absl::NotFoundError(absl::StrCat("image ", image_id, " not found"));
  }
  if (!data.ok()) return data.status();
  absl::StatusOr<Manifest> m = DecodeManifest(*data, digest);
  if (!m.ok()) {
    return absl::DataLossError(
        absl::StrCat("image ", image_id, ": ", m.status().message()));
  }
  if (m->image_id != image_id) {
    return absl::DataLossError(absl::StrCat("image ", image_id,
                                            ": manifest names image ",
                                            m->image_id));
  }
  return m;
}

absl::StatusOr<std::unique_ptr<ImageWriter>> ImageStore::BeginImage(
    const std::string& image_id, uint64_t volume_size, uint32_t block_size,
    int compression_level) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  if (compression_level < 0 || compression_level > 19) {
    return absl::InvalidArgumentError(absl::StrCat(
        "compression level ", compression_level, " is outside 1..19 (0 = default)"));
  }
  if (block_size == 0 || (block_size & (block_size - 1)) != 0 ||
      options_.chunk_size % block_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("block_size ", block_size,
                     " must be a power of two dividing the chunk size ",
                     options_.chunk_size));
  }
  if (volume_size == 0 || volume_size % block_size != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("volume_size ", volume_size,
                     " must be a positive multiple of block_size ",
                     block_size));
  }
  auto writer = std::make_unique<internal::ImageWriterImpl>(
      this, image_id, volume_size, block_size,
      compression_level == 0 ? options_.compression_level : compression_level);
  {
    absl::MutexLock lock(&mu_);
    if (images_.contains(image_id) || reserved_ids_.contains(image_id)) {
      return absl::AlreadyExistsError(
          absl::StrCat("image ", image_id, " already exists"));
    }
    reserved_ids_.insert(image_id);
    writers_.insert(writer.get());
  }
  writer->Start();
  return std::unique_ptr<ImageWriter>(std::move(writer));
}

absl::StatusOr<std::unique_ptr<ImageReader>> ImageStore::OpenImage(
    const std::string& image_id) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  {
    absl::MutexLock lock(&mu_);
    if (!images_.contains(image_id)) {
      return absl::NotFoundError(
          absl::StrCat("image ", image_id, " not found"));
    }
  }
  Digest digest;
  ASSIGN_OR_RETURN(Manifest m, ReadManifest(image_id, &digest));
  return std::unique_ptr<ImageReader>(new internal::ImageReaderImpl(
      this, std::make_shared<const Manifest>(std::move(m)), digest));
}

void ImageStore::ResizeSharedFramesLocked() {
  const int readers = static_cast<int>(std::max<size_t>(1, readers_.size()));
  shared_frames_->SetCapacity(std::min(options_.shared_cache_max_frames,
                                       readers * options_.reader_cache_frames));
}

absl::StatusOr<std::string> ImageStore::ReadChunkByDigest(const Digest& digest,
                                                          FrameCache* cache,
                                                          uint32_t expected_length,
                                                          char* out) {
  std::shared_ptr<const internal::CachedFrame> frame;
  ASSIGN_OR_RETURN(absl::string_view chunk,
                   ChunkInFrame(digest, cache, expected_length, &frame));
  if (out != nullptr) {
    std::memcpy(out, chunk.data(), chunk.size());
    return std::string();
  }
  return std::string(chunk);
}

absl::StatusOr<absl::string_view> ImageStore::ChunkInFrame(
    const Digest& digest, FrameCache* cache, uint32_t expected_length,
    std::shared_ptr<const internal::CachedFrame>* frame_out) {
  for (int attempt = 0;; ++attempt) {
    Location loc;
    std::shared_ptr<PackState> pack;
    {
      absl::ReaderMutexLock lock(&mu_);
      auto it = index_.find(digest);
      if (it == index_.end()) {
        return absl::NotFoundError("chunk is not in the store");
      }
      loc = it->second;
      pack = packs_.at(loc.pack);
    }
    if (expected_length != 0 && loc.length != expected_length) {
      return absl::DataLossError(absl::StrCat("the stored chunk is ", loc.length,
                                              " bytes long, not ", expected_length));
    }
    std::shared_ptr<internal::CachedFrame> frame =
        cache != nullptr ? cache->GetOrClaim(loc.pack, loc.frame) : nullptr;
    if (frame == nullptr) {
      // Sized up front: a reused buffer of that size is not zero-filled again.
      std::shared_ptr<std::string> plain =
          frame_buffers_->Take(pack->frames[loc.frame].plain_len);
      absl::Status read = [&]() -> absl::Status {
        ASSIGN_OR_RETURN(std::shared_ptr<RandomAccessFile> file,
                         pack->File(fs_));
        return internal::ReadFrameInto(*file, pack->frames[loc.frame],
                                       internal::ThreadDecompressor(), pack->name,
                                       loc.frame, plain.get());
      }();
      if (!read.ok()) {
        if (cache != nullptr) cache->Abandon(loc.pack, loc.frame);
        // Garbage collection moved the chunk after we looked it up.
        if (pack->retired.load() && attempt == 0) continue;
        if ((absl::IsDataLoss(read) || absl::IsNotFound(read)) &&
            UseAnotherCopy(digest, loc.pack, read)) {
          continue;
        }
        if (absl::IsNotFound(read)) {
          return absl::NotFoundError(absl::StrCat(
              "pack ", pack->name, " is missing: ", read.message()));
        }
        return read;
      }
      frame = std::make_shared<internal::CachedFrame>(std::move(plain));
      if (cache != nullptr) cache->Put(loc.pack, loc.frame, frame);
    }
    absl::string_view chunk =
        absl::string_view(frame->plain()).substr(loc.offset, loc.length);
    if (!frame->Verified(loc.offset, digest)) {
      if (Sha256(chunk) != digest) {
        absl::Status mismatch = absl::DataLossError(absl::StrCat(
            "digest mismatch in frame ", loc.frame, " of pack ", pack->name));
        if (UseAnotherCopy(digest, loc.pack, mismatch)) continue;
        return mismatch;
      }
      frame->MarkVerified(loc.offset, digest);
    }
    *frame_out = std::move(frame);
    return chunk;
  }
}

absl::StatusOr<VerifyReport> ImageStore::VerifyImage(
    const std::string& image_id, const std::atomic<bool>* cancelled) {
  ASSIGN_OR_RETURN(std::unique_ptr<ImageReader> reader, OpenImage(image_id));
  const Manifest& m = reader->manifest();
  // Its own cache: verification reads every frame from disk.
  FrameCache cache(2);
  // A chunk repeated within the image is checked once.
  absl::flat_hash_map<Digest, absl::StatusCode, DigestHash> checked;
  VerifyReport report;
  absl::Status failed;
  m.chunks.ForEachData([&](uint64_t i, const Digest& d) {
    if (!failed.ok()) return;
    if (cancelled != nullptr && cancelled->load(std::memory_order_relaxed)) {
      failed = absl::CancelledError(absl::StrCat("verify of image ", image_id, " cancelled"));
      return;
    }
    ++report.chunks_checked;
    absl::StatusCode code;
    auto it = checked.find(d);
    if (it != checked.end()) {
      code = it->second;
    } else {
      absl::StatusOr<std::string> data = ReadChunkByDigest(d, &cache, m.ChunkLength(i));
      code = data.status().code();
      if (!data.ok() && !absl::IsNotFound(data.status()) &&
          !absl::IsDataLoss(data.status())) {
        failed = data.status();  // An I/O error says nothing about the data.
        return;
      }
      if (!data.ok() && report.errors.size() < internal::kMaxReportedErrors) {
        report.errors.push_back(absl::StrCat("chunk ", i, " (sha256 ",
                                             d.ToHex(),
                                             "): ", data.status().message()));
      }
      checked[d] = code;
    }
    if (code == absl::StatusCode::kNotFound) report.missing_chunks.push_back(i);
    if (code == absl::StatusCode::kDataLoss) report.corrupt_chunks.push_back(i);
  });
  RETURN_IF_ERROR(failed);
  return report;
}

absl::Status ImageStore::DeleteImage(const std::string& image_id) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  {
    absl::MutexLock lock(&mu_);
    // A capture still running (say one being cancelled) would commit the
    // image after a NOT_FOUND here; the caller retries FAILED_PRECONDITION.
    // Imports are not counted: ImageReceiver::Delete orders itself with them.
    for (const internal::ImageWriterImpl* w : writers_) {
      if (w->image_id() == image_id) {
        return absl::FailedPreconditionError(absl::StrCat(
            "a capture of image ", image_id, " is running; retry once it ends"));
      }
    }
    if (!images_.contains(image_id)) {
      return absl::NotFoundError(
          absl::StrCat("image ", image_id, " not found"));
    }
  }
  // The file goes first: until it is gone, collections still count it live.
  absl::Status removed = fs_->Remove(ManifestPath(image_id));
  if (!removed.ok() && !absl::IsNotFound(removed)) return removed;
  RETURN_IF_ERROR(fs_->SyncDir(images_dir_));
  absl::MutexLock lock(&mu_);
  images_.erase(image_id);
  return absl::OkStatus();
}

void ImageStore::MarkCapturesLiveLocked(absl::flat_hash_set<Digest, DigestHash>* live) {
  for (internal::ImageWriterImpl* w : writers_) w->MarkLive(live);
}

std::vector<std::string> ImageStore::ListImages() const {
  std::vector<std::string> ids;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, info] : images_) ids.push_back(id);
  }
  std::sort(ids.begin(), ids.end());
  return ids;
}

ImageStore::ImageInfo ImageStore::InfoOf(const Manifest& m, const Digest& digest,
                                         uint64_t manifest_bytes) {
  ImageInfo info;
  info.readable = true;
  info.manifest_bytes = manifest_bytes;
  ImageSummary& s = info.summary;
  s.image_id = m.image_id;
  s.volume_size = m.volume_size;
  s.block_size = m.block_size;
  s.chunk_size = m.chunk_size;
  s.chunk_count = m.ChunkCount();
  s.zero_chunks = m.chunks.zero_count();
  s.logical_bytes = m.logical_bytes;
  s.stored_bytes = m.referenced_stored_bytes;
  s.new_stored_bytes = m.new_stored_bytes;
  s.create_time = m.create_time;
  s.manifest_digest = digest;
  return info;
}

absl::StatusOr<ImageSummary> ImageStore::Summary(const std::string& image_id) const {
  RETURN_IF_ERROR(CheckImageId(image_id));
  ImageInfo info;
  {
    absl::MutexLock lock(&mu_);
    auto it = images_.find(image_id);
    if (it == images_.end()) {
      return absl::NotFoundError(absl::StrCat("image ", image_id, " not found"));
    }
    info = it->second;
  }
  absl::StatusOr<uint64_t> bytes = fs_->FileSize(ManifestPath(image_id));
  if (info.readable && bytes.ok() && *bytes == info.manifest_bytes) return info.summary;
  // Failed at load, or changed since: the whole read says why (or, if it was
  // put right since, gives the answer).
  Digest digest;
  ASSIGN_OR_RETURN(Manifest m, ReadManifest(image_id, &digest));
  return InfoOf(m, digest, /*manifest_bytes=*/0).summary;
}

absl::StatusOr<StoreStatus> ImageStore::Status() const {
  StoreStatus status;
  {
    absl::MutexLock lock(&mu_);
    status.image_count = images_.size();
    for (const auto& [id, info] : images_) {
      status.logical_bytes += info.summary.logical_bytes;
    }
    for (const auto& [number, pack] : packs_) {
      status.stored_bytes += pack->file_size;
    }
    status.pack_count = packs_.size();
    status.chunk_count = index_.size();
  }
  status.dedup_ratio =
      status.stored_bytes == 0
          ? 0
          : static_cast<double>(status.logical_bytes) /
                static_cast<double>(status.stored_bytes);
  ASSIGN_OR_RETURN(FilesystemStats fs, fs_->Stats(dir_));
  status.capacity_bytes = fs.capacity_bytes;
  status.free_bytes = fs.free_bytes;
  return status;
}

}  // namespace storaged
