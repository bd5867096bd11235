"""Stage export: the deployable model, checked against the Keras model it came from, and the headline metrics.

Reads models/model.keras, models/ood_gate.npz, models/mlflow_run.json, reports/metrics.json,
reports/eval/drift_reference.json, test images of data/split/manifest.csv and params ``export``. Writes
models/saved_model (serving_default: defect_probability and ood_score), models/tfjs (the TF.js graph model
converted from it), models/metadata.json and reports/headline.json; fails when the SavedModel and Keras
disagree by more than export.parity_tolerance. Logs all of it to the MLflow run and registers the model."""
from __future__ import annotations

import os
from pathlib import Path
import numpy as np
from inspection.config import load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.fsutil import read_json, staged_outputs, write_json
from inspection.artifacts import DECISION, HEADLINE, METADATA, METRICS, MODEL, RUN_FILE, SAVED_MODEL, TFJS
from inspection.deploy.metadata import headline, model_metadata
from inspection.deploy.saved_model import (convert_to_tfjs, export_saved_model, graph_output_names, output_diffs,
                                          saved_model_outputs)


def main() -> None:
    params = load_params()
    export, train = params.export, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.data.dataset import load_split
    from inspection.model.architectures import load_model
    from inspection.model.ood import load_gate, serving_model

    for needed, stage in ((MODEL, "train"), (METRICS, "evaluate"), (DECISION, "evaluate")):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the {stage} stage first (dvc repro {stage})")
    cnn = load_model(MODEL)
    metrics = read_json(METRICS)
    serving = serving_model(cnn, load_gate(), metrics.get("tta", "none"))   # the views evaluate measured
    test = load_split("test", train.image_size, params.data.positive_class, limit=export.parity_images)
    with staged_outputs(SAVED_MODEL, TFJS, METADATA, HEADLINE) as out:
        print("export: writing SavedModel (defect_probability and ood_score)")
        export_saved_model(serving, train.image_size, out.path(SAVED_MODEL))
        diff, ood_diff = check_parity(serving, out.path(SAVED_MODEL), test.images, export.parity_tolerance)
        names = graph_output_names(out.path(SAVED_MODEL))
        print("export: converting to TF.js graph model")
        convert_to_tfjs(out.path(SAVED_MODEL), out.path(TFJS), export.quantize)
        run = read_json(RUN_FILE)
        metadata = model_metadata(
            params, parameters=int(cnn.count_params()), outputs=names, metrics=metrics, run=run,
            parity={"images": len(test.labels), "max_abs_diff_saved_model_vs_keras": diff,
                    "max_rel_diff_ood_score": ood_diff},
            saved_model=out.path(SAVED_MODEL), tfjs=out.path(TFJS))
        judged = read_json(DECISION)
        metadata["decision"] = {k: judged[k] for k in ("ready", "sentence", "confidence")}
        write_json(out.path(METADATA), metadata)
        write_json(out.path(HEADLINE), {**headline(metrics, judged, metadata), "ready": judged["ready"]})
    log_to_mlflow(params, diff, metadata)
    from inspection.deploy.published import publish

    published = publish(METADATA.parent, metadata["version"])   # the batch CLI's default model, swapped atomically
    if published is not None:
        print(f"export: published to {published} (published/current: the batch CLI's default model)")
    print(f"export: SavedModel vs Keras max |diff| {diff:.2e} (probability), {ood_diff:.2e} (OOD score, relative) on "
          f"{len(test.labels)} images; TF.js model {metadata['size_bytes']['tfjs']:,} bytes")
    from inspection.tracking.registry import register_after_export

    register_after_export(params)  # the MLflow Model of this export and its registry version (tracking/registry.py)


def check_parity(serving, saved_model: Path, images: np.ndarray, tolerance: float) -> tuple[float, float]:
    """Max |diff| of the probability and max relative diff of the OOD score, SavedModel vs Keras; fails above
    ``tolerance`` (export.parity_tolerance)."""
    from inspection.model.ood import predict_both

    keras_p, keras_o = predict_both(serving, images)
    diff, ood_diff = output_diffs(saved_model_outputs(saved_model, images),
                                  {"defect_probability": keras_p, "ood_score": keras_o})
    if diff > tolerance or ood_diff > tolerance:
        raise UserError(f"SavedModel and Keras disagree by {diff:.2e} (probability) / {ood_diff:.2e} (OOD score, "
                        f"relative) > export.parity_tolerance {tolerance:g}; the export is wrong, do not "
                        f"deploy it")
    return diff, ood_diff


def log_to_mlflow(params, diff: float, metadata: dict) -> None:
    from inspection.tracking.runs import stage_run

    with stage_run("export", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_metrics({"export_max_abs_diff": diff, "tfjs_bytes": metadata["size_bytes"]["tfjs"]})
        mlflow.set_tags({"ready_for_line": str(metadata["decision"]["ready"]).lower()})
        mlflow.log_artifact(str(METADATA), "model")
        mlflow.log_artifact(str(HEADLINE), "reports")
        mlflow.log_artifacts(str(SAVED_MODEL), "model/saved_model")
        mlflow.log_artifacts(str(TFJS), "model/tfjs")


if __name__ == "__main__":
    cli(main)()
