#!/usr/bin/env bash
# The ctest GpuBundle.DryRun (tests/CMakeLists.txt): run.sh --dry-run over BUILD_DIR, then the report's shape.
#   scripts/gpu/dry_run_test.sh BUILD_DIR OUTDIR
# run.sh's exit status is not the verdict: check_report.py is (every stage present and typed, none failed), and
# each sanitizer stage must report that compute-sanitizer refused the device: the dry run's compute-sanitizer is
# refusing_sanitizer.sh, which answers as the real tool does on a GPU runtime it does not support.
set -uo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
fake=$(mktemp -d)
trap 'rm -rf "$fake"' EXIT
ln -s "$here/refusing_sanitizer.sh" "$fake/compute-sanitizer"
PATH="$fake:$PATH" "$here/run.sh" --dry-run --build "$1" "$2" > /dev/null 2>&1
echo "run.sh --dry-run exited $? (log: $2/gpu_log.txt)"
grep -E '^(-- |stages: )' "$2/gpu_log.txt"
python3 "$here/check_report.py" "$2" --dry-run || exit 1
refused=$(grep -c -E '^-- sanitizer_[a-z]+: SKIP .*compute-sanitizer [a-z]+ refused the device for all [0-9]+ targets' \
  "$2/gpu_log.txt")
if [ "$refused" != 4 ]; then
  echo "dry_run_test: $refused of the 4 sanitizer stages report the refused device"
  exit 1
fi
