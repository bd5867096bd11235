"""The import graph of this repository's own modules (inspection/, stages/, commands/), from the source (AST).

    python tools/import_graph.py            # each module and what it imports; cycles, if any
    python tools/import_graph.py --dot      # Graphviz: python tools/import_graph.py --dot | dot -Tsvg > graph.svg
    python tools/import_graph.py --closure stages.train   # every module `python -m stages.train` can import
    python tools/import_graph.py --check    # dvc.yaml deps vs import closures, stage-to-stage imports, cycles
    python tools/import_graph.py --layout   # the README's Layout block, from each module's docstring

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


def stage_dep_problems(dvc: dict, edges: dict[str, set[str]], root: Path = ROOT) -> list[str]:
    """What is wrong with dvc.yaml's code deps: for each stage, a module its command can import that is not in
    its deps (DVC would keep stale outputs when it changes), or a listed module it never imports. Package
    ``__init__`` files are docstring-only (tests/test_layout.py) and are not listed."""
    problems = []
    for name, spec in (dvc.get("stages") or {}).items():
        cmd = spec.get("cmd", "")
        module = cmd.split(" -m ", 1)[1].split()[0] if " -m " in cmd else None
        if module not in edges:
            problems.append(f"{name}: cmd {cmd!r} does not run a module of this repository")
            continue
        need = {f for f in files(closure(module, edges), root) if not f.endswith("__init__.py")}
        listed = {d for d in spec.get("deps", []) if isinstance(d, str) and d.endswith(".py")}
        problems += [f"{name}: imports {f} but dvc.yaml does not list it" for f in sorted(need - listed)]
        problems += [f"{name}: lists {f} but never imports it" for f in sorted(listed - need)]
    return problems


def layering_problems(edges: dict[str, set[str]]) -> list[str]:
    """Stages never import stages; the library imports neither stages nor commands; no cycles."""
    problems = []
    for m, deps in sorted(edges.items()):
        top = m.split(".")[0]
        for d in sorted(deps):
            dtop = d.split(".")[0]
            if top == "stages" and dtop == "stages" and d != "stages":
                problems.append(f"{m} imports the stage {d}: move what it needs into inspection/")
            if top == "inspection" and dtop in ("stages", "commands"):
                problems.append(f"{m} (library) imports {d}")
            if top == "commands" and dtop == "stages" and d != "stages":
                problems.append(f"{m} imports the stage {d}")
    problems += ["import cycle: " + " <-> ".join(c) for c in cycles(edges)]
    return problems


def layout(root: Path = ROOT) -> str:
    """One line per module (and tool): its path and the first line of its docstring."""
    rows = []
    paths = [p for p in module_files(root).values() if p.name != "__init__.py"]
    paths += sorted((root / "tools").glob("*.py"))
    for path in sorted(paths, key=lambda p: (p.relative_to(root).parts[0] != "stages", p.relative_to(root).as_posix())):
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        first = doc.strip().splitlines()[0] if doc.strip() else ""
        rows.append(f"{path.relative_to(root).as_posix():<36} {first}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dot", action="store_true", help="print the graph in Graphviz dot")
    ap.add_argument("--closure", metavar="MODULE", help="print the files MODULE can import")
    ap.add_argument("--check", action="store_true", help="check dvc.yaml deps, layering and cycles")
    ap.add_argument("--layout", action="store_true", help="print the README's Layout block")
    a = ap.parse_args(argv)
    edges = graph()
    if a.layout:
        print(layout())
        return 0
    if a.check:
        import yaml

        problems = stage_dep_problems(yaml.safe_load((ROOT / "dvc.yaml").read_text()), edges) + layering_problems(edges)
        print("\n".join(problems) if problems else "ok: deps = import closures, no stage-to-stage import, no cycle")
        return 1 if problems else 0
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
