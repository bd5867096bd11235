"""On-disk shards: every manifest image, decoded and resized once to the model's input size.

The pixels are exactly ``inspection.data.images.resize(read_gray(path), train.image_size)`` (OpenCV INTER_AREA, the
resize the browser page and the exported model's consumers reproduce), so training reads what deployment
feeds. Storing at the input size, not at full resolution, keeps the bytes small (128 px: 16 KiB per image,
1/5.5 of a 300 px original) and leaves no resize to do (or to get subtly different) inside ``tf.data``.
Shards are written one at a time: the stage's memory holds one shard, whatever the dataset's size.
Outputs: data/shards/<split>-NNN.npy (uint8 [n, size, size], n <= train.shard_images, manifest order) and
data/shards/index.json (read by inspection.data.dataset).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
from tqdm import tqdm
from inspection.data.dataset import SHARD_FORMAT, manifest_rows
from inspection.artifacts import SHARD_INDEX
from inspection.errors import UserError
from inspection.fsutil import sha256_file, write_json
from inspection.data.images import RESIZE_METHOD, read_gray, resize
from inspection.artifacts import MANIFEST, SPLITS


def decode(paths: list[str], size: int, pool: ThreadPoolExecutor, bar: tqdm) -> np.ndarray:
    """uint8 [n, size, size]: the one decode + resize of inspection.data.images (OpenCV releases the GIL)."""
    images = np.empty((len(paths), size, size), np.uint8)

    def one(i: int) -> None:
        images[i] = resize(read_gray(paths[i]), size)

    for _ in pool.map(one, range(len(paths))):
        bar.update()
    return images


def write_shards(folder: Path, size: int, shard_images: int) -> dict:
    """Write every split's shards and the index into ``folder``; returns the index."""
    rows = manifest_rows()
    index = {"format": SHARD_FORMAT, "image_size": size, "dtype": "uint8", "layout": "[n, size, size] C order",
             "resize": RESIZE_METHOD, "shard_images": shard_images, "manifest_sha256": sha256_file(MANIFEST),
             "splits": {}}
    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(4) as pool, tqdm(total=len(rows), desc="shards", unit="img", mininterval=2) as bar:
        for split in SPLITS:
            paths = [r["path"] for r in rows if r["split"] == split]
            if not paths:
                raise UserError(f"split {split!r} is empty in {MANIFEST}; re-run the split stage")
            shards = []
            for k, start in enumerate(range(0, len(paths), shard_images)):
                part = paths[start:start + shard_images]
                name = f"{split}-{k:03d}.npy"
                try:
                    np.save(folder / name, decode(part, size, pool, bar), allow_pickle=False)
                except OSError as exc:   # numpy's short write on a full disk names no file: name the shard
                    if exc.filename:
                        raise
                    raise OSError(exc.errno, exc.strerror or str(exc), str(folder / name)) from exc
                shards.append({"file": name, "images": len(part)})
            index["splits"][split] = {"images": len(paths), "shards": shards}
    write_json(folder / SHARD_INDEX, index)
    return index
