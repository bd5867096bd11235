"""Where images come from: the Kaggle archive, a local zip/folder, or the synthetic generator.

Every source ends as a folder tree that ``find_class_folders`` maps onto the
classes in params: either the Kaggle layout (``.../train/<class>``,
``.../test/<class>``) or simply one sub-folder per class.
"""
from __future__ import annotations

import os
import zipfile
from contextlib import contextmanager
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from tqdm import tqdm
from inspection.config import DataParams
from inspection.errors import UserError
from inspection.fsutil import sha256_file
import hashlib
import shutil
from inspection.data.images import (ARCHIVES, encode_jpeg, iter_image_files, not_a_photo_path, printable_name,
                                    undecodable_name)
from inspection.data.synthetic import generate
from inspection.artifacts import TEST_SUBFOLDER


SPLIT_FOLDER_NAMES = {"train", "test"}


@contextmanager
def named_as(extracted: Path, shown: str):
    """Messages name what the user gave (the archive), never the temporary folder it was extracted to."""
    try:
        yield
    except UserError as exc:
        raise UserError(str(exc).replace(str(extracted), shown)) from None


@dataclass
class ClassFolders:
    root: Path
    train: dict[str, list[Path]] = field(default_factory=dict)  # class -> folders
    test: dict[str, list[Path]] = field(default_factory=dict)   # class -> the source's own test folders


def resolve_source(data: DataParams) -> str:
    """The source a run uses: data.source, or for ``auto`` the local copy when data.local.path exists, else
    Kaggle (kagglehub reuses a complete cached copy of the pinned version without network, or downloads it)."""
    if data.source != "auto":
        return data.source
    from inspection.artifacts import resolve_user_path

    return "local" if resolve_user_path(data.local.path).exists() else "kaggle"


def local_source(data: DataParams) -> Path:
    """data.local.path resolved (relative to the main workspace, also from a `dvc exp run --temp`/queue
    workspace: inspection/artifacts.py), or one line saying what to give."""
    from inspection.artifacts import resolve_user_path

    path = resolve_user_path(data.local.path)
    if not path.exists():
        raise UserError(f"data.local.path {path} does not exist; set it to a .zip or a folder of class folders")
    return path


def kaggle_download(dataset: str, version: int, auto_local: str | None = None) -> Path:
    """Download (or reuse from KAGGLEHUB_CACHE) one pinned version of a public Kaggle dataset. ``auto_local``:
    the data.local.path that data.source=auto looked for first (named in the message when both fail)."""
    import kagglehub

    handle = f"{dataset}/versions/{version}"
    cache = os.environ.get("KAGGLEHUB_CACHE", "~/.cache/kagglehub")
    try:
        return Path(kagglehub.dataset_download(handle))
    except Exception as exc:  # kagglehub raises requests/urllib3/its own errors; all mean "could not get it"
        kind = type(exc).__name__
        if auto_local is not None:
            raise UserError(
                f"no data: data.local.path {auto_local} does not exist and Kaggle dataset {handle} could not be "
                f"downloaded ({kind}) nor found complete in {cache}; put the archive there (or run with "
                "-S data.local.path=<zip or folder>), or connect to the internet once; offline demo: "
                "dvc exp run -S data.source=synthetic"
            ) from None
        raise UserError(
            f"could not download Kaggle dataset {handle} and no complete cached copy is in {cache} ({kind}); "
            "connect to the internet once (or set KAGGLEHUB_CACHE to a folder holding it), or run offline with "
            "data.source=local (data.local.path=<zip or folder>) or data.source=synthetic"
        ) from None


def extract_zip(zip_path: Path, dest: Path, expected_sha256: str | None, quarantined: list | None = None) -> str:
    """Check the zip's sha256 (with progress), extract it to ``dest`` and return the sha256.

    A member that cannot be extracted (corrupt data, bad CRC, encrypted, unknown compression) is appended
    to ``quarantined`` as {"path", "reason"} and skipped; without that list it stops the stage with one line."""
    size = zip_path.stat().st_size
    with tqdm(total=size, unit="B", unit_scale=True, desc=f"sha256 {zip_path.name}", mininterval=1) as bar:
        digest = sha256_file(zip_path, progress=bar)
    if expected_sha256 and digest.lower() != expected_sha256.lower():
        raise UserError(
            f"{zip_path}: sha256 {digest} does not match data.local.sha256 {expected_sha256}; "
            "re-download the archive or update data.local.sha256"
        )
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise UserError(f"{zip_path} is not a valid zip archive; re-download it or point data.local.path at a folder") from None
    except UnicodeDecodeError:
        raise UserError(f"{zip_path}: member names marked as UTF-8 are not valid UTF-8 (a broken zip tool); re-create "
                        "the archive, or extract it and point data.local.path at the folder") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        nested = [m.filename for m in members if Path(m.filename).suffix.lower() in ARCHIVES
                  and not any(map(not_a_photo_path, Path(m.filename).parts))]
        if nested:
            raise UserError(f"{nested[0]} inside {zip_path.name}: nested archives are not read; extract it or list "
                            "it in data.extra")
        for m in tqdm(members, desc=f"extract {zip_path.name}", unit="file", mininterval=1):
            target = (dest / m.filename).resolve()
            if not target.is_relative_to(dest.resolve()):
                raise UserError(f"{zip_path}: member {m.filename!r} escapes the archive; refusing to extract")
            try:
                zf.extract(m, dest)
            except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as exc:
                if target.exists():
                    target.unlink()
                reason = f"corrupt archive member ({' '.join(str(exc).split())[:100] or type(exc).__name__})"
                if quarantined is None:
                    raise UserError(f"{zip_path}: {m.filename}: {reason}; re-download the archive") from None
                quarantined.append({"path": m.filename, "reason": reason})
    return digest


def _image_dirs(root: Path) -> list[Path]:
    """Folders that directly contain at least one non-hidden file."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not not_a_photo_path(d))
        if any(not f.startswith(".") for f in filenames):
            found.append(Path(dirpath))
    return found


def find_class_folders(root: Path, data: DataParams, require_all: bool = True) -> ClassFolders:
    """Map the folder tree under ``root`` to the classes in params, or explain what is wrong. The one finder for
    every source: data.local.path, each data.extra (``require_all=False``: a corrections zip may hold one class)
    and promote.golden. Files beside the class folders (corrections.json, a README) and a single wrapping folder
    are looked past."""
    if not root.exists():
        raise UserError(f"{root} does not exist; set data.local.path to a .zip or a folder with one sub-folder per class")
    leaves = _image_dirs(root)
    # An empty class folder (named like a class, no files) is a user error in the main source; an extra source's
    # (require_all False) may be emptied as its photos move on.
    for dirpath, dirnames, filenames in os.walk(root):
        if (require_all and data.class_of(Path(dirpath).name) and not dirnames
                and not any(not f.startswith(".") for f in filenames)):
            raise UserError(f"class folder {dirpath} is empty; add images to it or remove it")
    if not leaves:
        raise UserError(f"no files found under {root}; point data.local.path at the image folders")

    split_parents = {d.parent for d in leaves if d.parent.name.lower() in SPLIT_FOLDER_NAMES}
    kaggle_layout = [p for p in split_parents if p.name.lower() == "train"]
    if kaggle_layout:
        if len(kaggle_layout) > 1:
            raise UserError(f"several train folders under {root}: {sorted(map(str, kaggle_layout))}; point data.local.path at one")
        base = kaggle_layout[0].parent
        parents = {"train": base / kaggle_layout[0].name}
        test = [p for p in split_parents if p.parent == base and p.name.lower() == "test"]
        if test:
            parents["test"] = test[0]
    else:
        groups = sorted({d.parent for d in leaves}, key=lambda p: (len(p.parts), str(p)))
        if len(groups) != 1:
            # e.g. the Kaggle archive's extra 512x512 copy beside the class folders; prefer the shallowest
            # folder whose children all map to classes.
            mapped = [g for g in groups if all(data.class_of(c.name) for c in leaves if c.parent == g)]
            if len(mapped) != 1:
                raise UserError(
                    f"cannot tell which folders under {root} are the classes (candidates: "
                    f"{', '.join(str(g.relative_to(root)) or '.' for g in groups)}); point data.local.path at the folder "
                    "holding one sub-folder per class"
                )
            groups = mapped
        parents = {"train": groups[0]}

    out = ClassFolders(root=root)
    for role, parent in parents.items():
        setattr(out, role, map_class_folders(sorted(d for d in leaves if d.parent == parent), data, parent,
                                             require_all))
    return out


def map_class_folders(folders: list[Path], data: DataParams, parent: Path, require_all: bool = True
                      ) -> dict[str, list[Path]]:
    """class -> the folders named like it (data.classes aliases). A folder that names no class is an error;
    so is a class without a folder when ``require_all`` (the main source; an extra source may hold a subset)."""
    mapping: dict[str, list[Path]] = {}
    for folder in folders:
        cls = data.class_of(folder.name)
        if cls is None:
            raise UserError(
                f"folder {folder} does not map to a class; add {folder.name!r} to data.classes.<class> in params.yaml "
                "or move it out of the data folder"
            )
        mapping.setdefault(cls, []).append(folder)
    missing = sorted(set(data.classes) - set(mapping))
    if require_all and missing:
        raise UserError(
            f"no folder for class(es) {missing} under {parent}; expected one of "
            f"{[a for m in missing for a in data.classes[m]]}"
        )
    return mapping


def class_files(mapping: dict[str, list[Path]], quarantined: list, under: str = "") -> list[tuple[Path, Path]]:
    """(file, <class>/<under>/<path inside its class folder>) for every file of the class folders. Files whose
    names are not valid UTF-8 are not listed but appended to ``quarantined`` (split reports them)."""
    jobs = []
    for cls, dirs in sorted(mapping.items()):
        for d in dirs:
            for f in iter_image_files(d):
                rel = Path(cls) / under / f.relative_to(d)
                if undecodable_name(rel):
                    quarantined.append({"path": printable_name(rel), "label": cls, "reason": undecodable_name(rel)})
                    continue
                jobs.append((f, rel))
    return jobs


def copy_files(jobs: list[tuple[Path, Path]], out: Path) -> str:
    """Copy each (file, relative target) into ``out`` with progress; return the tree hash (sha256 over every
    target's relative path and content sha256), the content hash of one copied source."""
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
    return tree_hash.hexdigest()


def announce_quarantined(quarantined: list[dict], data: DataParams, source: str | None = None) -> None:
    """Label (the class folder in the path) and print files set aside while copying; ``source``: the data.extra
    spec they came from, prefixed to their path."""
    for q in quarantined:
        if source:
            q["path"] = f"{source}: {q['path']}"
        q.setdefault("label", next(filter(None, map(data.class_of, Path(q["path"]).parts)), ""))
        print(f"download: quarantined {q['path']}: {q['reason']}")


def class_counts(jobs: list[tuple[Path, Path]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for _, rel in jobs:
        counts[rel.parts[0]] = counts.get(rel.parts[0], 0) + 1
    return counts


def copy_tree(data: DataParams, source_root: Path, out: Path, quarantined: list | None = None) -> dict:
    """Copy the class folders found under ``source_root`` into ``out``; return what was copied."""
    folders = find_class_folders(source_root, data)
    quarantined = [] if quarantined is None else quarantined
    jobs = class_files(folders.train, quarantined) + class_files(folders.test, quarantined, TEST_SUBFOLDER)
    files_sha256 = copy_files(jobs, out)
    copied = class_counts(jobs)
    counts = {cls: copied.get(cls, 0) for cls in data.classes}
    test_files = sorted(r.as_posix() for _, r in jobs if TEST_SUBFOLDER in r.parts[1:2])
    return {"files_sha256": files_sha256, "counts": counts,
            "has_test_folder": bool(folders.test), "test_files": test_files}


def write_synthetic(data: DataParams, dest: Path) -> None:
    synthetic = data.synthetic
    names = {"defect": data.positive_class, "ok": data.negative_class}
    for key, i, img, _ in tqdm(generate(synthetic.per_class, synthetic.size, synthetic.seed),
                               total=2 * synthetic.per_class, desc="synthesise", unit="img", mininterval=1):
        target = dest / names[key] / f"synthetic_{key}_{i:05d}.jpeg"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(encode_jpeg(img))
