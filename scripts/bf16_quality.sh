#!/usr/bin/env bash
# The bf16 quality check (docs/MATH.md section 8): trains configs/fashion_mnist.ini for its 10 epochs in fp32 and in
# bf16 on the same machine, evaluates each checkpoint in both precisions, and fails when the two runs' test NELBOs
# differ by more than 0.5 nats. About 1-2 minutes on 2 cores; a check to run by hand or before a release, not a test.
#   scripts/bf16_quality.sh [BUILD_DIR] [extra `cuvae train` options, e.g. --device cuda]
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
shift || true
work=$(mktemp -d /tmp/cuvae-bf16-quality.XXXXXX)
trap 'rm -rf "$work"' EXIT
nelbo() { sed -n 's/.*"test_nelbo": \([-0-9.e+]*\).*/\1/p'; }
for p in fp32 bf16; do
  "$build/cuvae" train configs/fashion_mnist.ini --out "$work/$p" --set train.precision="$p" --progress lines "$@" \
    > "$work/$p.json" 2> "$work/$p.log" || { cat "$work/$p.log" >&2; exit 1; }
  echo "trained in $p: test nelbo $(nelbo < "$work/$p.json") ($(grep -o 'GEMMs.*' "$work/$p.log"))"
done
for p in fp32 bf16; do
  for q in fp32 bf16; do
    echo "  the $p run evaluated in $q: $("$build/cuvae" eval "$work/$p" --precision "$q" | nelbo)"
  done
done
a=$(nelbo < "$work/fp32.json")
b=$(nelbo < "$work/bf16.json")
python3 - "$a" "$b" <<'PY'
import sys
a, b = map(float, sys.argv[1:])
d = abs(a - b)
print(f"test nelbo fp32 {a:.6f}, bf16 {b:.6f}: |difference| {d:.4f} nats (target <= 0.5)")
sys.exit(0 if d <= 0.5 else 1)
PY
