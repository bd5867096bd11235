"""Global image statistics: the confound check and the drift reference new photos are compared with.

The confound check asks: can the classes be told apart without looking at the part? and the drift reference that deployment compares new images with.

The features are computed on 8-bit grayscale images, one image at a time (``feature_table`` of a batch, concatenated
over batches, equals the table of the whole set); the browser app re-implements
``features`` exactly (web/src/preprocess.js, tests/test_web.py checks it), so keep the definitions simple:
  brightness  mean pixel value
  contrast    standard deviation of the pixel values
  sharpness   variance of the 3x3 Laplacian (0 1 0 / 1 -4 1 / 0 1 0) over interior pixels
  background  mean of the pixels outside the centred disc of radius 0.45 * side (the corners,
              which show the fixture, not the casting)
"""
from __future__ import annotations

import cv2
import numpy as np


FEATURES = ("brightness", "contrast", "sharpness", "background")
DRIFT_FEATURES = ("brightness", "contrast", "sharpness")
BACKGROUND_RADIUS = 0.45


def features(img: np.ndarray) -> dict[str, float]:
    h, w = img.shape
    lap = cv2.Laplacian(img, cv2.CV_32F, ksize=1)[1:-1, 1:-1]
    yy, xx = np.ogrid[:h, :w]
    outside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 > (BACKGROUND_RADIUS * min(h, w)) ** 2
    return {"brightness": float(img.mean()), "contrast": float(img.std()),
            "sharpness": float(lap.var()), "background": float(img[outside].mean())}


def feature_table(images) -> dict[str, np.ndarray]:
    rows = [features(img) for img in images]
    return {k: np.array([r[k] for r in rows]) for k in FEATURES}


def drift_reference(images, margin: float, *, table: dict[str, np.ndarray] | None = None) -> dict:
    """Per-feature acceptance range from the training images: [p0.5, p99.5] widened by margin x its width.
    Give the images, or (``images`` None) their ``feature_table`` computed beforehand, e.g. batch by batch and
    concatenated (the evaluate stage streams the training images: the table is a few floats per image)."""
    if (images is None) == (table is None):
        raise ValueError("drift_reference takes the images or their feature table, one of them")
    if table is None:
        table = feature_table(images)
    ref = {}
    for k in DRIFT_FEATURES:
        lo, mid, hi = np.percentile(table[k], [0.5, 50, 99.5])
        pad = margin * (hi - lo)
        ref[k] = {"p0_5": float(lo), "median": float(mid), "p99_5": float(hi),
                  "min": float(lo - pad), "max": float(hi + pad)}
    return {"features": ref, "margin": margin, "images": len(table["brightness"]),
            "computed_on": "training images at the model's input size, after the resize"}


def confound_check(table: dict[str, np.ndarray], labels: np.ndarray, train: np.ndarray, test: np.ndarray,
                   warn_auc: float) -> dict:
    """How well global statistics alone separate the classes (ROC-AUC; 0.5 = not at all).

    Per feature: the AUC of the feature itself over all images (direction-free, >= 0.5).
    Combined: a logistic regression on all features, fitted on train, scored on test.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    per_feature = {}
    for k in FEATURES:
        auc = roc_auc_score(labels, table[k])
        per_feature[k] = float(max(auc, 1 - auc))
    stats_matrix = np.column_stack([table[k] for k in FEATURES])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    clf.fit(stats_matrix[train], labels[train])
    combined = float(roc_auc_score(labels[test], clf.predict_proba(stats_matrix[test])[:, 1]))
    worst = max(per_feature, key=per_feature.get)
    flagged = max(combined, per_feature[worst]) >= warn_auc
    means = {k: {"positive": float(table[k][labels == 1].mean()), "negative": float(table[k][labels == 0].mean())}
             for k in FEATURES}
    return {"feature_auc": per_feature, "combined_test_auc": combined, "class_means": means,
            "warn_auc": warn_auc, "flagged": bool(flagged),
            "message": (f"global statistics alone separate the classes (ROC-AUC {max(combined, per_feature[worst]):.3f}, "
                        f"strongest: {worst}); a model can cheat on lighting, train with photometric augmentation "
                        f"and check the robustness table" if flagged else
                        "global statistics do not separate the classes")}
