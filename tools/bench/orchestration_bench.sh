#!/usr/bin/env bash
# Orchestration benchmark (issue 5, "Benchmark"): end-to-end create of the
# 2 GiB guest disk through the API and deploys from it, beside storaged's own
# capture and restore of the same disk in the same run. Not a test.
#
#   tools/bench/orchestration_bench.sh [--runs N] [--deploys N] [--cache DIR]
#                                      [--keep] [--no-build] [--storaged-bin PATH]
#
# Builds controlplane, storaged and orchestration_bench (-c opt from
# .bazelrc) and copies them into a work directory (other engineers rebuild
# bazel-bin meanwhile), makes or reuses the guest disks (make_guest_disks.sh),
# copies disk1 as a thick file for the source LUN, then runs
# orchestration_bench (see orchestration_bench.cc for what each row times),
# which prints a line per run and a markdown table of medians.
# --storaged-bin measures another storaged build (A/B of two builds). Needs
# root (tgtd, apt-get for a missing tgt).
set -euo pipefail

RUNS=3
DEPLOYS=4
CACHE=/var/tmp/imagetemplates-bench
KEEP=0
BUILD=1
STORAGED_BIN=""
while (($#)); do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --runs=*) RUNS="${1#*=}"; shift ;;
    --deploys) DEPLOYS="$2"; shift 2 ;;
    --deploys=*) DEPLOYS="${1#*=}"; shift ;;
    --cache) CACHE="$2"; shift 2 ;;
    --cache=*) CACHE="${1#*=}"; shift ;;
    --keep) KEEP=1; shift ;;
    --no-build) BUILD=0; shift ;;
    --storaged-bin) STORAGED_BIN="$2"; shift 2 ;;
    --storaged-bin=*) STORAGED_BIN="${1#*=}"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "orchestration_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"
log() { echo "bench: $*" >&2; }

if ! command -v tgtd >/dev/null; then
  log "installing tgt"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tgt >/dev/null
fi
if ((BUILD)); then
  log "bazel build //controlplane //storaged //tools/bench:orchestration_bench"
  (cd "$REPO" && bazel build //controlplane //storaged //tools/bench:orchestration_bench) >&2
fi
bash "$HERE/make_guest_disks.sh" "$CACHE"

WORK="$(mktemp -d /var/tmp/itorch.XXXXXX)"
cleanup() { if ((KEEP)); then log "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/bin"
# The optimized build's directory: the bazel-bin symlink follows whichever
# configuration ran last (an --config=asan test run points it at slow binaries).
# bazel-out/k8-opt/bin is that directory and needs no Bazel server: `bazel
# info` would queue behind other engineers' builds while holding the bench lock.
OPT_BIN="$REPO/bazel-out/k8-opt/bin"
[[ -d "$OPT_BIN" ]] || OPT_BIN="$(cd "$REPO" && bazel info bazel-bin 2>/dev/null)"
cp "$OPT_BIN/controlplane/controlplane" "${STORAGED_BIN:-$OPT_BIN/storaged/storaged}" \
  "$OPT_BIN/tools/bench/orchestration_bench" "$WORK/bin/"
[[ -z "$STORAGED_BIN" || "$(basename "$STORAGED_BIN")" == storaged ]] ||
  mv "$WORK/bin/$(basename "$STORAGED_BIN")" "$WORK/bin/storaged"
log "copying disk1 as a thick file into $WORK"
cp --sparse=never "$CACHE/disk1.img" "$WORK/source.img"
echo "disk: $(cat "$CACHE/disk1.source" 2>/dev/null || echo unknown source)"
# Restores are durable (SYNCHRONIZE CACHE -> tgtd fdatasync), so N deploys
# write N disks' data through to the one disk under every LUN here: its
# flushed write speed bounds the N-deploy rows. Measured before and after.
disk_speed() {
  dd if=/dev/zero of="$WORK/dd.test" bs=4M count=64 conv=fdatasync 2>&1 | tail -n 1 |
    sed -E 's/.*, ([0-9.]+ [kMG]?B\/s)$/\1/'
  rm -f "$WORK/dd.test"
}
echo "flushed write speed of $WORK's disk (256 MiB, dd conv=fdatasync): $(disk_speed) before"
"$WORK/bin/orchestration_bench" --controlplane="$WORK/bin/controlplane" \
  --storaged="$WORK/bin/storaged" --source="$WORK/source.img" --dir="$WORK" \
  --runs="$RUNS" --deploys="$DEPLOYS"
echo "flushed write speed of $WORK's disk: $(disk_speed) after"
