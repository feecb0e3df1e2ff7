#!/usr/bin/env bash
# The CPU suite (labels cpu and emu) under every OpenBLAS kernel family, oneDNN held to AVX2, one thread, and
# OpenBLAS's pthread build.
#   scripts/test_matrix.sh [--scalar-math] [--skip-default] [BUILD_DIR]   (default BUILD_DIR: build; built by
#                                                                          scripts/setup.sh if missing)
# The tests' tolerances must hold whichever GEMM kernels, thread count and OpenBLAS build a machine of this
# project's class ends up with; this runs them all on one machine and exits non-zero if any cell is red. The dense
# layers' GEMMs run on oneDNN (OpenBLAS: LAPACK, the emulated cuBLAS); the "oneDNN AVX2" cell runs them on oneDNN's
# AVX2 kernels, as on a CPU without AVX-512, where precision = bf16 is refused and the bf16 tests skip; the "oneDNN
# AVX512-BF16" cell holds it below AMX, so a Sapphire Rapids runs bf16 on the AVX512-BF16 dot products a Zen 4 or a
# Cooper Lake uses (on a CPU without AMX the cap changes nothing): the ctest entries *.Avx512Bf16Kernels already run
# the CPU's bf16 tests so, this cell adds the CUDA backend's bf16 parity and the bf16 CLI tests. A cell's third
# field, when it has one, is the ctest -R regex of the tests it runs: that cell changes only the bf16 GEMMs.
# --scalar-math adds a cell built without libmvec (BUILD_DIR-scalar, -DCUVAE_MVEC=OFF: glibc's scalar expf/log1pf
# in the fused CPU loops), a second build of a few minutes. --skip-default leaves out the cell with no variable set,
# for a caller that has just run the whole suite on the same build as it is (scripts/test.sh's Release stage).
set -uo pipefail
cd "$(dirname "$0")/.."
scalar_math=0
skip_default=0
while [ $# -gt 0 ]; do
  case "$1" in
    --scalar-math) scalar_math=1 ;;
    --skip-default) skip_default=1 ;;
    -*) echo "test_matrix: unknown option $1 (known: --scalar-math, --skip-default)" >&2; exit 2 ;;
    *) break ;;
  esac
  shift
done
build_dir="${1:-build}"
if [ ! -f "$build_dir/CTestTestfile.cmake" ]; then
  scripts/setup.sh "$build_dir" || exit 1
fi

arch_dir="/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo x86_64-linux-gnu)"
cells=()
((skip_default)) || cells+=("default|")
cells+=("Haswell|OPENBLAS_CORETYPE=Haswell"
        "SkylakeX|OPENBLAS_CORETYPE=SkylakeX"
        "Cooperlake|OPENBLAS_CORETYPE=Cooperlake"
        "Zen|OPENBLAS_CORETYPE=Zen"
        "oneDNN AVX2|ONEDNN_MAX_CPU_ISA=AVX2"
        "oneDNN AVX512-BF16|ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16|[Bb]f16"
        "1 thread|OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1")
# The pthread build of OpenBLAS (Debian: libopenblas0-pthread) in place of the OpenMP one the binaries link.
if [ -f "$arch_dir/openblas-pthread/libopenblas.so.0" ]; then
  cells+=("pthread build|LD_LIBRARY_PATH=$arch_dir/openblas-pthread")
else
  echo "test_matrix: OpenBLAS's pthread build is not installed (libopenblas0-pthread); that cell is skipped"
fi

# Tests that read no BLAS result (the source checks, the GPU bundle's dry run) run once, in the Release stage; so do
# the data-parallel tests (Dist: MPI jobs that compare ranks with one process on the same kernels, about a minute).
not_blas='^(Layering|FileOpenings|FunctionLength|GpuBundle|Dist)\.'
declare -a results
failed=0
for cell in "${cells[@]}"; do
  name="${cell%%|*}"
  rest="${cell#*|}"
  vars="${rest%%|*}"
  only=""
  [ "$rest" != "$vars" ] && only="${rest#*|}"
  select=()
  [ -n "$only" ] && select=(-R "$only")
  echo "== CPU suite: $name ${vars:+($vars)}${only:+, tests matching $only} =="
  start=$SECONDS
  # shellcheck disable=SC2086  # vars is a list of NAME=VALUE words
  if env $vars ctest --test-dir "$build_dir" -LE gpu -E "$not_blas" "${select[@]}" -j2 --output-on-failure \
       > "$build_dir/test_matrix.log" 2>&1; then
    verdict="green"
  else
    verdict="RED"
    failed=1
    grep -E "^[[:space:]]+[0-9]+ - " "$build_dir/test_matrix.log" | grep -v "(Skipped)" | head -40
  fi
  # What the test programs got: the kernels OpenBLAS picked (they do not re-execute themselves the way cuvae
  # does on a CPU OpenBLAS does not know), and which OpenBLAS library the loader found.
  core=$(env $vars CUVAE_BLAS_SELECTED=1 OPENBLAS_VERBOSE=2 "$build_dir/cuvae" --version 2>&1 |
         sed -n 's/^Core: //p' | head -1)
  lib=$(env $vars ldd "$build_dir/cuvae" | sed -n 's/^[[:space:]]*libopenblas.so.0 => \([^ ]*\).*/\1/p')
  summary=$(grep -E "tests passed" "$build_dir/test_matrix.log" | tail -1)
  results+=("$(printf '%-14s %-6s core %-11s %4d s  %s  (%s)' "$name" "$verdict" "${core:-?}" \
                $((SECONDS - start)) "$summary" "$lib")")
done

if ((scalar_math)); then
  echo "== CPU suite: glibc's scalar math (no libmvec; $build_dir-scalar) =="
  start=$SECONDS
  if scripts/setup.sh "$build_dir-scalar" -DCUVAE_MVEC=OFF -DCUVAE_BENCH=OFF >/dev/null &&
     ctest --test-dir "$build_dir-scalar" -LE gpu -E "$not_blas" -j2 --output-on-failure > "$build_dir/test_matrix.log" 2>&1; then
    verdict="green"
  else
    verdict="RED"
    failed=1
    grep -E "^[[:space:]]+[0-9]+ - " "$build_dir/test_matrix.log" | grep -v "(Skipped)" | head -40
  fi
  summary=$(grep -E "tests passed" "$build_dir/test_matrix.log" | tail -1)
  results+=("$(printf '%-14s %-6s %-16s %4d s  %s' "scalar math" "$verdict" "(no libmvec)" $((SECONDS - start)) "$summary")")
fi

echo "== test matrix =="
printf '%s\n' "${results[@]}"
exit $failed
