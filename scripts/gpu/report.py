#!/usr/bin/env python3
"""The GPU check's report (scripts/gpu/run.sh, docs/GPU.md): OUTDIR/gpu_report.json, rewritten after every stage.

    report.py init REPORT --mode gpu|dry-run --table RUN_SH
    report.py manifest REPORT BUNDLE_ENV
    report.py stage REPORT NAME WORKDIR --rc RC --seconds S --budget B
    report.py finish REPORT --seconds S

Each stage's run part (run.sh) leaves in WORKDIR: commands.txt (every command it formed, one a line), skip.txt
(why it did not run, when it did not), dry.txt (in a dry run, what ran instead) and what its programs wrote.
`stage` turns them into one entry {name, status: pass | fail | skip, reason, seconds, budget_s, rc, numbers,
commands}, prints a few lines about it (run.sh appends them to gpu_log.txt) and rewrites REPORT atomically, so a
run cut short still leaves a report.
In a dry run a stage whose programs all succeeded reports skip (it did not check the GPU), never pass.
"""
import glob
import json
import os
import re
import statistics
import sys
import time

STATUSES = ("pass", "fail", "skip")
TIMED_OUT = (124, 137)   # timeout(1): the budget ran out (TERM), or the process ignored TERM (KILL)
NO_DEVICE = re.compile(r"no CUDA device[^\n]*")   # gpu_skip.cc's line, ctest's SKIP_REGULAR_EXPRESSION


def read(path, default=""):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return default


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def last_line(path):
    lines = [ln.strip() for ln in read(path).splitlines() if ln.strip()]
    return lines[-1][:300] if lines else "(no output)"


def stage_table(run_sh):
    """[(name, budget_s, what)] from run.sh's STAGE_TABLE, and its TOTAL_BUDGET."""
    text = read(run_sh)
    m = re.search(r"^STAGE_TABLE='\n(.*?)^'", text, re.S | re.M)
    total = re.search(r"^TOTAL_BUDGET=(\d+)", text, re.M)
    if not m or not total:
        raise SystemExit(f"report.py: no STAGE_TABLE / TOTAL_BUDGET in {run_sh}")
    rows = []
    for line in m.group(1).splitlines():
        if line.strip():
            name, budget, what = line.split(None, 2)
            rows.append((name, int(budget), what.strip()))
    return rows, int(total.group(1))


def write_atomic(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


# ---- stage summaries: each returns (status, reason, numbers) from a work directory --------------------------

def gtest_shard(base):
    """One shard of one program: its gtest JSON, log and rc file (run.sh's job_one: 'RC SECONDS [capped]'; capped:
    stopped by a dry run's per-program cap, which is no failure)."""
    rc_text = read(base + ".rc").split()
    rc = int(rc_text[0]) if rc_text else None
    secs = float(rc_text[1]) if len(rc_text) > 1 else None
    log = read(base + ".log")
    res = load_json(base + ".json")
    env_skip = NO_DEVICE.search(log)
    out = {"rc": rc, "seconds": secs, "capped": "capped" in rc_text[2:], "tests": 0, "passed": 0, "failed": 0,
           "skipped": 0, "failed_tests": [],
           "skip_reason": env_skip.group(0) if env_skip else ""}
    for suite in (res or {}).get("testsuites", []):
        for t in suite.get("testsuite", []):
            name = f"{suite.get('name')}.{t.get('name')}"
            out["tests"] += 1
            if t.get("failures"):
                out["failed"] += 1
                msg = (t["failures"][0].get("failure") or "").strip().splitlines()
                out["failed_tests"].append(name + (": " + msg[0][:200] if msg else ""))
            elif env_skip or t.get("result") == "SKIPPED" or t.get("status") == "NOTRUN":
                out["skipped"] += 1
            else:
                out["passed"] += 1
    out["has_json"] = res is not None
    return out


def gtest_summary(work, ctx):
    shards = sorted(glob.glob(os.path.join(work, "runs", "*.rc")))
    progs, numbers = {}, {"programs": 0, "shards": len(shards), "tests": 0, "passed": 0, "failed": 0, "skipped": 0,
                          "crashed": [], "capped": [], "failed_tests": [], "per_program": {}, "skip_reason": ""}
    for rc_file in shards:
        base = rc_file[:-3]
        prog = os.path.basename(base).rsplit(".", 1)[0]
        s = gtest_shard(base)
        p = progs.setdefault(prog, {"tests": 0, "passed": 0, "failed": 0, "skipped": 0, "rc": [], "seconds": 0.0})
        for k in ("tests", "passed", "failed", "skipped"):
            p[k] += s[k]
            numbers[k] += s[k]
        p["rc"].append(s["rc"])
        p["seconds"] = round(max(p["seconds"], s["seconds"] or 0.0), 2)
        numbers["failed_tests"] += [f"{prog}: {t}" for t in s["failed_tests"]]
        numbers["skip_reason"] = numbers["skip_reason"] or s["skip_reason"]
        if s["capped"]:
            numbers["capped"].append(os.path.basename(base))
        elif s["rc"] != 0 and not s["failed"]:
            why = ("timed out" if s["rc"] in TIMED_OUT else "no result" if s["rc"] is None
                   else f"exit {s['rc']}" + ("" if s["has_json"] else ", no JSON"))
            numbers["crashed"].append(f"{os.path.basename(base)}: {why}")
    numbers["programs"] = len(progs)
    numbers["per_program"] = progs
    numbers["failed_tests"] = numbers["failed_tests"][:40]
    if numbers["failed"] or numbers["crashed"]:
        return "fail", (f"{numbers['failed']} test(s) failed, {len(numbers['crashed'])} shard(s) crashed or timed "
                        f"out: " + "; ".join((numbers["failed_tests"] + numbers["crashed"])[:3])), numbers
    if not progs:
        return "skip", "no test program found in the build", numbers
    if numbers["passed"] == 0:
        return "skip", (f"all {numbers['tests']} tests of {len(progs)} programs skipped: "
                        f"{numbers['skip_reason'] or 'no test ran'}"), numbers
    return "pass", (f"{numbers['passed']} passed, {numbers['skipped']} skipped in {len(progs)} programs"
                    + (f" (dry run: {ctx['dry_note']})" if ctx.get("dry_note") else "")), numbers


def sanitizer_summary(work, ctx):
    targets = {}
    total_err = 0
    for rc_file in sorted(glob.glob(os.path.join(work, "runs", "*.rc"))):
        base = rc_file[:-3]
        name = os.path.basename(base)
        rc_text = read(rc_file).split()
        rc = int(rc_text[0]) if rc_text else None
        log = read(base + ".san")
        m = re.search(r"ERROR SUMMARY: (\d+) error", log)
        race = re.search(r"RACECHECK SUMMARY: \d+ hazards? displayed \((\d+) errors?, (\d+) warnings?\)", log)
        errors = int(race.group(1)) if race else int(m.group(1)) if m else None
        first = next((ln.strip() for ln in log.splitlines() if re.search(r"(Invalid|Race|Barrier|Uninitialized|"
                                                                         r"error|Error|hazard)", ln)
                      and "SUMMARY" not in ln), "")
        targets[name] = {"rc": rc, "errors": errors, "warnings": int(race.group(2)) if race else None,
                         "seconds": float(rc_text[1]) if len(rc_text) > 1 else None, "first_error": first[:300]}
        total_err += errors or 0
    numbers = {"tool": ctx["name"].split("_", 1)[1], "targets": targets, "errors": total_err}
    bad = [n for n, t in targets.items() if t["errors"] or t["rc"] != 0]
    if bad:
        return "fail", f"{total_err} error(s); failing: " + ", ".join(
            f"{n} (rc {targets[n]['rc']}, {targets[n]['errors']} errors)" for n in bad[:6]), numbers
    if not targets:
        return "skip", "nothing ran", numbers
    return "pass", f"{len(targets)} targets clean", numbers


def bench_summary(work, ctx):
    res = load_json(os.path.join(work, "bench.json"))
    keep = ("config", "arch", "device", "batch", "precision", "median_step_ms", "samples_per_s", "gflops",
            "peak_fraction", "gemm_fraction", "launches_per_step", "h100_pred_ms_fp32", "h100_pred_ms_tf32")
    rows = {r.get("config", "?"): {k: r.get(k) for k in keep} for r in (res or {}).get("results", [])}
    numbers = {"device": (res or {}).get("device"), "sgemm_peak_gflops": (res or {}).get("sgemm_peak_gflops"),
               "configs": rows}
    if res is None:
        return "fail", "cuvae-bench wrote no JSON: " + last_line(os.path.join(work, "stdout.txt")), numbers
    return "pass", ", ".join(f"{c} {r['samples_per_s']:.0f} samples/s" for c, r in rows.items()), numbers


def kernel_bench_summary(work, ctx):
    out = read(os.path.join(work, "stdout.txt"))
    res = load_json(os.path.join(work, "kernels.json"))
    numbers = {"device": None, "peak_dram_GBps": None, "rows": []}
    if res is None:
        if NO_DEVICE.search(out):
            return "skip", NO_DEVICE.search(out).group(0), numbers
        return "fail", "cuvae-kernels-bench-gpu wrote no JSON: " + last_line(os.path.join(work, "stdout.txt")), numbers
    numbers.update({k: v for k, v in res.items() if k != "results"})
    numbers["rows"] = res.get("results", [])
    big = [r for r in numbers["rows"] if not r.get("fits_l2")]
    worst = min(big, key=lambda r: r.get("peak_fraction") or 0.0, default=None)
    return "pass", (f"{len(numbers['rows'])} kernel/model rows" + (
        f"; lowest share of DRAM peak beyond L2: {worst['kernel']} {worst['model']} "
        f"{100 * (worst.get('peak_fraction') or 0):.0f}%" if worst else "")), numbers


def compare_summary(work, ctx):
    res = load_json(os.path.join(work, "compare.json"))
    numbers = {"precision": ctx["name"].rsplit("_", 1)[1], "torch_version": None, "configs": {}}
    if res is None:
        return "fail", "compare_torch.py wrote no JSON: " + last_line(os.path.join(work, "stdout.txt")), numbers
    for name, e in res.get("configs", {}).items():
        numbers["torch_version"] = e.get("torch_version")
        # the cuvae runs' share of the step in its GEMMs (cuvae-bench's gemm_fraction, the backend's own GEMM pass):
        # issue 18 wants the bf16 step within 1.15x of its GEMMs' time, i.e. step / GEMMs = 1 / share <= 1.15
        shares = [r["gemm_fraction"] for run in e.get("runs", {}).get("cuvae", []) if isinstance(run, dict)
                  for r in run.get("results", []) if isinstance(r.get("gemm_fraction"), (int, float))]
        share = statistics.median(shares) if shares else None
        numbers["configs"][name] = {"cuvae_samples_per_s": e.get("cuvae_median_samples_per_s"),
                                    "torch_samples_per_s": e.get("torch_median_samples_per_s"),
                                    "ratio": e.get("ratio_median"), "batch": e.get("batch"),
                                    "cuvae_gemm_fraction": share,
                                    "cuvae_step_over_gemms": round(1.0 / share, 4) if share else None}
    return "pass", ", ".join(f"{c} cuvae/torch {e['ratio']:.2f}" + (f" (step/GEMMs {e['cuvae_step_over_gemms']:.2f})"
                                                                     if e["cuvae_step_over_gemms"] else "")
                             for c, e in numbers["configs"].items()), numbers


def main_job_summary(work, ctx):
    params = load_json(os.path.join(work, "params.json")) or {}
    lines = [ln for ln in read(os.path.join(work, "stdout.txt")).splitlines() if ln.startswith("{")]
    final = json.loads(lines[-1]) if lines else {}
    rows = [json.loads(ln) for ln in read(os.path.join(work, "run", "metrics.jsonl")).splitlines() if ln.strip()]
    nelbo = final.get("test_nelbo")
    numbers = {"test_nelbo": nelbo, "recon": final.get("recon"), "kl": final.get("kl"), "step": final.get("step"),
               "seconds": final.get("seconds"), "epochs": len(rows),
               "samples_per_s_median": statistics.median(r["samples_per_s"] for r in rows) if rows else None,
               "test_nelbo_per_epoch": [r.get("test_nelbo") for r in rows],
               "max_nelbo": params.get("max_nelbo"), "cpu_nelbo": params.get("cpu_nelbo"),
               "tolerance": params.get("tolerance"), "delta_from_cpu": None}
    if nelbo is None:
        return "fail", "cuvae train printed no result line: " + last_line(os.path.join(work, "stderr.txt")), numbers
    numbers["delta_from_cpu"] = round(nelbo - params["cpu_nelbo"], 6)
    if ctx["dry"]:
        return "pass", f"test NELBO {nelbo:.3f} after {final.get('step')} steps, not checked", numbers
    if nelbo > params["max_nelbo"] or abs(numbers["delta_from_cpu"]) > params["tolerance"]:
        return "fail", (f"test NELBO {nelbo:.3f}: bound {params['max_nelbo']}, CPU {params['cpu_nelbo']} "
                        f"+- {params['tolerance']}"), numbers
    return "pass", (f"test NELBO {nelbo:.3f} (CPU {params['cpu_nelbo']}, delta {numbers['delta_from_cpu']:+.3f})",
                    numbers)


def verify_summary(work, ctx):
    """Per precision: cuvae verify's JSON line and exit status; a host CPU without bf16 units skips bf16."""
    numbers = {"precisions": {}}
    failed = []
    for p in ("fp32", "tf32", "bf16"):
        rc_text = read(os.path.join(work, p + ".rc")).strip()
        if not rc_text:
            continue
        lines = [ln for ln in read(os.path.join(work, p + ".json")).splitlines() if ln.startswith("{")]
        res = json.loads(lines[-1]) if lines else {}
        why = last_line(os.path.join(work, p + ".txt"))
        e = {"rc": int(rc_text), "agree": res.get("agree")}
        e.update({k: res.get(k) for k in ("eval", "loss", "grad", "grad_worst", "drift_loss", "drift_params_lr",
                                            "cuda_gemm")})
        if not ctx["dry"] and res.get("agree") is not True:
            if "no bf16 matrix units" in read(os.path.join(work, p + ".txt")):
                e["skipped"] = why
            else:
                failed.append(f"{p}: {why}")
        numbers["precisions"][p] = e
    if ctx["dry"]:
        return "pass", "commands formed", numbers
    if failed:
        return "fail", "; ".join(failed), numbers
    return "pass", ", ".join(f"{p} " + ("skipped (host CPU without bf16)" if e.get("skipped") else
                                        f"agrees (grad {e['grad'][0]:.2g} of bound {e['grad'][1]:.2g})")
                             for p, e in numbers["precisions"].items()), numbers


def device_summary(work, ctx):
    csv = read(os.path.join(work, "device.csv")).strip().splitlines()
    tools = {}
    for line in read(os.path.join(work, "tools.txt")).splitlines():
        if ":" in line:
            k, v = line.split(":", 1)
            tools[k.strip()] = v.strip()
    fields = ("name", "driver", "memory", "compute_cap", "max_sm_clock", "max_mem_clock")
    gpus = [dict(zip(fields, (c.strip() for c in row.split(",")))) for row in csv if row.strip()]
    numbers = {"gpus": gpus, "tools": tools}
    if not gpus:
        return "fail", "nvidia-smi listed no GPU", numbers
    return "pass", "; ".join(f"{g['name']} (sm {g.get('compute_cap')}, {g.get('memory')})" for g in gpus), numbers


def setup_summary(work, ctx):
    info = {}
    for line in read(os.path.join(work, "info.txt")).splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            info.setdefault(k, []).append(v)
    one = {k: v[-1] for k, v in info.items()}
    numbers = {"bundle_bytes": int(one.get("bundle_bytes", 0)), "unpacked_bytes": int(one.get("unpacked_bytes", 0)),
               "programs": int(one.get("programs", 0)), "build_dir": one.get("build_dir", ""),
               "lib_path": one.get("lib_path", ""), "links": info.get("link", []),
               "missing_libs": info.get("missing", []), "loaded_libs": info.get("loaded_lib", []),
               "problems": info.get("problem", [])}
    if numbers["missing_libs"] or numbers["problems"]:
        return "fail", "; ".join(["missing: " + ", ".join(numbers["missing_libs"])] * bool(numbers["missing_libs"])
                                 + numbers["problems"]), numbers
    return "pass", f"{numbers['programs']} programs, every library found", numbers


SUMMARIES = {"setup": setup_summary, "device": device_summary, "gpu_tests": gtest_summary,
             "cpu_suite": gtest_summary, "main_job": main_job_summary, "verify": verify_summary, "bench": bench_summary,
             "kernel_bench": kernel_bench_summary}


def summarise(name, work, rc, budget, dry):
    fn = SUMMARIES.get(name) or (sanitizer_summary if name.startswith("sanitizer_") else
                                 compare_summary if name.startswith("compare_torch_") else None)
    ctx = {"name": name, "dry": dry, "dry_note": read(os.path.join(work, "dry.txt")).strip()}
    try:
        status, reason, numbers = fn(work, ctx)
    except Exception as e:  # a summary that breaks is the stage's failure, not the report's
        status, reason, numbers = "fail", f"summary failed: {type(e).__name__}: {e}", {}
    skip = read(os.path.join(work, "skip.txt")).strip()
    if rc in TIMED_OUT:
        status, reason = "fail", f"timed out after its {budget} s budget" + (f" ({reason})" if reason else "")
    elif skip:   # the stage found what it checks absent (no driver, no sanitizer, no torch): its result is moot
        status, reason = "skip", skip
    elif rc not in (0, None) and status != "fail":
        status, reason = "fail", f"the stage exited {rc}" + (f" ({reason})" if reason else "")
    if dry and status == "pass":
        status, reason = "skip", "dry run, no GPU: " + (ctx["dry_note"] or reason)
    return status, reason, numbers


# ---- commands ----------------------------------------------------------------------------------------------

def cmd_init(args):
    report, mode, table = args[0], opt(args, "--mode"), opt(args, "--table")
    rows, total = stage_table(table)
    write_atomic(report, {"report_version": 1, "mode": mode,
                          "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          "host": {"hostname": os.uname().nodename, "nproc": os.cpu_count()},
                          "bundle": {}, "budget_s": {n: b for n, b, _ in rows}, "total_budget_s": total,
                          "stages": [], "finished": False, "total_seconds": None,
                          "counts": {s: 0 for s in STATUSES}})


def cmd_manifest(args):
    """The bundle's bundle.env (what was built, from which commit, where) into the report's "bundle"."""
    r = load_json(args[0])
    for line in read(args[1]).splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            r["bundle"][k] = v.strip("'\"")
    write_atomic(args[0], r)


def cmd_stage(args):
    report, name, work = args[0], args[1], args[2]
    rc_opt = opt(args, "--rc")
    rc = int(rc_opt) if rc_opt not in (None, "") else None
    budget = int(opt(args, "--budget"))
    r = load_json(report)
    status, reason, numbers = summarise(name, work, rc, budget, r["mode"] == "dry-run")
    commands = [ln for ln in read(os.path.join(work, "commands.txt")).splitlines() if ln.strip()]
    entry = {"name": name, "status": status, "reason": reason, "seconds": round(float(opt(args, "--seconds")), 2),
             "budget_s": budget, "rc": rc, "numbers": numbers, "commands": commands}
    r["stages"] = [s for s in r["stages"] if s["name"] != name] + [entry]
    r["counts"] = {s: sum(1 for e in r["stages"] if e["status"] == s) for s in STATUSES}
    write_atomic(report, r)
    print(f"-- {name}: {status.upper()} in {entry['seconds']} s (budget {budget} s): {reason}")
    for t in (numbers.get("failed_tests") or [])[:10] + (numbers.get("crashed") or [])[:10]:
        print(f"   {t}")


def cmd_finish(args):
    r = load_json(args[0])
    r["finished"] = True
    r["total_seconds"] = round(float(opt(args, "--seconds")), 2)
    write_atomic(args[0], r)
    print(f"{'stage':<22}{'status':<8}{'seconds':>8}{'budget':>8}  reason")
    for e in r["stages"]:
        print(f"{e['name']:<22}{e['status']:<8}{e['seconds']:>8.1f}{e['budget_s']:>8}  {e['reason'][:150]}")
    c = r["counts"]
    print(f"stages: {c['pass']} pass, {c['fail']} fail, {c['skip']} skip; {r['total_seconds']:.0f} s of the "
          f"{r['total_budget_s']} s budget")


def opt(args, flag, default=None):
    return args[args.index(flag) + 1] if flag in args and args.index(flag) + 1 < len(args) else default


def main(argv):
    cmds = {"init": cmd_init, "manifest": cmd_manifest, "stage": cmd_stage, "finish": cmd_finish}
    if len(argv) < 2 or argv[0] not in cmds:
        sys.stderr.write(__doc__)
        return 2
    cmds[argv[0]](argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
