#!/usr/bin/env bash
# Installs the Debian 12 packages the build, the tests and the quick start
# need. Idempotent and silent when everything is present.
set -euo pipefail

PACKAGES=(
  # build
  bazel-bootstrap g++ pkg-config
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler grpc-proto
  libabsl-dev libsqlite3-dev libzstd-dev libiscsi-dev libssl-dev libisofs-dev
  libgtest-dev libgmock-dev googletest libbenchmark-dev
  # tests and quick start: a real iSCSI SAN, guest disks, independent readers
  tgt libiscsi-bin xorriso fdisk e2fsprogs qemu-utils qemu-block-extra openssl
  python3-grpc-tools python3-grpcio
)
# Real guests (QEMU compute driver, tools/make_boot_guest.sh), without the
# recommended GUI and audio stack.
LEAN_PACKAGES=(qemu-system-x86 debootstrap)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
missing=()
for pkg in "${PACKAGES[@]}"; do
  installed "$pkg" || missing+=("$pkg")
done
missing_lean=()
for pkg in "${LEAN_PACKAGES[@]}"; do
  installed "$pkg" || missing_lean+=("$pkg")
done
[[ ${#missing[@]} -eq 0 && ${#missing_lean[@]} -eq 0 ]] && exit 0

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
echo "install-deps: installing ${missing[*]} ${missing_lean[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
if [[ ${#missing[@]} -gt 0 ]]; then
  $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [[ ${#missing_lean[@]} -gt 0 ]]; then
  $SUDO apt-get install -y -qq --no-install-recommends "${missing_lean[@]}" >/dev/null
fi
