#!/usr/bin/env bash
# Restore A/B benchmark: two (or more) storaged builds side by side in one run,
# each with its own store holding the 2 GiB guest disk, restoring it onto
# blank thin LUNs of one private tgtd: one restore, then N at once, builds
# alternating within every run. Prints wall time and CPU seconds (storaged,
# tgtd) per restore set, and each build's restore timeline log lines. Not a
# test. Run it under `flock /tmp/itbench.lock`.
#
#   tools/bench/restore_ab_bench.sh [--runs N] [--concurrent N] [--perf]
#                                   [--cache DIR] STORAGED_A [STORAGED_B ...]
#
# Needs root (tgtd), a built //tools/bench:storagenode_client and the guest
# disks of make_guest_disks.sh. With --perf, storaged and tgtd are recorded
# with `perf record -e cpu-clock -g` (hardware counters need not exist) and
# the top entries printed; the data files stay in the work directory's copy
# printed at the end.
set -euo pipefail

RUNS=3
N=4
PERF=0
CACHE=/var/tmp/imagetemplates-bench
BINS=()
while (($#)); do
  case "$1" in
    --runs) RUNS="$2"; shift 2 ;;
    --runs=*) RUNS="${1#*=}"; shift ;;
    --concurrent) N="$2"; shift 2 ;;
    --concurrent=*) N="${1#*=}"; shift ;;
    --perf) PERF=1; shift ;;
    --cache) CACHE="$2"; shift 2 ;;
    --cache=*) CACHE="${1#*=}"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    -*) echo "restore_ab_bench: unknown argument $1" >&2; exit 2 ;;
    *) BINS+=("$(realpath "$1")"); shift ;;
  esac
done
((${#BINS[@]})) || { echo "restore_ab_bench: name at least one storaged binary" >&2; exit 2; }

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
# shellcheck source=tools/bench/tgt_lun.sh
. "$HERE/tgt_lun.sh"
export PATH="$PATH:/usr/sbin:/sbin"
bash "$HERE/make_guest_disks.sh" "$CACHE" >&2
WORK="$(mktemp -d /var/tmp/itrab.XXXXXX)"
IPC_DIR="$(mktemp -d /tmp/itrab.XXXXXX)"   # short: sockaddr_un holds 108 bytes
export TGT_IPC_SOCKET="$IPC_DIR/ipc"
mkdir -p "$WORK/bin"
# The optimized build's directory, without asking a (possibly busy) Bazel server.
cp "$REPO/bazel-out/k8-opt/bin/tools/bench/storagenode_client" "$WORK/bin/"
CLIENT="$WORK/bin/storagenode_client"

PIDS=()
TGTD_PID=""
TIDS=()
CTL=0
cleanup() {
  set +e
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  if [[ -n "$TGTD_PID" ]]; then
    for tid in "${TIDS[@]}"; do
      tgtadm -C "$CTL" --lld iscsi --op delete --mode target --force --tid "$tid" >/dev/null 2>&1
    done
    tgtadm -C "$CTL" --op delete --mode system >/dev/null 2>&1
    for _ in $(seq 50); do kill -0 "$TGTD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$TGTD_PID" 2>/dev/null
  fi
  rm -rf "$IPC_DIR" "$WORK"/*.img "$WORK"/store*
  if ((PERF)); then echo "perf data kept in $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
CTL=$((1000 + PORT % 30000))
tgtd -f --iscsi "portal=127.0.0.1:$PORT" -C "$CTL" >"$WORK/tgtd.log" 2>&1 &
TGTD_PID=$!
for i in $(seq 100); do
  tgtadm -C "$CTL" --op show --mode system >/dev/null 2>&1 && break
  ((i < 100)) || { echo "tgtd did not answer" >&2; exit 1; }
  sleep 0.1
done
adm() { tgtadm -C "$CTL" --lld iscsi "$@" >/dev/null; }
NEXT_TID=1
lun() { bench_lun "iqn.2026-11.rab:$1" "$2" thin; }  # name backing
url() { echo "iscsi://127.0.0.1:$PORT/iqn.2026-11.rab:$1/1"; }
SIZE=$(stat -c %s "$CACHE/disk1.img")
blank() { truncate -s 0 "$1"; truncate -s "$SIZE" "$1"; }
cp --sparse=always "$CACHE/disk1.img" "$WORK/src.img"
lun src "$WORK/src.img"
for i in $(seq "$N"); do blank "$WORK/t$i.img"; lun "t$i" "$WORK/t$i.img"; done

ADDRS=()
for b in "${!BINS[@]}"; do
  cp "${BINS[$b]}" "$WORK/bin/storaged$b"
  "$WORK/bin/storaged$b" --listen=127.0.0.1:0 --port-file="$WORK/port$b" --store="$WORK/store$b" \
    --datacenter=rab --node-id="rab$b" >"$WORK/storaged$b.log" 2>&1 &
  PIDS+=($!)
  for i in $(seq 100); do
    [[ -s "$WORK/port$b" ]] && break
    ((i < 100)) || { echo "storaged $b did not start" >&2; exit 1; }
    sleep 0.1
  done
  ADDRS+=("127.0.0.1:$(cat "$WORK/port$b")")
  "$CLIENT" --addr="${ADDRS[$b]}" capture img "$(url src)" >/dev/null
done

ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
now() { date +%s.%N; }
HZ=$(getconf CLK_TCK)
restore_set() {  # build count run
  local b=$1 n=$2 run=$3 pp="" pt=""
  for i in $(seq "$n"); do blank "$WORK/t$i.img"; done
  sync
  if ((PERF)); then
    perf record -e cpu-clock -g -o "$WORK/perf.storaged$b.n$n.r$run.data" -p "${PIDS[$b]}" >/dev/null 2>&1 &
    pp=$!
    perf record -e cpu-clock -g -o "$WORK/perf.tgtd$b.n$n.r$run.data" -p "$TGTD_PID" >/dev/null 2>&1 &
    pt=$!
    sleep 0.3
  fi
  local c g t clients=()
  c=$(ticks "${PIDS[$b]}"); g=$(ticks "$TGTD_PID"); t=$(now)
  for i in $(seq "$n"); do
    "$CLIENT" --addr="${ADDRS[$b]}" restore img "$(url "t$i")" >/dev/null &
    clients+=($!)
  done
  for p in "${clients[@]}"; do wait "$p"; done
  printf 'run %s build %s restores %s: %.3f s, storaged %.2f CPU-s, tgtd %.2f CPU-s\n' "$run" "$b" "$n" \
    "$(awk -v a="$t" -v b="$(now)" 'BEGIN { print b - a }')" \
    "$(awk -v a="$c" -v b="$(ticks "${PIDS[$b]}")" -v hz="$HZ" 'BEGIN { print (b - a) / hz }')" \
    "$(awk -v a="$g" -v b="$(ticks "$TGTD_PID")" -v hz="$HZ" 'BEGIN { print (b - a) / hz }')"
  if ((PERF)); then kill -INT "$pp" "$pt"; wait "$pp" "$pt" 2>/dev/null || true; fi
  if ((run == 1)); then
    sync
    cmp -s "$CACHE/disk1.img" "$WORK/t1.img" || { echo "build $b: restored LUN differs from disk1" >&2; exit 1; }
  fi
}
echo "load average at the start: $(cat /proc/loadavg)"
for b in "${!BINS[@]}"; do echo "build $b: ${BINS[$b]}"; done
for run in $(seq "$RUNS"); do
  for b in "${!BINS[@]}"; do restore_set "$b" 1 "$run"; done
  for b in "${!BINS[@]}"; do restore_set "$b" "$N" "$run"; done
done
echo "load average at the end: $(cat /proc/loadavg)"
for b in "${!BINS[@]}"; do
  echo "build $b restore timelines:"
  grep -h "restore timeline" "$WORK/storaged$b.log" | sed 's/^/  /' || true
done
if ((PERF)); then
  for f in "$WORK"/perf.*.r1.data; do
    echo "$(basename "$f"): self time by library, then top symbols"
    { perf report -i "$f" --no-children -g none --sort dso --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -8
      perf report -i "$f" --no-children -g none --sort sym --stdio 2>/dev/null | grep -E '^ +[0-9]' | head -15
    } || true
  done
fi
