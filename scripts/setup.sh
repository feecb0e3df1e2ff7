#!/usr/bin/env bash
# Installs what cuvae needs on a fresh Debian 12 machine (only what is missing) and builds it.
#   scripts/setup.sh [BUILD_DIR] [extra cmake args...]      (default BUILD_DIR: build)
set -euo pipefail
cd "$(dirname "$0")/.."

# liblapacke-dev only for <lapack.h>'s prototypes: LAPACK itself is the one bundled in OpenBLAS (src/core/linalg.h).
packages=(build-essential cmake pkg-config python3 libopenblas-dev libopenblas-openmp-dev libinih-dev libcjson-dev zlib1g-dev libgtest-dev googletest libboost-context-dev
          libbenchmark-dev
          libpng-dev libcairo2-dev liblapacke-dev libdnnl-dev
          libopenmpi-dev openmpi-bin
          dataset-fashion-mnist)
scripts/install_packages.sh setup "${packages[@]}"

# cuRAND (its host Philox generator draws the noise) comes with the CUDA toolkit.
if [ -d /usr/local/cuda/bin ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
if ! ls /usr/local/cuda/lib64/libcurand.so* >/dev/null 2>&1 && ! ldconfig -p | grep -q libcurand; then
  echo "setup: error: the CUDA toolkit (for cuRAND) was not found; install it (nvcc, libcurand) first" >&2
  exit 1
fi

build_dir="${1:-build}"
shift || true
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$build_dir" -j"$(nproc)"
