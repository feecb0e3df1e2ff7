#!/usr/bin/env bash
# Builds cuvae for the GPU machine and packs gpu-bundle/ (docs/GPU.md): a Release build with the CUDA backend (SASS
# for sm_80 and sm_90 plus compute_90 PTX, as CMakeLists.txt sets), its programs and test programs, the shared
# libraries they load that neither glibc nor the CUDA toolkit provides (found with ldd), the source tree (configs,
# test data, the PyTorch peer, the docs some tests read), the Fashion-MNIST files, and scripts/gpu/run.sh with its
# report helpers. The GPU machine has the CUDA toolkit and PyTorch but no OpenBLAS, GoogleTest, libpng, cairo, inih,
# cJSON or zlib, and nothing can be installed there.
#   scripts/gpu_bundle.sh [BUILD_DIR]        (default: build-gpu; configured with Ninja when it is new)
# Then on the GPU machine: bash gpu-bundle/run.sh OUTDIR (docs/GPU.md has the device tool's command).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
build=$(realpath -m "${1:-build-gpu}")
out="$repo/gpu-bundle"
data=${CUVAE_DATA_DIR:-/usr/share/datasets/fashion-mnist}
limit_mib=56   # the working tree plus the bundle travel within 64 MiB: keep room for the tree to grow
start=$SECONDS

die() {
  echo "gpu_bundle: error: $*" >&2
  exit 1
}

[ -d /usr/local/cuda/bin ] && export PATH="$PATH:/usr/local/cuda/bin"
command -v nvcc > /dev/null || die "nvcc not found: the bundle needs the CUDA toolkit's compiler"
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -f "$data/$f.gz" ] ||
    die "$data/$f.gz not found: install dataset-fashion-mnist (scripts/setup.sh) or set CUVAE_DATA_DIR"
done

# ---- the build: every program run.sh runs -------------------------------------------------------------------
mkdir -p "$build"
gen=()
[ ! -f "$build/CMakeCache.txt" ] && command -v ninja > /dev/null && gen=(-G Ninja)
cmake -S . -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCUVAE_CUDA=ON \
  > "$build/gpu_bundle.configure.log" 2>&1 || die "cmake failed: $build/gpu_bundle.configure.log"
grep -q '^CUVAE_CUDA:BOOL=ON' "$build/CMakeCache.txt" || die "$build was configured without CUVAE_CUDA"
# cuvae, cuvae-bench, the kernel benchmark, the CPU test programs (tests/test_*) and the native GPU ones (*_gpu);
# the emulated tests are left out: they check nothing a GPU would change.
want='^(cuvae|cuvae-bench|cuvae-kernels-bench-gpu|tests/test_[a-z0-9_]+|tests/[a-z]+/test_[a-z0-9_]+_gpu)$'
if grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$build/CMakeCache.txt"; then
  mapfile -t targets < <(ninja -C "$build" -t targets all |
    sed -n 's/^\([^:[]*\): \(C\|CXX\|CUDA\)_EXECUTABLE_LINKER.*/\1/p' | grep -E "$want" | sort -u)
else
  targets=(all)
fi
echo "gpu_bundle: building ${#targets[@]} programs in $build"
cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" > "$build/gpu_bundle.build.log" 2>&1 ||
  die "the build failed: $(grep -m3 -E 'error|FAILED' "$build/gpu_bundle.build.log" | tr '\n' ' ')" \
    "(log: $build/gpu_bundle.build.log)"
mapfile -t progs < <(cd "$build" && find . -maxdepth 3 -type f -perm -u+x ! -name '*.cmake' |
  sed 's|^\./||' | grep -E "$want" | sort)
[ "${#progs[@]}" -gt 0 ] || die "no program found in $build"
[ -x "$build/cuvae" ] && [ -x "$build/cuvae-bench" ] || die "cuvae or cuvae-bench is missing from $build"

# ---- the staging folder: build/, lib/, lib-sys/, src/, data/, bundle.env -----------------------------------
stage="$build/bundle-stage"
rm -rf "$stage"
mkdir -p "$stage/build" "$stage/lib" "$stage/lib-sys" "$stage/src" "$stage/data/fashion-mnist"
for p in "${progs[@]}"; do
  mkdir -p "$stage/build/$(dirname "$p")"
  cp -p "$build/$p" "$stage/build/$p"
done

# Libraries: what ldd resolves, less glibc and the CUDA toolkit (both on the GPU machine); libstdc++ and libgcc_s
# go to lib-sys/, which run.sh uses only where the machine has none of its own (a newer one must win there).
glibc='^(linux-vdso|ld-linux|libc|libm|libmvec|libdl|libpthread|librt|libresolv|libutil)\.so'
cuda='^lib(cuda|cudart|cublas|cublasLt|curand|cufft|cusparse|cusolver|nvrtc|nvJitLink|nccl|nvToolsExt)\.so'
(cd "$build" && for p in "${progs[@]}"; do ldd "$p"; done) | awk '/=> \// { print $1, $3 }' | sort -u |
  while read -r name path; do
    if [[ $name =~ $glibc || $name =~ $cuda || $path == /usr/local/cuda* ]]; then continue; fi
    case "$name" in
      libstdc++.so.* | libgcc_s.so.*) cp -L "$path" "$stage/lib-sys/$name" ;;
      *) cp -L "$path" "$stage/lib/$name" ;;
    esac
  done
if (cd "$build" && for p in "${progs[@]}"; do ldd "$p"; done) | grep -q 'not found'; then
  die "a program of $build misses a library here already (ldd ... | grep 'not found')"
fi

# The source tree as it is now (tracked and new files): configs, tests/data, bench/*.py, scripts/, docs/.
git ls-files -co --exclude-standard | while read -r f; do [ -f "$f" ] && echo "$f"; done |
  tar -cf - -T - | tar -xf - -C "$stage/src"
# The data uncompressed: xz packs the raw IDX files 4 MB smaller than their .gz; run.sh gzips them again.
for f in "$data"/*-ubyte.gz; do
  gzip -dc "$f" > "$stage/data/fashion-mnist/$(basename "$f" .gz)"
done

{
  echo "# what gpu-bundle/cuvae-gpu.tar.xz holds (scripts/gpu_bundle.sh); run.sh links these paths to it"
  echo "SRC_DIR=$repo"
  echo "BUILD_DIR=$build"
  echo "COMMIT=$(git rev-parse HEAD)"
  echo "UNCOMMITTED_FILES=$(git status --porcelain --untracked-files=no | wc -l)"
  echo "BUILT_UTC=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "NVCC='$(nvcc --version | tail -1)'"
  # nvcc's targets as the build passed them: SASS for each sm_NN in code=[...], PTX for each compute_NN there
  echo "CUDA_CODE='$(grep -rhoE --include=build.ninja --include=flags.make \
    -- '--generate-code=arch=compute_[0-9]+,code=\[[^]]*\]' "$build" | sort -u | sed 's/--generate-code=arch=//' |
    tr '\n' ' ')'"
  echo "PROGRAMS=${#progs[@]}"
} > "$stage/bundle.env"

# ---- pack: one xz stream with a dictionary larger than the input, so the programs' common code packs once ----
rm -rf "$out"
mkdir -p "$out"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner -cf - . |
  xz -T1 --lzma2=preset=9,dict=192MiB > "$out/cuvae-gpu.tar.xz"
cp scripts/gpu/run.sh scripts/gpu/report.py scripts/gpu/check_report.py "$stage/bundle.env" "$out/"
rm -rf "$stage"

bundle=$(du -cb "$out"/* | tail -1 | cut -f1)
tree=$(git ls-files -co --exclude-standard -z | du --files0-from=- -cb 2> /dev/null | tail -1 | cut -f1)
total=$(((bundle + tree) / 1048576))
echo "gpu_bundle: $out: $((bundle / 1024)) KiB ($(sed -n 's/^PROGRAMS=/programs: /p;s/^CUDA_CODE=/nvcc targets: /p' \
  "$out/bundle.env" | tr -d "'" | tr '\n' ' ')); with the working tree $total MiB of 64; $((SECONDS - start)) s"
((total <= limit_mib)) || die "the working tree plus the bundle take $total MiB, over $limit_mib"
