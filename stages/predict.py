"""Batch prediction for the plant: one CSV row per file with its route (PASS / REVIEW / REJECT / RETAKE).

    python -m stages.predict PATH... [--model models/ | models:/casting-inspector@champion] [--out verdicts.csv]

PATH: image files, folders (searched recursively for images), zips (their image members) or globs
("line3/**/*.jpg"). Every named file gets a row; an unreadable one is a RETAKE row with the reason,
never skipped. The columns and words are the inspector page's CSV (stages.route.CSV_COLUMNS):
file, route, reason, defect probability, threshold, OOD score, camera check, statistics, model version,
timestamp. The decision is stages.route.decide with the model's own metadata.json route block.

Streams: files are decoded by a small thread pool one batch ahead of the model, so memory does not
grow with the number of files; a progress bar goes to stderr; rows are written as they are decided.
"""
from __future__ import annotations

import argparse
import csv
import datetime as dt
import glob
import os
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from stages.errors import UserError, cli
from stages.images import IMAGE_EXTENSIONS, decode_gray, resize
from stages.imagestats import features
from stages.route import CSV_COLUMNS, camera_reasons, csv_row, decide

Item = tuple[str, Callable[[], bytes]]   # (name shown in the CSV, loader of the file's bytes)


@dataclass
class Predictor:
    """A deployed model folder: the two-output SavedModel and the metadata.json it was exported with."""
    folder: Path
    metadata: dict
    fn: object

    @property
    def size(self) -> int:
        return int(self.metadata["input"]["height"])

    def __call__(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        out = self.fn(image=tf.constant(batch[..., None].astype(np.float32)))
        return out["defect_probability"].numpy()[:, 0].astype(float), out["ood_score"].numpy()[:, 0].astype(float)


def model_folder(ref: str) -> Path:
    """A folder holding saved_model/ and metadata.json, or a registry reference models:/name@alias (or /version)."""
    if ref.startswith("models:/"):
        try:
            from stages.registry import resolve_model_dir
        except ImportError:
            raise UserError("registry references (models:/...) need stages/registry.py; pass a model folder") from None
        return Path(resolve_model_dir(ref))
    return Path(ref)


def load_predictor(ref: str = "models") -> Predictor:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    folder = model_folder(ref)
    meta_path, saved = folder / "metadata.json", folder / "saved_model"
    if not meta_path.exists() or not saved.is_dir():
        raise UserError(f"{folder} is not a model folder (needs metadata.json and saved_model/); run `dvc repro export` "
                        f"or pass --model <folder> / --model models:/casting-inspector@champion")
    import json

    metadata = json.loads(meta_path.read_text())
    if "route" not in metadata:
        raise UserError(f"{meta_path} has no route block (exported by an older version); re-run `dvc repro export`")
    import tensorflow as tf

    fn = tf.saved_model.load(str(saved)).signatures["serving_default"]
    return Predictor(folder, metadata, fn)


def expand(paths: Iterable[str]) -> Iterator[Item]:
    """Files, folders, zips and globs -> (name, loader) in a stable order. Named files always yield an item."""
    for arg in paths:
        matches = sorted(glob.glob(arg, recursive=True)) if glob.has_magic(arg) else [arg]
        if not matches:
            raise UserError(f"{arg} matches no file; check the pattern (quote it so the shell does not expand it)")
        for m in matches:
            p = Path(m)
            if p.is_dir():
                for f in sorted(q for q in p.rglob("*") if q.is_file() and q.suffix.lower() in IMAGE_EXTENSIONS
                                and not any(part.startswith(".") for part in q.relative_to(p).parts)):
                    yield str(f), f.read_bytes
            elif p.suffix.lower() == ".zip" and p.is_file():
                yield from _zip_items(p)
            elif p.exists() or not glob.has_magic(arg):
                yield str(p), (lambda p=p: p.read_bytes())


def _zip_items(path: Path) -> Iterator[Item]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        yield str(path), (lambda: b"")   # a broken archive is one RETAKE row, not a crash
        return
    for m in sorted(zf.infolist(), key=lambda m: m.filename):
        if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_EXTENSIONS:
            yield f"{path}/{m.filename}", (lambda m=m: zf.read(m))


def _prepare(item: Item, size: int) -> tuple[str, np.ndarray | None, dict | None, str]:
    name, load = item
    try:
        data = load()
    except (OSError, zipfile.BadZipFile, RuntimeError) as exc:  # unreadable file or zip member (bad CRC, ...)
        return name, None, None, f"unreadable: {getattr(exc, 'strerror', None) or exc}"
    img, why = decode_gray(data)
    if img is None:
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
        for decoded in _decoded(pool, _chunks(iter(items), batch), predictor.size):
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


def _decoded(pool: ThreadPoolExecutor, chunks: Iterator[list[Item]], size: int):
    """Decode batch k+1 in the pool while the caller runs the model on batch k."""
    prepare = lambda it: _prepare(it, size)  # noqa: E731
    nxt = next(chunks, None)
    future = pool.map(prepare, nxt) if nxt else None
    while future is not None:
        current = list(future)
        nxt = next(chunks, None)
        future = pool.map(prepare, nxt) if nxt else None
        yield current


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m stages.predict", description=__doc__.split("\n\n")[0])
    ap.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, zips or globs")
    ap.add_argument("--model", default="models", help="model folder (default models/) or models:/name@alias")
    ap.add_argument("--out", default="-", help="CSV file to write (default: standard output)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads")
    args = ap.parse_args()
    if args.batch < 1 or args.workers < 1:
        raise UserError("--batch and --workers must be at least 1")
    items = list(expand(args.paths))  # names and loaders only (no pixels): cheap even for 100,000 files
    if not items:
        raise UserError(f"no images found in {' '.join(args.paths)}; give image files, folders, zips or globs")
    predictor = load_predictor(args.model)
    from tqdm import tqdm

    counts = dict.fromkeys(("PASS", "REVIEW", "REJECT", "RETAKE"), 0)
    out_path = None if args.out == "-" else Path(args.out)
    # a regular file is written beside and renamed when complete; a device or pipe (/dev/null, a FIFO) is
    # written as it is: renaming over it would replace the device with a file
    special = out_path is not None and out_path.exists() and not out_path.is_file()
    tmp = out_path.with_name(f".partial-{out_path.name}") if out_path and not special else None
    try:
        f = open(tmp or out_path, "w", newline="") if out_path else sys.stdout
    except OSError as exc:
        raise UserError(f"cannot write {out_path}: {exc.strerror}; choose another --out") from None
    try:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        with tqdm(total=len(items), desc="predict", unit="img", file=sys.stderr, mininterval=1) as bar:
            for row in predict_items(items, predictor, args.batch, args.workers, bar):
                writer.writerow(row)
                counts[row["route"]] += 1
        if out_path:
            f.close()
        if tmp:
            os.replace(tmp, out_path)
    finally:
        if out_path and not f.closed:
            f.close()
        if tmp and tmp.exists():
            tmp.unlink()
    print(f"predict: {len(items)} files with model {predictor.metadata['version']}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + (f" -> {out_path}" if out_path else ""), file=sys.stderr)


if __name__ == "__main__":
    cli(main)()
