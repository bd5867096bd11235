"""Batch prediction for the plant: one CSV row per file with its route (PASS / REVIEW / REJECT / RETAKE).

    python -m commands.predict PATH... [--model models/ | models:/casting-inspector@champion] [--out verdicts.csv]

PATH: image files, folders (searched recursively; symlinked folders are not entered), zips (their members) or
globs ("line3/**/*.jpg"). Every distinct file gets exactly one row (real paths de-duplicated): an unreadable one,
an unsupported format (.heic), a nested archive or a photo above the model's pixel limit (metadata.json
input.max_pixels, read from the header, never decoded) is a RETAKE row with the reason, never skipped. The columns and words are the inspector page's CSV (inspection.decision.route.CSV_COLUMNS):
file, route, reason, defect probability, threshold, OOD score, camera check, statistics, model version,
timestamp. The decision is inspection.decision.route.decide with the model's own metadata.json route block.

Streams: files are decoded by a small thread pool one batch ahead of the model, so memory does not
grow with the number of files; a progress bar goes to stderr; rows are written as they are decided.
"""
from __future__ import annotations

import datetime as dt
import glob
import os
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator
import numpy as np
from inspection.artifacts import PIPELINE_MODEL
from inspection.errors import UserError
from inspection.data.images import ARCHIVES, IMAGE_EXTENSIONS, decode_gray, not_a_photo_path, resize
from inspection.data.imagestats import features
from inspection.decision.route import camera_reasons, csv_row, decide
from inspection.deploy.model_folder import is_model_folder, load_metadata, load_saved_model, parts, run_signature
from inspection.deploy.resolver import model_folder


Item = tuple[str, Callable[[], bytes]]   # (name shown in the CSV, loader of the file's bytes)


@dataclass
class Predictor:
    """A deployed model folder: the two-output SavedModel and the metadata.json it was exported with."""
    folder: Path
    metadata: dict
    fn: object
    module: object = None   # the loaded SavedModel: it owns the variables ``fn`` uses

    @property
    def size(self) -> int:
        return int(self.metadata["input"]["height"])

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = run_signature(self.fn, self.metadata["input"]["name"], batch)
        return out["defect_probability"], out["ood_score"]


def load_predictor(ref: str = PIPELINE_MODEL) -> Predictor:
    """The model folder (or registry reference) ``ref``: metadata.json validated (inspection.deploy.model_folder),
    the SavedModel loaded and its serving signature checked against the file; one-line UserErrors otherwise."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = model_folder(ref)
    meta_path, saved, _ = parts(folder)
    if not is_model_folder(folder):
        raise UserError(f"{folder} is not a model folder (needs metadata.json and saved_model/); run `dvc repro export` "
                        f"or pass --model <folder> / --model models:/casting-inspector@champion")
    metadata = load_metadata(meta_path)   # before TensorFlow: a damaged file fails in a second
    module, fn = load_saved_model(saved, metadata, meta_path)
    return Predictor(folder, metadata, fn, module)




def _files(folder: Path) -> Iterator[Path]:
    """Every non-hidden file under ``folder``, sorted. A symlinked folder (a camera's share linked in) is entered
    once per real folder: a loop or a second link to a folder already walked adds nothing."""
    walked = {os.path.realpath(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        keep = []
        for d in sorted(dirnames):
            real = os.path.realpath(os.path.join(dirpath, d))
            if not d.startswith(".") and real not in walked:
                walked.add(real)
                keep.append(d)
        dirnames[:] = keep
        for name in sorted(filenames):
            f = Path(dirpath) / name
            if not name.startswith(".") and not (f.is_symlink() and not f.is_file()):  # a folder link past the
                yield f                                                            # loop limit is not a file


def expand(paths: Iterable[str]) -> Iterator[Item]:
    """Files, folders, zips and globs -> (name, loader) in a stable order: one item per distinct file (real
    paths de-duplicated, so a glob through a symlink loop or an overlapping argument adds nothing). Every file is
    an item, whatever its format (``_prepare`` gives unsupported ones a RETAKE reason); zips are opened."""
    seen: set[str] = set()

    def first_time(p: Path, from_glob: bool = False) -> bool:
        try:
            key = os.path.realpath(p, strict=True)
        except OSError:  # ELOOP: a glob's path through a symlink loop, at the kernel's depth limit
            if from_glob:
                return False
            key = os.path.abspath(p)  # a named file that cannot be read: its RETAKE row
        if key in seen:
            return False
        seen.add(key)
        return True

    def one(p: Path) -> Iterator[Item]:
        if p.suffix.lower() == ".zip" and p.is_file():
            yield from _zip_items(p)
        else:
            yield str(p), (lambda p=p: p.read_bytes())

    for arg in paths:
        matches = sorted(glob.glob(arg, recursive=True)) if glob.has_magic(arg) else [arg]
        if not matches:
            raise UserError(f"{arg} matches no file; check the pattern (quote it so the shell does not expand it)")
        for m in matches:
            p = Path(m)
            if p.is_dir():
                for f in _files(p):
                    if first_time(f):
                        yield from one(f)
            elif (p.exists() or not glob.has_magic(arg)) and first_time(p, glob.has_magic(arg)):
                yield from one(p)


def _zip_items(path: Path) -> Iterator[Item]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        yield str(path), (lambda: b"")   # a broken archive is one RETAKE row, not a crash
        return
    for m in sorted(zf.infolist(), key=lambda m: m.filename):
        if not m.is_dir() and not any(map(not_a_photo_path, Path(m.filename).parts)):
            yield f"{path}/{m.filename}", (lambda m=m: zf.read(m))


def _prepare(item: Item, size: int, max_pixels: int | None = None) -> tuple[str, np.ndarray | None, dict | None, str]:
    name, load = item
    suffix = Path(name).suffix.lower()
    if suffix in ARCHIVES:
        where = f" inside {Path(name.split('.zip/', 1)[0] + '.zip').name}" if ".zip/" in name else ""
        return name, None, None, (f"unreadable: an archive{where} is not a photo; extract it and pass the folder"
                                  if where else f"unreadable: {suffix} archives are not read; extract it and pass "
                                                "the folder (.zip files are read)")
    try:
        data = load()
    except (OSError, zipfile.BadZipFile, RuntimeError) as exc:  # unreadable file or zip member (bad CRC, ...)
        return name, None, None, f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    img, why = decode_gray(data, max_pixels)   # larger than the model's limit: refused from the header alone
    if img is None:
        if suffix not in IMAGE_EXTENSIONS and not why.startswith("too large"):
            why = (f"unsupported format {suffix or '(no extension)'}; save the photo as JPEG, PNG or TIFF"
                   if suffix in {".heic", ".heif", ".avif", ".raw", ".cr2", ".nef", ".dng"} or suffix
                   else "not a photo (no file extension and not a decodable image)")
        return name, None, None, f"unreadable: {why}"
    h, w = img.shape
    if w < size or h < size:  # as the page: the model's resize only shrinks (line photos are larger than its input)
        return name, None, None, f"unreadable: too small for the model ({w}x{h} px, need >= {size}x{size})"
    small = resize(img, size)
    return name, small, features(small), ""


def _chunks(items: Iterator[Item], n: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for it in items:
        chunk.append(it)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def predict_items(items: Iterable[Item], predictor: Predictor, batch: int = 64, workers: int = 2,
                  progress=None) -> Iterator[dict]:
    """CSV rows (dicts with CSV_COLUMNS) in input order; decoding runs one batch ahead of the model."""
    meta, rule = predictor.metadata, predictor.metadata["route"]
    camera = (rule.get("retake") or {}).get("camera") or {}
    with ThreadPoolExecutor(workers) as pool:
        for decoded in _decoded(pool, _chunks(iter(items), batch), predictor.size,
                                meta["input"].get("max_pixels")):
            ok = [d for d in decoded if d[1] is not None]
            probs, oods = predictor(np.stack([d[1] for d in ok])) if ok else ([], [])
            scores = {id(d): (p, o) for d, p, o in zip(ok, probs, oods)}
            for d in decoded:
                name, small, stats, why = d
                now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
                if small is None:
                    row = csv_row(name, "RETAKE", why, None, rule["threshold"], None, None, [], meta["version"], now)
                else:
                    p, o = scores[id(d)]
                    route, reason = decide(p, stats, o, rule)
                    row = csv_row(name, route, reason, p, rule["threshold"], o, stats,
                                  camera_reasons(stats, camera), meta["version"], now)
                if progress is not None:
                    progress.update(1)
                yield row


def _decoded(pool: ThreadPoolExecutor, chunks: Iterator[list[Item]], size: int, max_pixels: int | None = None):
    """Decode batch k+1 in the pool while the caller runs the model on batch k."""
    prepare = lambda it: _prepare(it, size, max_pixels)  # noqa: E731
    nxt = next(chunks, None)
    future = pool.map(prepare, nxt) if nxt else None
    while future is not None:
        current = list(future)
        nxt = next(chunks, None)
        future = pool.map(prepare, nxt) if nxt else None
        yield current
