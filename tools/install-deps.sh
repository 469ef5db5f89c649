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
  tgt libiscsi-bin xorriso fdisk e2fsprogs qemu-utils qemu-block-extra
  python3-grpc-tools python3-grpcio
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

SUDO=""
[[ $(id -u) -ne 0 ]] && SUDO="sudo"
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >&2
$SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
