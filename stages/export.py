"""Stage 5, export: SavedModel (serving_default: image float32 [N,H,W,1] raw 0-255 -> defect_probability
[N,1] and ood_score [N,1]), a TF.js graph model converted from it, models/metadata.json (with the route
block every consumer decides with) and reports/headline.json (the DVC metrics: a dozen headline numbers).

Asserts that the SavedModel matches Keras on test images within export.parity_tolerance (both outputs).
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from stages.config import load_params
from stages.errors import UserError, cli
from stages.fsutil import read_json, staged_outputs, write_json
from stages.images import RESIZE_METHOD

SAVED_MODEL = Path("models/saved_model")
TFJS = Path("models/tfjs")
METADATA = Path("models/metadata.json")
HEADLINE = Path("reports/headline.json")
OUTPUTS = ("defect_probability", "ood_score")
SIGNATURE = "serving_default"
INPUT_NAME = "image"


def export_saved_model(model, size: int, path: Path) -> None:
    import tensorflow as tf

    model.export(str(path), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, name=INPUT_NAME)])


def saved_model_outputs(path: Path, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Run the exported serving signature on uint8 [N, H, W]; returns {output name: [N] float64}."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    parts: dict[str, list] = {}
    for i in range(0, len(images), batch):
        out = fn(**{INPUT_NAME: tf.constant(images[i:i + batch, ..., None].astype(np.float32))})
        for k, v in out.items():
            parts.setdefault(k, []).append(v.numpy()[:, 0].astype(np.float64))
    return {k: np.concatenate(v) for k, v in parts.items()}


def saved_model_predict(path: Path, images: np.ndarray) -> tuple[str, np.ndarray]:
    """The defect probability output of the exported signature: (output name, probabilities [N, 1])."""
    return "defect_probability", saved_model_outputs(path, images)["defect_probability"][:, None]


def graph_output_names(path: Path) -> dict[str, str]:
    """Signature output -> graph tensor name (what the TF.js graph model calls it, e.g. Identity_1:0)."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    keys = tf.nest.flatten({k: k for k in fn.structured_outputs})
    return {k: t.name for k, t in zip(keys, fn.outputs)}


def convert_to_tfjs(saved_model: Path, dest: Path, quantize: str = "none") -> None:
    cmd = [sys.executable, "-m", "tensorflowjs.converters.converter", "--input_format=tf_saved_model",
           "--output_format=tfjs_graph_model", f"--signature_name={SIGNATURE}", "--saved_model_tags=serve",
           *(["--quantize_float16=*"] if quantize == "float16" else []),
           str(saved_model), str(dest)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"tensorflowjs_converter failed: {tail}")


def model_version(tfjs_dir: Path) -> str:
    """Short content hash of the TF.js model files: the version shown by the page and in its CSV."""
    h = hashlib.sha256()
    for f in sorted(p for p in tfjs_dir.rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.suffix == ".json":  # the converter writes model.json's keys in no fixed order
            data = json.dumps(json.loads(data), sort_keys=True).encode()
        h.update(f.relative_to(tfjs_dir).as_posix().encode() + b"\0" + data)
    return h.hexdigest()[:12]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    params = load_params()
    x, t = params.export, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from stages.dataset import dataset_sha256, load_split
    from stages.evaluate import DRIFT_REFERENCE, METRICS
    from stages.models import load_model
    from stages.ood import load_gate, predict_both, serving_model
    from stages.route import CSV_COLUMNS
    from stages.tracking import RUN_FILE, git_commit, stage_run
    from stages.train import MODEL

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
            "version": model_version(out.path(TFJS)),
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
    from stages.registry import register_after_export

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
