#!/usr/bin/python3
"""cuvae against its PyTorch peer, config by config, on the same machine, threads and step counts.

    /usr/bin/python3 bench/compare_torch.py [--configs A,B,C] [--rounds 3] [--threads 2] [--steps 50]
                                            [--warmup 10] [--device cpu|cuda] [--precision fp32|tf32|bf16]
                                            [--json OUT.json]
                                            [--cuvae-bench build/cuvae-bench] [--print-commands]

Each round runs, for every config, build/cuvae-bench and then bench/torch_vae.py back to back (cuvae, torch,
cuvae, torch, ...), so that slow drifts of the machine (other load, thermal or host noise) hit both sides alike.
Per config it prints the median over the rounds of each side's samples/s, and the median of the per-round
ratios cuvae/torch (each ratio from two adjacent runs), with the BLAS each side reported.

--device cuda runs both sides on the GPU. --precision P (default fp32) gives both sides a copy of each config with
[train] precision = P: tf32 (TF32 tensor-core GEMMs in cuvae's cuBLAS calls and in torch's matmuls; the CPU ignores
it; --tf32 is the same as --precision tf32), bf16 (cuvae: bf16 GEMM operands with fp32 accumulation, docs/MATH.md
section 8, on the CPU oneDNN's bf16 matmul; torch: its forward pass under torch.autocast(<device>, bfloat16), see
bench/torch_vae.py). With fp32 the configs run as they are. --print-commands prints the commands of one round and
exits without running them.

Environment: the PyTorch side runs with LD_LIBRARY_PATH=<--torch-blas-dir> (default Debian's OpenMP build of
OpenBLAS; torch's own OpenMP threads and the pthread build's spinning threads fight over the cores) and
OMP_NUM_THREADS=<threads>; bench/torch_vae.py also selects OpenBLAS's kernels by cuvae's rule. cuvae runs with the
caller's environment. Both get --threads. Needs scripts/setup_bench.sh (python3-torch, libopenblas0-openmp).
"""
import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_PEER = os.path.join(REPO, "bench", "torch_vae.py")


def fail(msg):
    sys.stderr.write(f"compare_torch: error: {msg}\n")
    sys.exit(2)


def parse_args(argv):
    p = argparse.ArgumentParser(description="Benchmark cuvae-bench against the PyTorch peer (bench/torch_vae.py), "
                                            "alternating the two on each config.")
    p.add_argument("--configs", default="A,B,C",
                   help="comma list of names in --config-dir, or paths to .ini files (default A,B,C; "
                        "D is GPU-sized)")
    p.add_argument("--config-dir", default=os.path.join(REPO, "configs", "bench"),
                   help="where the named configs live (default configs/bench)")
    p.add_argument("--rounds", type=int, default=3, help="rounds of alternating runs (default 3)")
    p.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    p.add_argument("--steps", type=int, default=50, help="timed steps per run (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them (default 10)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="both sides' device (default cpu)")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"], default=None,
                   help="both sides run each config with [train] precision = this (default fp32: the configs as "
                        "they are); bf16: cuvae's bf16 GEMMs against torch.autocast bfloat16")
    p.add_argument("--tf32", action="store_true", help="the same as --precision tf32")
    p.add_argument("--print-commands", action="store_true",
                   help="print the commands of one round (after the checks of the arguments) and exit")
    p.add_argument("--json", metavar="OUT", help="write the summary (every run's result too) to this file")
    p.add_argument("--cuvae-bench", default=os.path.join(REPO, "build", "cuvae-bench"),
                   help="the cuvae benchmark program (default build/cuvae-bench)")
    p.add_argument("--python", default="/usr/bin/python3", help="interpreter with torch (default /usr/bin/python3)")
    p.add_argument("--torch-blas-dir", default="/usr/lib/x86_64-linux-gnu/openblas-openmp",
                   help="directory put first on the torch side's LD_LIBRARY_PATH (default: Debian's OpenMP "
                        "OpenBLAS); empty: leave the system's libblas.so.3 alternative")
    p.add_argument("--torch-adam", choices=["default", "foreach", "fused"], default="default",
                   help="the peer's torch.optim.Adam variant (bench/torch_vae.py --adam; default: torch's default)")
    p.add_argument("--timeout", type=float, default=3600, help="seconds allowed per run (default 3600)")
    p.add_argument("--max-foreign-load", type=float, default=0.10,
                   help="repeat a run during which other processes used more than this share of the machine's "
                        "CPU (default 0.10; read from /proc/stat, so it sees other containers too)")
    p.add_argument("--retries", type=int, default=3, help="repeats of a contended run (default 3)")
    p.add_argument("--retry-wait", type=float, default=20, help="seconds to wait before a repeat (default 20)")
    a = p.parse_args(argv)
    if a.rounds < 1 or a.threads < 1 or a.steps < 1 or a.warmup < 0 or a.retries < 0:
        p.error("--rounds, --threads and --steps must be >= 1, --warmup and --retries >= 0")
    if a.tf32 and a.precision not in (None, "tf32"):
        p.error(f"--tf32 contradicts --precision {a.precision}")
    a.precision = "tf32" if a.tf32 else (a.precision or "fp32")
    return a


def resolve_configs(spec, config_dir):
    out = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        path = item if item.endswith(".ini") else os.path.join(config_dir, item + ".ini")
        if not os.path.isfile(path):
            fail(f"config not found: {path}")
        out.append((os.path.splitext(os.path.basename(path))[0], os.path.abspath(path)))
    if not out:
        fail("--configs names no config")
    return out


def with_precision(text, precision):
    """The INI text with [train] precision = PRECISION: an existing precision line of [train] is replaced, else
    the key is added right after the [train] header (a [train] section is appended if there is none)."""
    out, section, done = [], "", False
    for line in text.splitlines():
        header = re.match(r"\s*\[([^]]*)\]", line)
        if header:
            section = header.group(1).strip()
            out.append(line)
            if section == "train" and not done:
                out.append(f"precision = {precision}")
                done = True
            continue
        if section == "train" and re.match(r"\s*precision\s*=", line):
            continue
        out.append(line)
    if not done:
        out += ["[train]", f"precision = {precision}"]
    return "\n".join(out) + "\n"


def precision_copies(configs, precision, tmp):
    """Copies of the configs with [train] precision set, under tmp/<precision>/, keeping each config's name."""
    d = os.path.join(tmp, precision)
    os.makedirs(d, exist_ok=True)
    out = []
    for name, path in configs:
        copy = os.path.join(d, os.path.basename(path))
        with open(path) as f, open(copy, "w") as g:
            g.write(with_precision(f.read(), precision))
        out.append((name, copy))
    return out


def check_tools(a):
    if not (os.path.isfile(a.cuvae_bench) and os.access(a.cuvae_bench, os.X_OK)):
        fail(f"cuvae benchmark program not found or not executable: {a.cuvae_bench}\n"
             f"  build it (cmake --build build --target cuvae-bench) or pass --cuvae-bench PATH")
    if not os.path.isfile(TORCH_PEER):
        fail(f"the PyTorch peer is missing: {TORCH_PEER}")
    if not os.access(a.python, os.X_OK):
        fail(f"python interpreter not found: {a.python}")
    if a.torch_blas_dir:
        if not os.path.isfile(os.path.join(a.torch_blas_dir, "libblas.so.3")):
            fail(f"no libblas.so.3 in --torch-blas-dir {a.torch_blas_dir}; run scripts/setup_bench.sh "
                 f"(installs libopenblas0-openmp) or pass --torch-blas-dir ''")


def torch_env(a):
    env = dict(os.environ)
    if a.torch_blas_dir:
        old = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = a.torch_blas_dir + (":" + old if old else "")
    env["OMP_NUM_THREADS"] = str(a.threads)
    return env


def cpu_busy_seconds():
    """CPU time the whole machine has spent busy (user, nice, system, irq, softirq, steal) per /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)) / os.sysconf("SC_CLK_TCK")


def run_once(side, cmd, env, json_path, timeout):
    """Runs one benchmark; returns its JSON object and the share of the machine's CPU that other processes
    (invisible ones in other containers included) took meanwhile: (busy - ours) / (wall * cores)."""
    if os.path.exists(json_path):
        os.unlink(json_path)
    busy0, ru0, t0 = cpu_busy_seconds(), resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    try:
        r = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"{side} ran longer than {timeout:.0f} s: {' '.join(cmd)}")
    except OSError as e:
        fail(f"cannot run {cmd[0]}: {e}")
    wall = time.monotonic() - t0
    ru1, busy1 = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_busy_seconds()
    ours = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    foreign = max(0.0, (busy1 - busy0) - ours) / (wall * (os.cpu_count() or 1))
    if r.returncode != 0:
        tail = (r.stdout + r.stderr).strip().splitlines()[-15:]
        fail(f"{side} failed (exit {r.returncode}): {' '.join(cmd)}\n  " + "\n  ".join(tail))
    try:
        with open(json_path) as f:
            res = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{side} wrote no valid JSON to {json_path}: {e}")
    if "samples_per_s" not in res and len(res.get("results") or []) == 1:
        res = {**res, **res["results"][0]}     # a one-config run reported only in its results list
    for key in ("samples_per_s", "median_step_ms"):
        if not isinstance(res.get(key), (int, float)) or res[key] <= 0:
            fail(f"{side}'s JSON has no positive '{key}': {json_path}")
    res["foreign_load"] = round(foreign, 4)
    res["wall_s"] = round(wall, 3)
    return res


def run_one(side, cmd, env, json_path, a):
    """run_once, repeated (after a pause) while other processes took more than --max-foreign-load of the
    machine: on a 2-core machine one busy neighbour makes multi-threaded step times several times slower."""
    for attempt in range(a.retries + 1):
        res = run_once(side, cmd, env, json_path, a.timeout)
        res["attempts"] = attempt + 1
        # /proc/stat counts in 10 ms ticks: too coarse to judge runs shorter than half a second
        if res["foreign_load"] <= a.max_foreign_load or res["wall_s"] < 0.5:
            return res
        print(f"    {side}: other processes took {100 * res['foreign_load']:.0f}% of the CPU during the run"
              + ("; waiting to repeat it" if attempt < a.retries else "; kept, marked '*'"), flush=True)
        if attempt < a.retries:
            time.sleep(a.retry_wait)
    res["contended"] = True
    return res


def check_precision(name, precision, cu, pt):
    """Both sides must say they ran the requested precision (cuvae-bench: "precision" of its result; the peer: its
    "precision")."""
    got_cu = cu.get("precision") or (cu.get("results") or [{}])[0].get("precision")
    if got_cu != precision:
        fail(f"{name}: cuvae-bench reports precision {got_cu!r}, not {precision}")
    if pt.get("precision", "fp32") != precision:
        fail(f"{name}: torch_vae.py reports precision {pt.get('precision')!r}, not {precision}")


def machine_description():
    model, flags = "", []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and not model:
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1].split()
    except OSError:
        pass
    # the CPU's bf16 units (AMX tiles, AVX512-BF16), which the bf16 matmuls of both sides use
    bf16_units = sorted(f for f in flags if f.startswith("amx") or f == "avx512_bf16")
    return {"cpu": model, "nproc": os.cpu_count(), "bf16_units": bf16_units}


def main(argv):
    a = parse_args(argv)
    a.cuvae_bench = os.path.abspath(a.cuvae_bench)
    configs = resolve_configs(a.configs, a.config_dir)
    check_tools(a)
    tenv = torch_env(a)
    common = ["--device", a.device, "--steps", str(a.steps), "--warmup", str(a.warmup), "--threads", str(a.threads)]
    runs = {name: {"cuvae": [], "pytorch": []} for name, _ in configs}
    precision = a.precision

    def commands(path, out):
        return ([a.cuvae_bench, "--config", path, *common, "--json", out],
                [a.python, TORCH_PEER, "--config", path, *common, "--adam", a.torch_adam, "--json", out])

    m = machine_description()
    print(f"compare_torch: {m['cpu']}, {m['nproc']} CPUs, bf16 units: {' '.join(m['bf16_units']) or 'none'}",
          flush=True)
    print(f"compare_torch: {len(configs)} config(s) x {a.rounds} round(s), {a.threads} thread(s), "
          f"{a.warmup}+{a.steps} steps, device {a.device}, precision {precision}", flush=True)
    with tempfile.TemporaryDirectory(prefix="compare_torch.") as tmp:
        if precision != "fp32":
            configs = precision_copies(configs, precision, tmp)
        out = os.path.join(tmp, "result.json")
        if a.print_commands:
            for name, path in configs:
                for cmd in commands(path, out):
                    print(" ".join(cmd))
            return 0
        for rnd in range(1, a.rounds + 1):
            for name, path in configs:
                cu_cmd, pt_cmd = commands(path, out)
                cu = run_one("cuvae-bench", cu_cmd, None, out, a)
                pt = run_one("torch_vae.py", pt_cmd, tenv, out, a)
                check_precision(name, precision, cu, pt)
                runs[name]["cuvae"].append(cu)
                runs[name]["pytorch"].append(pt)
                print(f"  round {rnd} {name}: cuvae {cu['samples_per_s']:10.0f} samples/s   "
                      f"torch {pt['samples_per_s']:10.0f} samples/s   ratio "
                      f"{cu['samples_per_s'] / pt['samples_per_s']:.2f}"
                      + ("   * contended" if cu.get("contended") or pt.get("contended") else ""), flush=True)

    summary = {"machine": machine_description(), "threads": a.threads, "rounds": a.rounds, "steps": a.steps,
               "warmup": a.warmup, "device": a.device, "precision": precision, "torch_blas_dir": a.torch_blas_dir,
               "torch_adam": a.torch_adam, "configs": {}}
    rows = []
    for name, _ in configs:
        cu, pt = runs[name]["cuvae"], runs[name]["pytorch"]
        cu_s = [r["samples_per_s"] for r in cu]
        pt_s = [r["samples_per_s"] for r in pt]
        ratios = [c / p for c, p in zip(cu_s, pt_s)]   # each from two adjacent runs
        # The medians use the rounds where neither side was contended, when there is at least one.
        clean = [i for i in range(len(cu)) if not (cu[i].get("contended") or pt[i].get("contended"))]
        use = clean or list(range(len(cu)))
        entry = {
            "batch": pt[0].get("batch"),
            "cuvae_samples_per_s": cu_s, "torch_samples_per_s": pt_s, "ratios": ratios,
            "clean_rounds": [i + 1 for i in clean],
            "cuvae_median_samples_per_s": statistics.median(cu_s[i] for i in use),
            "torch_median_samples_per_s": statistics.median(pt_s[i] for i in use),
            "ratio_median": statistics.median(ratios[i] for i in use),
            # best of the rounds (the same rounds): each side's fastest run, and their ratio
            "cuvae_best_samples_per_s": max(cu_s[i] for i in use),
            "torch_best_samples_per_s": max(pt_s[i] for i in use),
            "ratio_best": max(cu_s[i] for i in use) / max(pt_s[i] for i in use),
            "contended_runs": sum(1 for r in cu + pt if r.get("contended")),
            "cuvae_blas": cu[-1].get("blas", "?"), "torch_blas": pt[-1].get("blas", "?"),
            "torch_version": pt[-1].get("torch_version", "?"),
            "runs": {"cuvae": cu, "pytorch": pt},
        }
        summary["configs"][name] = entry
        rows.append((name, entry))

    print(f"\nprecision {precision}\n{'config':<7}{'cuvae samples/s':>17}{'torch samples/s':>17}{'cuvae/torch':>13}"
          f"{'best cuvae':>12}{'best torch':>12}{'best ratio':>12}")
    for name, e in rows:
        print(f"{name:<7}{e['cuvae_median_samples_per_s']:>17.0f}{e['torch_median_samples_per_s']:>17.0f}"
              f"{e['ratio_median']:>13.2f}{e['cuvae_best_samples_per_s']:>12.0f}{e['torch_best_samples_per_s']:>12.0f}"
              f"{e['ratio_best']:>12.2f}   {len(e['clean_rounds'])}/{a.rounds} clean round(s)"
              + ("  * all contended: do not trust" if not e["clean_rounds"] else ""))
    print("\n(samples/s: median over the clean rounds, where neither run was contended, or over all rounds when\n"
          " none was clean; ratio: median of those rounds' cuvae/torch ratios, each from two adjacent runs;\n"
          " best: each side's fastest of the same rounds, and best cuvae / best torch)")
    for name, e in rows:
        print(f"{name}: cuvae BLAS: {e['cuvae_blas']}\n{' ' * len(name)}  torch BLAS: {e['torch_blas']} "
              f"(torch {e['torch_version']})")
    if a.json:
        try:
            with open(a.json, "w") as f:
                json.dump(summary, f, indent=1)
                f.write("\n")
        except OSError as e:
            fail(f"cannot write {a.json}: {e}")
        print(f"summary written to {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
