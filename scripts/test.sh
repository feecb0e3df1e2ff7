#!/usr/bin/env bash
# Set-up + build + the whole test suite: a Release build, an AddressSanitizer/UBSan build, then the Release build's
# CPU suite under every other OpenBLAS kernel family, one thread and the pthread OpenBLAS (scripts/test_matrix.sh;
# its default cell would repeat the Release stage).
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

# The emulated CUDA kernels compiled with FMA contraction, as nvcc compiles them (docs/CUDA_EMULATION.md, "The FMA
# build"): only the emulation's programs are built, then every test of the label emu runs.
fma_tests() {
  cmake -S . -B build-fma -DCMAKE_BUILD_TYPE=Release -DCUVAE_EMU_FMA=ON -DCUVAE_CUDA=OFF -DCUVAE_BENCH=OFF \
    >/dev/null &&
    cmake --build build-fma -j"$(nproc)" --target cuvae-emu-tests >/dev/null &&
    ctest --test-dir build-fma -L emu --output-on-failure -j2
}

stage "tests (Release)" release_tests
stage "tests (AddressSanitizer + UBSan)" asan_tests
if grep -qw fma /proc/cpuinfo || [ "$(uname -m)" = aarch64 ]; then
  stage "emulated CUDA with FMA contraction" fma_tests
else
  verdicts+=("skip   emulated CUDA with FMA contraction (this CPU has no FMA instructions)")
fi
# The Release build's emulated CUDA tests (label emu) under the emulation's deferred mode (stream work runs only
# when the host synchronises: a missing synchronisation shows as stale data) and under its schedule mode with two
# seeds (warps in a seeded random order between barriers, lanes interleaved, shared memory poisoned: a missing
# barrier shows as a wrong result); docs/CUDA_EMULATION.md. About 55 s per run on 2 cores.
emu_async_tests() { CUDA_EMU_ASYNC=1 ctest --test-dir build -L emu --output-on-failure -j2; }
emu_shuffle_tests() {
  local seed rc=0
  for seed in 1 2; do
    CUDA_EMU_SCHEDULE=shuffle:$seed ctest --test-dir build -L emu --output-on-failure -j2 || rc=1
  done
  return $rc
}
stage "emulated CUDA, deferred streams (CUDA_EMU_ASYNC=1)" emu_async_tests
stage "emulated CUDA, shuffled schedules (CUDA_EMU_SCHEDULE=shuffle:1 and :2)" emu_shuffle_tests
if [ -x build/cuvae ]; then
  stage "CPU suite on every OpenBLAS core, 1 thread, pthread build" scripts/test_matrix.sh --skip-default build
fi

echo "== summary =="
printf '%s\n' "${verdicts[@]}"
exit $failed
