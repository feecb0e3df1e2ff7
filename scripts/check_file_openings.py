#!/usr/bin/env python3
"""The file-opening check: every source file opens with one line saying what it holds.

Over src/, include/, kernels/, tests/, bench/, fuzz/ and scripts/ (C, C++, CUDA, headers, CMake, Python, shell), the
first line, after a shebang, must be a comment (`/*` or `//` in C-like files, `#` in CMake and shell, `#` or a
docstring in Python) of real content: at least three words, not a licence or copyright line, not `#pragma once`,
not empty. Prints each failing file as FILE:LINE: REASON and exits 1 if there is any.
usage: scripts/check_file_openings.py [REPO_ROOT]
"""
import os
import re
import sys

FOLDERS = ("src", "include", "kernels", "tests", "bench", "fuzz", "scripts")
C_LIKE = (".c", ".h", ".cc", ".cpp", ".hpp", ".cu", ".cuh")
HASH = (".cmake", ".sh")
SKIP_DIRS = {"tests/data", "fuzz/corpus", "fuzz/dict"}  # data, not sources
LICENCE = re.compile(r"\b(copyright|licen[cs]ed?|spdx-license-identifier|all rights reserved)\b", re.I)


def kind_of(name):
    if name == "CMakeLists.txt" or name.endswith(HASH):
        return "hash"
    if name.endswith(".py"):
        return "python"
    if name.endswith(C_LIKE):
        return "c"
    return None


def comment_text(line, kind):
    """The text of the comment that opens `line`, or None when the line does not open with a comment."""
    s = line.strip()
    if kind == "c":
        if s.startswith("/*"):
            return s[2:].split("*/")[0]
        if s.startswith("//"):
            return s[2:]
        return None
    if kind == "python" and s[:3] in ('"""', "'''"):
        return s[3:].split(s[:3])[0]
    if s.startswith("#") and not s.startswith("#!"):
        return s[1:]
    return None


def problem(path, kind):
    """Why path's opening line fails, or None; with the 1-based number of the line looked at."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    n = 1 if lines and lines[0].startswith("#!") else 0
    line = lines[n] if n < len(lines) else ""
    if not line.strip():
        return n + 1, "the first line is empty; open with one line saying what the file holds"
    if re.match(r"\s*#\s*pragma\s+once", line) or re.match(r"\s*#\s*(include|ifndef|define)\b", line):
        return n + 1, f"opens with '{line.strip()}', not a comment saying what the file holds"
    text = comment_text(line, kind)
    if text is None:
        return n + 1, "does not open with a comment saying what the file holds"
    if LICENCE.search(text):
        return n + 1, "opens with a licence or copyright line; say first what the file holds"
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", text)
    if len(words) < 3:
        return n + 1, f"the opening comment '{text.strip()}' says too little (three words at least)"
    return None


def main():
    root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), ".."))
    failures = 0
    for top in FOLDERS:
        for d, dirs, names in os.walk(os.path.join(root, top)):
            rel = os.path.relpath(d, root)
            dirs[:] = sorted(x for x in dirs if not x.startswith((".", "__")) and os.path.join(rel, x) not in SKIP_DIRS)
            for name in sorted(names):
                kind = kind_of(name)
                if not kind:
                    continue
                path = os.path.join(d, name)
                found = problem(path, kind)
                if found:
                    print(f"{os.path.relpath(path, root)}:{found[0]}: {found[1]}")
                    failures += 1
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
