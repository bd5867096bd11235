"""Stage 5, export: SavedModel (serving_default: image float32 [N,H,W,1] raw 0-255 -> defect
probability [N,1]), a TF.js graph model converted from it, and models/metadata.json.

Asserts that the SavedModel matches Keras on test images within export.parity_tolerance.
"""
from __future__ import annotations

import hashlib
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
SIGNATURE = "serving_default"
INPUT_NAME = "image"


def export_saved_model(model, size: int, path: Path) -> None:
    import tensorflow as tf

    model.export(str(path), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, name=INPUT_NAME)])


def saved_model_predict(path: Path, images: np.ndarray) -> tuple[str, np.ndarray]:
    """Run the exported serving signature; returns (output name, probabilities [N, 1])."""
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures[SIGNATURE]
    out = fn(**{INPUT_NAME: tf.constant(images[..., None].astype(np.float32))})
    (name, value), = out.items()
    return name, value.numpy()


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
        h.update(f.relative_to(tfjs_dir).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:12]


def dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    params = load_params()
    x, t = params.export, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from stages.dataset import dataset_sha256, load_split
    from stages.evaluate import DRIFT_REFERENCE, METRICS, predict
    from stages.models import load_model
    from stages.tracking import RUN_FILE, git_commit, resume_run
    from stages.train import MODEL

    model = load_model(MODEL)
    test = load_split("test", t.image_size, params.data.positive_class, limit=x.parity_images)
    metrics = read_json(METRICS)
    with staged_outputs(SAVED_MODEL, TFJS, METADATA) as out:
        print("export: writing SavedModel")
        export_saved_model(model, t.image_size, out.path(SAVED_MODEL))
        keras_p = predict(model, test.images)
        output_name, saved_p = saved_model_predict(out.path(SAVED_MODEL), test.images)
        saved_p = saved_p[:, 0]
        diff = float(np.max(np.abs(keras_p - saved_p)))
        if diff > x.parity_tolerance:
            raise UserError(f"SavedModel and Keras disagree by {diff:.2e} (> export.parity_tolerance "
                            f"{x.parity_tolerance:g}); the export is wrong, do not deploy it")
        print("export: converting to TF.js graph model")
        convert_to_tfjs(out.path(SAVED_MODEL), out.path(TFJS), x.quantize)
        pos, neg = params.data.positive_class, params.data.negative_class
        run = read_json(RUN_FILE)
        metadata = {
            "version": model_version(out.path(TFJS)),
            "model": {"arch": t.arch, "parameters": int(model.count_params())},
            "classes": [neg, pos], "positive_class": pos,
            "output": {"name": output_name, "shape": [None, 1],
                       "meaning": f"probability of {pos!r}; verdict {pos!r} when probability >= threshold"},
            "threshold": metrics["threshold"], "policy": metrics["policy"], "policy_target": metrics["policy_target"],
            "review_band": ({"low": metrics["review_band"]["low"], "high": metrics["review_band"]["high"],
                             "meaning": "auto-pass below low, manual review from low to high, auto-reject from high"}
                            if metrics.get("review_band") else None),
            "drift": {**read_json(DRIFT_REFERENCE),
                      "rule": "flag an image whose brightness, contrast or sharpness (stages/imagestats.py, computed "
                              "on the resized model input) lies outside [min, max]"},
            "input": {"height": t.image_size, "width": t.image_size, "channels": 1, "dtype": "float32",
                      "range": "raw 0-255 grayscale (the model rescales inside)", "name": INPUT_NAME,
                      "signature": SIGNATURE, "resize": RESIZE_METHOD,
                      "grayscale": "decode as 8-bit grayscale (source images are 3-channel with equal planes)"},
            "test_metrics": {k: metrics["test"][k] for k in
                             ("n", "tp", "fp", "tn", "fn", "accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc")},
            "dataset_sha256": dataset_sha256(), "git_commit": git_commit(), "mlflow_run_id": run["run_id"],
            "parity": {"images": len(test.labels), "max_abs_diff_saved_model_vs_keras": diff},
            "size_bytes": {"saved_model": dir_size(out.path(SAVED_MODEL)), "tfjs": dir_size(out.path(TFJS))},
            "tfjs_quantization": x.quantize,
        }
        write_json(out.path(METADATA), metadata)
    with resume_run() as mlflow:
        mlflow.log_metrics({"export_max_abs_diff": diff, "tfjs_bytes": metadata["size_bytes"]["tfjs"]})
        mlflow.log_artifact(str(METADATA), "model")
        mlflow.log_artifacts(str(SAVED_MODEL), "model/saved_model")
        mlflow.log_artifacts(str(TFJS), "model/tfjs")
    print(f"export: SavedModel vs Keras max |diff| {diff:.2e} on {len(test.labels)} images; TF.js model "
          f"{metadata['size_bytes']['tfjs']:,} bytes")


if __name__ == "__main__":
    cli(main)()
