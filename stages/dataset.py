"""The manifest written by the split stage, and the decoded-once image arrays built from it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import UserError
from stages.fsutil import read_csv, read_json
from stages.images import load_images
from stages.split import MANIFEST

SOURCE_FILE = Path("data/raw/SOURCE.json")


@dataclass
class SplitData:
    paths: list[str]
    labels: np.ndarray   # 1 = positive (defect) class, 0 = the other class
    images: np.ndarray   # uint8 [N, size, size]


def manifest_rows(split: str | None = None) -> list[dict[str, str]]:
    if not MANIFEST.exists():
        raise UserError(f"{MANIFEST} is missing; run the split stage first (dvc repro split)")
    rows = read_csv(MANIFEST)
    return [r for r in rows if split is None or r["split"] == split]


def load_split(split: str, size: int, positive_class: str, limit: int | None = None) -> SplitData:
    rows = manifest_rows(split)[:limit]
    if not rows:
        raise UserError(f"split {split!r} is empty in {MANIFEST}; re-run the split stage")
    paths = [r["path"] for r in rows]
    labels = np.array([r["label"] == positive_class for r in rows], np.int32)
    return SplitData(paths, labels, load_images(paths, size, desc=f"decode {split}"))


def dataset_sha256() -> str:
    return read_json(SOURCE_FILE)["dataset_sha256"] if SOURCE_FILE.exists() else "unknown"
