#!/usr/bin/env python3
"""The layering check: no source file includes a header of a higher layer.

Layers, lowest first (docs/ARCHITECTURE.md): core < io < backend < backend/cpu | backend/cuda < engine < cli.
The two backends never include each other; kernels/ is included only by backend/cuda. A header in include/cuvae/
belongs to the layer named for it in PUBLIC below. Prints each violation as FILE: includes HEADER (LAYER > LAYER)
and exits 1 if there is any.   usage: scripts/check_layers.py [REPO_ROOT]
"""
import os
import re
import sys

RANK = {"core": 0, "io": 1, "backend": 2, "backend/cpu": 3, "backend/cuda": 3, "kernels": 3, "engine": 4, "cli": 5}
PUBLIC = {  # include/cuvae/NAME.h -> its layer
    "error": "core", "rng": "core", "blas": "core", "bf16": "core", "config": "core", "model": "core",
    "data": "io", "checkpoint": "io", "export": "io",
    "objective": "backend", "optimizer": "backend", "device": "backend", "cpu": "backend/cpu",
    "train": "engine", "image": "engine", "plot": "engine", "ppca": "engine", "dist": "engine", "verify": "engine",
}


def layer_of(path, root):
    rel = os.path.relpath(path, root)
    if rel.startswith("include/cuvae/"):
        return PUBLIC.get(os.path.splitext(os.path.basename(rel))[0])
    if rel.startswith("kernels/"):
        return "kernels"
    parts = rel.split(os.sep)
    if parts[0] != "src" or len(parts) < 3:
        return None
    if parts[1] == "backend" and len(parts) > 3:
        return "backend/" + parts[2]
    return parts[1]


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    headers, sources = {}, []
    for top in ("src", "include", "kernels"):
        for d, _, names in os.walk(os.path.join(root, top)):
            for n in names:
                p = os.path.join(d, n)
                if n.endswith((".h", ".cuh")):
                    headers.setdefault(n, p)
                if top == "src" and n.endswith((".c", ".h")):
                    sources.append(p)
    problems = []
    for p in sorted(sources):
        me = layer_of(p, root)
        if me is None:
            problems.append(f"{os.path.relpath(p, root)}: not in a layer folder")
            continue
        for inc in re.findall(r'^\s*#\s*include\s+"([^"]+)"', open(p, encoding="utf-8").read(), re.M):
            target = os.path.join(root, "include", inc) if inc.startswith("cuvae/") else headers.get(os.path.basename(inc))
            if not target or not os.path.exists(target):
                continue  # a system or generated header
            them = layer_of(target, root)
            if them is None:
                problems.append(f"{os.path.relpath(p, root)}: includes {inc}, which is in no layer")
                continue
            cross = {me, them} == {"backend/cpu", "backend/cuda"}
            kernels = them == "kernels" and me != "backend/cuda"
            if RANK[them] > RANK[me] or cross or kernels:
                problems.append(f"{os.path.relpath(p, root)}: includes {inc} ({them} above {me})")
    for line in problems:
        print(line)
    print(f"layering: {len(sources)} files, {len(problems)} violations")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
