"""The model folder's metadata.json and the DVC metrics file reports/headline.json, as the export stage writes them.

``model_metadata`` is what every consumer of an exported model reads (the page, the batch CLI, the server, the
registry): classes, graph output names, the route rule, input format, drift reference, test numbers, provenance,
parity and sizes; each of them validates it with the model folder's one schema (inspection/deploy/model_folder.py,
web/src/schema.js in the page). ``headline`` is the dozen numbers `dvc exp show` / `dvc metrics diff` compare.
"""
from __future__ import annotations

from pathlib import Path
from inspection.artifacts import DRIFT_REFERENCE
from inspection.data.images import RESIZE_METHOD
from inspection.deploy.saved_model import INPUT_NAME, SIGNATURE, bundle_version
from inspection.fsutil import dir_size
from inspection.fsutil import read_json
from inspection.model.tta import VIEWS

TEST_METRICS = ("n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")
TEST_ROUTES = ("n", "missed", "false_rejects", "review", "retake", "review_share", "retake_share")


def model_metadata(params, *, parameters: int, outputs: dict[str, str], metrics: dict, run: dict, parity: dict,
                   saved_model: Path, tfjs: Path) -> dict:
    """metadata.json of the export in ``saved_model`` / ``tfjs``: ``parameters`` the Keras model's count,
    ``outputs`` signature output -> graph tensor name, ``metrics`` reports/metrics.json, ``run`` the MLflow run
    file, ``parity`` the SavedModel-vs-Keras check."""
    from inspection.data.dataset import dataset_sha256
    from inspection.decision.route import CSV_COLUMNS
    from inspection.tracking.runs import git_commit

    train, pos, neg = params.train, params.data.positive_class, params.data.negative_class
    route = {k: v for k, v in metrics["route"].items() if k != "test"}
    return {
        "version": bundle_version(tfjs),
        "model": {"arch": train.arch, "parameters": parameters},
        "classes": [neg, pos], "positive_class": pos,
        "outputs": outputs,
        "output": {"name": "defect_probability", "shape": [None, 1],
                   "meaning": f"probability of {pos!r}; the route (below) decides"},
        "route": route,
        "csv_columns": list(CSV_COLUMNS),
        "threshold": metrics["threshold"], "policy": metrics["policy"], "policy_target": metrics["policy_target"],
        "review_band": route["review_band"],
        "test_time_views": {"kind": metrics.get("tta", "none"), "views": VIEWS[metrics.get("tta", "none")],
                            "meaning": "the graph averages the logits of these views of each photo (inside the "
                                       "model: nothing to do for a consumer)"},
        "drift": {**read_json(DRIFT_REFERENCE),
                  "rule": "flag an image whose brightness, contrast or sharpness (inspection/data/imagestats.py, computed "
                          "on the resized model input) lies outside [min, max]"},
        "input": {"height": train.image_size, "width": train.image_size, "channels": 1, "dtype": "float32",
                  "range": "raw 0-255 grayscale (the model rescales inside)", "name": INPUT_NAME,
                  "signature": SIGNATURE, "resize": RESIZE_METHOD,
                  "max_pixels": params.data.max_image_pixels,   # larger photos: RETAKE from the header, never decoded
                  "grayscale": "decode as 8-bit grayscale (source images are 3-channel with equal planes)"},
        "test_metrics": {k: metrics["test"][k] for k in TEST_METRICS},
        "test_routes": {k: metrics["route"]["test"][k] for k in TEST_ROUTES},
        "dataset_sha256": dataset_sha256(), "git_commit": git_commit(), "mlflow_run_id": run["run_id"],
        "parity": parity,
        "size_bytes": {"saved_model": dir_size(saved_model), "tfjs": dir_size(tfjs)},
        "tfjs_quantization": params.export.quantize,
    }


def headline(metrics: dict, decision: dict, metadata: dict) -> dict:
    """The DVC metrics file: the numbers `dvc exp show` / `dvc metrics diff` compare. Nothing that varies from
    run to run on the same inputs: no wall times (they stay in reports/timings.json and MLflow). The REVIEW and
    RETAKE shares are the decision's, at the line's defect rate (reports/decision.json), as in the report."""
    rt = metrics["route"]["test"]
    line = {t["key"]: t["rate"] for t in decision["targets"]}
    return {"recall": metrics["test"]["recall"], "precision": metrics["test"]["precision"],
            "false_reject_rate": metrics["test"]["false_reject_rate"], "roc_auc": metrics["test"]["roc_auc"],
            "threshold": metrics["threshold"],
            "route_missed": rt["missed"], "route_false_rejects": rt["false_rejects"],
            "review_share_line": line["review"], "retake_share_line": line["retake"],
            "ood_battery_passed": metrics["ood"]["battery_passed"],
            "parameters": metadata["model"]["parameters"], "tfjs_bytes": metadata["size_bytes"]["tfjs"]}
