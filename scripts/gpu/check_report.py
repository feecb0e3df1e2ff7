#!/usr/bin/env python3
"""Checks the shape of a GPU check's report (scripts/gpu/run.sh, scripts/gpu/report.py; docs/GPU.md).

    check_report.py OUTDIR [--table scripts/gpu/run.sh] [--dry-run] [--allow-fail]

OUTDIR holds gpu_report.json, gpu_log.txt and gpu_details.tar.xz. Checked: the report is valid JSON; every stage of
run.sh's STAGE_TABLE has exactly one entry, in the table's order, with its budget; each entry's fields have their
types (status one of pass | fail | skip, a reason for every skip and fail, seconds within the budget plus the
grace the timeouts allow, the commands it formed); each stage's numbers have the keys and types its summary
promises; the budgets add up to at most the total and the total to at most 480 s. With --dry-run the report must
say so and no stage may pass (nothing was checked on a GPU) or fail (unless --allow-fail). Prints every problem
found and exits 1 if there is one.
"""
import json
import os
import sys
import tarfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from report import STATUSES, stage_table  # noqa: E402  (the table's reader is report.py's)

MAX_TOTAL_S = 480   # one run on an H100 (issue 16): 8 minutes
GRACE_S = 10        # timeout -k 5 after the budget, plus the summary's own start-up

NUM = (int, float)
OPT_NUM = (int, float, type(None))
OPT_STR = (str, type(None))
GTEST = {"programs": int, "shards": int, "tests": int, "passed": int, "failed": int, "skipped": int, "crashed": list,
         "capped": list, "failed_tests": list, "per_program": dict, "skip_reason": str}
SANITIZER = {"tool": str, "targets": dict, "errors": int}
COMPARE = {"precision": str, "torch_version": OPT_STR, "configs": dict}
NUMBERS = {  # the keys each stage's summary always writes, with their types
    "setup": {"bundle_bytes": int, "unpacked_bytes": int, "programs": int, "build_dir": str, "lib_path": str,
              "links": list, "missing_libs": list, "loaded_libs": list, "problems": list},
    "device": {"gpus": list, "tools": dict},
    "gpu_tests": GTEST, "cpu_suite": GTEST,
    "main_job": {"test_nelbo": OPT_NUM, "recon": OPT_NUM, "kl": OPT_NUM, "step": (int, type(None)), "seconds": OPT_NUM,
                 "epochs": int, "samples_per_s_median": OPT_NUM, "test_nelbo_per_epoch": list, "max_nelbo": NUM,
                 "cpu_nelbo": NUM, "tolerance": NUM, "delta_from_cpu": OPT_NUM},
    "verify": {"precisions": dict},
    "bench": {"device": OPT_STR, "sgemm_peak_gflops": OPT_NUM, "configs": dict},
    "kernel_bench": {"device": OPT_STR, "peak_dram_GBps": OPT_NUM, "rows": list},
    "compare_torch_fp32": COMPARE, "compare_torch_tf32": COMPARE, "compare_torch_bf16": COMPARE,
    "sanitizer_memcheck": SANITIZER, "sanitizer_racecheck": SANITIZER, "sanitizer_synccheck": SANITIZER,
    "sanitizer_initcheck": SANITIZER,
}
ENTRY = {"name": str, "status": str, "reason": str, "seconds": NUM, "budget_s": int, "rc": (int, type(None)),
         "numbers": dict, "commands": list}
TOP = {"report_version": int, "mode": str, "started_utc": str, "host": dict, "bundle": dict, "budget_s": dict,
       "total_budget_s": int, "stages": list, "finished": bool, "total_seconds": NUM, "counts": dict}


def typed(problems, where, obj, spec):
    for key, want in spec.items():
        if key not in obj:
            problems.append(f"{where}: no '{key}'")
        elif not isinstance(obj[key], want) or (isinstance(obj[key], bool) and bool not in
                                                 (want if isinstance(want, tuple) else (want,))):
            problems.append(f"{where}: '{key}' is {type(obj[key]).__name__} {obj[key]!r:.60}")


def check_entry(problems, e, budget, dry, allow_fail):
    where = f"stage {e.get('name')}"
    typed(problems, where, e, ENTRY)
    if problems:
        return
    if e["status"] not in STATUSES:
        problems.append(f"{where}: status '{e['status']}'")
    if e["status"] != "pass" and not e["reason"].strip():
        problems.append(f"{where}: {e['status']} without a reason")
    if e["budget_s"] > budget or e["seconds"] < 0 or e["seconds"] > e["budget_s"] + GRACE_S:
        problems.append(f"{where}: {e['seconds']} s against a budget of {e['budget_s']} s (table: {budget})")
    if not e["commands"] or not all(isinstance(c, str) and c.strip() for c in e["commands"]):
        problems.append(f"{where}: no commands formed")
    typed(problems, where + " numbers", e["numbers"], NUMBERS.get(e["name"], {}))
    if dry and e["status"] == "pass":
        problems.append(f"{where}: passes in a dry run")
    if e["status"] == "fail" and not allow_fail:
        problems.append(f"{where}: fails: {e['reason'][:300]}")


def check(outdir, table, dry, allow_fail):
    problems = []
    try:
        with open(os.path.join(outdir, "gpu_report.json")) as f:
            r = json.load(f)
    except (OSError, ValueError) as e:
        return [f"gpu_report.json: {e}"]
    if not isinstance(r, dict):
        return ["gpu_report.json is not an object"]
    typed(problems, "report", r, TOP)
    if problems:
        return problems
    rows, total = stage_table(table)
    names = [n for n, _, _ in rows]
    if r["mode"] != ("dry-run" if dry else "gpu"):
        problems.append(f"report: mode '{r['mode']}'")
    if not r["finished"]:
        problems.append("report: not finished")
    if r["budget_s"] != {n: b for n, b, _ in rows} or r["total_budget_s"] != total:
        problems.append("report: budgets differ from run.sh's table")
    if sum(b for _, b, _ in rows) > total or total > MAX_TOTAL_S:
        problems.append(f"run.sh: budgets add up to {sum(b for _, b, _ in rows)} s, total {total} s (at most "
                        f"{MAX_TOTAL_S} s)")
    got = [e.get("name") if isinstance(e, dict) else None for e in r["stages"]]
    if got != names:
        problems.append(f"report: stages {got}, expected {names}")
    for e in r["stages"]:
        if isinstance(e, dict) and e.get("name") in names:
            check_entry(problems, e, dict((n, b) for n, b, _ in rows)[e["name"]], dry, allow_fail)
    if r["counts"] != {s: sum(1 for e in r["stages"] if e.get("status") == s) for s in STATUSES}:
        problems.append(f"report: counts {r['counts']} do not match the stages")
    log = open(os.path.join(outdir, "gpu_log.txt"), errors="replace").read() if os.path.exists(
        os.path.join(outdir, "gpu_log.txt")) else ""
    problems += [f"gpu_log.txt: no header of stage {n}" for n in names if f"== {n} " not in log]
    try:
        with tarfile.open(os.path.join(outdir, "gpu_details.tar.xz")) as t:
            if not any(m.name.endswith("commands.txt") for m in t.getmembers()):
                problems.append("gpu_details.tar.xz: no commands.txt")
    except (OSError, tarfile.TarError) as e:
        problems.append(f"gpu_details.tar.xz: {e}")
    return problems


def main(argv):
    if not argv or argv[0].startswith("-"):
        sys.stderr.write(__doc__)
        return 2
    here = os.path.dirname(os.path.abspath(__file__))
    table = argv[argv.index("--table") + 1] if "--table" in argv else os.path.join(here, "run.sh")
    problems = check(argv[0], table, "--dry-run" in argv, "--allow-fail" in argv)
    for p in problems:
        print(f"check_report: {p}")
    print(f"check_report: {argv[0]}: " + ("shape OK" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
