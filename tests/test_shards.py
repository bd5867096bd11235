"""The shards stage and the streaming readers: the pixels are the one decode + resize, in manifest order."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages import download
from stages import shards
from stages import split
from inspection.data.dataset import iter_split, load_split, manifest_rows, open_shards
from inspection.errors import UserError
from inspection.data.images import read_gray, resize

from conftest import make_class_tree


@pytest.fixture
def sharded(project, tmp_path):
    """30 JPEGs per class (64 px) plus odd-sized PNGs, split, and shards of 7 images at 32 px."""
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=30)
    rng = np.random.default_rng(0)
    for k in range(4):  # non-square, larger than the input: INTER_AREA really averages
        cv2.imwrite(str(src / "ok" / f"wide_{k}.png"), rng.integers(0, 256, (70, 90), dtype=np.uint8))
    project(data__source="local", data__local__path=str(src), train__image_size=32, train__shard_images=7)
    download.main()
    split.main()
    shards.main()
    return tmp_path


def test_shards_hold_the_one_resize_in_manifest_order(sharded):
    index = json.loads(Path("data/shards/index.json").read_text())
    assert index["image_size"] == 32 and index["shard_images"] == 7
    for name in ("train", "val", "test"):
        rows = manifest_rows(name)
        expected = np.stack([resize(read_gray(r["path"]), 32) for r in rows])
        info = index["splits"][name]
        assert info["images"] == len(rows) and all(s["images"] <= 7 for s in info["shards"])
        on_disk = np.concatenate([np.load(Path("data/shards") / s["file"]) for s in info["shards"]])  # plain .npy
        np.testing.assert_array_equal(on_disk, expected)
        batches = list(iter_split(name, 32, 5, "defect"))
        assert [len(b.paths) for b in batches[:-1]] == [5] * (len(batches) - 1)
        np.testing.assert_array_equal(np.concatenate([b.images for b in batches]), expected)
        assert sum((b.paths for b in batches), []) == [r["path"] for r in rows]
        labels = np.concatenate([b.labels for b in batches])
        np.testing.assert_array_equal(labels, [r["label"] == "defect" for r in rows])
        np.testing.assert_array_equal(load_split(name, 32, "defect").images, expected)  # the in-memory path agrees
    reader = open_shards("train", 32, "defect")
    everything = reader.load_all()
    for start, stop in [(0, 7), (5, 16), (13, 14), (6, 29), (len(reader) - 3, len(reader) + 10)]:
        np.testing.assert_array_equal(reader.read(start, stop), everything[start:stop])  # across shard boundaries
    assert [b.images.shape[0] for b in iter_split("val", 32, 4, "defect", limit=6)] == [4, 2]


def test_stale_or_missing_shards_are_a_user_error(sharded, project):
    with pytest.raises(UserError, match="32 px shards, train.image_size is 48"):
        open_shards("train", 48, "defect")
    manifest = Path("data/split/manifest.csv")
    rows = manifest.read_text().splitlines()
    manifest.write_text("\n".join(rows[:-1]) + "\n")  # one image fewer than the shards were written from
    with pytest.raises(UserError, match="another data/split/manifest.csv; re-run the shards stage"):
        open_shards("train", 32, "defect")
    shards.main()
    open_shards("train", 32, "defect")
    Path("data/shards/val-000.npy").write_bytes(Path("data/shards/val-000.npy").read_bytes()[:-100])
    with pytest.raises(UserError, match="truncated"):
        next(iter_split("val", 32, 64, "defect"))
    import shutil

    shutil.rmtree("data/shards")
    with pytest.raises(UserError, match="run the shards stage first"):
        open_shards("test", 32, "defect")
