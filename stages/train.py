"""Stage 3, train: a grayscale CNN on raw 0-255 pixels, early stopping on validation loss.

Images are decoded once into a uint8 array and served by tf.data (cache, shuffle,
augment, prefetch). Opens the MLflow run the later stages log into.
Outputs: models/model.keras, reports/train/history.csv, models/mlflow_run.json.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from stages.config import flat_params, load_params
from stages.errors import cli
from stages.fsutil import staged_outputs, write_csv, write_json

MODEL = Path("models/model.keras")
HISTORY = Path("reports/train/history.csv")


def make_datasets(train, val, p):
    import keras
    import tensorflow as tf

    aug_layers = []
    if p.augment.flip:
        aug_layers.append(keras.layers.RandomFlip("horizontal_and_vertical", seed=p.seed))
    if p.augment.rotate:
        aug_layers.append(keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=p.seed + 1))
    augment = keras.Sequential(aug_layers) if aug_layers else None

    def to_ds(data, training: bool):
        ds = tf.data.Dataset.from_tensor_slices((data.images[..., None], data.labels.astype(np.float32)[:, None]))
        ds = ds.cache()
        if training:
            ds = ds.shuffle(len(data.labels), seed=p.seed, reshuffle_each_iteration=True)
        ds = ds.batch(p.batch_size)
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=tf.data.AUTOTUNE)
        if training and augment is not None:
            ds = ds.map(lambda x, y: (augment(x, training=True), y), num_parallel_calls=tf.data.AUTOTUNE)
        return ds.prefetch(tf.data.AUTOTUNE)

    return to_ds(train, True), to_ds(val, False)


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

    from stages.dataset import dataset_sha256, load_split
    from stages.models import build
    from stages.tracking import git_commit, start_run, tracking_uri

    keras.utils.set_random_seed(p.seed)
    tf.config.experimental.enable_op_determinism()
    pos = params.data.positive_class
    train = load_split("train", p.image_size, pos)
    val = load_split("val", p.image_size, pos)
    train_ds, val_ds = make_datasets(train, val, p)
    model = build(p.arch, p.image_size)
    model.compile(optimizer=keras.optimizers.Adam(p.learning_rate), loss="binary_crossentropy",
                  metrics=["accuracy", keras.metrics.AUC(name="auc")])
    print(f"train: {p.arch} model, {model.count_params():,} parameters, {len(train.labels)} train / "
          f"{len(val.labels)} val images at {p.image_size}px")

    sha = dataset_sha256()
    with staged_outputs(MODEL, HISTORY, Path("models/mlflow_run.json")) as out:
        mlflow, run = start_run(p.mlflow_experiment, flat_params(params),
                                tags={"git_commit": git_commit(), "dataset_sha256": sha, "arch": p.arch})
        try:
            epoch_times: list[float] = []

            class Track(keras.callbacks.Callback):
                def on_epoch_begin(self, epoch, logs=None):
                    self.t0 = time.perf_counter()

                def on_epoch_end(self, epoch, logs=None):
                    epoch_times.append(time.perf_counter() - self.t0)
                    logs = dict(logs or {}, epoch_seconds=epoch_times[-1])
                    mlflow.log_metrics({k: float(v) for k, v in logs.items()}, step=epoch)

            stopper = keras.callbacks.EarlyStopping(monitor="val_loss", patience=p.patience,
                                                    restore_best_weights=True, verbose=1)
            t0 = time.perf_counter()
            history = model.fit(
                train_ds, validation_data=val_ds, epochs=p.max_epochs, verbose=2,
                class_weight=class_weights(train.labels, p.class_weight),
                callbacks=[stopper, Track(),
                           keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                             patience=max(1, p.patience // 2), verbose=1)],
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
                       "parameters": model.count_params()}
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
