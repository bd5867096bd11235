"""Stage train (after shards): a grayscale CNN on raw 0-255 pixels, early stopping on validation loss.

Images come from the shards stage (data/shards: decoded and resized once, uint8 at train.image_size).
train.input: stream (default) reads them through tf.data in shuffled chunks, interleaved and prefetched, with a
bounded shuffle buffer, so memory does not grow with the dataset; memory loads each split into one array first
(the pre-shard path). Same seed, same stream. With GPUs visible the model trains under
tf.distribute.MirroredStrategy (train.batch_size is the global batch). Opens the MLflow run the later stages log into.
Outputs: models/model.keras, reports/train/history.csv, models/mlflow_run.json.
"""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path

import numpy as np

from stages.config import flat_params, load_params
from stages.errors import at_safe_points, check_interrupted, cli
from stages.fsutil import staged_outputs, write_csv, write_json

MODEL = Path("models/model.keras")
HISTORY = Path("reports/train/history.csv")


def photometric(x, seed, a):
    """Random camera drift on a float32 batch [B, H, W, 1] of 0-255 pixels (train.augment):
    exposure gain, gamma, contrast, Gaussian blur, sensor noise, each applied to a random
    share (train.augment.probability) of the images. Stateless ops: same seed, same batch."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 12))

    def uniform(i, lo_hi, shape=None):
        shape = [b, 1, 1, 1] if shape is None else shape
        return tf.random.stateless_uniform(shape, seeds[i], lo_hi[0], lo_hi[1])

    def sometimes(i, changed, original):
        return tf.where(tf.random.stateless_uniform([b, 1, 1, 1], seeds[i]) < a.probability, changed, original)

    if a.gain is not None:
        x = sometimes(7, tf.clip_by_value(x * uniform(0, a.gain), 0.0, 255.0), x)
    if a.gamma is not None:
        g = tf.exp(uniform(1, (float(np.log(a.gamma[0])), float(np.log(a.gamma[1])))))
        x = sometimes(8, 255.0 * tf.pow(x / 255.0 + 1e-6, g), x)
    if a.contrast is not None:
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = sometimes(9, tf.clip_by_value((x - mean) * uniform(2, a.contrast) + mean, 0.0, 255.0), x)
    if a.blur_sigma is not None:
        sigma = uniform(3, a.blur_sigma, [])
        k = tf.exp(-0.5 * tf.square(tf.range(-4.0, 5.0) / sigma))
        k = k / tf.reduce_sum(k)
        blurred = tf.nn.conv2d(x, tf.reshape(k, [9, 1, 1, 1]), 1, "SAME")
        x = sometimes(4, tf.nn.conv2d(blurred, tf.reshape(k, [1, 9, 1, 1]), 1, "SAME"), x)
    if a.noise_sigma is not None:
        noise = tf.random.stateless_normal(tf.shape(x), seeds[5]) * uniform(6, a.noise_sigma)
        x = sometimes(10, tf.clip_by_value(x + noise, 0.0, 255.0), x)
    return x


def geometric(x, seed, a):
    """One random projective warp per image (train.augment): flips, rotation by any angle, zoom,
    shift and camera tilt (perspective) composed into a single bilinear resampling with reflected
    borders. The matrix maps output pixels to input pixels."""
    import tensorflow as tf

    b, size = tf.shape(x)[0], tf.cast(tf.shape(x)[1], tf.float32)
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 8))
    u = lambda i, lo, hi: tf.random.stateless_uniform([b], s[i], lo, hi)  # noqa: E731
    one, zero = tf.ones([b]), tf.zeros([b])
    theta = u(0, 0.0, 2 * np.pi) if a.rotate else zero
    scale = u(1, 1.0 - a.zoom, 1.0 + a.zoom)
    fx = tf.where(u(2, 0, 1) < 0.5, -one, one) if a.flip else one
    fy = tf.where(u(3, 0, 1) < 0.5, -one, one) if a.flip else one
    tx, ty = u(4, -a.shift, a.shift) * size, u(5, -a.shift, a.shift) * size
    # tilt: the far side of the image shrinks by up to `perspective` relative to the near side
    g, h = (u(6, -a.perspective, a.perspective) / size, u(7, -a.perspective, a.perspective) / size) \
        if a.perspective > 0 else (zero, zero)
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    c = (size - 1) / 2

    def mat(*rows):  # 9 [b] tensors -> [b, 3, 3]
        return tf.reshape(tf.stack(rows, axis=1), [-1, 3, 3])

    rotate = mat(cos * fx, -sin * fy, zero, sin * fx, cos * fy, zero, zero, zero, one)  # R(theta) F / scale
    tilt = mat(one, zero, zero, zero, one, zero, g, h, one)
    to_centre = mat(one, zero, -(c + tx), zero, one, -(c + ty), zero, zero, one)
    back = mat(one, zero, c * one, zero, one, c * one, zero, zero, one)
    m = back @ rotate @ tilt @ to_centre
    m = m / m[:, 2:3, 2:3]
    transforms = tf.reshape(m, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")


INTERLEAVE = 4  # shard chunks read in parallel (and interleaved image by image when training)


def batches(ds, p, training: bool):
    """(uint8 [H, W, 1], float32 [1]) elements -> float32 batches, augmented when training, prefetched."""
    import tensorflow as tf

    a = p.augment
    warp = a.flip or a.rotate or a.shift > 0 or a.zoom > 0 or a.perspective > 0

    def augment(x, step):
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(p.seed, tf.int64), step]), 2)
        if warp:
            x = geometric(x, seeds[0], a)
        return photometric(x, seeds[1], a)

    ds = ds.batch(p.batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
        ds = ds.map(lambda xy, step: (augment(xy[0], step), xy[1]), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_datasets(train, val, p):
    """train.input: memory. tf.data pipelines over whole-split uint8 arrays: cache, full shuffle, batch, augment,
    prefetch (memory grows with the dataset)."""
    import tensorflow as tf

    def to_ds(data, training: bool):
        ds = tf.data.Dataset.from_tensor_slices((data.images[..., None], data.labels.astype(np.float32)[:, None]))
        ds = ds.cache()
        if training:
            ds = ds.shuffle(len(data.labels), seed=p.seed, reshuffle_each_iteration=True)
        return batches(ds, p, training)

    return to_ds(train, True), to_ds(val, False)


def stream(reader, p, training: bool):
    """train.input: stream. The split's shard chunks (stages.dataset.ShardReader.chunks, READ_CHUNK images
    each) read by tf.data: training shuffles the chunk order every epoch, reads INTERLEAVE chunks in parallel
    and interleaves them image by image, then shuffles within train.shuffle_buffer images; otherwise the
    images come in manifest order. Memory holds the buffers, never the split. Deterministic given train.seed."""
    import tensorflow as tf

    from stages.dataset import READ_CHUNK

    size, labels = reader.size, reader.labels.astype(np.float32)
    chunks = np.array(reader.chunks(READ_CHUNK), np.int64)

    def read(chunk):
        shard, first, count = (int(v) for v in chunk)
        start = int(reader.starts[shard]) + first
        return reader.read_chunk(shard, first, count), labels[start:start + count]

    def chunk_images(chunk):
        x, y = tf.numpy_function(read, [chunk], (tf.uint8, tf.float32), stateful=False)
        x, y = tf.ensure_shape(x, [None, size, size]), tf.ensure_shape(y, [None])
        # unbatch copies each image out of the chunk; from_tensor_slices would hand out views that keep the
        # whole chunk alive while one of its images waits in the shuffle buffer (measured: ~3x the memory)
        return tf.data.Dataset.from_tensors((x[..., None], y[:, None])).unbatch()

    ds = tf.data.Dataset.from_tensor_slices(chunks)
    if training:
        ds = ds.shuffle(len(chunks), seed=p.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(chunk_images, cycle_length=INTERLEAVE, block_length=1 if training else READ_CHUNK,
                       num_parallel_calls=INTERLEAVE, deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(reader)))
    if training:
        ds = ds.shuffle(p.shuffle_buffer, seed=p.seed + 1, reshuffle_each_iteration=True)
    return batches(ds, p, training)


def replica_devices() -> list[str] | None:
    """The devices to mirror the model over: every visible GPU; else the logical CPUs when more than one is
    configured (tf.config.set_logical_device_configuration, as the strategy test does); else None."""
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if gpus:
        return [d.name for d in gpus]
    cpus = tf.config.list_logical_devices("CPU")
    return [d.name for d in cpus] if len(cpus) > 1 else None


def distribution():
    """tf.distribute.MirroredStrategy over replica_devices(), or the default (single-device) strategy."""
    import tensorflow as tf

    devices = replica_devices()
    return tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()


def learning_rate(p, steps_per_epoch: int):
    """cosine: one epoch of linear warm-up to train.learning_rate, then cosine decay to 0 at
    train.max_epochs; plateau: constant, divided by 3 when val_loss stalls."""
    import keras

    if p.lr_schedule == "plateau":
        return p.learning_rate, [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                                   patience=max(1, p.patience // 2), verbose=1)]
    warmup = steps_per_epoch if p.max_epochs > 1 else 0
    decay = max(1, steps_per_epoch * p.max_epochs - warmup)
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup else p.learning_rate, decay, alpha=0.0,
                                                  warmup_target=p.learning_rate if warmup else None,
                                                  warmup_steps=warmup), []


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    w = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(w[0]), 1: float(w[1])}


def main() -> None:
    params = load_params()
    p = params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from stages.dataset import SplitData, dataset_sha256, open_shards
    from stages.models import build
    from stages.tracking import git_commit, start_run, tracking_uri

    keras.utils.set_random_seed(p.seed)
    tf.config.experimental.enable_op_determinism()
    pos = params.data.positive_class
    train = open_shards("train", p.image_size, pos)
    val = open_shards("val", p.image_size, pos)
    if p.input == "stream":
        train_ds, val_ds = stream(train, p, True), stream(val, p, False)
    else:
        train_ds, val_ds = make_datasets(SplitData(train.paths, train.labels, train.load_all()),
                                         SplitData(val.paths, val.labels, val.load_all()), p)
    strategy = distribution()
    with strategy.scope():
        model = build(p.arch, p.image_size, p.normalize)
        lr, lr_callbacks = learning_rate(p, int(np.ceil(len(train.labels) / p.batch_size)))
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy",
                      metrics=["accuracy", keras.metrics.AUC(name="auc")])
    replicas = strategy.num_replicas_in_sync
    print(f"train: {p.arch} model, {model.count_params():,} parameters, {len(train.labels)} train / "
          f"{len(val.labels)} val images at {p.image_size}px, input {p.input}"
          f"{f', MirroredStrategy over {replicas} devices' if isinstance(strategy, tf.distribute.MirroredStrategy) else ''}")

    sha = dataset_sha256()
    with staged_outputs(MODEL, HISTORY, Path("models/mlflow_run.json")) as out:
        mlflow, run = start_run(p.mlflow_experiment, flat_params(params),
                                tags={"git_commit": git_commit(), "dataset_sha256": sha, "arch": p.arch})
        try:
            epoch_times: list[float] = []

            class Track(keras.callbacks.Callback):
                """Epoch times and MLflow metrics; and the safe points where a stop signal ends fit."""

                def on_epoch_begin(self, epoch, logs=None):
                    check_interrupted()
                    self.t0 = time.perf_counter()

                def on_train_batch_end(self, batch, logs=None):
                    check_interrupted()

                def on_test_batch_end(self, batch, logs=None):
                    check_interrupted()

                def on_epoch_end(self, epoch, logs=None):
                    epoch_times.append(time.perf_counter() - self.t0)
                    logs = dict(logs or {}, epoch_seconds=epoch_times[-1])
                    mlflow.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)

            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=p.patience,
                                                    restore_best_weights=True, verbose=1)
            t0 = time.perf_counter()
            with at_safe_points():  # a stop signal ends fit between batches (Track), never inside tf.data
                history = model.fit(
                    train_ds, validation_data=val_ds, epochs=p.max_epochs, verbose=2,
                    class_weight=class_weights(train.labels, p.class_weight),
                    callbacks=[stopper, Track(), *lr_callbacks],
                )
            wall = time.perf_counter() - t0
            h = history.history
            epochs_run = len(h["loss"])
            best = int(np.argmin(h["val_loss"]))
            rows = [{"epoch": e + 1, **{k: float(v[e]) for k, v in h.items()}, "seconds": round(epoch_times[e], 2)}
                    for e in range(epochs_run)]
            write_csv(out.path(HISTORY), rows, list(rows[0].keys()))
            model.save(out.path(MODEL))
            summary = {"epochs_run": epochs_run, "best_epoch": best + 1, "best_val_loss": float(h["val_loss"][best]),
                       "train_seconds": wall, "seconds_per_epoch": float(np.median(epoch_times)),
                       "train_images_per_second": len(train.labels) * epochs_run / wall,
                       "parameters": model.count_params(), "replicas": replicas,
                       "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
            mlflow.log_metrics(summary)
            write_json(out.path(Path("models/mlflow_run.json")),
                       {"run_id": run.info.run_id, "experiment": p.mlflow_experiment, "tracking_uri": tracking_uri(),
                        **summary})
        except BaseException as exc:
            mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
    mlflow.log_artifact(str(HISTORY), "reports/train")
    mlflow.end_run()
    print(f"train: {epochs_run} epochs ({np.median(epoch_times):.1f} s each), best epoch {best + 1} "
          f"val_loss {h['val_loss'][best]:.4f}; MLflow run {run.info.run_id}")


if __name__ == "__main__":
    cli(main)()
