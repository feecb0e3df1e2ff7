#!/usr/bin/env bash
# Per-kernel registers, shared memory and spills from ptxas, for sm_80 and sm_90 (docs/KERNELS.md).
#   scripts/ptxas_report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
nvcc="${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}"
printf '| kernel | arch | registers | shared memory | spills (stores/loads) |\n|---|---|---|---|---|\n'
for src in kernels/*.cu; do
  for arch in 80 90; do
    "$nvcc" -std=c++17 -arch=sm_$arch -Xptxas -v -Iinclude -Ikernels -c "$src" -o /dev/null 2>&1 |
      awk -v arch="sm_$arch" '
        /Compiling entry function/ { n = split($0, parts, "'"'"'"); mangled = parts[2] }
        /spill stores/ { match($0, /[0-9]+ bytes spill stores/); st = substr($0, RSTART, RLENGTH);
                         match($0, /[0-9]+ bytes spill loads/); ld = substr($0, RSTART, RLENGTH) }
        /Used [0-9]+ registers/ { match($0, /Used [0-9]+ registers/); reg = substr($0, RSTART + 5, RLENGTH - 15);
                                  smem = "0"; if (match($0, /[0-9]+ bytes smem/)) smem = substr($0, RSTART, RLENGTH - 11);
                                  gsub(/ bytes spill (stores|loads)/, "", st); gsub(/ bytes spill (stores|loads)/, "", ld);
                                  if (mangled != "") printf "| %s | %s | %s | %s B | %s/%s |\n", mangled, arch, reg, smem, st, ld;
                                  mangled = "" }'
  done
done | c++filt | sed -E 's/\(anonymous namespace\):://g; s/\([^|]*\)//; s/^\| [a-z_]+::/| /' 
