#!/usr/bin/env bash
# Installs what the PyTorch comparison (bench/compare_torch.py, bench/torch_vae.py) needs on Debian 12, only what
# is missing, then checks that Debian's torch imports with the OpenMP build of OpenBLAS first on the library path.
#   scripts/setup_bench.sh
# python3-torch: Debian's CPU PyTorch, for /usr/bin/python3. libopenblas0-openmp: OpenBLAS threaded with OpenMP,
# the same runtime (libgomp) torch's own threads use; the default pthread build keeps a second pool of spinning
# threads that fights torch's for the cores. It is only put on the torch side's LD_LIBRARY_PATH: the system's
# libblas.so.3 alternative (and so cuvae) is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(python3-torch libopenblas0-openmp dataset-fashion-mnist)
scripts/install_packages.sh setup_bench "${packages[@]}"

# The directory that holds the OpenMP build's libblas.so.3, from the package's own file list.
blas_lib=$(dpkg -L libopenblas0-openmp | grep -E '/openblas-openmp/libblas\.so\.3$' | head -n1 || true)
if [ -z "$blas_lib" ] || [ ! -f "$blas_lib" ]; then
  echo "setup_bench: error: libopenblas0-openmp is installed but ships no openblas-openmp/libblas.so.3" >&2
  exit 1
fi
blas_dir=$(dirname "$blas_lib")

# torch must import with that directory first, and must then really map its libblas.so.3.
if ! mapped=$(LD_LIBRARY_PATH="$blas_dir" OMP_NUM_THREADS=1 /usr/bin/python3 -c '
import torch
torch.ones(4, 4) @ torch.ones(4, 4)
libs = {l.split()[-1] for l in open("/proc/self/maps") if "blas" in l.split()[-1]}
print(" ".join(sorted(libs)))' 2>&1); then
  echo "setup_bench: error: torch does not import with LD_LIBRARY_PATH=$blas_dir:" >&2
  echo "$mapped" >&2
  exit 1
fi
case " $mapped " in
  *" $blas_dir/"*) ;;
  *) echo "setup_bench: error: torch did not load the BLAS from $blas_dir (mapped: $mapped)" >&2; exit 1 ;;
esac
echo "setup_bench: ok: torch $(/usr/bin/python3 -c 'import torch; print(torch.__version__)') with the BLAS in $blas_dir"
echo "setup_bench: compare with: /usr/bin/python3 bench/compare_torch.py --torch-blas-dir $blas_dir"
