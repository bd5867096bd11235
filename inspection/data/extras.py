"""Further image sources (data.extra), merged with data.source by the download stage.

data.extra is a list of folders or zips in the one-folder-per-class layout (class folder names as in
data.classes), e.g. the inspector page's corrections-<timestamp>.zip (<class>/<file> + corrections.json; any
file outside the class folders, such as corrections.json, is ignored). The download stage copies every image to
data/raw/<class>/extra/<n>-<name>/<file>, so the split stage decodes, quarantines and groups exact and near
duplicates across all sources alike; data/raw/ORIGINS.csv records which source each extra file came from and
the split manifest's `origin` column carries it (the main source's files have origin = data.source).

The extra folders live outside the repository (and may be absent on another machine), so DVC cannot hash them
as dependencies: the `sources` stage (always run) writes their content fingerprints
(inspection/data/fingerprint.py) to data/extra.json, a dependency of download, so DVC re-runs download only
when their content changes.
"""
from __future__ import annotations

import csv
import hashlib
import os
import re
from pathlib import Path
from inspection.errors import UserError
from inspection.artifacts import EXTRA_SUBFOLDER, ORIGINS, SOURCE_INFO


def class_folders(root: Path, data) -> dict[str, list[Path]]:
    """class -> folders of an extra source (inspection/data/acquire.py's finder, as for the main source): the
    class folders may hold only some of the classes; files beside them (corrections.json) are ignored. A source
    with its own test folder is refused: its test photos would silently become training photos."""
    from inspection.data.acquire import find_class_folders

    if not any(data.class_of(Path(dirpath).name) for dirpath, _, _ in os.walk(root)):
        raise UserError(f"{root}: no class folders (expected sub-folders named like {sorted(data.classes)}); "
                        "data.extra sources use the one-folder-per-class layout")
    folders = find_class_folders(root, data, require_all=False)
    if folders.test:
        test = ", ".join(str(d) for dirs in folders.test.values() for d in dirs)
        raise UserError(f"{root} has its own test folder ({test}); data.extra photos all become training photos: "
                        "remove the test folder from this source")
    return folders.train


def copy_extras(data, out: Path, tmp: Path, info: dict) -> None:
    """Copy every data.extra source into ``out`` (data/raw) under <class>/extra/<n>-<name>/, write
    ORIGINS.csv, and record them in ``info`` (SOURCE.json): "extra", updated "counts" and "dataset_sha256"
    (the main source's hash combined with the extras')."""
    from inspection.artifacts import resolve_user_path
    from inspection.data.acquire import (announce_quarantined, class_counts, class_files, copy_files, extract_zip,
                                         named_as)

    if not data.extra:
        return
    quarantined = info.setdefault("quarantined", [])
    extra, origins = [], []
    combined = hashlib.sha256((info.get("dataset_sha256") or "").encode())
    for i, spec in enumerate(data.extra):
        path = resolve_user_path(spec)
        if not path.exists():
            raise UserError(f"data.extra[{i}] {spec} ({path}) does not exist; fix the path or remove it from data.extra")
        before = len(quarantined)
        if path.is_file():
            if path.suffix.lower() != ".zip":
                raise UserError(f"data.extra[{i}] {spec} is a file but not a .zip; give a .zip or a folder")
            root = tmp / f"extra-{i}"
            extract_zip(path, root, None, quarantined)
        else:
            root = path
        slug = f"{i}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', path.stem)[:60]}"
        with named_as(root, spec):
            jobs = class_files(class_folders(root, data), quarantined, f"{EXTRA_SUBFOLDER}/{slug}")
        announce_quarantined(quarantined[before:], data, spec)   # corrupt zip members, names that are not UTF-8
        tree = copy_files(jobs, out)
        counts = class_counts(jobs)
        origins += [(rel.as_posix(), spec) for _, rel in jobs]
        combined.update(f"{spec}\0{tree}\n".encode())
        extra.append({"path": spec, "kind": "zip" if path.is_file() else "folder", "files_sha256": tree,
                      "counts": counts})
        print(f"download: extra source {spec}: {sum(counts.values())} files {counts}")
        for cls, n in counts.items():
            info.setdefault("counts", {})[cls] = info.get("counts", {}).get(cls, 0) + n
    with open(out / ORIGINS, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["path", "origin"])
        w.writerows(origins)
    info["extra"] = extra
    info["dataset_sha256"] = combined.hexdigest()


def add_origins(rows: list[dict], raw: Path) -> None:
    """Set row["origin"] for manifest rows (path = data/raw/...): the extra source a file came from
    (data/raw/ORIGINS.csv), else the main source (SOURCE.json "source")."""
    import json

    source = json.loads((raw / SOURCE_INFO).read_text()).get("source", "") if (raw / SOURCE_INFO).exists() else ""
    origins: dict[str, str] = {}
    if (raw / ORIGINS).exists():
        with open(raw / ORIGINS, newline="") as f:
            origins = {r["path"]: r["origin"] for r in csv.DictReader(f)}
    for r in rows:
        rel = Path(r["path"]).relative_to(raw).as_posix() if Path(r["path"]).is_relative_to(raw) else r["path"]
        r["origin"] = origins.get(rel, source)
