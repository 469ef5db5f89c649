#!/usr/bin/env bash
# Installs what is missing, builds everything and runs every test.
#   ./tools/test.sh            the whole suite
#   ./tools/test.sh --asan     the whole suite under AddressSanitizer + UBSan
#   ./tools/test.sh //storaged/...   only these targets
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

log=$(mktemp)
trap 'rm -f "$log"' EXIT
bazel test "${config[@]}" --test_summary=short --curses=no --color=no \
  "${targets[@]}" 2>&1 | tee "$log"
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
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
