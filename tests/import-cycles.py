"""Import cycles between sibling modules of a Rust crate, from its `crate::` and `super::`
paths (test code left out: `#[cfg(test)]` modules and items).

Usage: python3 tests/import-cycles.py reconciler/src [service/src ...]
Prints one line per cycle: `<crate dir> <parent module>: a -> b -> ... ` (each module of the
cycle, and which of the others it uses), nothing when there is none. A cycle between two
children of one module counts wherever it runs through their descendants: `engine::apply`
using `plan::render` and `plan::cost` using `engine` is the cycle `engine <-> plan`.
The test `structure::import_cycles_are_the_known_ones` runs it on both crates.
"""
import os
import re
import sys


def modules(root):
    """{module path tuple: source without test code} for every .rs file under root."""
    found = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, name), root)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            with open(os.path.join(dirpath, name)) as f:
                found[tuple(rel)] = f.read()
    test_only = set()
    for path, src in found.items():
        for child in re.findall(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+(\w+)\s*;", src):
            test_only.add(path + (child,))
    return {p: strip_tests(s) for p, s in found.items() if not any(p[: len(t)] == t for t in test_only)}


def strip_tests(src):
    src = re.sub(r"//[^\n]*", "", src)
    inline = re.search(r"#\[cfg\(test\)\]\s*mod\s+\w+\s*\{", src)
    if inline:  # by convention the last item of a file
        src = src[: inline.start()]
    return re.sub(r"#\[cfg\(test\)\][^\n]*\n[^\n]*", "", src)


def edges(mods):
    out = {m: set() for m in mods}

    def resolve(base, segments):
        target = list(base) + [s for s in segments if s and s != "self"]
        while target and tuple(target) not in mods:
            target.pop()
        return tuple(target)

    for mod, src in mods.items():
        # A file's `super` is its parent module (for mod.rs too: its path has no `mod`).
        bases = {"crate": (), "super": mod[:-1]}
        for kw, rest in re.findall(r"\b(crate|super)((?:::\w+)+)", src):
            out[mod].add(resolve(bases[kw], rest.split("::")[1:]))
        for kw, group in re.findall(r"\b(crate|super)::\{([^}]*)\}", src):
            for item in group.split(","):
                out[mod].add(resolve(bases[kw], item.strip().split("::")))
        out[mod].discard(mod)
    return out


def cycles(mods, uses):
    """Strongly connected components (of 2+) among the children of each module."""
    found = []
    for parent in sorted({m[:-1] for m in mods if m}):
        depth = len(parent)

        def child(m):
            return m[depth] if len(m) > depth and m[:depth] == parent else None

        graph = {}
        for a, targets in uses.items():
            ca = child(a)
            if ca is None:
                continue
            graph.setdefault(ca, set())
            for t in targets:
                ct = child(t)
                if ct is not None and ct != ca:
                    graph[ca].add(ct)
        for comp in components(graph):
            detail = "; ".join(f"{a} uses {', '.join(sorted(graph[a] & set(comp)))}" for a in comp)
            found.append(("::".join(parent) or "crate", comp, detail))
    return found


def components(graph):
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
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
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


if __name__ == "__main__":
    for root in sys.argv[1:]:
        mods = modules(root)
        for parent, comp, detail in cycles(mods, edges(mods)):
            print(f"{root} {parent}: {' <-> '.join(comp)} ({detail})")
