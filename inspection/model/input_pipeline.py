"""The training input: tf.data pipelines over the shards, batched and augmented, and the distribution strategy.

Images come from the shards stage (data/shards: decoded and resized once, uint8 at train.image_size).
train.input: stream (default) reads them through tf.data in shuffled chunks, interleaved and prefetched, with a
bounded shuffle buffer, so memory does not grow with the dataset; memory loads each split into one array first
(the pre-shard path). Same seed, same stream. With GPUs visible the model trains under
tf.distribute.MirroredStrategy (train.batch_size is the global batch). Opens the MLflow run the later stages log into.
Outputs: models/model.keras, reports/train/history.csv, models/mlflow_run.json.
"""
from __future__ import annotations

import numpy as np
from inspection.model.augment import geometric, photometric


INTERLEAVE = 4  # shard chunks read in parallel (and interleaved image by image when training)


def batches(ds, train_params, training: bool):
    """(uint8 [H, W, 1], float32 [1]) elements -> float32 batches, augmented when training, prefetched."""
    import tensorflow as tf

    a = train_params.augment
    warp = a.flip or a.rotate or a.shift > 0 or a.zoom > 0 or a.perspective > 0

    def augment(x, step):
        seeds = tf.random.experimental.stateless_split(tf.stack([tf.constant(train_params.seed, tf.int64), step]), 2)
        if warp:
            x = geometric(x, seeds[0], a)
        return photometric(x, seeds[1], a)

    ds = ds.batch(train_params.batch_size)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = tf.data.Dataset.zip((ds, tf.data.Dataset.counter()))
        ds = ds.map(lambda xy, step: (augment(xy[0], step), xy[1]), num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def make_datasets(train, val, train_params):
    """train.input: memory. tf.data pipelines over whole-split uint8 arrays: cache, full shuffle, batch, augment,
    prefetch (memory grows with the dataset)."""
    import tensorflow as tf

    def to_ds(data, training: bool):
        ds = tf.data.Dataset.from_tensor_slices((data.images[..., None], data.labels.astype(np.float32)[:, None]))
        ds = ds.cache()
        if training:
            ds = ds.shuffle(len(data.labels), seed=train_params.seed, reshuffle_each_iteration=True)
        return batches(ds, train_params, training)

    return to_ds(train, True), to_ds(val, False)


def stream(reader, train_params, training: bool):
    """train.input: stream. The split's shard chunks (inspection.data.dataset.ShardReader.chunks, READ_CHUNK images
    each) read by tf.data: training shuffles the chunk order every epoch, reads INTERLEAVE chunks in parallel
    and interleaves them image by image, then shuffles within train.shuffle_buffer images; otherwise the
    images come in manifest order. Memory holds the buffers, never the split. Deterministic given train.seed."""
    import tensorflow as tf

    from inspection.data.dataset import READ_CHUNK

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
        ds = ds.shuffle(len(chunks), seed=train_params.seed, reshuffle_each_iteration=True)
    ds = ds.interleave(chunk_images, cycle_length=INTERLEAVE, block_length=1 if training else READ_CHUNK,
                       num_parallel_calls=INTERLEAVE, deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(len(reader)))
    if training:
        ds = ds.shuffle(train_params.shuffle_buffer, seed=train_params.seed + 1, reshuffle_each_iteration=True)
    return batches(ds, train_params, training)


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
