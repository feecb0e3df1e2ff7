#!/usr/bin/env bash
# A stand-in for compute-sanitizer in the GPU check's dry run (scripts/gpu/dry_run_test.sh): it answers as the real
# tool does where it does not support the machine's GPU runtime (seen on gVisor machines), so that the dry run goes
# through the sanitizer stages' jobs and the report's path for a refused device.
#   refusing_sanitizer.sh [--tool T] [--log-file F] [--OPTION VALUE]... PROGRAM [ARGS...]
log=""
while [ $# -gt 0 ]; do
  case "$1" in
    --version) echo "refusing_sanitizer.sh: the dry run's stand-in for compute-sanitizer"; exit 0 ;;
    --log-file) log=$2; shift 2 ;;
    --*) shift 2 ;;  # --tool, --error-exitcode, --print-limit: each takes a value
    *) break ;;
  esac
done
msg="========= Error: Device not supported (refusing_sanitizer.sh, standing in for compute-sanitizer; $1 not run)"
if [ -n "$log" ]; then echo "$msg" > "$log"; else echo "$msg"; fi
exit 255
