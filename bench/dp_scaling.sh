#!/usr/bin/env bash
# Data-parallel scaling on one machine: for configs B and C, one process with 2 threads against `mpirun -np 2` with
# one thread per rank (each rank bound to its own core), back to back in one run, and the table of step times, the
# throughput ratio and the gradient all-reduce (docs/PERFORMANCE.md, section "Data parallel").
#
# usage: bench/dp_scaling.sh [BUILD_DIR] [--steps N] [--warmup W] [--repeat R] [--configs "B C"] [--json FILE]
#                            [--mpi-args "ARGS"]
#   BUILD_DIR  where cuvae-bench-dp is (default build); built with MPI (CUVAE_MPI=ON)
#   --repeat   rounds of the whole comparison (default 2: the machine may be shared, so every figure is shown twice)
#   --mpi-args more mpirun arguments for the 2-rank runs, e.g. "--mca coll_libnbc_iallreduce_algorithm 1"
# Each round per config runs: 1 process x 2 threads; 2 ranks x 1 thread (the gradient summed, as cuvae train);
# 2 ranks x 1 thread with --no-allreduce (the ranks' compute alone, under the same load). Rows of every run go to
# --json FILE (one JSON line each) when given.
set -euo pipefail

build=build steps=20 warmup=3 repeat=2 configs="B C" json="" mpi_args=""
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps=${2:?--steps needs a value}; shift 2 ;;
    --warmup) warmup=${2:?--warmup needs a value}; shift 2 ;;
    --repeat) repeat=${2:?--repeat needs a value}; shift 2 ;;
    --configs) configs=${2:?--configs needs a value}; shift 2 ;;
    --json) json=${2:?--json needs a value}; shift 2 ;;
    --mpi-args) mpi_args=${2?--mpi-args needs a value}; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "dp_scaling.sh: error: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) build=$1; shift ;;
  esac
done
for v in "$steps" "$warmup" "$repeat"; do
  case "$v" in ''|*[!0-9]*) echo "dp_scaling.sh: error: '$v' is not a whole number" >&2; exit 2 ;; esac
done
bin=$build/cuvae-bench-dp
[ -x "$bin" ] || { echo "dp_scaling.sh: error: $bin not found (configure with CUVAE_MPI=ON and build the target" \
                        "cuvae-bench-dp)" >&2; exit 1; }
command -v mpirun >/dev/null || { echo "dp_scaling.sh: error: mpirun not found (openmpi-bin)" >&2; exit 1; }
[ "$(id -u)" = 0 ] && export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# One core per rank; the bindings are printed once (the first 2-rank run) to show it.
mpi=(mpirun -np 2 --bind-to core --map-by core)
read -r -a extra <<<"$mpi_args"
mpi+=("${extra[@]}")

out=$(mktemp) err=$(mktemp)
trap 'rm -f "$out" "$err"' EXIT
# One run: its JSON line, tagged with the round, appended to $out; a run that printed none shows its stderr.
run_one() {
  local round=$1; shift
  if "$@" >"$err.json" 2>"$err" && grep -q '^{' "$err.json"; then
    sed "s/^{/{\"round\": $round, /" "$err.json" >>"$out"
    grep -i 'bound to' "$err" >&2 || true
  else
    echo "dp_scaling.sh: run failed: $*" >&2
    cat "$err" >&2
  fi
  rm -f "$err.json"
}
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores;" \
     "Open MPI $(mpirun --version 2>/dev/null | head -1 | awk '{print $NF}'); $steps steps after $warmup warm-up steps;" \
     "2 ranks: ${mpi[*]}"
bindings=--report-bindings
for round in $(seq 1 "$repeat"); do
  for c in $configs; do
    cfg=configs/bench/$c.ini
    echo "round $round, $c: 1 process x 2 threads; 2 ranks x 1 thread; 2 ranks x 1 thread, no all-reduce" >&2
    run_one "$round" "$bin" "$cfg" --threads 2 --steps "$steps" --warmup "$warmup"
    run_one "$round" "${mpi[@]}" $bindings "$bin" "$cfg" --threads 1 --steps "$steps" --warmup "$warmup"
    bindings=""
    run_one "$round" "${mpi[@]}" "$bin" "$cfg" --threads 1 --steps "$steps" --warmup "$warmup" --no-allreduce
  done
done
[ -n "$json" ] && cp "$out" "$json"

python3 - "$out" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
def ms(x): return "-" if x is None else "%.1f" % (1e3 * x)
print()
print("| config | round | 1 proc x 2 thr step ms | 2 ranks x 1 thr step ms | ratio | all-reduce alone ms "
      "| bucketed alone ms | wait ms | hidden | in grad_ready + wait ms | buckets | min step ms 1p / 2r (ratio) | 2 ranks, no sum, step ms | optimizer ms 1 proc / 2 ranks "
      "| busy (others) 1p / 2r |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for (rnd, cfg) in sorted({(r["round"], r["config"]) for r in rows}, key=lambda k: (k[1], k[0])):
    sel = [r for r in rows if r["round"] == rnd and r["config"] == cfg]
    one = next((r for r in sel if r["ranks"] == 1), None)
    dp = next((r for r in sel if r["ranks"] > 1 and r["allreduce"] == "overlapped"), None)
    ind = next((r for r in sel if r["ranks"] > 1 and r["allreduce"] != "overlapped"), None)
    if not (one and dp and ind):
        print("| %s | %d | (a run failed; its message is above) |" % (cfg, rnd))
        continue
    ratio = dp["samples_per_s"] / one["samples_per_s"]
    print("| %s | %d | %s | %s | %.2f | %s | %s | %s | %.2f | %s | %.0f | %s / %s (%.2f) | %s | %s / %s | %.0f%% / %.0f%% |" % (
        cfg, rnd, ms(one["step_median_s"]), ms(dp["step_median_s"]), ratio, ms(dp["allreduce_standalone_s"]),
        ms(dp["allreduce_bucketed_s"]), ms(dp["wait_s"]), dp["hidden_fraction"],
        ms(dp["in_grad_ready_s"] + dp["wait_s"]), dp["buckets_per_step"], ms(one["step_min_s"]),
        ms(dp["step_min_s"]), one["step_min_s"] / dp["step_min_s"],
        ms(ind["step_median_s"]), ms(one["optimizer_s"]), ms(dp["optimizer_s"]), 100 * one["background"],
        100 * dp["background"]))
print()
print("Where the 2-rank step goes (means, ms per step, slowest rank): inside grad_ready during the backward (starting")
print("buckets, MPI_Testall: Open MPI moves the data there), wait in grad_finish, the loss sum, after the sums")
print("(gradient norm + Adam), and the rest (gather, noise, forward, backward).")
print("| config | round | step (mean) | in grad_ready | wait | loss sum | after sums | rest |")
print("|---|---|---|---|---|---|---|---|")
for r in sorted((r for r in rows if r["allreduce"] == "overlapped"), key=lambda r: (r["config"], r["round"])):
    rest = r["step_mean_s"] - r["in_grad_ready_s"] - r["wait_s"] - r["loss_sum_s"] - r["after_sums_s"]
    print("| %s | %d | %s | %s | %s | %s | %s | %s |" % (r["config"], r["round"], ms(r["step_mean_s"]),
          ms(r["in_grad_ready_s"]), ms(r["wait_s"]), ms(r["loss_sum_s"]), ms(r["after_sums_s"]), ms(rest)))
print()
print("ratio = 2-rank samples/s over 1-process samples/s (target at C: >= 0.85); hidden = 1 - wait / all-reduce alone;")
print("Open MPI moves a non-blocking sum's data inside MPI calls (no progress thread), so on the CPU the time inside")
print("grad_ready is the all-reduce's work too, done by the core that computes: in grad_ready + wait is what it cost.")
print("min step: the fastest timed step, the one other processes disturbed least (their ratio is the same ratio).")
print("busy = the share of the CPUs other processes used during the timed steps (the machine may be shared).")
EOF
