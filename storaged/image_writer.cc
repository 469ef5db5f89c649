#include "storaged/internal/image_writer.h"

#include <algorithm>
#include <iterator>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/status_macros.h"
#include "storaged/filesystem.h"
#include "storaged/internal/image_store_parts.h"

namespace storaged {
namespace internal {

ImageWriterImpl::ImageWriterImpl(ImageStore* store, std::string id,
                                 uint64_t volume_size, uint32_t block_size,
                                 int compression_level)
    : compression_level_(compression_level),
      store_(store),
      id_(std::move(id)),
      volume_size_(volume_size),
      block_size_(block_size),
      chunk_size_(store->options_.chunk_size),
      chunk_count_(ChunkCountFor(volume_size, chunk_size_)),
      queue_capacity_(2 * NumThreads()),
      chunks_(chunk_count_) {}

void ImageWriterImpl::Start() {
  for (size_t i = 0; i < NumThreads(); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

absl::Status ImageWriterImpl::AddChunk(uint64_t index,
                                       absl::string_view plain) {
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

absl::Status ImageWriterImpl::AddZeroChunks(uint64_t first_index,
                                            uint64_t count) {
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

absl::StatusOr<ManifestSummary> ImageWriterImpl::Commit() {
  absl::StatusOr<ManifestSummary> result = CommitInternal();
  if (!result.ok()) Abort();
  return result;
}

void ImageWriterImpl::Abort() {
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

void ImageWriterImpl::MarkLive(absl::flat_hash_set<Digest, DigestHash>* live) {
  absl::MutexLock lock(&mu_);
  chunks_.ForEachData([&](uint64_t, const Digest& d) { live->insert(d); });
  for (const auto& [index, d] : ahead_) live->insert(d);
  if (committing_ != nullptr) {
    committing_->chunks.ForEachData([&](uint64_t, const Digest& d) { live->insert(d); });
  }
}

size_t ImageWriterImpl::NumThreads() const {
  return static_cast<size_t>(
      std::max(1, store_->options_.compression_threads));
}

const Digest* ImageWriterImpl::AddedLocked(uint64_t index) {
  static const Digest kZero;
  if (index < frontier_) return &chunks_.At(index);
  auto it = ahead_.find(index);
  if (it != ahead_.end()) return &it->second;
  auto z = ahead_zero_.upper_bound(index);
  if (z != ahead_zero_.begin() && std::prev(z)->second > index) return &kZero;
  return nullptr;
}

void ImageWriterImpl::AddZeroRangeLocked(uint64_t begin, uint64_t end) {
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

void ImageWriterImpl::AdvanceLocked() {
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

absl::Status ImageWriterImpl::CheckOpenLocked() {
  RETURN_IF_ERROR(error_);
  if (state_ != State::kOpen) {
    return absl::FailedPreconditionError(
        absl::StrCat("capture of image ", id_, " is already committing"));
  }
  return absl::OkStatus();
}

absl::Status ImageWriterImpl::AppendToFrame(uint64_t index,
                                            const Digest& digest,
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

absl::Status ImageWriterImpl::Enqueue(Frame frame) {
  absl::MutexLock lock(&queue_mu_);
  auto has_room = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(queue_mu_) {
    return queue_closed_ || queue_.size() < queue_capacity_;
  };
  queue_mu_.Await(absl::Condition(&has_room));
  if (queue_closed_) return absl::AbortedError("capture aborted");
  queue_.push_back(std::move(frame));
  return absl::OkStatus();
}

void ImageWriterImpl::StopWorkers(bool discard) {
  {
    absl::MutexLock lock(&queue_mu_);
    queue_closed_ = true;
    if (discard) queue_.clear();
  }
  for (std::thread& t : workers_) {
    if (t.joinable()) t.join();
  }
}

void ImageWriterImpl::WorkerLoop() {
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

absl::Status ImageWriterImpl::WriteFrame(ZSTD_CCtx* cctx, Frame frame) {
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
  RETURN_IF_ERROR(store_->AddFrameToPack(compressed, &pack_));
  new_stored_bytes_ += compressed.stored.size();
  if (pack_->size() >= o.pack_size) return SealPackLocked();
  return absl::OkStatus();
}

absl::Status ImageWriterImpl::SealPackLocked() {
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

absl::StatusOr<ManifestSummary> ImageWriterImpl::CommitInternal() {
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

}  // namespace internal
}  // namespace storaged
