"""TODO docstring."""
from __future__ import annotations

from inspection.deploy.saved_model import bundle_version

import os
from pathlib import Path
import numpy as np
from inspection.config import load_params
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.fsutil import read_json, staged_outputs, write_json
from inspection.data.images import RESIZE_METHOD
from inspection.artifacts import HEADLINE, METADATA, SAVED_MODEL, TFJS
from inspection.deploy.saved_model import INPUT_NAME, SIGNATURE, convert_to_tfjs, dir_size, export_saved_model, graph_output_names, saved_model_outputs


def main() -> None:
    params = load_params()
    x, t = params.export, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.data.dataset import dataset_sha256, load_split
    from inspection.artifacts import DRIFT_REFERENCE, METRICS
    from inspection.model.architectures import load_model
    from inspection.model.ood import load_gate, predict_both, serving_model
    from inspection.decision.route import CSV_COLUMNS
    from inspection.artifacts import RUN_FILE
    from inspection.tracking.runs import git_commit, stage_run
    from inspection.artifacts import MODEL

    for needed, stage in ((MODEL, "train"), (METRICS, "evaluate")):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the {stage} stage first (dvc repro {stage})")
    cnn = load_model(MODEL)
    serving = serving_model(cnn, load_gate())
    test = load_split("test", t.image_size, params.data.positive_class, limit=x.parity_images)
    metrics = read_json(METRICS)
    with staged_outputs(SAVED_MODEL, TFJS, METADATA, HEADLINE) as out:
        print("export: writing SavedModel (defect_probability and ood_score)")
        export_saved_model(serving, t.image_size, out.path(SAVED_MODEL))
        keras_p, keras_o = predict_both(serving, test.images)
        saved = saved_model_outputs(out.path(SAVED_MODEL), test.images)
        diff = float(np.max(np.abs(keras_p - saved["defect_probability"])))
        ood_diff = float(np.max(np.abs(keras_o - saved["ood_score"]) / np.maximum(1.0, np.abs(keras_o))))
        if diff > x.parity_tolerance or ood_diff > x.parity_tolerance:
            raise UserError(f"SavedModel and Keras disagree by {diff:.2e} (probability) / {ood_diff:.2e} (OOD score, "
                            f"relative) > export.parity_tolerance {x.parity_tolerance:g}; the export is wrong, do not "
                            f"deploy it")
        names = graph_output_names(out.path(SAVED_MODEL))
        print("export: converting to TF.js graph model")
        convert_to_tfjs(out.path(SAVED_MODEL), out.path(TFJS), x.quantize)
        pos, neg = params.data.positive_class, params.data.negative_class
        run = read_json(RUN_FILE)
        route = {k: v for k, v in metrics["route"].items() if k != "test"}
        metadata = {
            "version": bundle_version(out.path(TFJS)),
            "model": {"arch": t.arch, "parameters": int(cnn.count_params())},
            "classes": [neg, pos], "positive_class": pos,
            "outputs": names,
            "output": {"name": "defect_probability", "shape": [None, 1],
                       "meaning": f"probability of {pos!r}; the route (below) decides"},
            "route": route,
            "csv_columns": list(CSV_COLUMNS),
            "threshold": metrics["threshold"], "policy": metrics["policy"], "policy_target": metrics["policy_target"],
            "review_band": route["review_band"],
            "drift": {**read_json(DRIFT_REFERENCE),
                      "rule": "flag an image whose brightness, contrast or sharpness (stages/imagestats.py, computed "
                              "on the resized model input) lies outside [min, max]"},
            "input": {"height": t.image_size, "width": t.image_size, "channels": 1, "dtype": "float32",
                      "range": "raw 0-255 grayscale (the model rescales inside)", "name": INPUT_NAME,
                      "signature": SIGNATURE, "resize": RESIZE_METHOD,
                      "grayscale": "decode as 8-bit grayscale (source images are 3-channel with equal planes)"},
            "test_metrics": {k: metrics["test"][k] for k in
                             ("n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")},
            "test_routes": {k: metrics["route"]["test"][k] for k in
                            ("n", "missed", "false_rejects", "review", "retake", "review_share", "retake_share")},
            "dataset_sha256": dataset_sha256(), "git_commit": git_commit(), "mlflow_run_id": run["run_id"],
            "parity": {"images": len(test.labels), "max_abs_diff_saved_model_vs_keras": diff,
                       "max_rel_diff_ood_score": ood_diff},
            "size_bytes": {"saved_model": dir_size(out.path(SAVED_MODEL)), "tfjs": dir_size(out.path(TFJS))},
            "tfjs_quantization": x.quantize,
        }
        write_json(out.path(METADATA), metadata)
        write_json(out.path(HEADLINE), headline(metrics, run, metadata))
    with stage_run("export", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_metrics({"export_max_abs_diff": diff, "tfjs_bytes": metadata["size_bytes"]["tfjs"]})
        mlflow.log_artifact(str(METADATA), "model")
        mlflow.log_artifact(str(HEADLINE), "reports")
        mlflow.log_artifacts(str(SAVED_MODEL), "model/saved_model")
        mlflow.log_artifacts(str(TFJS), "model/tfjs")
    print(f"export: SavedModel vs Keras max |diff| {diff:.2e} (probability), {ood_diff:.2e} (OOD score, relative) on "
          f"{len(test.labels)} images; TF.js model {metadata['size_bytes']['tfjs']:,} bytes")
    from inspection.tracking.registry import register_after_export

    register_after_export(params)  # the MLflow Model of this export and its registry version (stages/registry.py)


def headline(metrics: dict, run: dict, metadata: dict) -> dict:
    """The DVC metrics file: the numbers `dvc exp show` / `dvc metrics diff` compare (nothing that varies from run
    to run on the same inputs but the training time, which the issue asks for)."""
    rt = metrics["route"]["test"]
    return {"recall": metrics["test"]["recall"], "precision": metrics["test"]["precision"],
            "false_reject_rate": metrics["test"]["false_reject_rate"], "roc_auc": metrics["test"]["roc_auc"],
            "threshold": metrics["threshold"],
            "route_missed": rt["missed"], "route_false_rejects": rt["false_rejects"],
            "review_share": rt["review_share"], "retake_share": rt["retake_share"],
            "ood_battery_passed": metrics["ood"]["battery_passed"],
            "train_seconds": round(float(run.get("train_seconds", 0.0)), 1),
            "parameters": metadata["model"]["parameters"], "tfjs_bytes": metadata["size_bytes"]["tfjs"]}


if __name__ == "__main__":
    cli(main)()
