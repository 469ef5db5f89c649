#include "storaged/internal/pack.h"

#include <zstd.h>

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "storaged/internal/coding.h"

namespace storaged {
namespace internal {
namespace {

constexpr absl::string_view kHeaderMagic = "STORPAK1";
constexpr absl::string_view kFooterMagic = "STORPKND";
constexpr uint32_t kVersion = 1;
constexpr size_t kFooterSize = 8 + 8 + 24 + 8;
constexpr size_t kFrameEntrySize = 8 + 4 + 4 + 1 + 16;
constexpr size_t kChunkEntrySize = 32 + 4 + 4 + 4;

std::array<uint8_t, 16> FrameChecksum(absl::string_view stored) {
  Digest d = Sha256(stored);
  std::array<uint8_t, 16> out;
  std::memcpy(out.data(), d.bytes.data(), out.size());
  return out;
}

}  // namespace

CompressedFrame CompressFrame(ZSTD_CCtx* cctx, int level, double min_saving,
                              absl::string_view plain,
                              std::vector<FrameChunk> chunks) {
  CompressedFrame frame;
  frame.plain_len = static_cast<uint32_t>(plain.size());
  frame.chunks = std::move(chunks);
  std::string out(ZSTD_compressBound(plain.size()), '\0');
  ZSTD_CCtx_reset(cctx, ZSTD_reset_session_and_parameters);
  ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
  if (level <= 3) {
    // The fast levels look back only 0.5-2 MiB; a window spanning the whole
    // frame finds the repeats a guest disk has (measured on the bench disk,
    // level 2: 2% fewer bytes at the same speed). One-shot decoding needs no
    // window buffer, so this costs nothing on restore.
    int window_log = 10;
    while (window_log < 23 && (size_t{1} << window_log) < plain.size()) ++window_log;
    if (window_log > 21) ZSTD_CCtx_setParameter(cctx, ZSTD_c_windowLog, window_log);
  }
  size_t n = ZSTD_compress2(cctx, out.data(), out.size(), plain.data(),
                            plain.size());
  if (!ZSTD_isError(n) &&
      static_cast<double>(n) <
          static_cast<double>(plain.size()) * (1.0 - min_saving)) {
    out.resize(n);
    frame.stored = std::move(out);
    frame.codec = Codec::kZstd;
  } else {
    frame.stored = std::string(plain);
    frame.codec = Codec::kRaw;
  }
  return frame;
}

absl::StatusOr<std::string> ReadFrame(const RandomAccessFile& file,
                                      const FrameInfo& frame, ZSTD_DCtx* dctx,
                                      absl::string_view pack_name,
                                      uint32_t frame_number) {
  std::string plain;
  RETURN_IF_ERROR(ReadFrameInto(file, frame, dctx, pack_name, frame_number, &plain));
  return plain;
}

absl::Status ReadFrameInto(const RandomAccessFile& file, const FrameInfo& frame,
                           ZSTD_DCtx* dctx, absl::string_view pack_name,
                           uint32_t frame_number, std::string* plain) {
  auto where = [&] {
    return absl::StrCat("frame ", frame_number, " of pack ", pack_name);
  };
  std::string stored(frame.stored_len, '\0');
  absl::Status read = file.ReadAt(frame.offset, stored.size(), stored.data());
  if (absl::IsOutOfRange(read)) {
    return absl::DataLossError(absl::StrCat(where(), " is truncated"));
  }
  RETURN_IF_ERROR(read);
  if (FrameChecksum(stored) != frame.checksum) {
    return absl::DataLossError(absl::StrCat(where(), " fails its checksum"));
  }
  if (frame.codec == Codec::kRaw) {
    if (stored.size() != frame.plain_len) {
      return absl::DataLossError(absl::StrCat(where(), " has a bad length"));
    }
    *plain = std::move(stored);
    return absl::OkStatus();
  }
  plain->resize(frame.plain_len);
  size_t n = ZSTD_decompressDCtx(dctx, plain->data(), plain->size(),
                                 stored.data(), stored.size());
  if (ZSTD_isError(n) || n != plain->size()) {
    return absl::DataLossError(absl::StrCat(
        where(), " does not decompress: ",
        ZSTD_isError(n) ? ZSTD_getErrorName(n) : "wrong length"));
  }
  return absl::OkStatus();
}

absl::StatusOr<PackIndex> ReadPackIndex(const RandomAccessFile& file,
                                        uint64_t file_size) {
  if (file_size < kPackHeaderSize + kFooterSize) {
    return absl::DataLossError("pack is truncated");
  }
  char header[kPackHeaderSize];
  RETURN_IF_ERROR(file.ReadAt(0, sizeof(header), header));
  if (absl::string_view(header, kHeaderMagic.size()) != kHeaderMagic) {
    return absl::DataLossError("pack has a bad header");
  }
  char footer[kFooterSize];
  RETURN_IF_ERROR(file.ReadAt(file_size - kFooterSize, kFooterSize, footer));
  Decoder f(absl::string_view(footer, kFooterSize));
  uint64_t index_offset = f.Fixed64();
  uint64_t index_length = f.Fixed64();
  absl::string_view index_sum = f.Bytes(24);
  if (f.Bytes(8) != kFooterMagic || index_offset < kPackHeaderSize ||
      index_length > file_size ||
      index_offset + index_length != file_size - kFooterSize) {
    return absl::DataLossError("pack has a bad footer");
  }
  std::string raw(index_length, '\0');
  RETURN_IF_ERROR(file.ReadAt(index_offset, raw.size(), raw.data()));
  if (std::memcmp(Sha256(raw).bytes.data(), index_sum.data(), 24) != 0) {
    return absl::DataLossError("pack index fails its checksum");
  }
  Decoder in(raw);
  PackIndex index;
  uint32_t frames = in.Fixed32();
  if (uint64_t{frames} * kFrameEntrySize > in.remaining()) {
    return absl::DataLossError("pack index is truncated");
  }
  index.frames.resize(frames);
  for (FrameInfo& fr : index.frames) {
    fr.offset = in.Fixed64();
    fr.stored_len = in.Fixed32();
    fr.plain_len = in.Fixed32();
    uint8_t codec = in.Fixed8();
    absl::string_view sum = in.Bytes(16);
    if (!in.ok() || codec > 1 || fr.offset + fr.stored_len > index_offset) {
      return absl::DataLossError("pack index has a bad frame entry");
    }
    fr.codec = static_cast<Codec>(codec);
    std::memcpy(fr.checksum.data(), sum.data(), 16);
  }
  uint32_t chunks = in.Fixed32();
  if (!in.ok() || uint64_t{chunks} * kChunkEntrySize != in.remaining()) {
    return absl::DataLossError("pack index is truncated");
  }
  index.chunks.resize(chunks);
  for (PackChunk& c : index.chunks) {
    c.digest = Digest::FromBytes(in.Bytes(32).data());
    c.frame = in.Fixed32();
    c.offset = in.Fixed32();
    c.length = in.Fixed32();
    if (c.frame >= frames ||
        uint64_t{c.offset} + c.length > index.frames[c.frame].plain_len) {
      return absl::DataLossError("pack index has a bad chunk entry");
    }
  }
  return index;
}

absl::StatusOr<std::unique_ptr<PackWriter>> PackWriter::Create(
    Filesystem* fs, std::string dir, std::string name) {
  std::string tmp = absl::StrCat(dir, "/", name, kPackSuffix, kTempSuffix);
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file,
                   fs->NewWritableFile(tmp));
  std::unique_ptr<PackWriter> writer(
      new PackWriter(fs, std::move(dir), std::move(name), std::move(file)));
  std::string header(kHeaderMagic);
  PutFixed32(&header, kVersion);
  PutFixed32(&header, 0);
  absl::Status s = writer->file_->Append(header);
  if (!s.ok()) {
    writer->Abandon();
    return s;
  }
  writer->size_ = header.size();
  return writer;
}

PackWriter::PackWriter(Filesystem* fs, std::string dir, std::string name,
                       std::unique_ptr<WritableFile> file)
    : fs_(fs),
      dir_(std::move(dir)),
      name_(std::move(name)),
      file_(std::move(file)) {}

PackWriter::~PackWriter() { Abandon(); }

std::string PackWriter::TempPath() const {
  return absl::StrCat(dir_, "/", name_, kPackSuffix, kTempSuffix);
}

absl::Status PackWriter::AddFrame(const CompressedFrame& frame) {
  if (done_) return absl::FailedPreconditionError("pack already closed");
  FrameInfo info;
  info.offset = size_;
  info.stored_len = static_cast<uint32_t>(frame.stored.size());
  info.plain_len = frame.plain_len;
  info.codec = frame.codec;
  info.checksum = FrameChecksum(frame.stored);
  RETURN_IF_ERROR(file_->Append(frame.stored));
  size_ += frame.stored.size();
  uint32_t number = static_cast<uint32_t>(index_.frames.size());
  index_.frames.push_back(info);
  for (const FrameChunk& c : frame.chunks) {
    index_.chunks.push_back(PackChunk{c.digest, number, c.offset, c.length});
  }
  return absl::OkStatus();
}

absl::StatusOr<PackIndex> PackWriter::Seal(uint64_t* file_size) {
  if (done_) return absl::FailedPreconditionError("pack already closed");
  std::string index;
  index.reserve(8 + index_.frames.size() * kFrameEntrySize +
                index_.chunks.size() * kChunkEntrySize);
  PutFixed32(&index, static_cast<uint32_t>(index_.frames.size()));
  for (const FrameInfo& f : index_.frames) {
    PutFixed64(&index, f.offset);
    PutFixed32(&index, f.stored_len);
    PutFixed32(&index, f.plain_len);
    PutFixed8(&index, static_cast<uint8_t>(f.codec));
    index.append(reinterpret_cast<const char*>(f.checksum.data()), 16);
  }
  PutFixed32(&index, static_cast<uint32_t>(index_.chunks.size()));
  for (const PackChunk& c : index_.chunks) {
    index.append(reinterpret_cast<const char*>(c.digest.bytes.data()), 32);
    PutFixed32(&index, c.frame);
    PutFixed32(&index, c.offset);
    PutFixed32(&index, c.length);
  }
  std::string footer;
  PutFixed64(&footer, size_);
  PutFixed64(&footer, index.size());
  footer.append(reinterpret_cast<const char*>(Sha256(index).bytes.data()), 24);
  footer.append(kFooterMagic.data(), kFooterMagic.size());
  index.append(footer);

  absl::Status s = [&]() -> absl::Status {
    RETURN_IF_ERROR(file_->Append(index));
    RETURN_IF_ERROR(file_->Sync());
    RETURN_IF_ERROR(file_->Close());
    return fs_->Rename(TempPath(),
                       absl::StrCat(dir_, "/", name_, kPackSuffix));
  }();
  if (!s.ok()) {
    Abandon();
    return s;
  }
  done_ = true;
  size_ += index.size();
  // The pack is complete on disk; if the directory fsync fails, the rename
  // may be lost in a crash, which only loses unreferenced chunks: the
  // manifest that would name them is never written after this error.
  RETURN_IF_ERROR(fs_->SyncDir(dir_));
  *file_size = size_;
  return std::move(index_);
}

void PackWriter::Abandon() {
  if (done_) return;
  done_ = true;
  file_->Close().IgnoreError();
  fs_->Remove(TempPath()).IgnoreError();
}

}  // namespace internal
}  // namespace storaged
