#!/usr/bin/env python3
"""The function-length check: lists every top-level C/C++/CUDA function whose body is longer than the limit.

A function's length is the number of lines from its opening brace to its closing brace, both included. Top level
means at file scope or inside a namespace or extern "C" block; a brace that follows `=` (an initialiser or table),
or opens a struct, union, enum or class, is not a function. Comments, strings and preprocessor lines are skipped.
Prints one line per long function, FILE:LINE NAME LINES, longest first, and exits 1 if there is any.
usage: scripts/check_function_length.py [--limit N] [REPO_ROOT | FILE | DIR]...   (default: src bench kernels)
"""
import os
import re
import sys

EXTENSIONS = (".c", ".h", ".cc", ".cpp", ".hpp", ".cu", ".cuh")
DEFAULT_DIRS = ("src", "bench", "kernels")
DEFAULT_LIMIT = 80


def blank_out(text):
    """The text with comments, string and character literals and preprocessor lines replaced by spaces; newlines
    are kept, so line numbers stay."""
    out, i, n = [], 0, len(text)
    at_line_start = True
    while i < n:
        c = text[i]
        if at_line_start and c == "#" or (at_line_start and c in " \t" and text[i:].lstrip(" \t").startswith("#")):
            j = i
            while j < n:  # the directive, with its continuation lines
                if text[j] == "\n" and text[j - 1] != "\\":
                    break
                j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
            continue
        if c in "\"'":
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            out.append(" " * (min(j + 1, n) - i))
            i = j + 1
            continue
        at_line_start = c == "\n" or (at_line_start and c in " \t")
        out.append(c)
        i += 1
    return "".join(out)


def long_functions(path, limit):
    """(line, name, length) of each top-level function in path longer than limit lines."""
    text = blank_out(open(path, encoding="utf-8", errors="replace").read())
    found = []
    stack = []  # one entry per open brace: "scope" (namespace, extern "C": its contents are top level) or "other"
    head_start = 0  # where the text before the next top-level brace begins
    i = 0
    while i < len(text):
        c = text[i]
        if c == "{":
            top = all(s == "scope" for s in stack)
            head = text[head_start:i] if top else ""
            if top and re.search(r"\b(namespace|extern)\b[^;{}()]*$", head):
                stack.append("scope")
            elif top and re.search(r"\)\s*[\w\s:&*<>,()]*$", head) and not re.search(
                    r"(=|\b(struct|union|enum|class)\b[^()]*)$", head.rstrip()):
                close = matching_brace(text, i)
                start = text.count("\n", 0, i) + 1
                end = text.count("\n", 0, close) + 1
                name = re.findall(r"([A-Za-z_~][\w:~]*)\s*\(", head)
                if end - start + 1 > limit:
                    found.append((start, name[0] if name else "?", end - start + 1))
                i = close + 1
                head_start = i
                continue
            else:
                stack.append("other")
        elif c == "}":
            if stack:
                stack.pop()
            if all(s == "scope" for s in stack):
                head_start = i + 1
        elif c == ";" and all(s == "scope" for s in stack):
            head_start = i + 1
        i += 1
    return found


def matching_brace(text, i):
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(text) - 1


def main():
    args = sys.argv[1:]
    limit = DEFAULT_LIMIT
    if len(args) >= 2 and args[0] == "--limit":
        limit, args = int(args[1]), args[2:]
    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    if len(args) == 1 and os.path.isdir(os.path.join(args[0], "src")):
        root, args = os.path.abspath(args[0]), []
    targets = args or [os.path.join(root, d) for d in DEFAULT_DIRS]
    files = []
    for t in targets:
        if os.path.isfile(t):
            files.append(t)
            continue
        for d, _, names in os.walk(t):
            files += [os.path.join(d, n) for n in names if n.endswith(EXTENSIONS)]
    rows = []
    for f in sorted(files):
        for line, name, length in long_functions(f, limit):
            rows.append((length, os.path.relpath(f, root), line, name))
    for length, rel, line, name in sorted(rows, key=lambda r: (-r[0], r[1], r[2])):
        print(f"{rel}:{line} {name} {length}")
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main())
