"""Stage 1, download: get the images from the configured source into data/raw/<class>/.

Output: data/raw/<class>/<file> (a source's own test images under
data/raw/<class>/source-test/) and data/raw/SOURCE.json describing the source.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from tqdm import tqdm

from stages.config import DataParams, load_params
from stages.errors import UserError, cli
from stages.extras import copy_extras
from stages.fsutil import sha256_file, staged_outputs, write_json
from stages.images import encode_jpeg, iter_image_files, printable_name, undecodable_name
from stages.paths import resolve_user_path
from stages.sources import extract_zip, find_class_folders, kaggle_download
from stages.synthetic import generate

RAW = Path("data/raw")
TEST_SUBFOLDER = "source-test"


def copy_tree(data: DataParams, source_root: Path, out: Path, quarantined: list | None = None) -> dict:
    """Copy the class folders found under ``source_root`` into ``out``; return what was copied. Files whose
    names are not valid UTF-8 are not copied but appended to ``quarantined`` (split reports them)."""
    folders = find_class_folders(source_root, data)
    jobs: list[tuple[Path, Path]] = []
    quarantined = [] if quarantined is None else quarantined
    for role, mapping in (("train", folders.train), ("test", folders.test)):
        for cls, dirs in mapping.items():
            for d in dirs:
                for f in iter_image_files(d):
                    rel = Path(cls) / (TEST_SUBFOLDER if role == "test" else "") / f.relative_to(d)
                    if undecodable_name(rel):
                        quarantined.append({"path": printable_name(rel), "label": cls, "reason": undecodable_name(rel)})
                        continue
                    jobs.append((f, rel))
    seen: set[Path] = set()
    for _, rel in jobs:
        if rel in seen:
            raise UserError(f"two source files map to {rel}; rename one (class folders with the same file names?)")
        seen.add(rel)
    tree_hash = hashlib.sha256()
    for src, rel in tqdm(jobs, desc="copy", unit="file", mininterval=1):
        dst = out / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dst)
        tree_hash.update(f"{rel.as_posix()}\0{sha256_file(dst)}\n".encode())
    counts = {cls: sum(1 for _, r in jobs if r.parts[0] == cls) for cls in data.classes}
    test_files = sorted(r.as_posix() for _, r in jobs if TEST_SUBFOLDER in r.parts[1:2])
    return {"files_sha256": tree_hash.hexdigest(), "counts": counts,
            "has_test_folder": bool(folders.test), "test_files": test_files}


def write_synthetic(data: DataParams, dest: Path) -> None:
    p = data.synthetic
    names = {"defect": data.positive_class, "ok": data.negative_class}
    for key, i, img, _ in tqdm(generate(p.per_class, p.size, p.seed), total=2 * p.per_class,
                               desc="synthesise", unit="img", mininterval=1):
        target = dest / names[key] / f"synthetic_{key}_{i:05d}.jpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_jpeg(img))


def main() -> None:
    data = load_params().data
    with staged_outputs(RAW) as staged, tempfile.TemporaryDirectory(prefix="download-") as tmp:
        out = staged.path(RAW)
        out.mkdir()
        info: dict = {"source": data.source}
        quarantined: list[dict] = []  # corrupt archive members, file names that are not UTF-8
        if data.source == "kaggle":
            root = kaggle_download(data.kaggle.dataset, data.kaggle.version)
            # not the cache folder: SOURCE.json (and so data/raw's hash in dvc.lock) must not depend on the machine
            info.update(dataset=data.kaggle.dataset, version=data.kaggle.version)
            archive_sha = None
        elif data.source == "local":
            # relative to the main workspace, also from a `dvc exp run --temp`/queue workspace (stages/paths.py)
            path = resolve_user_path(data.local.path)
            if not path.exists():
                raise UserError(f"data.local.path {path} does not exist; set it to a .zip or a folder of class folders")
            info.update(path=str(data.local.path))  # as written in params.yaml: no machine-specific folder
            if path.is_file():
                if path.suffix.lower() != ".zip":
                    raise UserError(f"data.local.path {path} is a file but not a .zip; give a .zip or a folder")
                root = Path(tmp) / "extracted"
                archive_sha = extract_zip(path, root, data.local.sha256, quarantined)
            else:
                if data.local.sha256:
                    raise UserError("data.local.sha256 is set but data.local.path is a folder; clear the sha256 or give the zip")
                root, archive_sha = path, None
        else:
            root = Path(tmp) / "synthetic"
            write_synthetic(data, root)
            info.update(per_class=data.synthetic.per_class, size=data.synthetic.size, seed=data.synthetic.seed)
            archive_sha = None
        copied = copy_tree(data, root, out, quarantined)
        lookup = {a.lower(): c for c, aliases in data.classes.items() for a in [c, *aliases]}
        for q in quarantined:
            q.setdefault("label", next((lookup[p.lower()] for p in Path(q["path"]).parts if p.lower() in lookup), ""))
            print(f"download: quarantined {q['path']}: {q['reason']}")
        info["quarantined"] = quarantined
        info["archive_sha256"] = archive_sha
        info["dataset_sha256"] = archive_sha or copied["files_sha256"]
        info.update(copied)
        copy_extras(data, out, Path(tmp), info)  # data.extra: further sources, merged (stages/extras.py)
        write_json(out / "SOURCE.json", info)
        print(f"download: {sum(copied['counts'].values())} files {copied['counts']} from {data.source} "
              f"(sha256 {info['dataset_sha256'][:12]}), source test folder: {copied['has_test_folder']}")


if __name__ == "__main__":
    cli(main)()
