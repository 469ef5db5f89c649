#include "storaged/config_drive_writer.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

// We provide no libburn; libisofs then declares struct burn_source itself.
#define LIBISOFS_WITHOUT_LIBBURN 1
#include <libisofs/libisofs.h>

namespace storaged {
namespace {

constexpr char kVolumeId[] = "cidata";
constexpr int kIsoBlock = 2048;

absl::Status IsoError(absl::string_view what, int code) {
  return absl::InternalError(absl::StrCat("libisofs ", what, " failed: error 0x",
                                          absl::Hex(static_cast<uint32_t>(code))));
}

// libisofs keeps global state: initialize once, never finish (other threads
// may be building images).
absl::Status InitLibisofs() {
  static int result = [] {
    // bit0: leave the process locale alone.
    int rc = iso_init_with_flag(1);
    // Failures come back as return codes; keep libisofs off stderr.
    iso_set_msgs_severities(const_cast<char*>("NEVER"), const_cast<char*>("NEVER"),
                            const_cast<char*>("storaged"));
    return rc;
  }();
  return result < 0 ? IsoError("init", result) : absl::OkStatus();
}

absl::Status AddFile(IsoImage* image, const char* name, const std::string& content) {
  // The memory stream takes a malloc'ed buffer and frees it itself.
  auto* buffer = static_cast<unsigned char*>(malloc(content.size() + 1));
  if (buffer == nullptr) return absl::ResourceExhaustedError("out of memory");
  memcpy(buffer, content.data(), content.size());
  IsoStream* stream = nullptr;
  int rc = iso_memory_stream_new(buffer, content.size(), &stream);
  if (rc < 0) {
    free(buffer);
    return IsoError("iso_memory_stream_new", rc);
  }
  // On success the new file owns our stream reference; on failure it is ours.
  rc = iso_image_add_new_file(image, iso_image_get_root(image), name, stream, nullptr);
  if (rc < 0) {
    iso_stream_unref(stream);
    return IsoError(absl::StrCat("adding ", name), rc);
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> BuildConfigDriveImage(const ConfigDrive& drive) {
  RETURN_IF_ERROR(InitLibisofs());
  IsoImage* image = nullptr;
  int rc = iso_image_new(kVolumeId, &image);
  if (rc < 0) return IsoError("iso_image_new", rc);
  absl::Cleanup unref_image = [image] { iso_image_unref(image); };
  iso_image_set_volume_id(image, kVolumeId);

  RETURN_IF_ERROR(AddFile(image, "meta-data", drive.meta_data));
  RETURN_IF_ERROR(AddFile(image, "user-data", drive.user_data));
  if (!drive.network_config.empty()) {
    RETURN_IF_ERROR(AddFile(image, "network-config", drive.network_config));
  }

  IsoWriteOpts* opts = nullptr;
  rc = iso_write_opts_new(&opts, /*profile=*/0);
  if (rc < 0) return IsoError("iso_write_opts_new", rc);
  absl::Cleanup free_opts = [opts] { iso_write_opts_free(opts); };
  // Rock Ridge for Linux (cloud-init mounts it), Joliet for Windows guests
  // (cloudbase-init); plain ISO 9660 names would read META_DAT.
  iso_write_opts_set_rockridge(opts, 1);
  iso_write_opts_set_joliet(opts, 1);
  // Keep the label lowercase "cidata" as NoCloud documents it (strict
  // ISO 9660 would upcase it).
  iso_write_opts_set_relaxed_vol_atts(opts, 1);

  burn_source* source = nullptr;
  rc = iso_image_create_burn_source(image, opts, &source);
  if (rc < 0) return IsoError("iso_image_create_burn_source", rc);
  // free_data ends libisofs' writer thread; the struct itself is ours.
  absl::Cleanup free_source = [source] {
    source->free_data(source);
    free(source);
  };

  std::string out;
  out.reserve(static_cast<size_t>(source->get_size(source)));
  // One block per call: at the end of the image libisofs returns 0 for a
  // request larger than what is left, dropping the tail.
  unsigned char buffer[kIsoBlock];
  while (true) {
    int n = source->read_xt(source, buffer, sizeof(buffer));
    if (n < 0) {
      source->cancel(source);
      return absl::InternalError("libisofs failed while writing the image");
    }
    if (n == 0) break;
    out.append(reinterpret_cast<const char*>(buffer), n);
  }
  return out;
}

absl::StatusOr<uint64_t> WriteConfigDrive(const ConfigDrive& drive, Volume& volume,
                                          const std::atomic<bool>* cancelled) {
  ASSIGN_OR_RETURN(std::string image, BuildConfigDriveImage(drive));
  const VolumeInfo& info = volume.info();
  uint64_t padded = (image.size() + info.block_size - 1) / info.block_size * info.block_size;
  if (padded > info.size_bytes) {
    return absl::FailedPreconditionError(absl::StrCat(
        "config drive image needs ", image.size(), " bytes (", padded,
        " in whole blocks) but the volume holds only ", info.size_bytes, " bytes"));
  }
  image.resize(padded, '\0');
  // Config-drive volumes pass from account to account: whatever the last
  // tenant left past the ISO (an older, longer ISO, a whole disk) must not
  // stay readable by the new server. As a restore does beyond its image: on
  // a thin volume whose unmapped blocks read as zero only the mapped ranges
  // need zeroing, everything else is zeroed explicitly.
  std::vector<Extent> stale;
  if (padded < info.size_bytes) {
    if (info.thin && info.zeroes_unmapped) {
      ASSIGN_OR_RETURN(stale, volume.MappedExtents(padded, info.size_bytes - padded));
    } else {
      stale.push_back({padded, info.size_bytes - padded});
    }
  }
  WriteOptions options;
  options.cancelled = cancelled;
  std::unique_ptr<VolumeWriter> writer = volume.NewWriter(options);
  RETURN_IF_ERROR(writer->Write(0, std::move(image)));
  for (const Extent& e : stale) {
    const uint64_t begin = std::max(e.offset, padded);
    const uint64_t end = std::min(e.offset + e.length, info.size_bytes);
    if (begin < end) RETURN_IF_ERROR(writer->WriteZeroes(begin, end - begin));
  }
  RETURN_IF_ERROR(writer->Flush());
  return padded;
}

}  // namespace storaged
