"""The model the batch CLI uses by default: a published copy that never disappears under a running pipeline.

`dvc repro` removes a stage's outputs before running it, so for the whole export stage models/ does not exist. The
export stage therefore publishes each finished model folder (metadata.json, saved_model/, tfjs/) to
``published/versions/<version>/`` in the main workspace (not a DVC output; git-ignored) and then points the symlink
``published/current`` at it with one atomic rename. A reader resolves ``published/current`` once, to a folder
that is complete and stays: the last ``KEEP`` versions are kept. Queued and --temp experiments do not publish
(they are experiments, not the line's model).
"""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from inspection.artifacts import PIPELINE_MODEL, main_root
from inspection.deploy.model_folder import PARTS

PUBLISHED = Path("published")
KEEP = 3          # versions kept, so a reader that resolved an older `current` keeps a complete folder


def current() -> Path:
    """published/current of the main workspace (a symlink; may not exist yet)."""
    return main_root() / PUBLISHED / "current"


def default_model() -> str:
    """The batch CLI's default --model: the published model when there is one, else models/."""
    link = current()
    return str(link.resolve()) if link.exists() else PIPELINE_MODEL


def publish(folder: Path, version: str) -> Path | None:
    """Copy the model folder's parts to published/versions/<version> (if not there yet) and switch
    published/current to it atomically. Returns the published folder, or None from a temporary workspace."""
    root = main_root()
    if Path.cwd().resolve() != root.resolve():
        return None
    versions = root / PUBLISHED / "versions"
    target = versions / version
    versions.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        partial = versions / f".partial-{uuid.uuid4().hex[:8]}"
        partial.mkdir()
        for part in PARTS:
            src = folder / part
            if src.is_dir():
                shutil.copytree(src, partial / part)
            elif src.exists():
                shutil.copyfile(src, partial / part)
        os.replace(partial, target)
    link = root / PUBLISHED / f".current-{uuid.uuid4().hex[:8]}"
    os.symlink(Path("versions") / version, link)
    os.replace(link, root / PUBLISHED / "current")   # atomic: a reader sees the old or the new folder, never none
    kept = sorted((d for d in versions.iterdir() if d.is_dir() and not d.name.startswith(".")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for old in kept[KEEP:]:
        if old != target:
            shutil.rmtree(old, ignore_errors=True)
    return target
