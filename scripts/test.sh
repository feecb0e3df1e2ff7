#!/usr/bin/env bash
# Set-up + build + the whole test suite, twice: a Release build, then an AddressSanitizer/UBSan build.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
echo "== tests (Release) =="
ctest --test-dir build --output-on-failure -j2
scripts/setup.sh build-asan -DCMAKE_BUILD_TYPE=Debug -DCUVAE_SANITIZE=ON
echo "== tests (AddressSanitizer + UBSan) =="
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan --output-on-failure -j2
