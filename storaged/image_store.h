// The image store of one storaged: captured volumes cut into 16 KiB chunks
// named by SHA-256 (identical chunks stored once across all images, all-zero
// chunks not stored), new chunks packed in volume order into ~4 MiB zstd
// frames inside pack files, and one manifest per image listing its chunks.
//
// Small chunks deduplicate, large frames compress: the dedup unit (chunk) and
// the compression unit (frame) are decoupled, and an in-memory index maps
// each chunk digest to (pack, frame, offset, length).
//
// Layout under the store directory:
//   packs/<16 hex>.pack        frames + index + footer (see internal/pack.h)
//   images/<image_id>.manifest one per image (see manifest.h)
// Every file is written under a ".tmp" name, fsynced, renamed and its
// directory fsynced; a capture's packs are sealed before its manifest is
// written, so a crash leaves either no image or a complete one. Leftover
// temporary files are removed by Open.
#ifndef STORAGED_IMAGE_STORE_H_
#define STORAGED_IMAGE_STORE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storaged/buffer_pool.h"
#include "storaged/digest.h"
#include "storaged/filesystem.h"
#include "storaged/manifest.h"

namespace storaged {

namespace internal {
class ImageWriterImpl;
class ImageReaderImpl;
class ChunkImporterImpl;
struct PackState;
struct FrameCache;
class CachedFrame;
struct PackIndex;
struct OpenPacks;
struct CompressedFrame;
class PackWriter;
}  // namespace internal

struct ImageStoreOptions {
  // Where files go; nullptr means PosixFilesystem(). Not owned.
  Filesystem* filesystem = nullptr;
  // Dedup unit for new captures. Measured on a Debian guest disk with ~7% of
  // its files rewritten: 16 KiB stores 9-10% new data for the second capture,
  // 64 KiB 14-16%, for the same first-capture size (compression works on
  // frames, not chunks). tools/bench/capture_restore_bench.sh has the table.
  uint32_t chunk_size = 16 << 10;
  // Plain bytes per compressed frame.
  uint32_t frame_size = 4 << 20;
  // A pack is sealed once it reaches this many bytes.
  uint64_t pack_size = 256 << 20;
  // zstd level 2: the first capture stores 0.81-0.86x of qemu-img's qcow2
  // (level 1: 0.89-0.93x, too close to the 0.9x goal) at nearly twice the
  // speed of level 3.
  int compression_level = 2;
  // Frames compressed in parallel per capture.
  int compression_threads = 2;
  // A frame is stored raw if zstd saves less than this fraction.
  double min_compression_saving = 0.03;
  // Garbage collection rewrites packs whose live share of plain bytes is
  // below this fraction.
  double repack_below_live_fraction = 0.5;
  // Decompressed frames kept for all readers together, this many per open
  // reader up to shared_cache_max_frames: a sequential restore hits them,
  // and restores of one image running at once (a deploy of several servers)
  // decompress and hash each frame once between them. Four restores of the
  // 2 GiB guest disk at once: 1.8 -> 0.8 CPU-s in storaged with 8 frames,
  // sharing failed now and then with 4.
  int reader_cache_frames = 4;
  int shared_cache_max_frames = 8;
  // Pack files kept open for reading; the least recently used is closed
  // beyond this (a node may hold thousands of packs).
  int max_open_packs = 256;
};

// A committed image as GetImage describes it. Kept in memory from the
// manifest as it was read at load or written at commit, so answering costs
// no manifest read (a dense 2 TiB image has a manifest of gigabytes).
struct ImageSummary {
  std::string image_id;
  uint64_t volume_size = 0;
  uint32_t block_size = 0;
  uint32_t chunk_size = 0;
  uint64_t chunk_count = 0;
  uint64_t zero_chunks = 0;
  uint64_t logical_bytes = 0;
  uint64_t stored_bytes = 0;  // Manifest::referenced_stored_bytes
  uint64_t new_stored_bytes = 0;
  absl::Time create_time;
  Digest manifest_digest;
};

// What a committed capture produced.
struct ManifestSummary {
  std::string image_id;
  uint64_t volume_size = 0;
  uint64_t chunk_count = 0;
  uint64_t data_chunks = 0;    // Non-zero chunk indexes.
  uint64_t zero_chunks = 0;    // All-zero chunk indexes (not stored).
  uint64_t unique_chunks = 0;  // Distinct non-zero chunks.
  uint64_t new_chunks = 0;     // Distinct chunks the store did not have.
  uint64_t logical_bytes = 0;  // data_chunks x their length.
  // This image's share of stored bytes (see Manifest::referenced_stored_bytes).
  uint64_t stored_bytes = 0;
  // Compressed bytes this capture added to the store.
  uint64_t new_stored_bytes = 0;
  Digest manifest_digest;
};

// Receives the chunks of one volume being captured. Thread-safe: AddChunk
// may be called from several threads, in any order (memory grows with the
// chunks added ahead of the lowest missing index, so callers keep that window
// small). Holds 32 bytes per data chunk; zero chunks cost nothing. Destroying
// a writer that was not committed aborts it. Must not outlive its ImageStore.
class ImageWriter {
 public:
  virtual ~ImageWriter() = default;

  virtual const std::string& image_id() const = 0;
  virtual uint64_t chunk_count() const = 0;
  // Plain length chunk `index` must have: chunk_size, or less for the last.
  virtual uint32_t ChunkLength(uint64_t index) const = 0;

  // Adds chunk `index`. INVALID_ARGUMENT if the index is out of range, the
  // length is wrong, or the index was already added with other content;
  // RESOURCE_EXHAUSTED if the store's disk is full (the capture is then
  // dead: Commit fails); FAILED_PRECONDITION after Commit/Abort.
  virtual absl::Status AddChunk(uint64_t index, absl::string_view plain) = 0;
  // Marks `count` chunks from `first_index` all-zero (unmapped ranges of a
  // thin volume) without passing their bytes.
  virtual absl::Status AddZeroChunks(uint64_t first_index, uint64_t count) = 0;

  // Flushes and seals the capture's packs, then durably writes the manifest.
  // FAILED_PRECONDITION if a chunk index was never added; the first write
  // error otherwise (RESOURCE_EXHAUSTED for a full disk). On any error the
  // capture is aborted and no image is visible.
  virtual absl::StatusOr<ManifestSummary> Commit() = 0;
  // Discards the capture; nothing becomes visible. Packs it already sealed
  // hold only unreferenced chunks, which garbage collection reclaims.
  virtual void Abort() = 0;
};

// Reads the chunks of one image. Thread-safe. Keeps the image's chunks from
// garbage collection while it exists, even if the image is deleted. Must not
// outlive its ImageStore.
class ImageReader {
 public:
  virtual ~ImageReader() = default;

  virtual const Manifest& manifest() const = 0;
  virtual const Digest& manifest_digest() const = 0;

  // Plain bytes of chunk `index` (ChunkLength bytes), or an empty string for
  // an all-zero chunk. The SHA-256 is checked: DATA_LOSS naming the chunk
  // index and digest if the data is corrupt or missing; OUT_OF_RANGE for an
  // index past the end.
  virtual absl::StatusOr<std::string> ReadChunk(uint64_t index) = 0;
  // As ReadChunk, but writes ChunkLength bytes (zeroes for an all-zero chunk)
  // to `out`, saving a copy.
  virtual absl::Status ReadChunkTo(uint64_t index, char* out);
  // As ReadChunk (same checks and errors), with no copy at all: `*data` views
  // the chunk's bytes where they were decoded, valid while `*keep` lives. An
  // all-zero chunk gives an empty view and a null `keep`.
  virtual absl::Status ReadChunkView(uint64_t index, absl::string_view* data,
                                     std::shared_ptr<const void>* keep);
};

struct VerifyReport {
  uint64_t chunks_checked = 0;  // Non-zero chunk indexes read.
  std::vector<uint64_t> corrupt_chunks;  // Stored but damaged.
  std::vector<uint64_t> missing_chunks;  // Not in the store at all.
  std::vector<std::string> errors;       // The first few messages.
  bool ok() const { return corrupt_chunks.empty() && missing_chunks.empty(); }
};

struct GcResult {
  bool dry_run = false;
  uint64_t chunks_removed = 0;  // Index entries no live image names.
  uint64_t bytes_freed = 0;     // Pack bytes deleted minus bytes rewritten.
  uint64_t packs_deleted = 0;
  uint64_t packs_rewritten = 0;
};

struct StoreStatus {
  uint64_t image_count = 0;
  uint64_t logical_bytes = 0;  // Sum over images.
  uint64_t stored_bytes = 0;   // Pack bytes on disk.
  uint64_t pack_count = 0;
  uint64_t chunk_count = 0;    // Distinct stored chunks.
  double dedup_ratio = 0;      // logical_bytes / stored_bytes.
  uint64_t capacity_bytes = 0;
  uint64_t free_bytes = 0;
};

// Chunks as they travel between nodes (SendImage): one frame's bytes as a
// pack stores them (zstd or raw) and where each chunk sits in its plain data.
// Forwarding a stored frame as it is costs no recompression on either side.
struct TransferFrame {
  struct Chunk {
    Digest digest;
    uint32_t offset = 0;
    uint32_t length = 0;
  };
  bool zstd = false;        // Else raw: data is the plain bytes.
  uint32_t plain_size = 0;  // Bytes of data after decoding.
  std::string data;
  std::vector<Chunk> chunks;
  // Sent as the sender's store holds it (not recompressed).
  bool forwarded = false;
};

// Keeps chunks from garbage collection while it exists, whether or not the
// store holds them yet. Must not outlive its ImageStore.
class ChunkPin {
 public:
  virtual ~ChunkPin() = default;
};

// Stores frames received from a peer. Not thread-safe. Destroying it without
// Finish discards the frames not yet sealed into a pack; sealed ones hold
// only unreferenced chunks (unless pinned), which garbage collection reclaims.
class ChunkImporter {
 public:
  virtual ~ChunkImporter() = default;
  // Decodes the frame and checks every chunk against its digest before
  // anything is written. Returns false if the store already held every chunk
  // (nothing written). DATA_LOSS naming the chunk on a mismatch or
  // undecodable data; INVALID_ARGUMENT for sizes or chunk ranges that do not
  // fit; RESOURCE_EXHAUSTED for a full disk.
  virtual absl::StatusOr<bool> AddFrame(const TransferFrame& frame) = 0;
  // AddFrame in two halves, so frames can be checked on several threads:
  // Verify (thread-safe, writes nothing) and Store (a verified frame; calls
  // must not overlap).
  virtual absl::Status Verify(const TransferFrame& frame) const = 0;
  // The part of Verify that needs no decoding or hashing: sizes, chunk count
  // and ranges, and that a zstd payload is one frame declaring its size with
  // nothing around it (DATA_LOSS otherwise). Cheap enough to run on every message as it arrives, before
  // anything (a pin, a queue slot) is spent on it. Thread-safe.
  virtual absl::Status CheckShape(const TransferFrame& frame) const = 0;
  virtual absl::StatusOr<bool> Store(const TransferFrame& frame) = 0;
  // Seals the frames durably into the store; the chunks are then present.
  virtual absl::Status Finish() = 0;
  // Stored bytes written so far.
  virtual uint64_t bytes_stored() const = 0;
};

// OK for an image id the store accepts (1-128 characters of A-Z, a-z, 0-9,
// '_' or '-': a file name, and safe to log); INVALID_ARGUMENT naming the id
// (escaped, cut short) and the rule otherwise.
absl::Status CheckImageId(absl::string_view id);

// The store. Safe for concurrent use from multiple threads: captures,
// restores, verification, deletion and garbage collection may all run at
// once. One ImageStore per directory per process.
class ImageStore {
 public:
  // Opens (creating if needed) the store in `dir`, removes leftover temporary
  // files and loads every pack's index. Packs with a damaged index, or that
  // cannot be opened or read, are skipped with a warning (their chunks then
  // read as missing).
  static absl::StatusOr<std::unique_ptr<ImageStore>> Open(
      const std::string& dir, ImageStoreOptions options);

  ~ImageStore();
  ImageStore(const ImageStore&) = delete;
  ImageStore& operator=(const ImageStore&) = delete;

  // Starts a capture. INVALID_ARGUMENT for an id outside [A-Za-z0-9_-]{1,128}
  // or bad sizes (volume_size > 0 and a multiple of block_size; block_size a
  // power of two dividing the chunk size); ALREADY_EXISTS if the id is taken
  // or being captured.
  // `compression_level` 1..19 overrides the store's zstd level for this
  // capture's new frames; 0 keeps the default.
  absl::StatusOr<std::unique_ptr<ImageWriter>> BeginImage(
      const std::string& image_id, uint64_t volume_size, uint32_t block_size,
      int compression_level = 0);

  // NOT_FOUND for an unknown id; DATA_LOSS if its manifest is damaged.
  absl::StatusOr<std::unique_ptr<ImageReader>> OpenImage(
      const std::string& image_id);

  // From memory, after checking the manifest file still has its size (one
  // stat: a truncated manifest is DATA_LOSS here too; an altered one is
  // found when the image is opened). NOT_FOUND for an unknown id; DATA_LOSS
  // if its manifest could not be read at load or has changed size.
  absl::StatusOr<ImageSummary> Summary(const std::string& image_id) const;

  // Reads every chunk and recomputes its digest. Errors as OpenImage;
  // CANCELLED within a chunk of `*cancelled` (may be null) turning true.
  absl::StatusOr<VerifyReport> VerifyImage(const std::string& image_id,
                                           const std::atomic<bool>* cancelled = nullptr);

  // Durably removes the manifest; space comes back at the next garbage
  // collection. NOT_FOUND for an unknown id; FAILED_PRECONDITION while a
  // capture of the id is running (it could still commit).
  absl::Status DeleteImage(const std::string& image_id);

  // Ids of committed images, sorted.
  std::vector<std::string> ListImages() const;

  // Marks chunks named by live manifests, open readers and captures in
  // progress; deletes packs without live chunks and rewrites packs that are
  // mostly dead. With `dry_run` only reports. DATA_LOSS if a manifest cannot
  // be read (nothing is collected then, since its chunks cannot be known);
  // ABORTED while another collection runs.
  absl::StatusOr<GcResult> CollectGarbage(bool dry_run);

  absl::StatusOr<StoreStatus> Status() const;

  // --- Copying images between nodes (storaged/image_copier.h) ---

  // The manifest file of a committed image, byte for byte, and its digest.
  // Errors as OpenImage.
  absl::StatusOr<std::string> ReadEncodedManifest(const std::string& image_id,
                                                  Digest* digest);
  // The digests among `digests` the store does not hold, in their order.
  std::vector<Digest> MissingChunks(const std::vector<Digest>& digests) const;
  // Keeps `digests` from garbage collection until the pin is destroyed.
  std::unique_ptr<ChunkPin> PinChunks(std::vector<Digest> digests);
  // Reads the chunks named by `digests` (distinct, all held by the store:
  // the caller keeps them alive, e.g. with an ImageReader) and hands them to
  // `emit` as frames in store order: a stored frame made only of wanted
  // chunks goes out as it is stored (checksum checked); wanted chunks of
  // other frames are checked against their digests and recompressed into new
  // frames of about frame_size. DATA_LOSS for a corrupt or missing chunk;
  // CANCELLED once `cancelled` is set; errors of `emit` as they are.
  absl::Status ExportChunks(
      const std::vector<Digest>& digests,
      const std::function<absl::Status(TransferFrame frame)>& emit,
      const std::atomic<bool>* cancelled);
  absl::StatusOr<std::unique_ptr<ChunkImporter>> BeginImport();
  // Commits a manifest received from a peer, byte for byte, once every chunk
  // it names is present: tmp+fsync+rename like a capture. Repeating it with
  // the same digest returns the committed image's summary.
  // INVALID_ARGUMENT (image id; the manifest names another image);
  // DATA_LOSS (undecodable, or its digest is not `expected`); ALREADY_EXISTS
  // (committed with another digest); ABORTED (a capture or import of the id
  // is running); FAILED_PRECONDITION (chunks missing: send them first);
  // RESOURCE_EXHAUSTED (disk full).
  absl::StatusOr<ManifestSummary> ImportManifest(const std::string& image_id,
                                                 absl::string_view encoded,
                                                 const Digest& expected);

  const ImageStoreOptions& options() const { return options_; }

 private:
  friend class internal::ImageWriterImpl;
  friend class internal::ImageReaderImpl;
  friend class internal::ChunkImporterImpl;

  struct Location {
    uint32_t pack;
    uint32_t frame;
    uint32_t offset;
    uint32_t length;
  };
  struct ImageInfo {
    bool readable = false;  // False: the manifest failed to load.
    ImageSummary summary;
    uint64_t manifest_bytes = 0;
  };
  static ImageInfo InfoOf(const Manifest& m, const Digest& digest, uint64_t manifest_bytes);

  ImageStore(std::string dir, ImageStoreOptions options);
  absl::Status Load();
  std::string ManifestPath(absl::string_view image_id) const;
  // The manifest file of `image_id`, decoded; its bytes go to `*encoded`
  // (may be null). NOT_FOUND without the file; DATA_LOSS if it does not
  // decode.
  absl::StatusOr<Manifest> ReadManifestFile(const std::string& image_id,
                                            Digest* digest,
                                            std::string* encoded) const;
  // As ReadManifestFile, and DATA_LOSS if the manifest names another image.
  absl::StatusOr<Manifest> ReadManifest(const std::string& image_id,
                                        Digest* digest) const;

  // Adds a sealed pack and its chunks to the index. A chunk already indexed
  // elsewhere keeps its old location, unless that copy is known damaged (the
  // new copy repairs every image naming the chunk); `at_load`, the new
  // location is kept as another copy to fall back on. Returns the pack number.
  uint32_t RegisterPackLocked(std::string name, internal::PackIndex index,
                              uint64_t file_size, bool at_load = false)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether the store holds a copy of `digest` not known to be damaged, so a
  // capture or copy can reuse it instead of storing the chunk again.
  bool HoldsUsableLocked(const Digest& digest) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);
  // Called when the indexed copy of `digest` in pack `pack_number` proved
  // damaged (`why`: digest mismatch, undecodable frame, pack gone). Returns
  // true if the index now names another copy to read instead; otherwise the
  // chunk is marked damaged until a capture or copy stores it again.
  bool UseAnotherCopy(const Digest& digest, uint32_t pack_number,
                      const absl::Status& why);
  // Reads every chunk that has other copies, which proves its indexed copy
  // good (or switches to a good one); the other copies of those are then
  // redundant and dropped. Before collection: which copy the index names
  // after a restart depends on pack names, and another may be the only good.
  void DropRedundantCopies();
  // A random pack name not in use.
  std::string NewPackName();
  // Appends `frame` to `*pack`, first starting a new pack file if `*pack` is
  // null. On a write error the pack is abandoned and `*pack` reset, so the
  // next frame starts a new one.
  absl::Status AddFrameToPack(const internal::CompressedFrame& frame,
                              std::unique_ptr<internal::PackWriter>* pack);

  // Sizes the shared frame cache to the readers open now.
  void ResizeSharedFramesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Plain bytes of the chunk named `digest`, checked against it. NOT_FOUND if
  // the store does not have it, DATA_LOSS if it is damaged or, with
  // `expected_length` non-zero, is not that long (an image naming a chunk of
  // another length at an index).
  // With `out` (room for `expected_length` bytes), the bytes go there instead
  // and the string returned is empty.
  absl::StatusOr<std::string> ReadChunkByDigest(const Digest& digest,
                                                internal::FrameCache* cache,
                                                uint32_t expected_length = 0,
                                                char* out = nullptr);
  // As ReadChunkByDigest, with no copy: the chunk's checked bytes inside its
  // decoded frame, which `*frame` keeps alive.
  absl::StatusOr<absl::string_view> ChunkInFrame(
      const Digest& digest, internal::FrameCache* cache, uint32_t expected_length,
      std::shared_ptr<const internal::CachedFrame>* frame);
  // Estimated compressed bytes of one chunk: its share of its frame.
  uint64_t StoredShareLocked(const Location& loc) const
      ABSL_SHARED_LOCKS_REQUIRED(mu_);

  // Adds the chunks of every capture in progress to `live` (collection).
  void MarkCapturesLiveLocked(absl::flat_hash_set<Digest, DigestHash>* live)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Copies the live chunks of pack `number` into new packs and retires it.
  absl::Status Repack(uint32_t number,
                      std::vector<std::pair<Digest, Location>> live,
                      uint64_t* bytes_written);

  const std::string dir_;
  const std::string packs_dir_;
  const std::string images_dir_;
  const ImageStoreOptions options_;
  Filesystem* const fs_;

  // Declared before packs_ so that it outlives every PackState.
  const std::unique_ptr<internal::OpenPacks> open_packs_;
  const std::unique_ptr<internal::FrameCache> shared_frames_;
  // Decompressed frames' buffers, reused once the cache lets go of them.
  const std::unique_ptr<BufferPool> frame_buffers_;
  absl::Mutex gc_mu_ ABSL_ACQUIRED_BEFORE(mu_);  // One collection at a time.
  mutable absl::Mutex mu_;
  absl::flat_hash_map<Digest, Location, DigestHash> index_ ABSL_GUARDED_BY(mu_);
  // Further copies of indexed chunks, found at load (a repair or an
  // interrupted repack leaves two); read when the indexed copy is damaged.
  absl::flat_hash_map<Digest, std::vector<Location>, DigestHash> other_copies_
      ABSL_GUARDED_BY(mu_);
  // Indexed chunks whose only copy is damaged: captures store them again.
  absl::flat_hash_set<Digest, DigestHash> damaged_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<uint32_t, std::shared_ptr<internal::PackState>> packs_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<std::string> pack_names_ ABSL_GUARDED_BY(mu_);
  uint32_t next_pack_number_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<std::string, ImageInfo> images_ ABSL_GUARDED_BY(mu_);
  // Ids of captures in progress.
  absl::flat_hash_set<std::string> reserved_ids_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_set<internal::ImageWriterImpl*> writers_
      ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<const internal::ImageReaderImpl*,
                      std::shared_ptr<const Manifest>>
      readers_ ABSL_GUARDED_BY(mu_);
  // While a collection reads manifests, captures that commit keep their
  // chunks marked here, since the collection's list of images predates them.
  bool gc_marking_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::shared_ptr<const Manifest>> committed_while_marking_
      ABSL_GUARDED_BY(mu_);
};

}  // namespace storaged

#endif  // STORAGED_IMAGE_STORE_H_
