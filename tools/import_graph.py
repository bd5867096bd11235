"""The import graph of this repository's own modules (inspection/, stages/, commands/), from the source (AST).

    python tools/import_graph.py            # each module and what it imports; cycles, if any
    python tools/import_graph.py --dot      # Graphviz: python tools/import_graph.py --dot | dot -Tsvg > graph.svg
    python tools/import_graph.py --closure stages.train   # every module `python -m stages.train` can import

Every import counts, also one inside a function (the project imports TensorFlow and friends lazily, so a
function-level import is as real a dependency as a top-level one). tests/test_layout.py uses these functions:
no cycle, no stage importing another stage, and each dvc.yaml stage's deps = its import closure.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("inspection", "stages", "commands")


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Module name -> file, for every .py file of the project's packages."""
    found = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


def _targets(node: ast.AST, here: str, modules: dict[str, Path]) -> set[str]:
    names: list[str] = []
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:  # relative import
            pkg = here.split(".")[: -node.level] if not modules[here].name == "__init__.py" else here.split(".")
            base = ".".join(pkg + ([base] if base else []))
        names = [f"{base}.{a.name}" for a in node.names] + [base]
    out = set()
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != here:
            out.add(name)
    return out


def graph(root: Path = ROOT) -> dict[str, set[str]]:
    """Module -> the project modules it imports (package __init__ modules included where imported)."""
    modules = module_files(root)
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        deps: set[str] = set()
        for node in ast.walk(tree):
            deps |= _targets(node, name, modules)
        # importing a.b.c also runs a/__init__ and a/b/__init__
        for dep in list(deps):
            parts = dep.split(".")
            deps |= {".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in modules}
        edges[name] = deps - {name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    sys.setrecursionlimit(10_000)

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def closure(start: str, edges: dict[str, set[str]]) -> set[str]:
    """``start`` and every module it can import, directly or not."""
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo += sorted(edges.get(m, ()))
    return seen


def files(mods: set[str], root: Path = ROOT) -> set[str]:
    """Module names -> repository-relative file paths."""
    found = module_files(root)
    return {found[m].relative_to(root).as_posix() for m in mods}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dot", action="store_true", help="print the graph in Graphviz dot")
    ap.add_argument("--closure", metavar="MODULE", help="print the files MODULE can import")
    a = ap.parse_args(argv)
    edges = graph()
    if a.closure:
        if a.closure not in edges:
            print(f"error: no module {a.closure} in {', '.join(PACKAGES)}", file=sys.stderr)
            return 2
        print("\n".join(sorted(files(closure(a.closure, edges)))))
        return 0
    if a.dot:
        print("digraph imports {\n  rankdir=BT; node [shape=box, fontsize=10];")
        for m in sorted(edges):
            for d in sorted(edges[m]):
                print(f'  "{m}" -> "{d}";')
        print("}")
        return 0
    for m in sorted(edges):
        print(f"{m}: {', '.join(sorted(edges[m])) or '-'}")
    found = cycles(edges)
    for c in found:
        print("cycle: " + " <-> ".join(c))
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
