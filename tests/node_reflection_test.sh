#!/usr/bin/env bash
# A dynamic client that knows nothing but server reflection (as grpcurl):
# Node's @grpc/grpc-js with a reflection client from the npm registry,
# installed here, against the real controlplane started here.
set -euo pipefail

fail() { echo "FAIL: $*" >&2; exit 1; }

for tool in node npm; do
  command -v "$tool" >/dev/null ||
    fail "'$tool' is not on PATH: this test needs Node.js (20 or later) and npm"
done
echo "node $(node --version), npm $(npm --version)"

RUNFILES="${TEST_SRCDIR:-$PWD/..}/${TEST_WORKSPACE:-imagetemplates}"
TMP="${TEST_TMPDIR:-$(mktemp -d)}"
NODE_DIR="$TMP/node"

# npm's default cache (~/.npm) makes later runs fast. Bazel's sandbox may
# mount the home directory read-only (bash's -w is always true for root, so
# probe with a real write); then a cache of our own under /tmp, which
# outlives the test, takes its place.
cache="$(npm config get cache 2>/dev/null || true)"
if [[ -z "$cache" ]] || ! mkdir -p "$cache" 2>/dev/null ||
   ! touch "$cache/.write-probe-$$" 2>/dev/null; then
  cache="${TMPDIR:-/tmp}/npm-cache-$(id -u)"
  mkdir -p "$cache"
fi
rm -f "$cache/.write-probe-$$"
export npm_config_cache="$cache"

# Bazel passes tests a minimal environment, without the NODE_EXTRA_CA_CERTS
# of the machine's; npm's own `cafile` setting alone does not make its
# fetches trust a registry behind a TLS-inspecting proxy. Node trusts the
# bundle npm is configured with (or the system's) in addition to its own.
if [[ -z "${NODE_EXTRA_CA_CERTS:-}" ]]; then
  cafile="$(npm config get cafile 2>/dev/null || true)"
  [[ "$cafile" == null || ! -r "$cafile" ]] && cafile=/etc/ssl/certs/ca-certificates.crt
  [[ -r "$cafile" ]] && export NODE_EXTRA_CA_CERTS="$cafile"
fi

start=$SECONDS
# --ignore-scripts: nothing here needs an install script (protobufjs's only
# checks versions of its CLI's dependencies).
npm install --no-audit --no-fund --prefer-offline --ignore-scripts --loglevel=error \
  --prefix "$NODE_DIR" \
  '@grpc/grpc-js@1.14.7' '@grpc/proto-loader@0.8.1' 'grpc-js-reflection-client@1.4.2' ||
  fail "npm install failed (is the npm registry reachable?)"
echo "npm install: $((SECONDS - start)) s (cache $npm_config_cache)"

CP_DIR="$TMP/cp"
mkdir -p "$CP_DIR"
PORT_FILE="$CP_DIR/port"
# The internal API's shared secret: random, 0600.
(umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$CP_DIR/internal.token")
"$RUNFILES/controlplane/controlplane" --listen=127.0.0.1:0 --db="$CP_DIR/cp.db" \
  --internal-token-file="$CP_DIR/internal.token" \
  --port-file="$PORT_FILE" 2>"$CP_DIR/controlplane.log" &
cp_pid=$!
# Never leave the controlplane behind, whatever fails.
trap 'kill -KILL "$cp_pid" 2>/dev/null || true' EXIT

for _ in $(seq 1 200); do
  [[ -s "$PORT_FILE" ]] && break
  kill -0 "$cp_pid" 2>/dev/null || { cat "$CP_DIR/controlplane.log" >&2; fail "controlplane exited early"; }
  sleep 0.1
done
[[ -s "$PORT_FILE" ]] || fail "controlplane did not write its port file within 20 s"
[[ -s "$CP_DIR/cp.db.admin-key" ]] || fail "no admin key at $CP_DIR/cp.db.admin-key"

client_rc=0
NODE_PATH="$NODE_DIR/node_modules" node "$RUNFILES/tests/node_reflection_client.js" \
  "$PORT_FILE" "$CP_DIR/cp.db.admin-key" || client_rc=$?

kill -TERM "$cp_pid"
cp_rc=0
wait "$cp_pid" || cp_rc=$?
trap - EXIT
if [[ $client_rc -ne 0 || $cp_rc -ne 0 ]]; then
  echo "--- controlplane log" >&2
  cat "$CP_DIR/controlplane.log" >&2
fi
[[ $client_rc -eq 0 ]] || fail "the reflection client failed (exit $client_rc)"
[[ $cp_rc -eq 0 ]] || fail "controlplane exited $cp_rc on SIGTERM, not 0"
echo "ok - controlplane exited 0 on SIGTERM"
echo "PASS ($((SECONDS - start)) s)"
