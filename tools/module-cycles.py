#!/usr/bin/env python3
"""Finds import cycles between the top-level modules of a crate.

    python3 tools/module-cycles.py runtime/src [-v]

Every `crate::x` path in a file of module `m` (in `use` lines and inline, `crate::{x::A, y::B}`
groups too, `super::` resolved) is an edge m -> x. Prints each edge once, then every strongly
connected component of more than one module (`-v` also prints every edge): a cycle the layering of DESIGN.md forbids
(`config` <- `auth` <- `cdf` <- ...). `#[cfg(test)]` modules are skipped: a test may use what it
likes. Exits 1 when there is a cycle.
"""

import re
import sys
from pathlib import Path


def module_of(root: Path, file: Path) -> list[str]:
    parts = list(file.relative_to(root).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def strip_tests(text: str) -> str:
    """Drops `#[cfg(test)] mod tests { ... }` blocks and comments."""
    text = re.sub(r"//[^\n]*", "", text)
    out, i = [], 0
    for m in re.finditer(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", text):
        if m.start() < i:
            continue
        out.append(text[i : m.start()])
        depth, j = 1, m.end()
        while j < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            j += 1
        i = j
    out.append(text[i:])
    return "".join(out)


def group(text: str, start: int) -> str:
    depth, j = 1, start
    while j < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        j += 1
    return text[start : j - 1]


def heads(body: str) -> list[str]:
    parts, depth, cur = [], 0, ""
    for c in body:
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
            continue
        depth += {"{": 1, "}": -1}.get(c, 0)
        cur += c
    parts.append(cur)
    return [m.group(1) for p in parts if (m := re.match(r"\s*(\w+)", p))]


def main() -> None:
    root = Path(next(a for a in sys.argv[1:] if a != "-v"))
    edges: dict[str, set[str]] = {}
    for file in sorted(root.rglob("*.rs")):
        if file.name == "tests.rs":
            continue
        mod = module_of(root, file)
        if not mod:
            continue
        top = mod[0]
        text = strip_tests(file.read_text())
        targets: set[str] = set()
        for m in re.finditer(r"\bcrate::(\{|\w+)", text):
            if m.group(1) == "{":
                targets.update(heads(group(text, m.end())))
            else:
                targets.add(m.group(1))
        # `super::x` from a file two levels down names a sibling in the same top module; from
        # a top-level file it would name the crate root's children.
        if len(mod) == 1:
            for m in re.finditer(r"\bsuper::(\w+)", text):
                targets.add(m.group(1))
        edges.setdefault(top, set()).update(t for t in targets if t != top)
    modules = {m for m in edges} | {t for ts in edges.values() for t in ts}
    known = {module_of(root, f)[0] for f in root.rglob("*.rs") if module_of(root, f)}
    edges = {m: {t for t in ts if t in known} for m, ts in edges.items()}
    if "-v" in sys.argv:
        for m in sorted(edges):
            if edges[m]:
                print(f"{m} -> {', '.join(sorted(edges[m]))}")

    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(modules & known):
        if v not in index:
            visit(v)
    print(f"cycles: {len(sccs)}")
    for c in sccs:
        print("  " + " <-> ".join(c))
    sys.exit(1 if sccs else 0)


if __name__ == "__main__":
    main()
