"""Checks every stage runs before any work (from ``inspection.runner.cli``), each failing in about a second.

Under ``dvc repro`` DVC deletes a stage's previous outputs right before running it, so whatever can be
checked is checked by the first stage that runs: all of params.yaml, the tracking store, the tools the web
stage needs (when the web stage is part of the run), this stage's inputs (named with the stage that makes
them) and whether its outputs can be written.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
import yaml

from inspection.artifacts import REPO
from inspection.errors import UserError, disk_error_message


PACKAGE_DVC_YAML = REPO / "dvc.yaml"
WEB_STAGE = "web"


def _dvc_yaml() -> dict:
    for candidate in (Path(os.environ.get("DVC_ROOT", ".")) / "dvc.yaml", Path("dvc.yaml"), PACKAGE_DVC_YAML):
        if candidate.is_file():
            try:
                return yaml.safe_load(candidate.read_text()) or {}
            except (OSError, yaml.YAMLError):
                return {}
    return {}


def _paths(entries) -> list[str]:
    """dvc.yaml outs/deps/metrics/plots entries: "path" or {"path": {options}}."""
    out = []
    for e in entries or []:
        if isinstance(e, str):
            out.append(e)
        elif isinstance(e, dict):
            out.extend(str(k) for k in e)
    return out


def stage_spec(name: str | None, dvc: dict | None = None) -> dict | None:
    if not name:
        return None
    stages = (dvc if dvc is not None else _dvc_yaml()).get("stages") or {}
    spec = stages.get(name)
    if spec is None:  # python -m stages.<module> whose stage has another name
        spec = next((s for s in stages.values() if str(s.get("cmd", "")).strip() == f"python -m stages.{name}"), None)
    return spec


def outputs(spec: dict) -> list[str]:
    return _paths(spec.get("outs")) + _paths(spec.get("metrics")) + _paths(spec.get("plots"))


# inputs a stage reads only when present (DVC still tracks them, so a change re-runs the stage)
OPTIONAL_INPUTS = {"report": {"reports/eval/robustness.csv", "models/metadata.json", "reports/promotion.json"}}


def check_inputs(spec: dict, dvc: dict, stage: str | None = None) -> None:
    """An input another stage makes is missing: name that stage. Outputs of `always_changed` stages are
    fingerprints for DVC's change detection (e.g. data/extra.json), not data a stage reads: not required."""
    producers = {p: name for name, s in (dvc.get("stages") or {}).items() if not s.get("always_changed")
                 for p in outputs(s)}
    optional = OPTIONAL_INPUTS.get(stage or "", set())
    for dep in _paths(spec.get("deps")):
        producer = None if dep in optional else producers.get(dep)
        if producer and not Path(dep).exists():
            raise UserError(f"{dep} is missing; run the {producer} stage first (dvc repro {producer})")


def check_writable(spec: dict) -> None:
    """Every output folder can take a file (a read-only checkout fails here, not after the work)."""
    seen: set[Path] = set()
    for out in outputs(spec):
        folder = Path(out).parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if folder in seen:
            continue
        seen.add(folder)
        try:
            fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            exc.filename = str(folder)
            raise UserError(disk_error_message(exc) or f"cannot write {folder} ({exc.strerror}); "
                            "run the stage from a writable checkout") from None


def browser_or_skip(web, needs: str) -> str | None:
    """Params ``web``: None when web.chromium is an executable; otherwise, with web.require_browser false, the
    warning that replaces ``needs`` (what the browser was for) in the outputs. With it true: a one-line error."""
    exe = Path(web.chromium).expanduser()
    if exe.is_file() and os.access(exe, os.X_OK):
        return None
    if web.require_browser:
        raise UserError(f"Chromium not found at {exe} ({needs}); run `make install` (it installs it), set "
                        "web.chromium in params.yaml, or set web.require_browser: false to skip this with a warning")
    return f"{needs} skipped: no Chromium at {exe} (web.require_browser is false)"


BROWSER_STAGES = {"report": "the PDF print (reports/print/report.pdf)",
                  "web": "the browser parity check, benchmark and screenshots"}


def check_web_tools() -> None:
    """The web stage's Node.js half (its Chromium half is checked by the stages that use a browser: web, report)."""
    if shutil.which("node") is None:
        raise UserError("node not found on PATH (the web stage needs Node.js 18+); run `make install`, or run "
                        "without the web stage (dvc repro report)")
    if not Path("web/node_modules").is_dir() and shutil.which("npm") is None:
        raise UserError("npm not found and web/node_modules is not installed (the web stage needs them); run "
                        "`make install` (or install Node.js with npm and run: npm ci --prefix web)")


def preflight(stage: str | None) -> None:
    """Run by ``cli`` before a stage's main. Stages outside dvc.yaml (tools, servers) skip it."""
    dvc = _dvc_yaml()
    spec = stage_spec(stage, dvc)
    if spec is None:
        return
    from inspection.config import load_params
    from inspection.tracking.store import check_store
    from inspection.tracking.journal import pending_notice

    params = load_params()  # all of it: a typo in any section fails the first stage that runs
    if stage in BROWSER_STAGES:  # only the stages that use Chromium check it (web.require_browser false: they skip)
        browser_or_skip(params.web, BROWSER_STAGES[stage])
    if stage == WEB_STAGE:
        check_web_tools()
    check_inputs(spec, dvc, stage)
    check_writable(spec)
    check_store()
    notice = pending_notice()
    if notice:
        print(notice)
