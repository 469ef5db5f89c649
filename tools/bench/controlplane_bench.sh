#!/usr/bin/env bash
# Control-plane read benchmark (issue 3, "Benchmark"): GetImageTemplate and a
# filtered ListImageTemplates page of 50 from 16 concurrent callers over
# loopback, against the real controlplane binary and a database of 100,000
# templates in 1,000 accounts. Not a test.
#
#   tools/bench/controlplane_bench.sh [--dir DIR] [--fresh] [--seconds N]
#       [--no-build] [--perf] [--baseline BINDIR] [--rounds N]
#       [--client-modes parse-reuse,parse,raw] [-- more controlplane_bench flags]
#
# Every phase runs once per client mode (controlplane_bench --client-modes):
# "client parses" is the generated stub parsing every response into a fresh
# message; "client parses, reused response" parses every response into one
# message per thread, cleared and reused (what a careful C++ caller does;
# parsing then barely allocates); "raw client,
# 1% verified" sends pre-serialized requests and reads only each list
# response's top-level fields (entry count, next_page_token), parsing and
# checking one call in 100 in full. The bench shares the 2 cores with the
# server; the raw client shows the server without the client's parsing.
#
# --baseline BINDIR: A/B against an older controlplane (BINDIR/controlplane,
# saved from an older build) on the same machine at the same time, both
# driven by this build's controlplane_bench: N rounds (default 2), each runs
# the baseline on its own copy of the database (BINDIR/db: made from DIR's
# seeded one on first use, so keep BINDIR from before a newer schema migrated
# DIR; the bench itself only reads a database and never migrates it) and
# then this build, printing both tables with the load average before each.
#
# Builds controlplane and controlplane_bench (-c opt from .bazelrc) and copies
# both into DIR/bin so a concurrent rebuild cannot swap them mid-run. The
# database is seeded once into DIR (default /var/tmp/imagetemplates-cpbench,
# about a minute) and reused by later runs: the benchmark only reads
# (unless `-- --unrelated-commits-per-second=N`, which adds audit rows while
# it runs, as a live control plane does; see controlplane_bench.cc).
# --fresh seeds again. Prints a markdown table per run (see
# controlplane_bench.cc for the phases). With --perf, a second pass runs each
# phase under `perf record -g` on the controlplane and prints its top symbols
# (slower: perf's numbers are not the benchmark's).
set -euo pipefail

DIR=/var/tmp/imagetemplates-cpbench
FRESH=0
BUILD=1
PERF=0
BASELINE=
ROUNDS=2
CLIENT_MODES=parse-reuse,parse,raw
SECONDS_PER_PHASE=10
EXTRA=()
while (($#)); do
  case "$1" in
    --dir) DIR="$2"; shift 2 ;;
    --dir=*) DIR="${1#*=}"; shift ;;
    --fresh) FRESH=1; shift ;;
    --seconds) SECONDS_PER_PHASE="$2"; shift 2 ;;
    --seconds=*) SECONDS_PER_PHASE="${1#*=}"; shift ;;
    --no-build) BUILD=0; shift ;;
    --perf) PERF=1; shift ;;
    --baseline) BASELINE="$2"; shift 2 ;;
    --baseline=*) BASELINE="${1#*=}"; shift ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --rounds=*) ROUNDS="${1#*=}"; shift ;;
    --client-modes) CLIENT_MODES="$2"; shift 2 ;;
    --client-modes=*) CLIENT_MODES="${1#*=}"; shift ;;
    --) shift; EXTRA=("$@"); break ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "controlplane_bench: unknown argument $1" >&2; exit 2 ;;
  esac
done

HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
log() { echo "bench: $*" >&2; }

if ((BUILD)); then
  log "building"
  (cd "$REPO" && bazel build //tools/bench:controlplane_bench //controlplane:controlplane)
fi
BIN="$(cd "$REPO" && bazel info bazel-bin 2>/dev/null)"
mkdir -p "$DIR/bin"
cp -f "$BIN/controlplane/controlplane" "$BIN/tools/bench/controlplane_bench" "$DIR/bin/"

# The data set the database holds; reseed when it differs or on --fresh.
DATASET="accounts=1000 templates-per-account=100 seed=1"
if ((FRESH)) || [[ "$(cat "$DIR/dataset" 2>/dev/null)" != "$DATASET" ]]; then
  rm -f "$DIR"/cp.db* "$DIR/admin.key" "$DIR/bench-keys.tsv" "$DIR/controlplane.log" \
    "$DIR/dataset"
fi

run_with() {  # CONTROLPLANE_BINDIR DBDIR [flags]
  local bin="$1" db="$2"
  shift 2
  "$DIR/bin/controlplane_bench" --controlplane="$bin/controlplane" --dir="$db" \
    --accounts=1000 --templates-per-account=100 --seed=1 --clients=16 \
    --seconds="$SECONDS_PER_PHASE" --warmup-seconds=2 --page-size=50 \
    --client-modes="$CLIENT_MODES" \
    --phases=get,list,op-get,op-list,get@5000,list@100,list@500 "$@"
}
run() { run_with "$DIR/bin" "$DIR" "$@"; }

log "$(nproc) cores; $(uname -r)"
if [[ -n "$BASELINE" ]]; then
  [[ -x "$BASELINE/controlplane" ]] || { log "--baseline $BASELINE needs controlplane"; exit 2; }
  # Seed (or reuse) DIR first, with this build's bench.
  [[ -f "$DIR/cp.db" ]] || run --phases=get --seconds=1 --warmup-seconds=0 "${EXTRA[@]}" >/dev/null
  echo "$DATASET" > "$DIR/dataset"
  if [[ ! -f "$BASELINE/db/cp.db" ]]; then
    mkdir -p "$BASELINE/db"
    cp -f "$DIR"/cp.db "$DIR"/cp.db.credential-key "$DIR"/admin.key "$DIR"/bench-keys.tsv \
      "$BASELINE/db/"
  fi
  for ((round = 1; round <= ROUNDS; round++)); do
    echo "### round $round, baseline ($BASELINE), load average $(cut -d' ' -f1-3 /proc/loadavg)"
    run_with "$BASELINE" "$BASELINE/db" "${EXTRA[@]}"
    echo "### round $round, this build, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    run "${EXTRA[@]}"
  done
  exit 0
fi
run "${EXTRA[@]}"
echo "$DATASET" > "$DIR/dataset"

if ((PERF)); then
  command -v perf >/dev/null || {
    log "installing linux-perf"
    apt-get install -y -qq linux-perf >/dev/null
  }
  PERF_DIR="$DIR/perf"
  rm -rf "$PERF_DIR" && mkdir -p "$PERF_DIR"
  log "profiling pass (perf record -g on the controlplane; numbers perturbed)"
  run --perf-dir="$PERF_DIR" "${EXTRA[@]}" > "$PERF_DIR/table.md"
  for data in "$PERF_DIR"/*.perf.data; do
    phase="$(basename "$data" .perf.data)"
    pid="$(cat "$PERF_DIR/$phase.pid")"
    report() {
      perf report -i "$data" --pid="$pid" --percentage relative --stdio --no-children -g none \
        "$@" 2>/dev/null | grep -E '^ +[0-9]' | cut -c1-140
    }
    echo
    echo "### perf: phase $phase, controlplane only (system-wide record, --pid $pid)"
    echo '```'
    echo "# by library"
    report --sort dso --percent-limit 1 | head -12
    echo "# by symbol"
    report --sort dso,symbol --percent-limit 0.8 | head -30
    echo '```'
  done
  echo
  echo "Profiling-pass table (perf running; slower than the one above):"
  cat "$PERF_DIR/table.md"
fi
