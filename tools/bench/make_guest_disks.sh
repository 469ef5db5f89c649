#!/usr/bin/env bash
# Builds the two guest disks the capture/restore benchmark reads, caching them
# under a directory (first argument, default /var/tmp/imagetemplates-bench):
#
#   disk1.img  2 GiB GPT disk, one ext4 partition (start 1 MiB) holding a
#              Debian bookworm minbase (debootstrap); where the archive cannot
#              be reached, a tree of this machine's own /usr instead (said so
#              on stderr and recorded in disk1.source).
#   disk2.img  disk1 with about 7% of its file data rewritten in place by
#              debugfs (rm + write of ~250 files under /usr, chosen
#              deterministically by sorted path), as a package upgrade on a
#              running server would.
#
# Idempotent: cached disks are reused. Needs root (debootstrap); installs
# debootstrap, fdisk and e2fsprogs with apt-get only if they are missing.
set -euo pipefail

CACHE="${1:-/var/tmp/imagetemplates-bench}"
DISK_SIZE=2G
PART_SIZE=2046M                 # 2 GiB minus the 1 MiB before and after
PART_OFFSET=1048576
REWRITE_FILES=250
REWRITE_PERCENT=7
# Fixed filesystem UUID, hash seed and creation time: the same tree gives the
# same disk from run to run.
FS_UUID=6a1d2c3e-4b5f-4e6a-8b7c-9d0e1f2a3b4c
export E2FSPROGS_FAKE_TIME=1767225600   # 2026-01-01

log() { echo "make_guest_disks: $*" >&2; }

if [[ -s "$CACHE/disk1.img" && -s "$CACHE/disk2.img" ]]; then
  log "reusing $CACHE/disk1.img and $CACHE/disk2.img ($(cat "$CACHE/disk1.source" 2>/dev/null || echo unknown source))"
  exit 0
fi
mkdir -p "$CACHE"

need_pkgs=()
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need_pkgs+=(debootstrap)
command -v sfdisk >/dev/null || [[ -x /usr/sbin/sfdisk ]] || need_pkgs+=(fdisk)
{ command -v mkfs.ext4 >/dev/null || [[ -x /usr/sbin/mkfs.ext4 ]]; } &&
  { command -v debugfs >/dev/null || [[ -x /usr/sbin/debugfs ]]; } || need_pkgs+=(e2fsprogs)
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

# --- the root tree --------------------------------------------------------
ROOT="$CACHE/rootfs"
if [[ ! -f "$CACHE/rootfs.done" ]]; then
  rm -rf "$ROOT" "$ROOT.tmp"
  mirror=""
  if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    # The first URIs line: the main archive (the second stanza is security).
    mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "debootstrap --variant=minbase bookworm from $mirror (about a minute)"
  if debootstrap --variant=minbase bookworm "$ROOT.tmp" "$mirror" \
      >"$CACHE/debootstrap.log" 2>&1; then
    # Nothing mounted inside may survive into the image.
    for m in proc sys dev/pts dev; do umount "$ROOT.tmp/$m" 2>/dev/null || true; done
    rm -rf "$ROOT.tmp/var/cache/apt/archives/"*.deb
    echo "debootstrap --variant=minbase bookworm $mirror" >"$CACHE/disk1.source"
  else
    log "WARNING: debootstrap failed (see $CACHE/debootstrap.log);" \
        "falling back to a tree of this machine's own /usr"
    for m in proc sys dev/pts dev; do umount "$ROOT.tmp/$m" 2>/dev/null || true; done
    rm -rf "$ROOT.tmp"
    mkdir -p "$ROOT.tmp"
    # The first ~450 MB of /usr by sorted path: about the size of a small
    # server root, and it fits the 2 GiB disk whatever this machine holds.
    (cd / && find usr -xdev -type f -size -64M -printf '%s\t%p\n' | LC_ALL=C sort -k2 |
       awk -F'\t' '{ sum += $1; if (sum > 450e6) exit; print $2 }' |
       cpio -pdm --quiet "$ROOT.tmp")
    echo "fallback: tree of this machine's /usr (debootstrap failed)" >"$CACHE/disk1.source"
  fi
  mv "$ROOT.tmp" "$ROOT"
  touch "$CACHE/rootfs.done"
fi

# --- disk1 ----------------------------------------------------------------
if [[ ! -s "$CACHE/disk1.img" ]]; then
  log "making disk1.img"
  rm -f "$CACHE/disk1.img.tmp"
  truncate -s "$DISK_SIZE" "$CACHE/disk1.img.tmp"
  printf 'label: gpt\nlabel-id: 0B5D2E1A-7C3F-4A8E-9B1D-2F4E6A8C0D12\nstart=2048, type=L, uuid=3C9E1B7A-5D2F-4E8A-A1C3-6B8D0F2E4A6C\n' |
    sfdisk -q "$CACHE/disk1.img.tmp"
  mkfs.ext4 -q -F -U "$FS_UUID" -E "offset=$PART_OFFSET,hash_seed=$FS_UUID" \
    -d "$ROOT" "$CACHE/disk1.img.tmp" "$PART_SIZE"
  mv "$CACHE/disk1.img.tmp" "$CACHE/disk1.img"
fi

# --- disk2: ~7% of the file data rewritten in place ------------------------
if [[ ! -s "$CACHE/disk2.img" ]]; then
  log "making disk2.img"
  work="$CACHE/disk2.work"
  rm -rf "$work" "$CACHE/disk2.img.tmp"
  mkdir -p "$work/new"
  cp --sparse=always "$CACHE/disk1.img" "$CACHE/disk2.img.tmp"
  # Choose the files: all regular files of the tree sorted by path. Among the
  # /usr files of at least S bytes (and at most 4 MiB), REWRITE_FILES are
  # taken at an even stride; S is the threshold (from a fixed ladder) whose
  # selection totals closest to REWRITE_PERCENT of all file data. Same tree,
  # same files.
  (cd "$ROOT" && find . -xdev -type f -printf '%s\t%p\n') | LC_ALL=C sort -t$'\t' -k2 |
    awk -F'\t' -v n="$REWRITE_FILES" -v pct="$REWRITE_PERCENT" '
      { total += $1
        p = substr($2, 2)                       # "./usr/x" -> "/usr/x"
        if (p ~ /^\/usr\// && p !~ /[[:space:]"\\]/ && $1 > 0 && $1 <= 4194304) {
          size[m] = $1; path[m] = p; m++ } }
      function pick(s, emit,   i, k, c, r, sum) {
        k = 0
        for (i = 0; i < m; i++) if (size[i] >= s) idx[k++] = i
        sum = 0; c = (k < n) ? k : n
        for (r = 0; r < c; r++) {
          i = idx[int((r + 0.5) * k / c)]
          sum += size[i]
          if (emit) print size[i] "\t" path[i]
        }
        picked = c
        return sum
      }
      END {
        want = total * pct / 100; best = 1; bestd = -1
        for (s = 1; s <= 1048576; s = int(s * 1.25) + 1) {
          d = pick(s, 0) - want; if (d < 0) d = -d
          if (bestd < 0 || d < bestd) { bestd = d; best = s }
        }
        taken = pick(best, 1)
        printf "selected %d files of at least %d bytes, %d bytes of %d (%.1f%%)\n",
               picked, best, taken, total, 100 * taken / total > "/dev/stderr"
      }' >"$work/files.tsv" 2>"$work/selection.txt"
  log "$(cat "$work/selection.txt")"
  # New contents: the old bytes behind a one-line header, so every block of
  # the file changes while it compresses as the original did (a new build
  # of the same program). debugfs' write names a file in its current
  # directory, hence the cd before each.
  i=0
  : >"$work/cmds"
  while IFS=$'\t' read -r _ path; do
    new="$work/new/$i"
    { printf 'upgraded %s\n' "$path"; cat "$ROOT$path"; } >"$new"
    chmod --reference="$ROOT$path" "$new"
    printf 'cd "%s"\nrm "%s"\nwrite "%s" "%s"\n' \
      "$(dirname "$path")" "$(basename "$path")" "$new" "$(basename "$path")" >>"$work/cmds"
    i=$((i + 1))
  done <"$work/files.tsv"
  debugfs -w -f "$work/cmds" "$CACHE/disk2.img.tmp?offset=$PART_OFFSET" >"$work/debugfs.log" 2>&1
  # debugfs echoes each command and says "Allocated inode: N" per write;
  # anything else is an error message.
  if grep -vqE '^(debugfs .*|debugfs: .*|Allocated inode: [0-9]+|)$' "$work/debugfs.log"; then
    log "debugfs reported problems:"
    grep -vE '^(debugfs .*|debugfs: .*|Allocated inode: [0-9]+|)$' "$work/debugfs.log" | head >&2
    exit 1
  fi
  e2fsck -fn "$CACHE/disk2.img.tmp?offset=$PART_OFFSET" >"$work/e2fsck.log" 2>&1 ||
    e2fsck -fn -E "offset=$PART_OFFSET" "$CACHE/disk2.img.tmp" >"$work/e2fsck.log" 2>&1 || {
      log "WARNING: e2fsck found problems on disk2 (see $work/e2fsck.log)"; }
  mv "$CACHE/disk2.img.tmp" "$CACHE/disk2.img"
  rm -rf "$work/new"
fi
log "disk1.img and disk2.img ready in $CACHE ($(cat "$CACHE/disk1.source"))"
