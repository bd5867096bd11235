"""The download and split stages on the real Kaggle layout (a subset of the shared mirror)."""
from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from stages import download
from stages import split


def subset_zip(mirror: Path, dest: Path, per_class: int) -> Path:
    """A small zip in the Kaggle archive's layout, with some train files moved to a test folder."""
    out = dest / "casting-subset.zip"
    with zipfile.ZipFile(mirror) as src, zipfile.ZipFile(out, "w") as dst:
        names = sorted(n for n in src.namelist() if n.endswith(".jpeg"))
        for cls in ("def_front", "ok_front"):
            chosen = [n for n in names if f"/{cls}/" in n][:per_class]
            for i, n in enumerate(chosen):
                target = n.replace("/train/", "/test/") if i < per_class // 5 else n
                dst.writestr(target, src.read(n))
    return out


def test_kaggle_layout_and_three_channel_jpegs(project, tmp_path, mirror):
    z = subset_zip(mirror, tmp_path, per_class=60)
    project(data__source="local", data__local__path=str(z))
    download.main()
    info = json.loads(Path("data/raw/SOURCE.json").read_text())
    assert info["counts"] == {"defect": 60, "ok": 60} and info["has_test_folder"]
    assert len(info["test_files"]) == 24

    raw = cv2.imread(str(next(Path("data/raw/defect").glob("*.jpeg"))), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 3 and raw.shape == (300, 300, 3)
    assert np.array_equal(raw[..., 0], raw[..., 1]) and np.array_equal(raw[..., 1], raw[..., 2])

    split.main()
    with open("data/split/manifest.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 120 and {r["label"] for r in rows} == {"defect", "ok"}
    report = json.loads(Path("reports/data.json").read_text())
    assert report["quarantined_count"] == 0
    assert sum(sum(c.values()) for c in report["counts"].values()) == 120


def test_source_test_split_on_real_layout(project, tmp_path, mirror):
    z = subset_zip(mirror, tmp_path, per_class=60)
    project(data__source="local", data__local__path=str(z), split__use_source_test=True)
    download.main()
    split.main()
    with open("data/split/manifest.csv") as f:
        rows = list(csv.DictReader(f))
    source_test = {r["path"] for r in rows if "/source-test/" in r["path"]}
    assert source_test and all(r["split"] == "test" for r in rows if r["path"] in source_test)
