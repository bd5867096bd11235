"""The code's shape: no import cycle, stages on top of the library, dvc.yaml deps = each stage's import
closure, package __init__ files docstring-only, size limits, and the README's Layout matching the tree."""
import ast
import copy
import re
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import import_graph  # noqa: E402

MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60
WHY = re.compile(r"#\s*long:")   # a function or module may exceed the limit when a `# long: <why>` comment says why


@pytest.fixture(scope="module")
def edges():
    return import_graph.graph()


@pytest.fixture(scope="module")
def dvc():
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def test_no_cycle_and_stages_on_top(edges):
    assert import_graph.layering_problems(edges) == []


def test_layering_check_catches_a_stage_importing_a_stage(edges):
    bad = copy.deepcopy(edges)
    bad["stages.report"].add("stages.evaluate")
    bad["inspection.errors"].add("inspection.runner.cli")
    bad["inspection.runner.cli"].add("inspection.errors")
    problems = import_graph.layering_problems(bad)
    assert any("stages.report imports the stage stages.evaluate" in p for p in problems)
    assert any(p.startswith("import cycle:") and "inspection.errors" in p for p in problems)


def test_dvc_deps_are_the_import_closures(edges, dvc):
    assert import_graph.stage_dep_problems(dvc, edges) == []


def test_deps_check_catches_a_removed_and_an_unused_dep(edges, dvc):
    broken = copy.deepcopy(dvc)
    deps = broken["stages"]["train"]["deps"]
    deps.remove("inspection/model/augment.py")
    deps.append("inspection/report/page.py")
    problems = import_graph.stage_dep_problems(broken, edges)
    assert "train: imports inspection/model/augment.py but dvc.yaml does not list it" in problems
    assert "train: lists inspection/report/page.py but never imports it" in problems


def test_every_stage_is_one_script_named_like_it(dvc):
    scripts = {p.stem for p in (REPO / "stages").glob("*.py") if p.name != "__init__.py"}
    assert scripts == set(dvc["stages"])
    for name, spec in dvc["stages"].items():
        assert spec["cmd"].split("#")[0].split() == ["python", "-m", f"stages.{name}"], name


def test_package_inits_hold_only_a_docstring():
    for path in import_graph.module_files().values():
        if path.name == "__init__.py":
            body = ast.parse(path.read_text()).body
            assert len(body) == 1 and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant), path
            assert len(body[0].value.value.strip()) > 10, f"{path}: say what the package is for"


def _sources():
    return [p for p in import_graph.module_files().values()] + sorted((REPO / "tools").glob("*.py"))


def test_every_module_has_a_docstring():
    missing = [str(p.relative_to(REPO)) for p in _sources()
               if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip()
               or "TODO" in (ast.get_docstring(ast.parse(p.read_text())) or "")]
    assert missing == []


def test_modules_and_functions_stay_small():
    too_big = []
    for path in _sources():
        text = path.read_text()
        lines = text.splitlines()
        rel = path.relative_to(REPO)
        if len(lines) > MAX_MODULE_LINES and not any(WHY.search(line) for line in lines[:30]):
            too_big.append(f"{rel}: {len(lines)} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                around = lines[max(0, node.lineno - 3):node.lineno + 1]
                if n > MAX_FUNCTION_LINES and not any(WHY.search(line) for line in around):
                    too_big.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert too_big == []


def test_readme_layout_is_the_tree():
    readme = (REPO / "README.md").read_text()
    block = re.search(r"## Layout\n.*?```\n(.*?)```", readme, re.S)
    assert block, "README.md has no Layout block"
    listed = [line for line in block.group(1).splitlines() if re.match(r"^(stages|inspection|commands|tools)/\S+\.py", line)]
    assert "\n".join(listed) == import_graph.layout(), "README Layout is stale: python tools/import_graph.py --layout"


@pytest.mark.parametrize("tool", sorted(p.name for p in (REPO / "tools").glob("*.py") if "argparse" in p.read_text()))
def test_every_tool_answers_help(tool):
    """No command-line tool rots into an import error: each prints its usage (bench_memory is bench.py's
    --memory-scaling part; make_route_cases takes no options)."""
    import subprocess

    res = subprocess.run([sys.executable, str(REPO / "tools" / tool), "--help"], capture_output=True, text=True,
                         cwd=REPO)
    assert res.returncode == 0 and "usage:" in res.stdout, res.stderr[-2000:]
