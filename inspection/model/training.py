"""How the train stage trains: the learning-rate schedule, class weights, the epoch tracker, precise BatchNorm and
the "settled" test.

``learning_rate`` returns the optimizer's learning rate and the callbacks it needs: train.lr_schedule cosine (one
epoch of linear warm-up, then cosine decay to 0 at train.max_epochs, no callback) or plateau (constant,
multiplied by 0.3 by ReduceLROnPlateau when val_loss stalls). ``class_weights`` returns sklearn's balanced
weights for the two classes, or None when train.class_weight is none. ``tracker`` / ``history_rows``: the
per-epoch progress line, MLflow metrics and history rows. ``precise_batchnorm`` re-estimates the BatchNorm
statistics on clean training images after each epoch (train.bn_calibration_images). ``settled``: whether the
last validation losses stayed near the lowest (train.settle_epochs, train.settle_ratio), ``unsettled_warning``
the loud line when not. ``settle_callbacks``: precise BatchNorm and early stopping; ``summarize``: the run's
training summary.
"""
from __future__ import annotations

import numpy as np


def learning_rate(train_params, steps_per_epoch: int):
    """cosine: one epoch of linear warm-up to train.learning_rate, then cosine decay to 0 at
    train.max_epochs; plateau: constant, divided by 3 when val_loss stalls."""
    import keras

    if train_params.lr_schedule == "plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                    patience=max(1, train_params.patience // 2), verbose=1)
        return train_params.learning_rate, [plateau]
    warmup = steps_per_epoch if train_params.max_epochs > 1 else 0
    decay = max(1, steps_per_epoch * train_params.max_epochs - warmup)
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup else train_params.learning_rate, decay, alpha=0.0,
                                                  warmup_target=train_params.learning_rate if warmup else None,
                                                  warmup_steps=warmup), []


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """sklearn's balanced class weights (train.class_weight: balanced), or None (none)."""
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    w = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(w[0]), 1: float(w[1])}


def tracker(log_metrics, epoch_times: list[float]):
    """A Keras callback: each epoch's wall time and metrics to ``log_metrics(dict, step=epoch)``; and the safe
    points where a stop signal ends fit (between batches, never inside tf.data's iterator set-up)."""
    import time

    import keras

    from inspection.interrupts import check_interrupted

    class Track(keras.callbacks.Callback):
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
            log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)

    return Track()


def history_rows(history: dict[str, list], epoch_times: list[float]) -> list[dict]:
    """reports/train/history.csv: one row per epoch, every Keras metric and the epoch's seconds."""
    return [{"epoch": e + 1, **{k: float(v[e]) for k, v in history.items()}, "seconds": round(epoch_times[e], 2)}
            for e in range(len(history["loss"]))]


def calibration_images(reader, n: int, blocks: int = 16) -> np.ndarray:
    """``n`` training images for re-estimating the BatchNorm statistics: ``blocks`` evenly spaced runs of the split
    (manifest order, so both classes and every part of the split are present), clean, the same every epoch.
    float32 [n, size, size, 1]."""
    total = len(reader)
    n = min(n, total)
    per = max(1, n // blocks)
    starts = np.linspace(0, total - per, num=max(1, n // per)).astype(int)
    return np.concatenate([reader.read(int(s), int(s) + per) for s in starts])[..., None].astype(np.float32)


def batchnorm_layers(model) -> list:
    import keras

    return [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]


def recalibrate_batchnorm(model, images: np.ndarray, batch: int = 64) -> None:
    """Precise BatchNorm (Wu & Johnson 2021): replace every BatchNorm layer's moving mean and variance by the
    average of its batch statistics over ``images``, computed with the current weights.

    Why: with momentum 0.9 the moving statistics are an average over the last ~10 augmented training batches,
    taken while the weights move fast; on the mirror (seed 0) that made the validation loss swing 0.15 -> 1.13
    -> 2.34 between epochs while the same weights with re-estimated statistics gave 0.11 -> 0.12 -> 0.10
    (README Results). A validation loss that measures the weights, not the lag of the statistics, is what early
    stopping and the exported model need."""
    layers = batchnorm_layers(model)
    if not layers or not len(images):
        return
    momenta = [layer.momentum for layer in layers]
    try:
        for k, start in enumerate(range(0, len(images), batch)):
            for layer in layers:   # running mean over batches: new = old * k/(k+1) + batch / (k+1)
                layer.momentum = k / (k + 1)
            model(images[start:start + batch], training=True)
    finally:
        for layer, m in zip(layers, momenta):
            layer.momentum = m


def precise_batchnorm(model, images: np.ndarray, steps_per_epoch: int):
    """A Keras callback: ``recalibrate_batchnorm`` after the last training batch of every epoch, i.e. before
    Keras validates, so val_loss (early stopping, history) and the saved model use re-estimated statistics."""
    import keras

    class PreciseBatchNorm(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch + 1 == steps_per_epoch:
                recalibrate_batchnorm(model, images)

    return PreciseBatchNorm()


def settled(val_loss: list[float], epochs: int, ratio: float) -> bool:
    """Did training settle? None of the last ``epochs`` validation losses exceeds ``ratio`` x the lowest one (a
    run that still swings at its end says so: train's line, the report, MLflow)."""
    tail = val_loss[-epochs:]
    return bool(len(val_loss) >= epochs and max(tail) <= ratio * min(val_loss))


def summarize(history: dict, epoch_times: list[float], wall: float, train_images: int, model, replicas: int,
              train_params) -> dict:
    """models/mlflow_run.json's training summary: the epoch early stopping kept, whether the run settled, speed."""
    import resource

    start = min(train_params.stop_from_epoch, len(history["val_loss"]) - 1)   # the epochs early stopping could keep
    best = start + int(np.argmin(history["val_loss"][start:]))
    epochs_run = len(history["loss"])
    return {"epochs_run": epochs_run, "best_epoch": best + 1, "best_val_loss": float(history["val_loss"][best]),
            "settled": settled(history["val_loss"], train_params.settle_epochs, train_params.settle_ratio),
            "train_seconds": wall, "seconds_per_epoch": float(np.median(epoch_times)),
            "train_images_per_second": train_images * epochs_run / wall,
            "parameters": model.count_params(), "replicas": replicas,
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def settle_callbacks(model, train, train_params) -> list:
    """Precise BatchNorm after each epoch (train.bn_calibration_images; 0 = off), then early stopping on val_loss
    that neither stops nor keeps an epoch before train.stop_from_epoch."""
    import keras

    steps = int(np.ceil(len(train.labels) / train_params.batch_size))
    calibrate = ([precise_batchnorm(model, calibration_images(train, train_params.bn_calibration_images), steps)]
                 if train_params.bn_calibration_images else [])
    return [*calibrate, keras.callbacks.EarlyStopping(monitor="val_loss", patience=train_params.patience, verbose=1,
                                                      restore_best_weights=True,
                                                      start_from_epoch=train_params.stop_from_epoch)]


def unsettled_warning(val_loss: list[float], train_params) -> str:
    """train's loud line for a run whose last validation losses swung (inspection.model.training.settled)."""
    last = ", ".join(f"{v:.3f}" for v in val_loss[-train_params.settle_epochs:])
    return (f"train: WARNING: training did not settle: one of the last {train_params.settle_epochs} validation "
            f"losses ({last}) is over {train_params.settle_ratio:g}x the lowest ({min(val_loss):.3f}); do not ship "
            "this model without looking at reports/train/history.csv")
