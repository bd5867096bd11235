"""Is the pipeline up to date, the image sources outside the repository included? The CI "up to date" gate.

    python -m commands.status [STAGE ...]        (make status)

Prints nothing and exits 0 when `dvc repro` would change nothing; otherwise one line per stage that would
re-run, with the reason, and exit 1. Why not `dvc status` alone: the sources stage runs every time
(``always_changed``: it fingerprints data.local.path, data.extra and promote.golden, which may live outside the
repository or be absent on another machine, where DVC cannot hash them), so `dvc status` always lists it, and
`dvc status -q` never exits 0. This command takes the fingerprints the stage would take
(inspection/data/fingerprint.py, from the hash cache: only new or changed files are read), compares them with
the files its last run wrote (data/source.json, data/extra.json, data/golden.json), and asks `dvc status` about
everything else, ignoring only the "always changed" of that one stage. STAGE limits the check to those stages
and what they depend on, as `dvc status STAGE` does.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from inspection.errors import UserError
from inspection.runner.cli import cli

ALWAYS = "always changed"


def changed_sources() -> list[str]:
    """One line per fingerprint file whose content the sources stage would now write differently."""
    from inspection.artifacts import FINGERPRINT_CACHE, main_root
    from inspection.config import load_params
    from inspection.data.fingerprint import HashCache, source_fingerprints
    from inspection.fsutil import read_json

    cache = HashCache(main_root() / FINGERPRINT_CACHE)
    now = source_fingerprints(load_params(), cache)
    cache.save()
    lines = []
    for path, doc in now.items():
        if not path.exists():
            lines.append(f"sources: {path} is missing (never run here: dvc repro, or dvc pull)")
            continue
        try:
            recorded = read_json(path)
        except (OSError, ValueError):
            recorded = None
        if recorded != doc:
            lines.append(f"sources: {path} would change: {_what_changed(recorded, doc)}")
    return lines


def _what_changed(old, new) -> str:
    """A short description of a fingerprint change: which path, file count before and after."""
    def flat(doc):
        if not isinstance(doc, dict):
            return []
        if "extra" in doc or "golden" in doc:
            items = doc.get("extra", [doc.get("golden")])
            return [x for x in (items if isinstance(items, list) else [items]) if x]
        return [doc]
    before = {x.get("path", x.get("dataset", x.get("source"))): x for x in flat(old)}
    parts = []
    for item in flat(new):
        key = item.get("path", item.get("dataset", item.get("source")))
        was = before.pop(key, None)
        if was == item:
            continue
        name = key or "the source"
        if was is None:
            parts.append(f"{name} is new in params.yaml")
        elif item.get("kind") == "missing":
            parts.append(f"{name} no longer exists")
        elif "files" in item and was.get("files") != item["files"]:
            parts.append(f"{name} now has {item['files']} file(s), {was.get('files')} before")
        elif item.get("kind") == "kaggle":
            parts.append(f"{name}: kagglehub cache complete {item.get('cached_complete')}")
        else:
            parts.append(f"{name} changed content")
    parts += [f"{name} is no longer in params.yaml" for name in before]
    return "; ".join(parts) or "its recorded form differs"


def dvc_changes(targets: list[str]) -> list[str]:
    """`dvc status --json` of ``targets`` (all stages when empty), one line per stage, without the sources
    stage's "always changed"."""
    beside = Path(sys.executable).with_name("dvc")   # the environment's own dvc, activated or not
    dvc = str(beside) if beside.exists() else shutil.which("dvc")
    if dvc is None:
        raise UserError("dvc is not installed here: make install, then . .venv/bin/activate (or make status)")
    res = subprocess.run([dvc, "status", "--json", *targets], capture_output=True, text=True)
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise UserError(f"dvc status failed: {last}")
    text = res.stdout.strip()
    status = json.loads(text[text.index("{"):]) if "{" in text else {}
    lines = []
    for stage, changes in status.items():
        rest = [c for c in changes if not (stage == "sources" and c == ALWAYS)]
        for change in rest:
            if isinstance(change, str):
                lines.append(f"{stage}: {change}")
                continue
            for kind, items in change.items():
                what = ", ".join(f"{k} ({v if isinstance(v, str) else ', '.join(f'{p} {w}' for p, w in v.items())})"
                                 for k, v in items.items()) if isinstance(items, dict) else str(items)
                lines.append(f"{stage}: {kind}: {what}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m commands.status", description=__doc__.splitlines()[0])
    ap.add_argument("stages", nargs="*", help="check only these stages and what they depend on")
    args = ap.parse_args()
    lines = changed_sources() + dvc_changes(args.stages)
    if lines:
        print("\n".join(lines))
        sys.exit(1)


if __name__ == "__main__":
    cli(main)()
