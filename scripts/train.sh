#!/usr/bin/env bash
# Set-up + build + the main job: train configs/fashion_mnist.ini (CPU; the GPU once the CUDA backend exists).
#   scripts/train.sh [extra `cuvae train` options, e.g. --out runs/fmnist]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh build
exec build/cuvae train configs/fashion_mnist.ini --device auto "$@"
