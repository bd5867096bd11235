"""Scoring a split in chunks: model-size images from the shards, or full-resolution photos.

``stream_split`` applies a set of functions (probability, pooled features, camera statistics...) to a split read
from the shards ``CHUNK`` images at a time and joins the per-chunk results in manifest order (``joined``).
``photo_chunks`` reads full-resolution photos ``CHUNK`` at a time, and ``scored`` resizes them (after an optional
change such as a perturbation) and returns camera statistics, defect probability and OOD score from the serving
model. ``predict`` calls the model in batches of ``BATCH``. Memory holds one chunk of images at a time.
"""
from __future__ import annotations

from typing import Callable, Iterator, Sequence
import numpy as np
from tqdm import tqdm


BATCH = 64    # images per model call
CHUNK = 256   # images per read: a run of shard images, or full-resolution photos decoded at a time. A multiple of
# BATCH, so the model sees the same batches as on a whole split (bit-identical numbers).


def predict(model, images: np.ndarray, batch: int | None = None) -> np.ndarray:
    return model.predict(images[..., None].astype(np.float32), batch_size=batch or BATCH,
                         verbose=0)[:, 0].astype(np.float64)


def joined(parts: list):
    """Per-chunk results -> one result: arrays concatenated, dicts key by key, lists chained."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: joined([p[k] for p in parts]) for k in first}
    if isinstance(first, list):
        return [x for p in parts for x in p]
    return np.concatenate(parts)


def stream_split(reader, outputs: dict[str, Callable[[np.ndarray], object]], chunk: int | None = None) -> dict:
    """Each function of ``outputs`` on every image of a split read from the shards (``reader``:
    ``inspection.data.dataset.open_shards``), ``chunk`` images at a time (uint8 [b, size, size] -> a per-image array or a
    dict of them); the results joined in manifest order. Memory holds one chunk of images."""
    from inspection.errors import UserError

    chunk = chunk or CHUNK
    if not len(reader):
        raise UserError(f"split {reader.split!r} is empty in the shards; re-run the split and shards stages")
    parts: dict[str, list] = {k: [] for k in outputs}
    with tqdm(total=len(reader), desc=f"evaluate {reader.split} ({', '.join(outputs)})", unit="img",
              mininterval=2) as bar:
        for start in range(0, len(reader), chunk):
            images = reader.read(start, start + chunk)
            for k, fn in outputs.items():
                parts[k].append(fn(images))
            bar.update(len(images))
    return {k: joined(v) for k, v in parts.items()}


def photo_chunks(paths: Sequence[str], desc: str, chunk: int | None = None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(index of the first photo in ``paths``, full-resolution photos) for consecutive runs of ``chunk`` paths."""
    from inspection.data.images import read_many

    chunk = chunk or CHUNK
    with tqdm(total=len(paths), desc=desc, unit="img", mininterval=2) as bar:
        for start in range(0, len(paths), chunk):
            photos = read_many(paths[start:start + chunk])
            yield start, photos
            bar.update(len(photos))


def scored(serving, photos: list[np.ndarray], size: int, change=None, first: int = 0) -> dict:
    """Full-resolution photos (each through ``change(first + i, photo)`` first: ``first`` is the index of
    ``photos[0]`` in its split) -> resize -> camera statistics and both model outputs:
    {"probability": [N], "ood": [N], "stats": [dict]}."""
    from concurrent.futures import ThreadPoolExecutor

    from inspection.data.images import resize
    from inspection.data.imagestats import features
    from inspection.model.ood import predict_both

    def one(i):
        small = resize(photos[i] if change is None else change(first + i, photos[i]), size)
        return small, features(small)

    with ThreadPoolExecutor(4) as pool:
        res = list(pool.map(one, range(len(photos))))
    prob, ood = predict_both(serving, np.stack([o[0] for o in res]), BATCH)
    return {"probability": prob, "ood": ood, "stats": [o[1] for o in res]}
