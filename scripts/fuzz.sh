#!/usr/bin/env bash
# Fuzzes cuvae's file parsers with libFuzzer (docs/FUZZING.md): builds the clang fuzz build and runs each harness.
#
#   scripts/fuzz.sh [PARSER|all] [RUNS]
#
# PARSER: idx | npy | config | checkpoint | import | all (default all, one after the other); RUNS: executions per
# harness (default 1000000). Each harness starts from its checked-in corpus fuzz/corpus/PARSER/ and grows a working
# corpus in $BUILD/corpus/PARSER/ (the checked-in one is never written). A crash, leak, sanitizer report, hang
# (-timeout, 10 s) or allocation over -rss_limit_mb=2048 stops the run and leaves the input in
# $BUILD/artifacts/PARSER/. Environment: CUVAE_FUZZ_BUILD (default build-fuzz), JOBS (build jobs, default 2),
# FUZZ_FLAGS (more libFuzzer flags, e.g. -max_total_time=600).
#
# To minimise a grown corpus back into the checked-in one:
#   build-fuzz/fuzz/fuzz_PARSER -set_cover_merge=1 -use_counters=0 fuzz/corpus/PARSER build-fuzz/corpus/PARSER
set -euo pipefail
cd "$(dirname "$0")/.."

PARSERS=(idx npy config checkpoint import)
which="${1:-all}"
runs="${2:-1000000}"
build="${CUVAE_FUZZ_BUILD:-build-fuzz}"
case "$which" in
  all) ;;
  idx | npy | config | checkpoint | import) PARSERS=("$which") ;;
  *)
    echo "usage: scripts/fuzz.sh [idx|npy|config|checkpoint|import|all] [RUNS]" >&2
    exit 2
    ;;
esac
if ! [[ "$runs" =~ ^[0-9]+$ ]]; then
  echo "error: RUNS must be a number of executions, got '$runs'" >&2
  exit 2
fi
# The project's own dependencies first (scripts/setup.sh installs what is missing and builds), then clang and its
# libFuzzer runtime (Debian: clang, libclang-rt-dev), installed the same way when missing.
scripts/setup.sh >/dev/null
scripts/install_packages.sh fuzz clang libclang-rt-dev

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCUVAE_FUZZ=ON \
    -DCUVAE_CUDA=OFF -DCUVAE_TESTS=OFF -DCUVAE_BENCH=OFF >/dev/null
fi
cmake --build "$build" -j "${JOBS:-2}" --target "${PARSERS[@]/#/fuzz_}"

status=0
for p in "${PARSERS[@]}"; do
  mkdir -p "$build/corpus/$p" "$build/artifacts/$p"
  log="$build/fuzz-$p.log"
  dict=()
  [[ -f "fuzz/dict/$p.dict" ]] && dict=(-dict="fuzz/dict/$p.dict")
  echo "== fuzz_$p: $runs runs (log: $log)"
  start=$(date +%s)
  rc=0
  # shellcheck disable=SC2086
  "$build/fuzz/fuzz_$p" -runs="$runs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$build/artifacts/$p/" "${dict[@]}" ${FUZZ_FLAGS:-} \
    "$build/corpus/$p" "fuzz/corpus/$p" >"$log" 2>&1 || rc=$?
  secs=$(( $(date +%s) - start ))
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  echo "   executions: ${execs:-?}, ${secs} s, exit $rc; $(grep -c . <(ls "$build/corpus/$p")) inputs in the working corpus"
  if [[ $rc -ne 0 ]]; then
    status=1
    grep -E "ERROR|SUMMARY|runtime error|Test unit written" "$log" | head -5 | sed 's/^/   /'
  fi
done
exit $status
