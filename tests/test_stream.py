"""The training stream over the shards: every image once per epoch, deterministic given the seed, memory
bounded whatever the dataset's size; and the MirroredStrategy path on two logical CPUs."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from inspection.data.dataset import SHARD_FORMAT, open_shards
from inspection.fsutil import sha256_file, write_csv, write_json

from conftest import REPO, make_class_tree, section  # noqa: E402

NO_AUGMENT = dict(flip=False, rotate=False, shift=0.0, zoom=0.0, perspective=0.0, gain=None, gamma=None,
                  contrast=None, blur_sigma=None, noise_sigma=None, probability=0.4)


def fake_shards(n: int, size: int, shard_images: int, seed: int = 0) -> None:
    """A manifest and shards written directly (no decoding) in the cwd: train has n images whose first two
    pixels encode their index; val and test 8 each."""
    rng = np.random.default_rng(seed)
    counts = {"train": n, "val": 8, "test": 8}
    rows = [{"path": f"data/raw/{s}_{i}.png", "label": "defect" if i % 3 == 0 else "ok", "split": s, "group": k,
             "sha256": "-"} for k, (s, i) in enumerate((s, i) for s, c in counts.items() for i in range(c))]
    write_csv(Path("data/split/manifest.csv"), rows, list(rows[0]))
    index = {"format": SHARD_FORMAT, "image_size": size, "shard_images": shard_images,
             "manifest_sha256": sha256_file("data/split/manifest.csv"), "splits": {}}
    Path("data/shards").mkdir(parents=True, exist_ok=True)
    for s, c in counts.items():
        files = []
        for k, start in enumerate(range(0, c, shard_images)):
            m = min(shard_images, c - start)
            x = rng.integers(0, 256, (m, size, size), dtype=np.uint8)
            ids = np.arange(start, start + m)
            x[:, 0, 0], x[:, 0, 1] = ids // 256, ids % 256
            np.save(f"data/shards/{s}-{k:03d}.npy", x)
            files.append({"file": f"{s}-{k:03d}.npy", "images": m})
        index["splits"][s] = {"images": c, "shards": files}
    write_json(Path("data/shards/index.json"), index)


def ids_of(batch) -> np.ndarray:
    x = batch[0].numpy()
    return (x[:, 0, 0, 0] * 256 + x[:, 0, 1, 0]).astype(int)


def epochs(p, reader, count: int = 2) -> list[list[int]]:
    from inspection.model.input_pipeline import stream

    keras.utils.set_random_seed(p.seed)  # as stages.train.main does
    ds = stream(reader, p, training=True)
    out = []
    for _ in range(count):
        seen = []
        for batch in ds:
            ids = ids_of(batch)
            np.testing.assert_array_equal(batch[1].numpy()[:, 0], reader.labels[ids])  # labels travel with images
            seen += ids.tolist()
        out.append(seen)
    return out


def test_training_stream_covers_every_image_once_and_is_deterministic(project):
    project()
    fake_shards(n=300, size=32, shard_images=70)
    reader = open_shards("train", 32, "defect")
    p = section("train", image_size=32, batch_size=16, shuffle_buffer=64, augment=section("train.augment", **NO_AUGMENT))
    first, second = epochs(p, reader)
    assert sorted(first) == list(range(300)) and sorted(second) == list(range(300))
    assert first != list(range(300)) and first != second  # shuffled, and reshuffled every epoch
    assert epochs(p, reader) == [first, second]  # same seed, same stream
    assert epochs(p.model_copy(update={"seed": 1}), reader)[0] != first
    # the chunk order is shuffled too: the first batch does not come from the first few chunks only
    assert max(first[:16]) > 4 * 32

    from inspection.model.input_pipeline import stream

    val = open_shards("val", 32, "defect")
    got = np.concatenate([ids_of(b) for b in stream(val, p, training=False)])
    np.testing.assert_array_equal(got, np.arange(8))  # evaluation order = manifest order, pixels untouched
    raw = np.concatenate([b[0].numpy()[..., 0] for b in stream(val, p, training=False)])
    np.testing.assert_array_equal(raw, val.load_all())

    augmented = section("train", image_size=32, batch_size=16, shuffle_buffer=64)
    keras.utils.set_random_seed(0)
    a = [b[0].numpy() for b in stream(reader, augmented, True).take(3)]
    keras.utils.set_random_seed(0)
    b = [b[0].numpy() for b in stream(reader, augmented, True).take(3)]
    np.testing.assert_array_equal(np.stack(a), np.stack(b))


MEMORY_CHILD = textwrap.dedent("""
    import json, resource, sys
    sys.path.insert(0, sys.argv[1])
    import keras
    from inspection.config import load_params
    from inspection.data.dataset import open_shards
    from inspection.model.input_pipeline import stream

    def peak():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    p = load_params().train
    keras.utils.set_random_seed(p.seed)
    reader = open_shards("train", p.image_size, "defect")
    it = iter(stream(reader, p, True))
    for _ in range(8):  # warm-up: threads, the shuffle buffer, prefetch
        next(it)
    before = peak()
    n = sum(1 for _ in it)
    streamed = peak()
    import psutil
    rss = psutil.Process().memory_info().rss   # the control compares resident sizes: the peak may be a transient
    whole = reader.load_all()  # control: the measurement does see a split held in memory
    print(json.dumps({"before": before, "streamed": streamed, "held": psutil.Process().memory_info().rss - rss,
                      "batches": n + 8, "checksum": int(whole[:, 0, 0].sum())}))
""")


def test_streaming_memory_does_not_grow_with_the_split(project, tmp_path):
    """One epoch over a 384 MiB split: the stream's peak memory grows by far less than the split (measured:
    ~50 MiB, the shuffle buffer, a few float32 batches and thread pools, about the same at 768 MiB)."""
    size, n = 128, 24 * 1024
    project(train__image_size=size, train__batch_size=64, train__shuffle_buffer=1024, train__augment=NO_AUGMENT)
    fake_shards(n=n, size=size, shard_images=2048)
    data_bytes = n * size * size
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    res = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(REPO)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-3000:]
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert m["batches"] == n // 64
    assert m["streamed"] - m["before"] < 0.25 * data_bytes, m
    assert m["held"] > 0.9 * data_bytes, m  # the control sees the whole split


STRATEGY_CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    from stages import train

    assert isinstance(train.distribution(), tf.distribute.MirroredStrategy)
    train.main()
""")


def test_mirrored_strategy_trains_on_two_logical_cpus(project, tmp_path):
    """The multi-GPU path, exercised on two logical CPU devices in a fresh process (logical devices must be
    configured before TensorFlow initialises)."""
    from stages import download
    from stages import shards
    from stages import split

    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=30)
    project(data__source="local", data__local__path=str(src), train__image_size=32, train__batch_size=8,
            train__max_epochs=1, train__shard_images=10)
    download.main()
    split.main()
    shards.main()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    res = subprocess.run([sys.executable, "-c", STRATEGY_CHILD, str(REPO)], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "MirroredStrategy over 2 devices" in res.stdout
    run = json.loads(Path("models/mlflow_run.json").read_text())
    assert run["replicas"] == 2 and run["epochs_run"] == 1
    from inspection.model.architectures import load_model

    model = load_model(Path("models/model.keras"))  # saved from the mirrored variables, loads without the strategy
    p = model.predict(np.full((2, 32, 32, 1), 128.0, np.float32), verbose=0)
    assert p.shape == (2, 1) and np.isfinite(p).all()
