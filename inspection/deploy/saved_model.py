"""The deployable model's files: the SavedModel with its one serving signature, its TF.js conversion and the
bundle's content hash (its version).

SavedModel (serving_default: image float32 [N,H,W,1] raw 0-255 -> defect_probability [N,1] and ood_score [N,1]),
and a TF.js graph model converted from it. The export stage writes models/metadata.json (inspection/deploy/
metadata.py) and checks the SavedModel against Keras (export.parity_tolerance); every consumer calls the signature
through inspection.deploy.model_folder.run_signature.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
import numpy as np


OUTPUTS = ("defect_probability", "ood_score")


def output_diffs(got: dict, reference: dict) -> tuple[float, float]:
    """How far one run of the model is from another on the same images: max |diff| of the defect probability and
    max relative diff of the OOD score (|a - b| / max(1, |b|)); export (SavedModel vs Keras) and the browser
    parity (TF.js vs SavedModel) both judge with it."""
    import numpy as np

    p, ref_p = np.asarray(got["defect_probability"], float), np.asarray(reference["defect_probability"], float)
    o, ref_o = np.asarray(got["ood_score"], float), np.asarray(reference["ood_score"], float)
    return float(np.abs(p - ref_p).max()), float((np.abs(o - ref_o) / np.maximum(1.0, np.abs(ref_o))).max())
SIGNATURE = "serving_default"
INPUT_NAME = "image"


def export_saved_model(model, size: int, path: Path) -> None:
    import tensorflow as tf

    model.export(str(path), format="tf_saved_model", verbose=False,
                 input_signature=[tf.TensorSpec([None, size, size, 1], tf.float32, name=INPUT_NAME)])


def saved_model_outputs(path: Path, images: np.ndarray, batch: int = 256) -> dict[str, np.ndarray]:
    """Run the exported serving signature on uint8 [N, H, W]; returns {output name: [N] float64}."""
    import tensorflow as tf

    from inspection.deploy.model_folder import run_signature

    module = tf.saved_model.load(str(path))
    fn = module.signatures[SIGNATURE]
    parts: dict[str, list] = {}
    for i in range(0, len(images), batch):
        for k, v in run_signature(fn, INPUT_NAME, images[i:i + batch]).items():
            parts.setdefault(k, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


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


def tfjs_digest(tfjs_dir: Path) -> str:
    """SHA-256 of the TF.js model files (the graph and the weights): the one content hash of a bundle."""
    h = hashlib.sha256()
    for f in sorted(p for p in Path(tfjs_dir).rglob("*") if p.is_file()):
        data = f.read_bytes()
        if f.suffix == ".json":  # the converter writes model.json's keys in no fixed order
            data = json.dumps(json.loads(data), sort_keys=True).encode()
        h.update(f.relative_to(tfjs_dir).as_posix().encode() + b"\0" + data)
    return h.hexdigest()


def bundle_version(tfjs_dir: Path) -> str:
    """The version shown by the page and in its CSV: the bundle's content hash, short."""
    return tfjs_digest(tfjs_dir)[:12]
