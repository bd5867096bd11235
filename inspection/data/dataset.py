"""The manifest written by the split stage, and the images it lists.

Two ways to the pixels, both at the model's input size and both equal to ``inspection.data.images`` decode +
``resize`` (OpenCV INTER_AREA):

* ``load_split``: decode the split's files into one in-memory uint8 array (small splits, export checks);
* the shards written once by the ``shards`` stage (``data/shards``): ``open_shards`` gives a reader that
  reads any run of images with plain file reads (no whole-split array, no memory map: pages of a mapped
  file would count towards the process's resident memory), ``iter_split`` streams a split in batches in
  manifest order, and the train stage reads the chunks through ``tf.data``.

Shard layout: ``data/shards/<split>-NNN.npy`` hold uint8 ``[n, size, size]`` (standard .npy files,
``n <= train.shard_images``), the split's manifest rows in manifest order; ``data/shards/index.json``
records the image size, the resize method, the manifest's sha256 and every shard's file and image count.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
import numpy as np
from inspection.errors import UserError
from inspection.fsutil import read_csv, read_json, sha256_file
from inspection.data.images import load_images
from inspection.artifacts import MANIFEST, RAW, SOURCE_INFO
from inspection.artifacts import SHARDS, SHARD_INDEX


SOURCE_FILE = RAW / SOURCE_INFO
SHARD_FORMAT = 1
READ_CHUNK = 32  # images per read: the unit the training stream shuffles and interleaves


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


def dataset_source() -> str:
    """Where the images came from, as SOURCE.json records it (no machine folder): e.g.
    kaggle:ravirajsinh45/...-casting-product/versions/2, local:../shared/datasets/casting-product-train.zip."""
    info = read_json(SOURCE_FILE) if SOURCE_FILE.exists() else {}
    where = info.get("dataset") or info.get("path") or info.get("source", "unknown")
    return f"{info.get('source', 'unknown')}:{where}" + (f"/versions/{info['version']}" if "version" in info else "")


def npy_data_offset(path: Path) -> tuple[int, tuple[int, ...]]:
    """Byte offset of the array data in a C-ordered uint8 .npy file, and its shape."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version not in ((1, 0), (2, 0)):
            raise UserError(f"{path}: .npy format {version} is not supported; re-run the shards stage (dvc repro shards)")
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran or dtype != np.uint8:
            raise UserError(f"{path} is not a C-ordered uint8 shard; re-run the shards stage (dvc repro shards)")
        return f.tell(), tuple(shape)


class ShardReader:
    """One split's shards: its manifest rows (paths, labels) and reads of any run of its images."""

    def __init__(self, root: Path, split: str, size: int, rows: list[dict[str, str]], positive_class: str,
                 shards: list[dict]):
        self.root, self.split, self.size = root, split, size
        self.paths = [r["path"] for r in rows]
        self.labels = np.array([r["label"] == positive_class for r in rows], np.int32)
        self.files = [root / s["file"] for s in shards]
        self.counts = [int(s["images"]) for s in shards]
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64)
        self.offsets = []
        for f, n in zip(self.files, self.counts):
            if not f.exists():
                raise UserError(f"{f} is missing; re-run the shards stage (dvc repro shards)")
            offset, shape = npy_data_offset(f)
            if shape != (n, size, size):
                raise UserError(f"{f} holds {shape}, the index says {(n, size, size)}; re-run the shards stage")
            self.offsets.append(offset)
        if self.starts[-1] != len(self.paths):
            raise UserError(f"{root}: {self.starts[-1]} {split} images in the shards but {len(self.paths)} in "
                            f"{MANIFEST}; re-run the shards stage (dvc repro shards)")

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_bytes(self) -> int:
        return self.size * self.size

    def chunks(self, chunk: int = READ_CHUNK) -> list[tuple[int, int, int]]:
        """(shard, first image in the shard, images) runs of at most ``chunk`` images that cover the split in order."""
        return [(s, o, min(chunk, n - o)) for s, n in enumerate(self.counts) for o in range(0, n, chunk)]

    def read_chunk(self, shard: int, first: int, count: int) -> np.ndarray:
        """uint8 [count, size, size] with one pread (the page cache, not this process, holds the file)."""
        nbytes = count * self.image_bytes
        fd = os.open(self.files[shard], os.O_RDONLY)
        try:
            buf = os.pread(fd, nbytes, self.offsets[shard] + first * self.image_bytes)
        finally:
            os.close(fd)
        if len(buf) != nbytes:
            raise UserError(f"{self.files[shard]} is truncated; re-run the shards stage (dvc repro shards)")
        return np.frombuffer(buf, np.uint8).reshape(count, self.size, self.size)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Images [start, stop) of the split, in manifest order, as one uint8 array."""
        stop = min(stop, len(self))
        parts = []
        s = int(np.searchsorted(self.starts, start, side="right")) - 1
        pos = start
        while pos < stop:
            first = pos - int(self.starts[s])
            count = min(stop - pos, self.counts[s] - first)
            parts.append(self.read_chunk(s, first, count))
            pos += count
            s += 1
        return np.concatenate(parts) if parts else np.empty((0, self.size, self.size), np.uint8)

    def load_all(self) -> np.ndarray:
        """The whole split in memory (train.input: memory, the pre-shard path)."""
        return self.read(0, len(self))


def open_shards(split: str, size: int, positive_class: str, root: Path = SHARDS) -> ShardReader:
    """The shards of ``split`` at ``size`` px, checked against the index and the current manifest."""
    index_file = root / SHARD_INDEX
    if not index_file.exists():
        raise UserError(f"{index_file} is missing; run the shards stage first (dvc repro shards)")
    index = read_json(index_file)
    if index.get("format") != SHARD_FORMAT or index["image_size"] != size:
        raise UserError(f"{root} holds {index.get('image_size')} px shards, train.image_size is {size}; "
                        "re-run the shards stage (dvc repro shards)")
    if index["manifest_sha256"] != sha256_file(MANIFEST):
        raise UserError(f"{root} was written from another {MANIFEST}; re-run the shards stage (dvc repro shards)")
    if split not in index["splits"]:
        raise UserError(f"split {split!r} is not in {index_file}; re-run the shards stage")
    return ShardReader(root, split, size, manifest_rows(split), positive_class, index["splits"][split]["shards"])


def iter_split(split: str, size: int, batch: int, positive_class: str, limit: int | None = None,
               root: Path = SHARDS) -> Iterator[SplitData]:
    """Stream a split from the shards in manifest order, ``batch`` images at a time (each a SplitData with
    uint8 images [b, size, size]); memory holds one batch, whatever the split's size."""
    reader = open_shards(split, size, positive_class, root)
    n = len(reader) if limit is None else min(limit, len(reader))
    for start in range(0, n, batch):
        stop = min(start + batch, n)
        yield SplitData(reader.paths[start:stop], reader.labels[start:stop], reader.read(start, stop))
