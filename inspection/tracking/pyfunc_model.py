"""Casting inspector: the exported SavedModel behind the MLflow pyfunc interface.

Input: float32 [N, H, W, 1], raw 0-255 grey levels of photos decoded as 8-bit grayscale and resized with
OpenCV INTER_AREA to H x W (artifacts/metadata.json "input"). Output: {"defect_probability": [N], "ood_score": [N]};
the route (PASS / REVIEW / REJECT / RETAKE) is decided from these with metadata.json's "route" block. A damaged
metadata.json, or one that does not match the SavedModel, stops the loading with one line (the model's code/
folder holds the schema and the signature runner, inspection/deploy/model_folder.py).

Logged as a file by inspection.tracking.registry.pyfunc_parts (MLflow "models from code"); importing it registers
the model with mlflow.models.set_model, so nothing in this package imports it.
"""
from typing import Any

import numpy as np
import mlflow
from mlflow.pyfunc import PythonModel, PythonModelContext


class SavedModelInspector(PythonModel):
    def load_context(self, context):
        # the model's code/ folder (code_paths) is on the path once the model loads, not when this file is read
        from inspection.deploy.model_folder import load_metadata, load_saved_model, run_signature

        self._run = run_signature
        self.metadata = load_metadata(context.artifacts["metadata"])
        # keep the module referenced: it owns the variables the signature uses
        self._module, self._fn = load_saved_model(context.artifacts["saved_model"], self.metadata,
                                                  context.artifacts["metadata"])
        self._input = self.metadata["input"]["name"]

    # model_input: np.ndarray is the tensor hint MLflow accepts without deriving a schema from it, so the logged
    # TensorSpec signature (the input's name, float32 [-1, H, W, 1]) stays the one that validates requests. Through
    # that named signature pyfunc passes {name: array}; a bare array (a direct call) is accepted too.
    def predict(self, context: PythonModelContext, model_input: np.ndarray,
                params: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
        x = model_input[self._input] if isinstance(model_input, dict) else model_input
        out = self._run(self._fn, self._input, x)
        return {k: v.astype(np.float32) for k, v in sorted(out.items())}


mlflow.models.set_model(SavedModelInspector())
