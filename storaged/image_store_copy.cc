// ImageStore, sending and receiving images between nodes: which chunks a
// node lacks, exporting stored frames, importing received ones into a new
// pack, and committing a received manifest.
#include <zstd.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/status_macros.h"
#include "storaged/image_store.h"
#include "storaged/internal/image_store_parts.h"
#include "storaged/internal/pack.h"

namespace storaged {

namespace internal {
namespace {

// A pin is a reader over a manifest made of the pinned digests: garbage
// collection already marks every open reader's chunks live.
class ChunkPinImpl final : public ChunkPin {
 public:
  explicit ChunkPinImpl(std::unique_ptr<ImageReaderImpl> reader)
      : reader_(std::move(reader)) {}

 private:
  std::unique_ptr<ImageReaderImpl> reader_;
};

bool FrameChecksumMatches(absl::string_view stored, const FrameInfo& frame) {
  Digest d = Sha256(stored);
  return std::memcmp(d.bytes.data(), frame.checksum.data(),
                     frame.checksum.size()) == 0;
}

// Received frames are at most this big decoded: a store's frame_size (4 MiB)
// with room for senders configured larger.
constexpr uint32_t kMaxTransferFramePlain = 16 << 20;

// Chunks of an importable image are at least 512 bytes (the smallest block
// size ImportManifest accepts), so a frame holds at most one per 512 bytes.
size_t MaxTransferFrameChunks(uint32_t plain_size) {
  return std::max<size_t>(1, (plain_size + 511) / 512);
}

}  // namespace

class ChunkImporterImpl final : public ChunkImporter {
 public:
  explicit ChunkImporterImpl(ImageStore* store) : store_(store) {}
  ~ChunkImporterImpl() override {
    if (pack_ != nullptr) pack_->Abandon();
  }

  absl::StatusOr<bool> AddFrame(const TransferFrame& frame) override {
    RETURN_IF_ERROR(Verify(frame));
    return Store(frame);
  }

  absl::Status CheckShape(const TransferFrame& frame) const override {
    if (frame.plain_size == 0 || frame.plain_size > kMaxTransferFramePlain ||
        frame.chunks.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a frame must hold 1.. chunks and 1..", kMaxTransferFramePlain,
          " plain bytes (got ", frame.chunks.size(), " chunks, ",
          frame.plain_size, " bytes)"));
    }
    // Bounded work per frame: chunks tile at most the frame's bytes once, so
    // a sender cannot make us hash the same bytes over and over (a 64 MiB
    // message of entries naming one 16 MiB of zeroes was hours of SHA-256).
    if (frame.chunks.size() > MaxTransferFrameChunks(frame.plain_size)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a frame of ", frame.plain_size, " bytes holds at most ",
          MaxTransferFrameChunks(frame.plain_size), " chunks (got ",
          frame.chunks.size(), ")"));
    }
    const uint32_t chunk_size = store_->options().chunk_size;
    uint64_t previous_end = 0;
    for (const TransferFrame::Chunk& c : frame.chunks) {
      if (c.length == 0 || c.length > chunk_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "chunk sha256 ", c.digest.ToHex(), " is ", c.length,
            " bytes long; chunks are 1..", chunk_size, " bytes"));
      }
      if (uint64_t{c.offset} + c.length > frame.plain_size) {
        return absl::InvalidArgumentError(absl::StrCat(
            "chunk sha256 ", c.digest.ToHex(), " at ", c.offset, "+",
            c.length, " lies outside the frame's ", frame.plain_size,
            " bytes"));
      }
      if (c.offset < previous_end) {
        return absl::InvalidArgumentError(absl::StrCat(
            "chunk sha256 ", c.digest.ToHex(), " at ", c.offset, "+", c.length,
            " overlaps the chunk before it (ending at ", previous_end,
            "); a frame's chunks must be sorted by offset and disjoint"));
      }
      previous_end = uint64_t{c.offset} + c.length;
    }
    // A zstd payload is exactly one frame declaring its size: the bytes are
    // stored as sent, and padding (skippable frames, a second frame) would
    // be read and forwarded with the chunk forever.
    if (frame.zstd &&
        (frame.data.size() > ZSTD_compressBound(frame.plain_size) ||
         ZSTD_findFrameCompressedSize(frame.data.data(), frame.data.size()) !=
             frame.data.size() ||
         ZSTD_getFrameContentSize(frame.data.data(), frame.data.size()) !=
             frame.plain_size)) {
      return absl::DataLossError(absl::StrCat(
          "a received zstd payload of ", frame.data.size(),
          " bytes is not one zstd frame declaring ", frame.plain_size,
          " plain bytes with nothing around it"));
    }
    if (!frame.zstd && frame.data.size() != frame.plain_size) {
      return absl::DataLossError(absl::StrCat(
          "a received raw frame has ", frame.data.size(), " bytes, not ",
          frame.plain_size));
    }
    return absl::OkStatus();
  }

  absl::Status Verify(const TransferFrame& frame) const override {
    RETURN_IF_ERROR(CheckShape(frame));
    std::string decoded;
    absl::string_view plain;
    if (frame.zstd) {
      decoded.resize(frame.plain_size);
      size_t n = ZSTD_decompressDCtx(ThreadDecompressor(), decoded.data(),
                                     decoded.size(), frame.data.data(),
                                     frame.data.size());
      if (ZSTD_isError(n) || n != decoded.size()) {
        return absl::DataLossError(absl::StrCat(
            "a received zstd frame does not decode to ", frame.plain_size,
            " bytes: ", ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length"));
      }
      plain = decoded;
    } else {
      plain = frame.data;
    }
    // Every chunk is checked before anything is written: a corrupt or lying
    // sender stores nothing from this frame.
    for (const TransferFrame::Chunk& c : frame.chunks) {
      if (Sha256(plain.substr(c.offset, c.length)) != c.digest) {
        return absl::DataLossError(absl::StrCat(
            "received chunk sha256 ", c.digest.ToHex(),
            " does not match its content"));
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<bool> Store(const TransferFrame& frame) override {
    {
      absl::ReaderMutexLock lock(&store_->mu_);
      bool all_present = true;
      for (const TransferFrame::Chunk& c : frame.chunks) {
        if (!store_->HoldsUsableLocked(c.digest)) {
          all_present = false;
          break;
        }
      }
      if (all_present) return false;
    }
    CompressedFrame stored;
    stored.plain_len = frame.plain_size;
    stored.codec = frame.zstd ? Codec::kZstd : Codec::kRaw;
    stored.stored = frame.data;
    stored.chunks.reserve(frame.chunks.size());
    for (const TransferFrame::Chunk& c : frame.chunks) {
      stored.chunks.push_back(FrameChunk{c.digest, c.offset, c.length});
    }
    RETURN_IF_ERROR(store_->AddFrameToPack(stored, &pack_));
    bytes_stored_ += stored.stored.size();
    if (pack_->size() >= store_->options_.pack_size) RETURN_IF_ERROR(Seal());
    return true;
  }

  absl::Status Finish() override {
    if (pack_ == nullptr) return absl::OkStatus();
    return Seal();
  }

  uint64_t bytes_stored() const override { return bytes_stored_; }

 private:
  absl::Status Seal() {
    std::unique_ptr<PackWriter> pack = std::move(pack_);
    uint64_t file_size = 0;
    ASSIGN_OR_RETURN(PackIndex index, pack->Seal(&file_size));
    absl::MutexLock lock(&store_->mu_);
    store_->RegisterPackLocked(pack->name(), std::move(index), file_size);
    return absl::OkStatus();
  }

  ImageStore* const store_;
  std::unique_ptr<PackWriter> pack_;
  uint64_t bytes_stored_ = 0;
};

}  // namespace internal

using internal::PackIndex;
using internal::PackState;

absl::StatusOr<std::string> ImageStore::ReadEncodedManifest(
    const std::string& image_id, Digest* digest) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  {
    absl::MutexLock lock(&mu_);
    if (!images_.contains(image_id)) {
      return absl::NotFoundError(
          absl::StrCat("image ", image_id, " not found"));
    }
  }
  // The image id inside is checked by the receiver (ImportManifest).
  std::string encoded;
  RETURN_IF_ERROR(ReadManifestFile(image_id, digest, &encoded).status());
  return encoded;
}

std::vector<Digest> ImageStore::MissingChunks(
    const std::vector<Digest>& digests) const {
  std::vector<Digest> missing;
  absl::ReaderMutexLock lock(&mu_);
  for (const Digest& d : digests) {
    if (!d.IsZero() && !HoldsUsableLocked(d)) missing.push_back(d);
  }
  return missing;
}

std::unique_ptr<ChunkPin> ImageStore::PinChunks(std::vector<Digest> digests) {
  // A stand-in manifest naming them, which garbage collection marks as an
  // open reader's.
  auto manifest = std::make_shared<Manifest>();
  manifest->chunks = ChunkTable(digests.size());
  for (size_t i = 0; i < digests.size(); ++i) {
    if (!digests[i].IsZero()) manifest->chunks.Append(i, digests[i]);
  }
  std::vector<Digest>().swap(digests);
  return std::make_unique<internal::ChunkPinImpl>(
      std::make_unique<internal::ImageReaderImpl>(this, std::move(manifest),
                                                  Digest()));
}

absl::Status ImageStore::ExportChunks(
    const std::vector<Digest>& digests,
    const std::function<absl::Status(TransferFrame frame)>& emit,
    const std::atomic<bool>* cancelled) {
  struct Wanted {
    Digest digest;
    Location loc;
  };
  std::vector<Wanted> wanted;
  wanted.reserve(digests.size());
  absl::flat_hash_map<uint32_t, std::shared_ptr<PackState>> packs;
  {
    absl::ReaderMutexLock lock(&mu_);
    for (const Digest& d : digests) {
      auto it = index_.find(d);
      if (it == index_.end()) {
        return absl::DataLossError(absl::StrCat(
            "chunk sha256 ", d.ToHex(), " is not in the store"));
      }
      wanted.push_back(Wanted{d, it->second});
      packs.try_emplace(it->second.pack, packs_.at(it->second.pack));
    }
  }
  // Store order: each frame is read once, sequentially through each pack.
  std::sort(wanted.begin(), wanted.end(), [](const Wanted& a, const Wanted& b) {
    return std::make_tuple(a.loc.pack, a.loc.frame, a.loc.offset) <
           std::make_tuple(b.loc.pack, b.loc.frame, b.loc.offset);
  });

  internal::CCtxPtr cctx(ZSTD_createCCtx());
  std::string plain;  // Chunks gathered into a new frame.
  std::vector<TransferFrame::Chunk> gathered;
  auto flush = [&]() -> absl::Status {
    if (gathered.empty()) return absl::OkStatus();
    std::vector<internal::FrameChunk> chunks;
    chunks.reserve(gathered.size());
    for (const TransferFrame::Chunk& c : gathered) {
      chunks.push_back(internal::FrameChunk{c.digest, c.offset, c.length});
    }
    internal::CompressedFrame compressed = internal::CompressFrame(
        cctx.get(), options_.compression_level, options_.min_compression_saving,
        plain, std::move(chunks));
    TransferFrame frame;
    frame.zstd = compressed.codec == internal::Codec::kZstd;
    frame.plain_size = compressed.plain_len;
    frame.data = std::move(compressed.stored);
    frame.chunks = std::move(gathered);
    plain.clear();
    gathered.clear();
    return emit(std::move(frame));
  };
  // A chunk that moved (garbage collection repacked its pack) or whose frame
  // could not be forwarded as it is: read by digest and gather it.
  auto gather = [&](const Digest& d, absl::string_view data) -> absl::Status {
    gathered.push_back(TransferFrame::Chunk{
        d, static_cast<uint32_t>(plain.size()),
        static_cast<uint32_t>(data.size())});
    plain.append(data.data(), data.size());
    if (plain.size() >= options_.frame_size) return flush();
    return absl::OkStatus();
  };

  size_t i = 0;
  while (i < wanted.size()) {
    if (cancelled != nullptr && cancelled->load()) {
      return absl::CancelledError("send cancelled");
    }
    size_t end = i;
    uint64_t wanted_bytes = 0;
    while (end < wanted.size() && wanted[end].loc.pack == wanted[i].loc.pack &&
           wanted[end].loc.frame == wanted[i].loc.frame) {
      wanted_bytes += wanted[end].loc.length;
      ++end;
    }
    const std::shared_ptr<PackState>& pack = packs.at(wanted[i].loc.pack);
    const internal::FrameInfo& info = pack->frames[wanted[i].loc.frame];
    absl::Status done = absl::UnknownError("unread");
    absl::StatusOr<std::shared_ptr<RandomAccessFile>> file = pack->File(fs_);
    if (file.ok() && wanted_bytes == info.plain_len) {
      // The whole frame is wanted: forward it as stored.
      TransferFrame frame;
      frame.zstd = info.codec == internal::Codec::kZstd;
      frame.plain_size = info.plain_len;
      frame.data.resize(info.stored_len);
      done = (*file)->ReadAt(info.offset, info.stored_len, frame.data.data());
      if (done.ok() && !internal::FrameChecksumMatches(frame.data, info)) {
        done = absl::DataLossError(absl::StrCat(
            "frame ", wanted[i].loc.frame, " of pack ", pack->name,
            " fails its checksum"));
      }
      if (done.ok()) {
        frame.forwarded = true;
        for (size_t k = i; k < end; ++k) {
          frame.chunks.push_back(TransferFrame::Chunk{
              wanted[k].digest, wanted[k].loc.offset, wanted[k].loc.length});
        }
        RETURN_IF_ERROR(emit(std::move(frame)));
      }
    } else if (file.ok()) {
      absl::StatusOr<std::string> decoded = internal::ReadFrame(
          **file, info, internal::ThreadDecompressor(), pack->name,
          wanted[i].loc.frame);
      done = decoded.status();
      auto chunk_at = [&](size_t k) {
        return absl::string_view(*decoded).substr(wanted[k].loc.offset, wanted[k].loc.length);
      };
      for (size_t k = i; k < end && done.ok(); ++k) {
        if (Sha256(chunk_at(k)) != wanted[k].digest) {
          done = absl::DataLossError(absl::StrCat(
              "chunk sha256 ", wanted[k].digest.ToHex(), " in frame ",
              wanted[k].loc.frame, " of pack ", pack->name, " is corrupt"));
        }
      }
      for (size_t k = i; k < end && done.ok(); ++k) {
        RETURN_IF_ERROR(gather(wanted[k].digest, chunk_at(k)));
      }
    } else {
      done = file.status();
    }
    if (!done.ok()) {
      const bool damaged =
          absl::IsDataLoss(done) || absl::IsNotFound(done) || absl::IsOutOfRange(done);
      // An I/O error says nothing about the data.
      if (!pack->retired.load() && !damaged) return done;
      // Garbage collection moved these chunks meanwhile, or this copy is
      // damaged: read each by digest, which checks it and falls back to
      // another copy (or marks it damaged for the next capture to store).
      for (size_t k = i; k < end; ++k) {
        absl::StatusOr<std::string> data =
            ReadChunkByDigest(wanted[k].digest, nullptr);
        if (!data.ok()) {
          return absl::DataLossError(absl::StrCat(
              "chunk sha256 ", wanted[k].digest.ToHex(), ": ",
              data.status().message()));
        }
        RETURN_IF_ERROR(gather(wanted[k].digest, *data));
      }
    }
    i = end;
  }
  return flush();
}

absl::StatusOr<std::unique_ptr<ChunkImporter>> ImageStore::BeginImport() {
  return std::unique_ptr<ChunkImporter>(
      std::make_unique<internal::ChunkImporterImpl>(this));
}

absl::StatusOr<ManifestSummary> ImageStore::ImportManifest(
    const std::string& image_id, absl::string_view encoded,
    const Digest& expected) {
  RETURN_IF_ERROR(CheckImageId(image_id));
  Digest digest;
  absl::StatusOr<Manifest> decoded = DecodeManifest(encoded, &digest);
  if (!decoded.ok()) {
    return absl::DataLossError(absl::StrCat(
        "received manifest of image ", image_id,
        " does not decode: ", decoded.status().message()));
  }
  if (digest != expected) {
    return absl::DataLossError(absl::StrCat(
        "received manifest of image ", image_id, " has digest sha256:",
        digest.ToHex(), ", expected sha256:", expected.ToHex()));
  }
  auto m = std::make_shared<const Manifest>(*std::move(decoded));
  if (m->image_id != image_id) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest: names image ", m->image_id, ", not ", image_id));
  }
  // A peer's manifest is checked like a capture's would be: readers trust
  // that chunk i of an image is ChunkLength(i) bytes long.
  if (m->chunk_size != options_.chunk_size) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest: chunk size ", m->chunk_size, ", this store's is ", options_.chunk_size));
  }
  if (m->block_size < 512 || m->block_size > m->chunk_size ||
      (m->block_size & (m->block_size - 1)) != 0 || m->volume_size % m->block_size != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "manifest: block size ", m->block_size, " is not a power of two from 512 to the chunk ",
        "size dividing the volume size ", m->volume_size));
  }
  ManifestSummary summary;
  summary.image_id = image_id;
  summary.volume_size = m->volume_size;
  summary.chunk_count = m->ChunkCount();
  summary.logical_bytes = m->logical_bytes;
  summary.stored_bytes = m->referenced_stored_bytes;
  summary.new_stored_bytes = m->new_stored_bytes;
  summary.new_chunks = m->new_chunks;
  summary.manifest_digest = digest;
  {
    summary.data_chunks = m->chunks.data_count();
    summary.zero_chunks = m->chunks.zero_count();
    absl::flat_hash_set<Digest, DigestHash> unique;
    uint64_t logical = 0;
    m->chunks.ForEachData([&](uint64_t i, const Digest& d) {
      unique.insert(d);
      logical += m->ChunkLength(i);
    });
    if (logical != m->logical_bytes) {
      return absl::DataLossError(absl::StrCat("manifest: logical_bytes ", m->logical_bytes,
                                              ", but its data chunks hold ", logical));
    }
    summary.unique_chunks = unique.size();
  }
  bool committed = false;
  {
    absl::MutexLock lock(&mu_);
    committed = images_.contains(image_id);
    if (!committed && reserved_ids_.contains(image_id)) {
      return absl::AbortedError(absl::StrCat(
          "a capture or import of image ", image_id, " is running"));
    }
    if (!committed) reserved_ids_.insert(image_id);
  }
  if (committed) {
    Digest existing;
    RETURN_IF_ERROR(ReadManifest(image_id, &existing).status());
    if (existing != digest) {
      return absl::AlreadyExistsError(absl::StrCat(
          "image ", image_id, " exists with digest sha256:", existing.ToHex(),
          ", not sha256:", digest.ToHex()));
    }
    return summary;
  }
  absl::Cleanup release = [&] {
    absl::MutexLock lock(&mu_);
    reserved_ids_.erase(image_id);
  };
  // Pinned before the presence check, so a collection either ran before it
  // (and the check sees what it removed) or keeps every chunk.
  internal::ImageReaderImpl pin(this, m, digest);
  {
    absl::ReaderMutexLock lock(&mu_);
    uint64_t missing = 0;
    const Digest* first = nullptr;
    std::string wrong_length;
    m->chunks.ForEachData([&](uint64_t i, const Digest& d) {
      auto it = index_.find(d);
      if (it == index_.end()) {
        if (first == nullptr) first = &d;
        ++missing;
      } else if (it->second.length != m->ChunkLength(i) && wrong_length.empty()) {
        wrong_length = absl::StrCat("manifest: chunk ", i, " is sha256:", d.ToHex(), ", ",
                                    it->second.length, " bytes long, not ", m->ChunkLength(i));
      }
    });
    if (!wrong_length.empty()) return absl::DataLossError(wrong_length);
    if (missing > 0) {
      return absl::FailedPreconditionError(absl::StrCat(
          "image ", image_id, ": ", missing, " of ", summary.data_chunks,
          " chunks are not in the store (the first is sha256:",
          first->ToHex(), "); send them first"));
    }
  }
  RETURN_IF_ERROR(WriteFileDurably(fs_, images_dir_, ManifestPath(image_id), encoded));
  std::move(release).Cancel();
  absl::MutexLock lock(&mu_);
  images_[image_id] = InfoOf(*m, digest, encoded.size());
  reserved_ids_.erase(image_id);
  // As for a capture: a collection that listed images before this one still
  // marks its chunks.
  if (gc_marking_) committed_while_marking_.push_back(m);
  return summary;
}

}  // namespace storaged
