#include "storaged/image_store.h"

#include <zstd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <utility>

#include "absl/random/random.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "storaged/internal/frame_cache.h"
#include "storaged/internal/image_store_parts.h"
#include "storaged/internal/image_writer.h"
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

absl::Status ImageStore::AddFrameToPack(
    const internal::CompressedFrame& frame,
    std::unique_ptr<internal::PackWriter>* pack) {
  if (*pack == nullptr) {
    ASSIGN_OR_RETURN(*pack, internal::PackWriter::Create(fs_, packs_dir_,
                                                         NewPackName()));
  }
  if (absl::Status s = (*pack)->AddFrame(frame); !s.ok()) {
    (*pack)->Abandon();
    pack->reset();
    return s;
  }
  return absl::OkStatus();
}

uint64_t ImageStore::StoredShareLocked(const Location& loc) const {
  auto it = packs_.find(loc.pack);
  if (it == packs_.end()) return 0;
  const internal::FrameInfo& f = it->second->frames[loc.frame];
  if (f.plain_len == 0) return 0;
  return uint64_t{f.stored_len} * loc.length / f.plain_len;
}

absl::StatusOr<Manifest> ImageStore::ReadManifestFile(
    const std::string& image_id, Digest* digest, std::string* encoded) const {
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
  if (encoded != nullptr) *encoded = *std::move(data);
  return m;
}

absl::StatusOr<Manifest> ImageStore::ReadManifest(const std::string& image_id,
                                                  Digest* digest) const {
  absl::StatusOr<Manifest> m =
      ReadManifestFile(image_id, digest, /*encoded=*/nullptr);
  if (m.ok() && m->image_id != image_id) {
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
