"""MLflow tracking: `train` opens the run, later stages log into it via models/mlflow_run.json."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
from pathlib import Path
from typing import Iterator

from stages.fsutil import read_json

RUN_FILE = Path("models/mlflow_run.json")


def default_uri() -> str:
    """sqlite:///<main workspace>/mlflow.db: one store for the workspace and DVC's temporary ones."""
    from stages.paths import main_root

    return f"sqlite:///{(main_root() / 'mlflow.db').as_posix()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _mlflow():
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def mlflow_key(key: str) -> str:
    """MLflow names allow letters, digits and _ - . space : / only (params.yaml names may hold more)."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def git_commit() -> str:
    """HEAD's commit, with '-dirty' if tracked files changed, or 'unknown' outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_run(experiment: str, params: dict, tags: dict):
    """Open a new run (used by the train stage); returns the active mlflow module and run."""
    mlflow = _mlflow()
    mlflow.set_experiment(experiment)
    run = mlflow.start_run(tags=tags)
    # MLflow caps a param value at 6000 chars; ours are short
    mlflow.log_params({mlflow_key(k): str(v) for k, v in params.items()})
    return mlflow, run


@contextlib.contextmanager
def resume_run(run_file: Path = RUN_FILE) -> Iterator[object]:
    """Log into the run the train stage opened."""
    info = read_json(run_file)
    mlflow = _mlflow()
    mlflow.set_tracking_uri(info.get("tracking_uri", tracking_uri()))
    with mlflow.start_run(run_id=info["run_id"]):
        yield mlflow


def run_id(run_file: Path = RUN_FILE) -> str:
    return read_json(run_file)["run_id"]
