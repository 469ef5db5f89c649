#!/usr/bin/env bash
# Builds a bootable Debian 12 guest for the QEMU compute driver and caches it
# in a directory (first argument, default /var/tmp/imagetemplates-guest):
#
#   disk.img     2 GiB GPT disk, one ext4 partition (start 1 MiB, the guest's
#                /dev/vda1) holding Debian bookworm (debootstrap minbase plus
#                a kernel, systemd, udev, dbus, ifupdown, net-tools,
#                openssh-server and
#                cloud-init with only the NoCloud datasource).
#   vmlinuz      the guest's kernel and initrd, for QEMU's direct kernel boot
#   initrd.img   (controlplane --qemu-kernel / --qemu-initrd).
#
# Identity: the image has an empty /etc/machine-id (systemd writes one on the
# first boot) and no SSH host keys. On the first boot of every instance (a new
# instance-id on the config drive, so every deployed server) cloud-init makes
# new SSH host keys and a per-instance script writes a new machine-id. A unit
# prints "imagetemplates-identity: hostname=... machine-id=... ssh-host-key=...
# last-shutdown=..." on the serial console once cloud-init has finished;
# last-shutdown is the time (epoch seconds) another unit writes to
# /var/lib/imagetemplates-shutdown as the guest shuts down cleanly, so a
# server deployed from a capture shows that its disk was read after the
# source's shutdown.
#
# Idempotent: a finished cache is reused (delete the directory to rebuild).
# Needs root and the Debian archive; installs debootstrap, fdisk and e2fsprogs
# if missing. About 1 GB of files; takes a few minutes.
set -euo pipefail

CACHE="${1:-/var/tmp/imagetemplates-guest}"
DISK_SIZE=2G
PART_SIZE=2046M                 # 2 GiB minus the 1 MiB before and after
PART_OFFSET=1048576
# dbus: without it systemd-logind does not run and the guest ignores the ACPI
# power button (QMP system_powerdown), so every power off would be forced.
# net-tools: cloud-init renders the network-config's routes for ifupdown as
# "route add" commands.
INCLUDE=linux-image-amd64,systemd-sysv,udev,dbus,net-tools,cloud-init,ifupdown,iproute2,kmod,python3-cffi-backend,openssh-server

log() { echo "make_boot_guest: $*" >&2; }

if [[ -f "$CACHE/guest.done" && -s "$CACHE/disk.img" && -s "$CACHE/vmlinuz" && -s "$CACHE/initrd.img" ]]; then
  log "reusing $CACHE (disk.img, vmlinuz, initrd.img)"
  exit 0
fi
[[ $(id -u) -eq 0 ]] || { log "needs root (debootstrap, chroot)"; exit 1; }
mkdir -p "$CACHE"
start=$(date +%s)

need_pkgs=()
command -v debootstrap >/dev/null || [[ -x /usr/sbin/debootstrap ]] || need_pkgs+=(debootstrap)
command -v sfdisk >/dev/null || [[ -x /usr/sbin/sfdisk ]] || need_pkgs+=(fdisk)
command -v mkfs.ext4 >/dev/null || [[ -x /usr/sbin/mkfs.ext4 ]] || need_pkgs+=(e2fsprogs)
if ((${#need_pkgs[@]})); then
  log "installing ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:/sbin"

ROOT="$CACHE/rootfs"
unmount_all() {
  for m in proc sys dev/pts dev; do umount "$1/$m" 2>/dev/null || true; done
}

# --- the root tree --------------------------------------------------------
# The cached tree is reused only if it was made with the same package list.
if [[ "$(cat "$CACHE/rootfs.done" 2>/dev/null)" != "$INCLUDE" ]]; then
  rm -rf "$ROOT" "$ROOT.tmp"
  mirror=""
  if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
    mirror="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources)"
  elif [[ -r /etc/apt/sources.list ]]; then
    mirror="$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)"
  fi
  mirror="${mirror:-http://deb.debian.org/debian}"
  log "debootstrap --variant=minbase bookworm from $mirror with $INCLUDE (a few minutes)"
  if ! debootstrap --variant=minbase --include="$INCLUDE" bookworm "$ROOT.tmp" "$mirror" \
      >"$CACHE/debootstrap.log" 2>&1; then
    unmount_all "$ROOT.tmp"
    log "debootstrap failed; last lines of $CACHE/debootstrap.log:"
    tail -n 20 "$CACHE/debootstrap.log" >&2
    exit 1
  fi
  unmount_all "$ROOT.tmp"
  rm -rf "$ROOT.tmp/var/cache/apt/archives/"*.deb
  mv "$ROOT.tmp" "$ROOT"
  echo "$INCLUDE" >"$CACHE/rootfs.done"
fi

# --- configuration (cheap; redone on every build of the disk) ---------------
R="$ROOT"
echo "/dev/vda1 / ext4 defaults,errors=remount-ro 0 1" >"$R/etc/fstab"
echo "debian" >"$R/etc/hostname"
# Empty, not absent: systemd treats the boot as a first boot and writes a new id.
: >"$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id" "$R/var/lib/systemd/random-seed"
# Host keys come from cloud-init per instance (ssh_deletekeys/ssh_genkeytypes).
rm -f "$R"/etc/ssh/ssh_host_*
# Only the config drive: probing the other datasources costs minutes under TCG.
mkdir -p "$R/etc/cloud/cloud.cfg.d"
cat >"$R/etc/cloud/cloud.cfg.d/90-imagetemplates.cfg" <<'EOF'
# Written by tools/make_boot_guest.sh: deployed servers get a NoCloud seed
# (the config drive, volume label cidata).
datasource_list: [NoCloud, None]
ssh_deletekeys: true
ssh_genkeytypes: [rsa, ecdsa, ed25519]
EOF
rm -rf "$R/var/lib/cloud/"*
# The console shows who booted. Wanted by cloud-final (not a target, so no
# ordering cycle) and ordered after it, when hostname and keys are final.
cat >"$R/usr/local/sbin/imagetemplates-identity" <<'EOF'
#!/bin/sh
key=$(ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub 2>/dev/null | cut -d" " -f2)
last=$(cat /var/lib/imagetemplates-shutdown 2>/dev/null)
echo "imagetemplates-identity: hostname=$(hostname) machine-id=$(cat /etc/machine-id) ssh-host-key=${key:-none} last-shutdown=${last:-none}" >/dev/ttyS0
EOF
chmod 755 "$R/usr/local/sbin/imagetemplates-identity"
cat >"$R/etc/systemd/system/imagetemplates-identity.service" <<'EOF'
[Unit]
Description=Print this server's identity on the serial console
After=cloud-final.service

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/imagetemplates-identity
EOF
mkdir -p "$R/etc/systemd/system/cloud-final.service.wants"
ln -sf ../imagetemplates-identity.service \
  "$R/etc/systemd/system/cloud-final.service.wants/imagetemplates-identity.service"
rm -f "$R/var/lib/imagetemplates-shutdown"
cat >"$R/etc/systemd/system/imagetemplates-shutdown.service" <<'EOF'
[Unit]
Description=Record a clean shutdown on the root disk
After=local-fs.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'date +%%s.%%N >/var/lib/imagetemplates-shutdown; sync'

[Install]
WantedBy=multi-user.target
EOF
ln -sf ../imagetemplates-shutdown.service \
  "$R/etc/systemd/system/multi-user.target.wants/imagetemplates-shutdown.service"
# cloud-init runs per-instance scripts once per instance-id: a deployed server
# gets its own machine-id (cloud-init already regenerates the SSH host keys).
mkdir -p "$R/var/lib/cloud/scripts/per-instance"
cat >"$R/var/lib/cloud/scripts/per-instance/10-machine-id" <<'EOF'
#!/bin/sh
rm -f /etc/machine-id /var/lib/dbus/machine-id
systemd-machine-id-setup >/dev/null 2>&1 || dbus-uuidgen >/etc/machine-id
echo "imagetemplates: new instance, machine-id $(cat /etc/machine-id)" >/dev/ttyS0
EOF
chmod 755 "$R/var/lib/cloud/scripts/per-instance/10-machine-id"
# No root password; the console stays a log. Quiet timers that only cost CPU.
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer; do
  ln -sf /dev/null "$R/etc/systemd/system/$t"
done

kernel=$(ls "$R"/boot/vmlinuz-* | sort -V | tail -n 1)
initrd=$(ls "$R"/boot/initrd.img-* | sort -V | tail -n 1)
[[ -s "$kernel" && -s "$initrd" ]] || { log "no kernel or initrd in $R/boot"; exit 1; }

# --- the disk -------------------------------------------------------------
log "making disk.img"
rm -f "$CACHE/disk.img.tmp"
truncate -s "$DISK_SIZE" "$CACHE/disk.img.tmp"
printf 'label: gpt\nstart=2048, type=L\n' | sfdisk -q "$CACHE/disk.img.tmp"
mkfs.ext4 -q -F -L root -E "offset=$PART_OFFSET" -d "$ROOT" "$CACHE/disk.img.tmp" "$PART_SIZE"
cp "$kernel" "$CACHE/vmlinuz.tmp"
cp "$initrd" "$CACHE/initrd.img.tmp"
mv "$CACHE/vmlinuz.tmp" "$CACHE/vmlinuz"
mv "$CACHE/initrd.img.tmp" "$CACHE/initrd.img"
mv "$CACHE/disk.img.tmp" "$CACHE/disk.img"
touch "$CACHE/guest.done"
log "ready in $CACHE after $(($(date +%s) - start)) s: disk.img ($(du -h "$CACHE/disk.img" | cut -f1) used)," \
    "vmlinuz $(basename "$kernel"), initrd.img $(basename "$initrd")"
