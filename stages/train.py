"""TODO docstring."""
from __future__ import annotations

import os
import resource
import time
from pathlib import Path
import numpy as np
from inspection.config import flat_params, load_params
from inspection.interrupts import at_safe_points, check_interrupted
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs, write_csv, write_json
from inspection.artifacts import HISTORY, MODEL
from inspection.model.input_pipeline import distribution, make_datasets, stream
from inspection.model.training import class_weights, learning_rate


def main() -> None:
    params = load_params()
    p = params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from inspection.data.dataset import SplitData, dataset_sha256, open_shards
    from inspection.model.architectures import build
    from inspection.tracking.runs import git_commit, start_run
    from inspection.tracking.store import tracking_uri

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
