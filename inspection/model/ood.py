"""Out-of-distribution score: is this photo like the ones the model was trained on?

Method: the Mahalanobis distance of the network's pooled features (the input of the final
Dense layer: global-average-pooled conv features for `compact`, the Dense(128) activations for
`seed`) from their mean over the training photos, with a Ledoit-Wolf shrunk covariance
(sklearn), so a 128-dimensional covariance is well conditioned on a few thousand images.
The RETAKE limit is set on the validation photos (``calibrate_limit``): the lowest score at which the share of
validation photos sent to RETAKE (camera check or OOD) stays within the budget evaluate.retake.max_share with
confidence, i.e. the exact (Clopper-Pearson) upper bound of that share is at most the budget. A plain quantile
would meet the budget only on average: half of all test splits would exceed it. With evaluate.retake.ood_limit
validated (``calibrate_limit_validated``) it is calibrated so in every condition the model was validated under
(clean and each gated camera perturbation), as the camera check's range is.

The score travels with the model: ``serving_model`` adds it as a second output, so the
SavedModel, the TF.js model and every consumer compute the same number (no extra code to
mirror). Why this method, measured on the OOD battery (blank frames, noise, foreign objects,
cut-off and zoomed-in parts, exposure and blur extremes): see reports/eval/ood.csv and README.
"""
from __future__ import annotations

from pathlib import Path
import keras
import numpy as np
from keras import layers, ops
from inspection.artifacts import GATE


METHOD = ("Mahalanobis distance of the pooled CNN features (input of the final Dense layer) from the training "
          "photos' mean, Ledoit-Wolf covariance; limit = the lowest validation score that keeps the validation "
          "RETAKE share's exact upper bound within evaluate.retake.max_share")


def method(fit: str, validated: bool, margin: float | None = None) -> str:
    """METHOD for evaluate.retake.ood_fit (clean | rotated), a limit calibrated under the gated perturbations and,
    with evaluate.retake.ood_limit tiered, widened by ``margin`` (the clean limit then sends a pass to REVIEW)."""
    return (METHOD.replace("the training photos' mean", "the training photos' mean (each photo also once rotated by a "
                           "random angle)") if fit == "rotated" else METHOD) + (
        ", clean and under every gated camera perturbation (the highest of those limits)" if validated else "") + (
        f", widened by {margin:.0%}; above the clean limit a photo the model would pass goes to REVIEW"
        if margin is not None else "")
FEATURE_LAYER = "defect_probability"   # the final Dense layer; its input are the pooled features


def feature_extractor(model: keras.Model) -> keras.Model:
    return keras.Model(model.inputs, model.get_layer(FEATURE_LAYER).input, name="pooled_features")


def fit(features: np.ndarray) -> dict:
    """Mean and precision matrix of the training features (Ledoit-Wolf shrinkage)."""
    from sklearn.covariance import LedoitWolf

    lw = LedoitWolf().fit(np.asarray(features, np.float64))
    return {"mean": lw.location_.astype(np.float32), "precision": lw.precision_.astype(np.float32),
            "shrinkage": float(lw.shrinkage_)}


def calibrate_limit(scores: np.ndarray, camera_flagged: np.ndarray, max_share: float,
                    confidence: float) -> tuple[float, dict]:
    """The OOD limit from validation photos: the lowest of their scores such that the photos sent to RETAKE
    (camera check failed, or score above the limit) number at most the largest k whose exact upper bound
    (``inspection.decision.metrics.binomial_ci``, ``confidence``) over n photos is <= ``max_share``. When no k qualifies
    (too few photos to show the budget) or the camera check alone uses it up, the limit is the highest score
    (no validation photo is over it) and ``info["met"]`` is False."""
    from inspection.decision.metrics import binomial_ci

    s = np.asarray(scores, np.float64)
    cam = np.asarray(camera_flagged, bool)
    n = len(s)
    allowed = -1
    while allowed + 1 <= n and binomial_ci(allowed + 1, n, confidence)["high"] <= max_share:
        allowed += 1
    limit = float(s.max())
    for candidate in np.unique(s)[::-1]:  # from the highest down: the RETAKE count only grows
        if int((cam | (s > candidate)).sum()) > allowed:
            break
        limit = float(candidate)
    return limit, retake_info(s, cam, limit, max_share, confidence, allowed)


def retake_info(scores: np.ndarray, camera_flagged: np.ndarray, limit: float, max_share: float, confidence: float,
                allowed: int | None = None) -> dict:
    """What a limit sends to RETAKE among validation photos: counts and the exact upper bound against the budget."""
    from inspection.decision.metrics import binomial_ci

    s, cam = np.asarray(scores, np.float64), np.asarray(camera_flagged, bool)
    k, n = int((cam | (s > limit)).sum()), len(s)
    bound = binomial_ci(k, n, confidence)
    info = {"max_share": max_share, "confidence": confidence, "val_images": n, "val_retake": k,
            "val_camera_flagged": int(cam.sum()), "val_over_limit": int((s > limit).sum()),
            "val_retake_high": bound["high"], "met": bool(bound["high"] <= max_share)}
    return info if allowed is None else {**info, "allowed": max(allowed, 0)}


def calibrate_limit_validated(scores: dict[str, np.ndarray], camera_flagged: dict[str, np.ndarray], max_share: float,
                              confidence: float) -> tuple[float, dict]:
    """evaluate.retake.ood_limit validated: the limit calibrated (``calibrate_limit``) on the validation photos of
    each condition, ``scores``/``camera_flagged`` keyed by condition ('clean' and the gated camera
    perturbations); the highest of those limits holds the RETAKE budget in every condition the review band was
    proven under. (Calibrated on the clean photos alone, a test photo merely rotated by an odd angle scored over
    the limit: the RETAKE share under "rotate any" broke its target on 2 of 5 seeds.) ``info`` describes the
    clean photos at the chosen limit, with each condition's own limit and count over the chosen one."""
    per = {name: calibrate_limit(s, camera_flagged[name], max_share, confidence) for name, s in scores.items()}
    limit = max(lim for lim, _ in per.values())
    info = retake_info(scores["clean"], camera_flagged["clean"], limit, max_share, confidence,
                       per["clean"][1]["allowed"])
    info["by_condition"] = {name: {"limit": lim, "over_limit": int((np.asarray(scores[name]) > limit).sum()),
                                   "images": len(scores[name])} for name, (lim, _) in per.items()}
    info["set_by"] = max(per, key=lambda k: per[k][0])
    return limit, info


def distances(features: np.ndarray, gate: dict) -> np.ndarray:
    d = np.asarray(features, np.float64) - gate["mean"]
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, gate["precision"].astype(np.float64), d), 0.0))


@keras.saving.register_keras_serializable(package="inspection")
class MahalanobisScore(layers.Layer):
    """sqrt((f - mean)^T P (f - mean)) per row, with fixed (non-trainable) mean and precision P; output [N, 1]."""

    def __init__(self, mean, precision, **kwargs):
        super().__init__(trainable=False, **kwargs)
        self.mean_value = np.asarray(mean, np.float32)
        self.precision_value = np.asarray(precision, np.float32)

    def build(self, input_shape):
        self.mean = self.add_weight(shape=self.mean_value.shape, initializer=keras.initializers.Constant(self.mean_value),
                                    trainable=False, name="mean")
        self.precision = self.add_weight(shape=self.precision_value.shape, trainable=False, name="precision",
                                         initializer=keras.initializers.Constant(self.precision_value))

    def call(self, x):
        d = ops.cast(x, "float32") - self.mean
        q = ops.sum(ops.matmul(d, self.precision) * d, axis=-1, keepdims=True)
        return ops.sqrt(ops.maximum(q, 0.0))

    def get_config(self):
        return {**super().get_config(), "mean": self.mean_value.tolist(), "precision": self.precision_value.tolist()}


def serving_model(model: keras.Model, gate: dict, tta: str = "none") -> keras.Model:
    """The deployed model: raw 0-255 image -> {defect_probability [N,1], ood_score [N,1]}. The probability is
    averaged over the views of ``tta`` (inspection.model.tta); the OOD score is the identity view's."""
    from inspection.model.tta import with_views

    inputs, prob, feats = with_views(model, tta, model.get_layer(FEATURE_LAYER).input)
    score = MahalanobisScore(gate["mean"], gate["precision"], name="ood_score")(feats)
    prob = layers.Identity(name="defect_probability_out")(prob)
    return keras.Model(inputs, {"defect_probability": prob, "ood_score": score}, name="serving")


def predict_both(serving: keras.Model, images: np.ndarray, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """uint8 [N, H, W] -> (probabilities [N], OOD scores [N]) as float64."""
    out = serving.predict(images[..., None].astype(np.float32), batch_size=batch, verbose=0)
    return out["defect_probability"][:, 0].astype(np.float64), out["ood_score"][:, 0].astype(np.float64)


def save_gate(path: Path, gate: dict) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in gate.items()})


def load_gate(path: Path = GATE) -> dict:
    from inspection.errors import UserError

    if not Path(path).exists():
        raise UserError(f"{path} is missing; run the evaluate stage first (dvc repro evaluate)")
    with np.load(path) as z:
        return {k: (z[k] if z[k].ndim else z[k].item()) for k in z.files}
