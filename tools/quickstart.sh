#!/usr/bin/env bash
# The quick start: a whole image templates stack on this machine, then one
# create and one deploy, checked.
#
#   ./tools/quickstart.sh          start (or reuse) the stack and run the demo
#   ./tools/quickstart.sh stop     stop every process it started (and the VMs)
#   ./tools/quickstart.sh status   show what runs
#
# By default the servers are real virtual machines: the demo server's disk is
# the bootable Debian 12 guest from tools/make_boot_guest.sh, the
# controlplane runs them with --compute-driver=qemu (TCG, no KVM needed), and
# the deployed server boots from its SAN volume; the deploy finishes once its
# console shows the guest's identity line. QUICKSTART_VMS=0 is the fast
# mode: a small disk and the inventory driver, so nothing boots. The mode is
# fixed when .quickstart/ is made (rm -rf it to switch).
#
# Everything lives under ./.quickstart/ (gitignored): binaries, logs, the SAN's
# LUN files, the image store, the controlplane database and the VMs' state. A
# second run reuses all of it: processes still up stay up, stopped ones start
# again on the same ports with the same data, and resources that exist are
# not made twice. Needs Debian 12 and root (tgtd, debootstrap), or sudo.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
QS="$ROOT/.quickstart"
BIN="$QS/bin"
LOGS="$QS/logs"
RUN="$QS/run"
SAN="$QS/san"
DC=local
NODE=san1
START_TIME=$(date +%s)

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
PY=/usr/bin/python3  # Debian's, not a pyenv shim
export PATH="$PATH:/usr/sbin:/sbin"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
ran() { printf '    $ %s\n' "$*"; }
die() { echo "quickstart: $*" >&2; exit 1; }

# jq-like field access without jq: json_get '["a"]["b"]' < file
json_get() { "$PY" -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

alive() {  # alive NAME: the pid in run/NAME.pid is a running NAME-ish process
  local pidfile="$RUN/$1.pid"
  [[ -s "$pidfile" ]] || return 1
  local pid; pid=$(cat "$pidfile")
  [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q "$2"
}

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Ports chosen once and kept: the database names the SAN portal, and the
# environment file names the controlplane.
load_ports() {
  mkdir -p "$QS" "$BIN" "$LOGS" "$RUN" "$SAN" "$QS/state"
  if [[ ! -s "$QS/ports" ]]; then
    local cp=7443 san=3260
    ss -ltn | grep -q "127.0.0.1:$cp \|0.0.0.0:$cp \|\*:$cp " && cp=$(free_port)
    ss -ltn | grep -q ":$san " && san=$(free_port)
    printf 'CP_PORT=%s\nSAN_PORT=%s\nTGT_CONTROL=%s\n' "$cp" "$san" $((20000 + san % 10000)) > "$QS/ports"
  fi
  # shellcheck disable=SC1091
  source "$QS/ports"
  ENDPOINT="127.0.0.1:$CP_PORT"
  # tgtd's control socket path must fit in 108 bytes.
  TGT_IPC="$QS/tgt.ipc"
  if (( ${#TGT_IPC} > 90 )); then TGT_IPC="/tmp/imagetemplates-qs-$(echo "$QS" | md5sum | cut -c1-8).ipc"; fi
  export TGT_IPC_SOCKET="$TGT_IPC"
  # The VMs' state (one directory per server with its QMP socket): the
  # socket path <dir>/<36-char id>/qmp.sock must fit in 107 bytes.
  VMS_DIR="$QS/vms"
  if (( ${#VMS_DIR} > 56 )); then VMS_DIR="/tmp/itq-$(echo "$QS" | md5sum | cut -c1-8)"; fi
  # The mode this state was made in; a state from before the VM mode had
  # none and is the fast mode.
  if [[ -s "$QS/mode" ]]; then SAVED_VMS=$(cat "$QS/mode")
  elif [[ -e "$SAN/source.img" ]]; then SAVED_VMS=0
  else SAVED_VMS=""; fi
}

vm_pids() {  # the live QEMU processes of the quick start's servers
  local f pid
  for f in "$VMS_DIR"/*/qemu.pid; do
    [[ -s "$f" ]] || continue
    pid=$(cat "$f" 2>/dev/null) || continue  # QEMU removes it as it exits
    [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q qemu-system && echo "$pid"
  done
  return 0
}

tgtadm_() { $SUDO env TGT_IPC_SOCKET="$TGT_IPC" tgtadm -C "$TGT_CONTROL" "$@"; }

stop_stack() {
  load_ports
  for name in storaged controlplane; do
    if alive "$name" "$name"; then
      say "stopping $name"
      kill -TERM "$(cat "$RUN/$name.pid")" || true
      for _ in $(seq 50); do alive "$name" "$name" || break; sleep 0.2; done
      alive "$name" "$name" && kill -KILL "$(cat "$RUN/$name.pid")"
    fi
    rm -f "$RUN/$name.pid"
  done
  # The VMs after the controlplane (it would see them stop), before the SAN
  # (their disks). A hard stop: the guests do not shut down cleanly.
  local vms; vms=$(vm_pids)
  if [[ -n "$vms" ]]; then
    say "stopping the VMs (QEMU pids ${vms//$'\n'/ })"
    # shellcheck disable=SC2086
    $SUDO kill -TERM $vms 2>/dev/null || true
    for _ in $(seq 50); do [[ -z "$(vm_pids)" ]] && break; sleep 0.2; done
    vms=$(vm_pids)
    # shellcheck disable=SC2086
    [[ -n "$vms" ]] && $SUDO kill -KILL $vms
  fi
  if alive tgtd tgtd; then
    say "stopping tgtd"
    # tgtd ignores SIGTERM: delete its targets, then the system.
    for tid in $(tgtadm_ --lld iscsi --op show --mode target | awk '/^Target [0-9]+:/ {sub(":","",$2); print $2}'); do
      tgtadm_ --lld iscsi --op delete --mode target --tid "$tid" --force >/dev/null 2>&1 || true
    done
    tgtadm_ --op delete --mode system >/dev/null 2>&1 || true
    for _ in $(seq 50); do alive tgtd tgtd || break; sleep 0.2; done
    alive tgtd tgtd && $SUDO kill -KILL "$(cat "$RUN/tgtd.pid")"
  fi
  rm -f "$RUN/tgtd.pid"
  say "stopped; state kept in $QS (rm -rf it to start from scratch)"
}

status_stack() {
  load_ports
  for p in tgtd:tgtd storaged:storaged controlplane:controlplane; do
    if alive "${p%%:*}" "${p##*:}"; then echo "${p%%:*}: running (pid $(cat "$RUN/${p%%:*}.pid"))"
    else echo "${p%%:*}: stopped"; fi
  done
  local f pid n=0
  for f in "$VMS_DIR"/*/qemu.pid; do
    [[ -s "$f" ]] || continue
    pid=$(cat "$f" 2>/dev/null) || continue; n=$((n + 1))
    if [[ -r /proc/$pid/cmdline ]] && tr '\0' ' ' < "/proc/$pid/cmdline" | grep -q qemu-system; then
      echo "vm $(basename "$(dirname "$f")"): running (QEMU pid $pid)"
    else echo "vm $(basename "$(dirname "$f")"): stopped"; fi
  done
  case "$SAVED_VMS" in
    1) echo "mode: VMs (QEMU servers in $VMS_DIR)" ;;
    0) echo "mode: fast (QUICKSTART_VMS=0, nothing boots)" ;;
  esac
}

case "${1:-start}" in
  stop) stop_stack; exit 0 ;;
  status) status_stack; exit 0 ;;
  start) ;;
  -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
  *) die "unknown command \"$1\"; use start, stop or status" ;;
esac

load_ports
if [[ -n "$SAVED_VMS" ]]; then
  [[ -z "${QUICKSTART_VMS:-}" || "$QUICKSTART_VMS" == "$SAVED_VMS" ]] ||
    die "$QS was made with QUICKSTART_VMS=$SAVED_VMS; to switch: ./tools/quickstart.sh stop && rm -rf $QS"
  VMS=$SAVED_VMS
else
  VMS=${QUICKSTART_VMS:-1}
  [[ "$VMS" == 0 || "$VMS" == 1 ]] || die "QUICKSTART_VMS must be 0 or 1, not \"$VMS\""
fi
echo "$VMS" > "$QS/mode"

# --- 1. dependencies and build -------------------------------------------
say "installing missing Debian packages (./tools/install-deps.sh)"
./tools/install-deps.sh
say "building (bazel build //controlplane //storaged //client:imagectl)"
bazel build --curses=no --color=no //controlplane //storaged //client:imagectl 2>&1 | tail -n 2
# Copies, so a later build (or another configuration) never swaps a binary
# under a running process. From `bazel info`, not the bazel-bin symlink,
# which follows whichever configuration built last (e.g. test.sh --asan).
OPT_BIN="$(bazel info bazel-bin 2>/dev/null)"
for b in controlplane/controlplane storaged/storaged client/imagectl; do
  cp -f "$OPT_BIN/$b" "$BIN/$(basename "$b").new" && mv -f "$BIN/$(basename "$b").new" "$BIN/$(basename "$b")"
done
IMAGECTL="$BIN/imagectl"
GUEST_CACHE=/var/tmp/imagetemplates-guest
if [[ "$VMS" == 1 ]]; then
  say "the bootable Debian 12 guest (./tools/make_boot_guest.sh; cached in $GUEST_CACHE, first time ~10 min)"
  $SUDO ./tools/make_boot_guest.sh "$GUEST_CACHE"
fi

# --- 2. the SAN: tgtd with its own control socket, LUNs on sparse files ---
if alive tgtd tgtd; then
  say "SAN: tgtd already running on 127.0.0.1:$SAN_PORT"
else
  say "SAN: starting tgtd on 127.0.0.1:$SAN_PORT"
  ran "tgtd -f --iscsi portal=127.0.0.1:$SAN_PORT -C $TGT_CONTROL   (TGT_IPC_SOCKET=$TGT_IPC)"
  setsid $SUDO env TGT_IPC_SOCKET="$TGT_IPC" tgtd -f --iscsi "portal=127.0.0.1:$SAN_PORT" \
    -C "$TGT_CONTROL" >>"$LOGS/tgtd.log" 2>&1 < /dev/null &
  echo $! > "$RUN/tgtd.pid"
  for _ in $(seq 100); do tgtadm_ --op show --mode system >/dev/null 2>&1 && break; sleep 0.1; done
  tgtadm_ --op show --mode system >/dev/null 2>&1 || die "tgtd did not start; see $LOGS/tgtd.log"
  # With sudo, $! is sudo's pid: record tgtd's own.
  if [[ -n "$SUDO" ]]; then
    pgrep -f "^tgtd -f --iscsi portal=127.0.0.1:$SAN_PORT" | head -n1 > "$RUN/tgtd.pid" || true
  fi
fi

# The guest disk: a GPT disk with one ext4 partition holding real files.
GUEST="$SAN/source.img"
if [[ ! -s "$GUEST" ]]; then
  if [[ "$VMS" == 1 ]]; then
    say "guest disk: copying the bootable Debian 12 disk from tools/make_boot_guest.sh"
    ran "cp --sparse=always $GUEST_CACHE/disk.img $GUEST"
    cp --sparse=always "$GUEST_CACHE/disk.img" "$GUEST.tmp"
  elif [[ -s /var/tmp/imagetemplates-bench/disk1.img ]]; then
    say "guest disk: copying the cached Debian disk from tools/bench/make_guest_disks.sh"
    ran "cp --sparse=always /var/tmp/imagetemplates-bench/disk1.img $GUEST"
    cp --sparse=always /var/tmp/imagetemplates-bench/disk1.img "$GUEST.tmp"
  else
    say "guest disk: a 512 MiB GPT disk, ext4 partition filled from /usr/share/doc"
    ran "truncate -s 512M; sfdisk (gpt, one partition at 1 MiB); mkfs.ext4 -d /usr/share/doc -E offset=1048576"
    rm -f "$GUEST.tmp"
    truncate -s 512M "$GUEST.tmp"
    printf 'label: gpt\nstart=2048, type=L\n' | sfdisk -q "$GUEST.tmp"
    E2FSPROGS_FAKE_TIME=1767225600 mkfs.ext4 -q -F -L demo-root -d /usr/share/doc \
      -E offset=1048576 "$GUEST.tmp" 510M
  fi
  mv "$GUEST.tmp" "$GUEST"
fi
GUEST_SIZE=$(stat -c %s "$GUEST")

# LUNs: the source disk, two boot volumes and two config drives for deploys
# (one pair for the demo, one for your own first deploy), all in the pool;
# and a spare pair on the SAN only, which the README's operator example adds
# to the pool (2 GiB: at least the guest disk).
LUNS=("source:$GUEST_SIZE" "boot1:$GUEST_SIZE" "cfg1:4194304" "boot2:$GUEST_SIZE" "cfg2:4194304")
SPARE_LUNS=("spare-boot:2147483648" "spare-cfg:4194304")
shown=$(tgtadm_ --lld iscsi --op show --mode target)
tid=0
for entry in "${LUNS[@]}" "${SPARE_LUNS[@]}"; do
  name=${entry%%:*}; size=${entry##*:}; tid=$((tid + 1))
  iqn="iqn.2026-11.quickstart:$name"
  grep -q "$iqn\$" <<<"$shown" && continue
  [[ -e "$SAN/$name.img" ]] || truncate -s "$size" "$SAN/$name.img"
  tgtadm_ --lld iscsi --op new --mode target --tid "$tid" -T "$iqn"
  tgtadm_ --lld iscsi --op new --mode logicalunit --tid "$tid" --lun 1 -b "$SAN/$name.img"
  tgtadm_ --lld iscsi --op update --mode logicalunit --tid "$tid" --lun 1 --params thin_provisioning=1
  for kv in MaxRecvDataSegmentLength=262144 FirstBurstLength=262144 MaxBurstLength=1048576 InitialR2T=No; do
    tgtadm_ --lld iscsi --op update --mode target --tid "$tid" -n "${kv%%=*}" -v "${kv##*=}"
  done
  tgtadm_ --lld iscsi --op bind --mode target --tid "$tid" -I ALL
  ran "tgtadm --op new --mode target --tid $tid -T $iqn   (LUN 1: $SAN/$name.img, thin)"
done

# --- 3. controlplane and storaged ----------------------------------------
mkdir -p "$QS/controlplane" "$QS/store"
# The internal API's shared secret (NodeRegistry, StorageNode): both daemons
# read it from this file; made once, random, readable by its owner only.
TOKEN_FILE="$QS/internal.token"
if [[ ! -s "$TOKEN_FILE" ]]; then
  ran "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n' > $TOKEN_FILE   (mode 0600)"
  (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TOKEN_FILE.tmp" &&
    echo >>"$TOKEN_FILE.tmp" && mv "$TOKEN_FILE.tmp" "$TOKEN_FILE")
fi
# VM mode: every server is a QEMU process booting the guest's kernel from the
# cache with its SAN volumes as disks; power on (the deploy's last step)
# waits for the line the guest prints once cloud-init has finished.
BOOT_MARKER="imagetemplates-identity:"
COMPUTE_FLAGS=()
if [[ "$VMS" == 1 ]]; then
  mkdir -p "$VMS_DIR"
  COMPUTE_FLAGS=(--compute-driver=qemu --qemu-state-dir="$VMS_DIR"
    --qemu-kernel="$GUEST_CACHE/vmlinuz" --qemu-initrd="$GUEST_CACHE/initrd.img"
    --qemu-boot-marker="$BOOT_MARKER" --qemu-boot-timeout=900 --power-off-timeout=120)
fi
if alive controlplane controlplane; then
  say "controlplane already running on $ENDPOINT"
else
  say "starting the controlplane on $ENDPOINT"
  ran "controlplane --listen=$ENDPOINT --db=$QS/controlplane/cp.db --internal-token-file=$TOKEN_FILE ${COMPUTE_FLAGS[*]}"
  setsid "$BIN/controlplane" --listen="$ENDPOINT" --db="$QS/controlplane/cp.db" \
    --internal-token-file="$TOKEN_FILE" "${COMPUTE_FLAGS[@]}" \
    >>"$LOGS/controlplane.log" 2>&1 < /dev/null &
  echo $! > "$RUN/controlplane.pid"
fi
ADMIN_KEY_FILE="$QS/controlplane/cp.db.admin-key"
for _ in $(seq 100); do [[ -s "$ADMIN_KEY_FILE" ]] && break; sleep 0.1; done
[[ -s "$ADMIN_KEY_FILE" ]] || die "the controlplane did not start; see $LOGS/controlplane.log"
ADMIN_KEY=$(head -n1 "$ADMIN_KEY_FILE")
admin() { "$IMAGECTL" --endpoint="$ENDPOINT" --api-key="$ADMIN_KEY" "$@"; }
for _ in $(seq 100); do admin admin datacenter list >/dev/null 2>&1 && break; sleep 0.1; done
admin whoami >/dev/null || die "the controlplane does not answer; see $LOGS/controlplane.log"

say "bootstrapping the operator's inventory (as the operator, key in $ADMIN_KEY_FILE)"
if ! admin admin datacenter list -o json | grep -q "\"name\": \"$DC\""; then
  ran "imagectl admin datacenter create $DC"
  admin admin datacenter create "$DC" --description="quick start" >/dev/null
fi

if alive storaged storaged; then
  say "storaged already running"
else
  say "starting storaged ($NODE) for the SAN at 127.0.0.1:$SAN_PORT"
  ran "storaged --listen=127.0.0.1:0 --store=$QS/store --datacenter=$DC --node-id=$NODE --controlplane=$ENDPOINT --portals=127.0.0.1:$SAN_PORT --internal-token-file=$TOKEN_FILE"
  setsid "$BIN/storaged" --listen=127.0.0.1:0 --store="$QS/store" --datacenter="$DC" \
    --node-id="$NODE" --controlplane="$ENDPOINT" --portals="127.0.0.1:$SAN_PORT" \
    --internal-token-file="$TOKEN_FILE" \
    >>"$LOGS/storaged.log" 2>&1 < /dev/null &
  echo $! > "$RUN/storaged.pid"
fi
for _ in $(seq 100); do
  admin admin storage-node list --state=up -o json | grep -q "\"id\": \"$NODE\"" && break
  sleep 0.2
done
admin admin storage-node list --state=up -o json | grep -q "\"id\": \"$NODE\"" ||
  die "storaged did not register; see $LOGS/storaged.log"

if [[ $(admin admin ip-pool list --datacenter="$DC" -o json | json_get '.get("ipPools",[]).__len__()') == 0 ]]; then
  ran "imagectl admin ip-pool create --datacenter=$DC --subnet=10.20.0.0/24 --gateway=10.20.0.1 --dns=10.20.0.2 --ranges=10.20.0.10-10.20.0.99"
  admin admin ip-pool create --datacenter="$DC" --subnet=10.20.0.0/24 --gateway=10.20.0.1 \
    --dns=10.20.0.2 --ranges=10.20.0.10-10.20.0.99 >/dev/null
fi

volumes=$(admin admin san-volume list -o json)
for entry in "${LUNS[@]}"; do
  name=${entry%%:*}; size=${entry##*:}
  iqn="iqn.2026-11.quickstart:$name"
  grep -q "\"$iqn\"" <<<"$volumes" && continue
  ran "imagectl admin san-volume create --datacenter=$DC --san-host=$NODE --portal=127.0.0.1:$SAN_PORT --iqn=$iqn --size=$size --thin"
  admin admin san-volume create --datacenter="$DC" --san-host="$NODE" \
    --portal="127.0.0.1:$SAN_PORT" --iqn="$iqn" --size="$size" --thin -o json \
    | json_get '["id"]' > "$QS/state/volume-$name.id"
done

# The demo account, its user and key.
if [[ ! -s "$QS/state/demo.key" ]]; then
  ran "imagectl admin account create demo"
  account=$(admin admin account list --name-contains=demo -o json |
            json_get '.get("accounts",[{}])[0].get("id","")')
  [[ -n "$account" ]] || account=$(admin admin account create demo -o json | json_get '["id"]')
  echo "$account" > "$QS/state/account.id"
  ran "imagectl admin user create --account=$account --username=demo --permissions=image_template_manage,public_image_manage,server_view,server_provision,audit_view,user_manage"
  user=$(admin admin user create --account="$account" --username=demo \
    --permissions=image_template_manage,public_image_manage,server_view,server_provision,audit_view,user_manage \
    -o json | json_get '["id"]')
  ran "imagectl admin key create --user=$user --description=quickstart"
  admin admin key create --user="$user" --description=quickstart -o json |
    json_get '["secret"]' > "$QS/state/demo.key.tmp"
  chmod 600 "$QS/state/demo.key.tmp"
  mv "$QS/state/demo.key.tmp" "$QS/state/demo.key"
fi
ACCOUNT=$(cat "$QS/state/account.id")
DEMO_KEY=$(cat "$QS/state/demo.key")
demo() { "$IMAGECTL" --endpoint="$ENDPOINT" --api-key="$DEMO_KEY" "$@"; }

# The source virtual server, whose boot disk is the guest disk.
if [[ ! -s "$QS/state/source.id" ]]; then
  ran "imagectl admin server create --account=$ACCOUNT --hostname=demo-source --boot-volume=<source LUN> ..."
  admin admin server create --account="$ACCOUNT" --hostname=demo-source --domain=example.com \
    --datacenter="$DC" --cpus=2 --memory-mib=2048 --os=DEBIAN_12_64 \
    --boot-volume="$(cat "$QS/state/volume-source.id")" \
    --nic=eth0,02:00:00:00:00:01,10.99.0.5/24 --credential=os:root:quickstart -o json |
    json_get '["id"]' > "$QS/state/source.id"
fi
SOURCE=$(cat "$QS/state/source.id")

# --- 4. create and deploy (as the demo user) -------------------------------
TEMPLATE=""
if [[ -s "$QS/state/template.id" ]] &&
   demo image detail "$(cat "$QS/state/template.id")" -o json 2>/dev/null | grep -q IMAGE_TEMPLATE_STATUS_ACTIVE; then
  TEMPLATE=$(cat "$QS/state/template.id")
  say "image template $TEMPLATE already exists (ACTIVE)"
else
  say "creating an image template from the demo server"
  # A fresh name each time: a failed earlier attempt keeps its name.
  name="demo-golden-$(date +%H%M%S)"
  ran "imagectl image create --server=$SOURCE --name=$name --tags=demo"
  t0=$(date +%s.%N)
  demo image create --server="$SOURCE" --name="$name" --tags=demo -o json > "$QS/state/create.json" ||
    die "image create failed (exit $?); see $QS/state/create.json and $LOGS/"
  t1=$(date +%s.%N)
  TEMPLATE=$(json_get '["imageTemplateId"]' < "$QS/state/create.json")
  echo "$TEMPLATE" > "$QS/state/template.id"
  printf '    captured in %.1f s\n' "$("$PY" -c "print($t1-$t0)")"
fi

SERVER=""
if [[ -s "$QS/state/deployed.id" ]] && demo server detail "$(cat "$QS/state/deployed.id")" >/dev/null 2>&1; then
  SERVER=$(cat "$QS/state/deployed.id")
  say "deployed server $SERVER already exists"
else
  if [[ "$VMS" == 1 ]]; then
    say "deploying a new server from the template; it boots under QEMU (TCG: a few minutes)"
  else
    say "deploying a new server from the template"
  fi
  ran "imagectl image deploy $TEMPLATE --datacenter=$DC --hostnames=demo-web1 --domain=example.com"
  t0=$(date +%s.%N)
  demo image deploy "$TEMPLATE" --datacenter="$DC" --hostnames=demo-web1 --domain=example.com \
    -o json > "$QS/state/deploy.json" || die "image deploy failed (exit $?); see $QS/state/deploy.json and $LOGS/"
  t1=$(date +%s.%N)
  SERVER=$(json_get '["deployedServers"]["serverIds"][0]' < "$QS/state/deploy.json")
  echo "$SERVER" > "$QS/state/deployed.id"
  printf '    deployed in %.1f s\n' "$("$PY" -c "print($t1-$t0)")"
  if [[ "$VMS" == 1 && -e "$VMS_DIR/$SERVER/qemu.pid" ]]; then
    # From QEMU's start (its pid file) to the deploy's end (the boot marker).
    "$PY" -c "import os,sys; print(round($t1-os.stat(sys.argv[1]).st_mtime))" \
      "$VMS_DIR/$SERVER/qemu.pid" > "$QS/state/boot.seconds"
    echo "    of which booting: $(cat "$QS/state/boot.seconds") s from QEMU's start to \"$BOOT_MARKER\" on its console"
  fi
fi

# --- 5. checks ---------------------------------------------------------------
say "checking the new server"
demo server detail "$SERVER" -o json > "$QS/state/server.json"
read -r BOOT_IQN CFG_IQN ADDRESS MAC < <("$PY" - "$QS/state/server.json" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
boot = next(d for d in s["disks"] if d.get("boot"))
cfg = next(d for d in s["disks"] if d.get("configDrive"))
nic = s["configuration"]["networkInterfaces"][0]
print(boot["iscsi"]["iqn"], cfg["iscsi"]["iqn"], nic["ipAddress"], nic["macAddress"])
EOF
)
BOOT_FILE="$SAN/${BOOT_IQN##*:}.img"
CFG_FILE="$SAN/${CFG_IQN##*:}.img"
if [[ "$VMS" == 0 ]]; then
  ran "cmp $GUEST $BOOT_FILE"
  cmp "$GUEST" "$BOOT_FILE" || die "the deployed boot disk differs from the source disk"
  echo "    boot disk: identical to the source disk ($(numfmt --to=iec "$GUEST_SIZE") compared)"
else
  # The booted guest has written to its disk (logs, machine-id, SSH keys):
  # compare the partition table and files the boot leaves alone.
  ran "cmp -n 1MiB $GUEST $BOOT_FILE; debugfs -R 'cat FILE' on both for the kernel, bash, python3, os-release"
  cmp -n 1048576 "$GUEST" "$BOOT_FILE" || die "the deployed disk's partition table differs from the source's"
  # -c: read only what is asked; the guest has the deployed file system
  # mounted, so its bitmaps on the LUN are not consistent.
  fs() { debugfs -c -R "$2" "$1?offset=1048576" 2>/dev/null; }
  kernel=$(fs "$GUEST" 'ls -p /boot' | awk -F/ '$6 ~ /^vmlinuz-/ {print $6; exit}')
  [[ -n "$kernel" ]] || die "no kernel in the source disk's /boot"
  for f in "/boot/$kernel" /usr/bin/bash /usr/bin/python3.11 /usr/lib/os-release /etc/fstab; do
    [[ $(fs "$GUEST" "cat $f" | wc -c) -gt 0 ]] || die "$f is missing on the source disk"
    a=$(fs "$GUEST" "cat $f" | sha256sum | cut -c1-64)
    b=$(fs "$BOOT_FILE" "cat $f" | sha256sum | cut -c1-64)
    [[ "$a" == "$b" ]] || die "$f differs between the source disk and the deployed disk"
  done
  echo "    boot disk: same partition table and same /boot/$kernel, bash, python3.11, os-release, fstab as the source disk"
fi
rm -rf "$QS/check" && mkdir -p "$QS/check"
ran "xorriso -osirrox on -indev $CFG_FILE -extract / $QS/check/cidata"
xorriso -osirrox on -indev "$CFG_FILE" -extract / "$QS/check/cidata" >/dev/null 2>&1 ||
  die "cannot read the config drive $CFG_FILE"
grep -q "${ADDRESS%/*}" "$QS/check/cidata/network-config" && grep -qi "$MAC" "$QS/check/cidata/network-config" ||
  die "the config drive does not hold the server's network configuration"
grep -q "instance-id: $SERVER" "$QS/check/cidata/meta-data" || die "meta-data lacks the instance id"
echo "    config drive: network-config gives $MAC the address $ADDRESS; meta-data names $SERVER"
sed 's/^/      | /' "$QS/check/cidata/network-config"
if [[ "$VMS" == 1 ]]; then
  # What the guest itself says, through GetServerConsole.
  ran "imagectl server console $SERVER --lines=2000"
  demo server console "$SERVER" --lines=2000 > "$QS/check/console.txt" ||
    die "imagectl server console failed"
  identity=$(grep -a "$BOOT_MARKER" "$QS/check/console.txt" | tail -n1 | tr -d '\r')
  grep -q "$BOOT_MARKER hostname=demo-web1 " <<<"$identity" ||
    die "the console's identity line does not name demo-web1: \"$identity\" (see $QS/check/console.txt)"
  addr_line=$(grep -a "ci-info" "$QS/check/console.txt" | grep -aF " ${ADDRESS%/*} " | grep -ai "$MAC" | tail -n1 | tr -d '\r')
  [[ -n "$addr_line" ]] ||
    die "the console does not show ${ADDRESS%/*} on $MAC (cloud-init's ci-info table; see $QS/check/console.txt)"
  echo "    console: the guest booted as demo-web1 with ${ADDRESS%/*} on $MAC:"
  printf '      | %s\n' "$identity" "$addr_line"
  vm_pid=$(cat "$VMS_DIR/$SERVER/qemu.pid" 2>/dev/null || true)
  if [[ -n "$vm_pid" ]] && grep -qx "$vm_pid" <<<"$(vm_pids)"; then
    vm_state="running (QEMU pid $vm_pid)"
  else
    vm_state="not running (stopped by quickstart stop; the console above is from its last boot; there is no power API yet)"
  fi
  echo "    new server: $vm_state"
fi

# --- 6. what next ------------------------------------------------------------
cat > "$QS/env" <<EOF
# source this file: . .quickstart/env
export IMAGECTL_ENDPOINT=$ENDPOINT
export IMAGECTL_API_KEY=$DEMO_KEY
export PATH="$BIN:\$PATH"
EOF
chmod 600 "$QS/env"
elapsed=$(( $(date +%s) - START_TIME ))
vm_note=""
console_hint=""
if [[ "$VMS" == 1 ]]; then
  console_hint="
  imagectl server console $SERVER"
  vm_note="
VMs: QEMU (TCG) per server, state and console logs in $VMS_DIR/<server id>/."
  [[ -s "$QS/state/boot.seconds" ]] &&
    vm_note+=" The new server booted in $(cat "$QS/state/boot.seconds") s (QEMU start to its identity line)."
fi
cat <<EOF

Done in ${elapsed} s. Running: tgtd (127.0.0.1:$SAN_PORT), storaged ($NODE), controlplane ($ENDPOINT).$vm_note
State and logs: $QS  (logs in $LOGS)
  operator key:   $ADMIN_KEY_FILE
  demo user key:  $QS/state/demo.key
  image template: $TEMPLATE
  source server:  $SOURCE
  new server:     $SERVER ($ADDRESS)

Try, as the demo user:
  . .quickstart/env
  imagectl image list
  imagectl image detail $TEMPLATE
  imagectl server list${console_hint}
  imagectl image deploy $TEMPLATE --datacenter=$DC --hostnames=web2 --domain=example.com
  imagectl op list
  imagectl image list -o json
  imagectl --help

As the operator:
  imagectl --api-key=\$(cat $ADMIN_KEY_FILE) admin storage-node list
  imagectl --api-key=\$(cat $ADMIN_KEY_FILE) admin audit list

With grpcurl (optional; not packaged in Debian, see https://github.com/fullstorydev/grpcurl),
through server reflection:
  grpcurl -plaintext $ENDPOINT list
  grpcurl -plaintext -H "authorization: Bearer \$IMAGECTL_API_KEY" $ENDPOINT imagetemplates.v1.ImageTemplateService/ListImageTemplates

Stop everything with: ./tools/quickstart.sh stop
EOF
