#!/usr/bin/env bash
# Set-up + build + the whole test suite: a Release build, an AddressSanitizer/UBSan build, then the Release build's
# CPU suite under every OpenBLAS kernel family, one thread and the pthread OpenBLAS (scripts/test_matrix.sh).
# Every stage runs and reports even when an earlier one is red; the exit status is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."

declare -a verdicts
failed=0
stage() {  # stage NAME COMMAND...: runs it, records green/RED with its seconds
  local name="$1" start=$SECONDS
  shift
  echo "== $name =="
  if "$@"; then
    verdicts+=("green  $name ($((SECONDS - start)) s)")
  else
    verdicts+=("RED    $name ($((SECONDS - start)) s)")
    failed=1
  fi
}

release_tests() {
  scripts/setup.sh build && ctest --test-dir build --output-on-failure -j2
}
asan_tests() {
  scripts/setup.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DCUVAE_SANITIZE=ON &&
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --test-dir build-asan --output-on-failure -j2
}

stage "tests (Release)" release_tests
stage "tests (AddressSanitizer + UBSan)" asan_tests
if [ -x build/cuvae ]; then
  stage "CPU suite on every OpenBLAS core, 1 thread, pthread build" scripts/test_matrix.sh build
fi

echo "== summary =="
printf '%s\n' "${verdicts[@]}"
exit $failed
