"""Stage train: fit the CNN (train.arch) on the train shards, early-stopped on the val shards.

Reads data/shards and the manifest; writes models/model.keras (the restored best epoch),
reports/train/history.csv (one row per epoch) and models/mlflow_run.json (the MLflow run the later stages log
into, with the training summary). Deterministic for a seed on one machine (Keras seed, TF op determinism).
"""
from __future__ import annotations

import os
import time

import numpy as np

from inspection.artifacts import HISTORY, MODEL, RUN_FILE
from inspection.config import flat_params, load_params
from inspection.fsutil import staged_outputs, write_csv, write_json
from inspection.interrupts import at_safe_points
from inspection.model.input_pipeline import distribution, make_datasets, stream
from inspection.model.training import (class_weights, history_rows, learning_rate, settle_callbacks, summarize,
                                       tracker, unsettled_warning)
from inspection.runner.cli import cli


def datasets(train_params, pos: str):
    """The train and val readers and their tf.data pipelines (streamed from the shards or held in memory)."""
    from inspection.data.dataset import SplitData, open_shards

    train, val = open_shards("train", train_params.image_size, pos), open_shards("val", train_params.image_size, pos)
    if train_params.input == "stream":
        return train, val, stream(train, train_params, True), stream(val, train_params, False)
    return train, val, *make_datasets(SplitData(train.paths, train.labels, train.load_all()),
                                      SplitData(val.paths, val.labels, val.load_all()), train_params)


def compiled(train_params, train_images: int):
    """The model, built and compiled under the distribution strategy, and the learning-rate callbacks."""
    import keras
    import tensorflow as tf

    from inspection.model.architectures import build

    strategy = distribution()
    with strategy.scope():
        model = build(train_params.arch, train_params.image_size, train_params.normalize, train_params.pooling)
        lr, lr_callbacks = learning_rate(train_params, int(np.ceil(train_images / train_params.batch_size)))
        model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy",
                      metrics=["accuracy", keras.metrics.AUC(name="auc")])
    mirrored = isinstance(strategy, tf.distribute.MirroredStrategy)
    return model, lr_callbacks, strategy.num_replicas_in_sync if mirrored else 1


def main() -> None:
    params = load_params()
    train_params = params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import tensorflow as tf

    from inspection.data.dataset import dataset_sha256, dataset_source
    from inspection.tracking.runs import start_run

    def counts(labels) -> dict:
        return {params.data.positive_class: int(np.sum(labels)), params.data.negative_class: int(len(labels) - np.sum(labels))}

    keras.utils.set_random_seed(train_params.seed)
    tf.config.experimental.enable_op_determinism()
    train, val, train_ds, val_ds = datasets(train_params, params.data.positive_class)
    model, lr_callbacks, replicas = compiled(train_params, len(train.labels))
    print(f"train: {train_params.arch} model, {model.count_params():,} parameters, {len(train.labels)} train / "
          f"{len(val.labels)} val images at {train_params.image_size}px, input {train_params.input}"
          f"{f', MirroredStrategy over {replicas} devices' if replicas > 1 else ''}")

    sha = dataset_sha256()
    with staged_outputs(MODEL, HISTORY, RUN_FILE) as out:
        mlflow, run = start_run(train_params.mlflow_experiment, flat_params(params),
                                tags={"dataset_sha256": sha, "arch": train_params.arch})  # + name, commit: run_identity
        mlflow.log_dataset("casting-images", sha, dataset_source(), {
            "sha256": sha, "train": counts(train.labels), "val": counts(val.labels)})
        try:
            epoch_times: list[float] = []
            callbacks = [*settle_callbacks(model, train, train_params), tracker(mlflow.log_metrics, epoch_times),
                         *lr_callbacks]
            t0 = time.perf_counter()
            with at_safe_points():  # a stop signal ends fit between batches (tracker), never inside tf.data
                history = model.fit(train_ds, validation_data=val_ds, epochs=train_params.max_epochs, verbose=2,
                                    shuffle=False,  # tf.data shuffles (input_pipeline.py); Keras warns on True
                                    class_weight=class_weights(train.labels, train_params.class_weight),
                                    callbacks=callbacks).history
            summary = summarize(history, epoch_times, time.perf_counter() - t0, len(train.labels), model, replicas,
                                train_params)
            rows = history_rows(history, epoch_times)
            write_csv(out.path(HISTORY), rows, list(rows[0].keys()))
            model.save(out.path(MODEL))
            mlflow.log_metrics({k: float(v) for k, v in summary.items()})
            mlflow.set_tags({"settled": str(summary["settled"]).lower()})
            # no store URI: every stage logs into the store it is given (MLFLOW_TRACKING_URI or the default)
            write_json(out.path(RUN_FILE), {"run_id": run.info.run_id, "experiment": train_params.mlflow_experiment,
                                            **summary})
        except BaseException as exc:
            mlflow.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
            raise
    mlflow.log_artifact(str(HISTORY), "reports/train")
    mlflow.end_run()
    print(f"train: {summary['epochs_run']} epochs ({summary['seconds_per_epoch']:.1f} s each), best epoch "
          f"{summary['best_epoch']} val_loss {summary['best_val_loss']:.4f}; MLflow run {run.info.run_id}")
    if not summary["settled"]:
        print(unsettled_warning(history["val_loss"], train_params))


if __name__ == "__main__":
    cli(main)()
