#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test.
#   ./tools/test.sh            the whole suite
#   ./tools/test.sh --asan     the whole suite under AddressSanitizer + UBSan
#   ./tools/test.sh //storaged/...   only these targets
#   IMAGETEMPLATES_SKIP_QEMU=1 ./tools/test.sh   without the guest-booting test
# Ends with "N passed, N failed"; exits non-zero if any test failed.
set -uo pipefail
cd "$(dirname "$0")/.."

"./tools/install-deps.sh" || { echo "0 passed, 1 failed (dependency install)"; exit 1; }

config=()
targets=()
for arg in "$@"; do
  case "$arg" in
    --asan) config=(--config=asan) ;;
    *) targets+=("$arg") ;;
  esac
done
[[ ${#targets[@]} -eq 0 ]] && targets=(//...)

# The Debian guest //tests:qemu_e2e_test boots (built once, cached; a few
# minutes the first time). The test fails, naming the script, without it.
# The test looks in the default directory; another one is passed on (only
# then, so test results stay cached across plain `bazel test` runs).
guest_dir="${IMAGETEMPLATES_GUEST_DIR:-/var/tmp/imagetemplates-guest}"
test_env=()
[[ -n "${IMAGETEMPLATES_GUEST_DIR:-}" ]] && test_env=(--test_env="IMAGETEMPLATES_GUEST_DIR=$guest_dir")
wants_guest=0
for t in "${targets[@]}"; do
  case "$t" in //...|//tests/...|//tests:all|//tests:\*|//tests:qemu_e2e_test) wants_guest=1 ;; esac
done
# IMAGETEMPLATES_SKIP_QEMU=1 leaves out the tests that boot guests (tag qemu;
# about 6 minutes of TCG boots on 2 cores).
tag_filters=()
if [[ "${IMAGETEMPLATES_SKIP_QEMU:-0}" == 1 ]]; then
  tag_filters=(--test_tag_filters=-qemu)
  wants_guest=0
fi
if [[ $wants_guest -eq 1 ]]; then
  sudo_=""
  [[ $(id -u) -ne 0 ]] && sudo_="sudo"
  $sudo_ "./tools/make_boot_guest.sh" "$guest_dir" ||
    echo "test.sh: building the guest failed; //tests:qemu_e2e_test will fail" >&2
fi

# Build outputs (~4.5 GiB for both configurations), the guest (~1.7 GiB) and
# the largest tests' LUNs and stores (~3 GiB each, two at a time) share a disk.
free_gib=$(df -P -BG "$HOME" | awk 'NR == 2 { print int($4) }')
echo "test.sh: ${free_gib} GiB free on the disk of $HOME"
if [[ ${free_gib:-0} -lt 12 ]]; then
  echo "test.sh: warning: the suite needs about 12 GiB free; tests may fail with 'No space left on device'" >&2
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test "${config[@]}" "${tag_filters[@]}" "${test_env[@]}" --test_summary=short \
  --curses=no --color=no "${targets[@]}" 2>&1 | tee "$log"
rc=${PIPESTATUS[0]}

passed=$(grep -cE '^//[^ ]+ +(\(cached\) )?PASSED' "$log")
failed=$(grep -cE '^//[^ ]+ +(\(cached\) )?(FAILED|TIMEOUT|NO STATUS|FLAKY|INCOMPLETE|REMOTE FAILURE|FAILED TO BUILD)' "$log")
if [[ $rc -ne 0 && $failed -eq 0 ]]; then
  failed=1  # the build itself failed before any test ran
fi
if [[ $passed -eq 0 && $failed -eq 0 ]]; then
  echo "no tests ran"
  failed=1
fi
if grep -q "No space left on device" "$log"; then
  echo "test.sh: a test ran out of disk space ($(df -P -BG "$HOME" | awk 'NR == 2 { print $4 }') free now)" >&2
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
