"""Where the repository is, also from a DVC temporary workspace.

`dvc exp run --temp` and `dvc queue start` run the pipeline in a throw-away copy of the
repository under ``<repo>/.dvc/tmp/exps/<tmpdir>/``. Things that live outside git (the MLflow
store, web/node_modules, data named by a relative path such as ../shared/...) are found in the
main workspace, so every experiment logs into one store and sees the same files.
"""
from __future__ import annotations

import os
from pathlib import Path

TEMP_WORKSPACES = (".dvc", "tmp", "exps")


def main_root(cwd: Path | str | None = None) -> Path:
    """The main workspace: cwd, or the repository that holds cwd as a DVC temporary workspace."""
    here = Path(cwd or os.getcwd()).resolve()
    parts = here.parts
    n = len(TEMP_WORKSPACES)
    for i in range(len(parts) - n):
        if parts[i:i + n] == TEMP_WORKSPACES:
            return Path(*parts[:i])
    return here


def in_temp_workspace(cwd: Path | str | None = None) -> bool:
    return main_root(cwd) != Path(cwd or os.getcwd()).resolve()


def resolve_user_path(path: str | Path) -> Path:
    """A path from params.yaml: absolute as is; relative to the main workspace (so `../shared/...` means
    the same folder from a temporary workspace)."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else main_root() / p
