#!/usr/bin/env bash
# The ctest GpuBundle.DryRun (tests/CMakeLists.txt): run.sh --dry-run over BUILD_DIR, then the report's shape.
#   scripts/gpu/dry_run_test.sh BUILD_DIR OUTDIR
# run.sh's exit status is not the verdict: check_report.py is (every stage present and typed, none failed).
set -uo pipefail
[ $# -eq 2 ] || { echo "usage: $0 BUILD_DIR OUTDIR" >&2; exit 2; }
here=$(cd "$(dirname "$0")" && pwd)
"$here/run.sh" --dry-run --build "$1" "$2" > /dev/null 2>&1
echo "run.sh --dry-run exited $? (log: $2/gpu_log.txt)"
grep -E '^(-- |stages: )' "$2/gpu_log.txt"
exec python3 "$here/check_report.py" "$2" --dry-run
