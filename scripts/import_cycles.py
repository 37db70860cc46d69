"""Print the import cycles among herd's modules.

Builds the graph of herd's modules from their `import` / `from ... import` statements (parsed, not
executed) in two layers: top-level imports (run when the module is imported; `if TYPE_CHECKING:`
blocks excluded) and function-level ones (run when the function is called). An edge goes to the
module named; `from herd.a import b` goes to herd.a.b when that is a module, else to herd.a.
Parent packages are not added as edges (importing herd.a.b runs herd/a/__init__.py first, which
every package does).

    python scripts/import_cycles.py            # cycles at import time, then with lazy imports too
    python scripts/import_cycles.py --top      # only the import-time cycles (exit 1 if any)
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(pkg: Path = ROOT / "herd") -> dict[str, Path]:
    out = {}
    for f in sorted(pkg.rglob("*.py")):
        parts = list(f.relative_to(pkg.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """(node, top_level) for every import statement; top_level False inside a def/lambda body."""
    def walk(node, top):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and top and _is_type_checking(child.test):
                for c in child.orelse:
                    yield from walk_one(c, top)
                continue
            yield from walk_one(child, top)

    def walk_one(child, top):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, top
        inner = top and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
        yield from walk(child, inner)

    yield from walk(tree, True)


def graph(mods: dict[str, Path]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(top-level edges, function-level edges) between herd modules."""
    top = {m: set() for m in mods}
    lazy = {m: set() for m in mods}
    for m, f in mods.items():
        is_pkg = f.name == "__init__.py"
        for node, at_top in _imports(ast.parse(f.read_text(), str(f))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    pkg = m.split(".") if is_pkg else m.split(".")[:-1]
                    pkg = pkg[: len(pkg) - (node.level - 1)]
                    base = ".".join(pkg + ([base] if base else []))
                for a in node.names:
                    sub = f"{base}.{a.name}"
                    targets.append(sub if sub in mods else base)
            for t in targets:
                while t and t not in mods:  # `import herd.a.b.c` where c is an attribute
                    t = t.rpartition(".")[0]
                if t and t != m:
                    (top if at_top else lazy)[m].add(t)
    return top, lazy


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One shortest cycle through each edge that lies on a cycle, deduplicated (rotations equal)."""
    found = {}
    for a in sorted(edges):
        for b in sorted(edges[a]):
            # shortest path b -> a (BFS)
            prev, frontier = {b: None}, [b]
            while frontier and a not in prev:
                nxt = []
                for u in frontier:
                    for v in sorted(edges.get(u, ())):
                        if v not in prev:
                            prev[v] = u
                            nxt.append(v)
                frontier = nxt
            if a not in prev:
                continue
            path, u = [], a
            while u is not None:
                path.append(u)
                u = prev[u]
            cyc = [a] + path[::-1][:-1]  # a -> b -> ... -> (before a)
            i = cyc.index(min(cyc))
            key = tuple(cyc[i:] + cyc[:i])
            found[key] = list(key)
    return sorted(found.values(), key=lambda c: (len(c), c))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", action="store_true", help="only cycles among import-time imports")
    args = ap.parse_args()
    top, lazy = graph(modules())
    both = {m: top[m] | lazy[m] for m in top}
    top_cycles = cycles(top)
    print(f"import-time cycles: {len(top_cycles)}")
    for c in top_cycles:
        print("  " + " -> ".join(c + [c[0]]))
    if not args.top:
        all_cycles = [c for c in cycles(both) if c not in top_cycles]
        print(f"further cycles through function-level imports: {len(all_cycles)}")
        for c in all_cycles:
            marks = [" -> " if c[(i + 1) % len(c)] in top[x] else " ~> " for i, x in enumerate(c)]
            print("  " + "".join(x + mk for x, mk in zip(c, marks)) + c[0])
        print("(-> import at module top, ~> import inside a function)")
    return 1 if top_cycles else 0


if __name__ == "__main__":
    sys.exit(main())
