"""Operating-point arithmetic shared by the evaluate and report stages (sklearn does the counting).

A part is called a defect when its probability >= threshold.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix, f1_score,
                             precision_recall_curve, precision_score, recall_score, roc_auc_score)
from inspection.config import EvaluateParams


def choose_threshold(y_val: np.ndarray, p_val: np.ndarray, evaluate: EvaluateParams) -> float:
    if evaluate.policy == "fixed":
        return float(evaluate.fixed_threshold)
    precision, recall, thresholds = precision_recall_curve(y_val, p_val)
    precision, recall = precision[:-1], recall[:-1]  # align with thresholds (ascending)
    if evaluate.policy == "min_recall":
        ok = np.flatnonzero(recall >= evaluate.min_recall)
        return float(thresholds[ok[-1]])  # recall is non-increasing in the threshold; never empty (t_min -> 1.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(thresholds[int(np.argmax(f1))])


def at_threshold(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict:
    pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "n": int(len(y)), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "false_reject_rate": float(fp / max(1, fp + tn)),
        "miss_rate": float(fn / max(1, fn + tp)),
        "roc_auc": float(roc_auc_score(y, prob)) if both else None,
        "pr_auc": float(average_precision_score(y, prob)) if both else None,
    }


def sweep(splits: dict[str, tuple[np.ndarray, np.ndarray]], points: int) -> list[dict]:
    rows = []
    for t in np.linspace(0.0, 1.0, points):
        row = {"threshold": round(float(t), 6)}
        for name, (y, p) in splits.items():
            pred = (p >= t).astype(int)
            row[f"{name}_precision"] = float(precision_score(y, pred, zero_division=1))
            row[f"{name}_recall"] = float(recall_score(y, pred, zero_division=0))
            row[f"{name}_f1"] = float(f1_score(y, pred, zero_division=0))
        rows.append(row)
    return rows


BOOTSTRAP_RATES = ("missed_per_1000_defects", "false_rejects_per_1000_ok", "recall", "precision")


def _rates(y: np.ndarray, pred: np.ndarray, axis: int = -1) -> np.ndarray:
    """The BOOTSTRAP_RATES of (resampled) labels and threshold decisions, along ``axis``."""
    y, pred = y.astype(bool), pred.astype(bool)
    pos, neg = y.sum(axis), (~y).sum(axis)
    fn, fp, tp = (y & ~pred).sum(axis), (~y & pred).sum(axis), (y & pred).sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.stack([1000 * fn / pos, 1000 * fp / neg, tp / pos, tp / (tp + fp)])


def bootstrap_rates(y: np.ndarray, prob: np.ndarray, threshold: float, resamples: int, confidence: float,
                    seed: int) -> dict:
    """Percentile-bootstrap intervals (scipy.stats.bootstrap, resampling the test parts with replacement) for
    the missed-defect and false-reject rates per 1,000 parts of each class, recall and precision."""
    from scipy.stats import bootstrap

    y = np.asarray(y).astype(bool)
    pred = np.asarray(prob) >= threshold
    ci = bootstrap((y, pred), _rates, paired=True, vectorized=True, n_resamples=resamples,
                   confidence_level=confidence, method="percentile", rng=np.random.default_rng(seed)).confidence_interval
    point = {"missed_per_1000_defects": 1000 * (y & ~pred).sum() / max(1, y.sum()),
             "false_rejects_per_1000_ok": 1000 * (~y & pred).sum() / max(1, (~y).sum()),
             "recall": (y & pred).sum() / max(1, y.sum()),
             "precision": (y & pred).sum() / max(1, pred.sum())}
    out = {"resamples": resamples, "confidence": confidence, "seed": seed}
    for i, k in enumerate(BOOTSTRAP_RATES):
        out[k] = {"value": float(point[k]), "low": float(ci.low[i]), "high": float(ci.high[i])}
    return out


def review_band(y: np.ndarray, prob: np.ndarray, low: float, high: float) -> dict:
    """Three-way decision: auto-pass prob < low, manual review low <= prob < high, auto-reject prob >= high."""
    y = np.asarray(y).astype(bool)
    prob = np.asarray(prob)
    passed, rejected = prob < low, prob >= high
    review = ~passed & ~rejected
    n_pos, n_neg = max(1, int(y.sum())), max(1, int((~y).sum()))
    return {
        "low": low, "high": high, "n": int(len(y)),
        "review": int(review.sum()), "review_share": float(review.mean()),
        "review_defects": int((review & y).sum()), "review_ok": int((review & ~y).sum()),
        "auto_pass": int(passed.sum()), "auto_reject": int(rejected.sum()),
        "defects_slipping_through": int((passed & y).sum()),
        "slipping_per_1000_defects": float(1000 * (passed & y).sum() / n_pos),
        "ok_auto_rejected": int((rejected & ~y).sum()),
        "ok_auto_rejected_per_1000_ok": float(1000 * (rejected & ~y).sum() / n_neg),
    }


def operating_points(y: np.ndarray, prob: np.ndarray, thresholds) -> list[dict]:
    """The operating-point table: per threshold, recall, precision and errors per 1,000 parts."""
    rows = []
    for t in sorted(set(float(t) for t in thresholds)):
        m = at_threshold(y, prob, t)
        rows.append({"threshold": t, "recall": m["recall"], "precision": m["precision"],
                     "missed": m["fn"], "false_rejects": m["fp"],
                     "missed_per_1000_defects": 1000 * m["miss_rate"],
                     "false_rejects_per_1000_ok": 1000 * m["false_reject_rate"]})
    return rows


def binomial_ci(k: int, n: int, confidence: float = 0.95) -> dict:
    """A count over parts as a rate with its exact (Clopper-Pearson) interval: {k, n, rate, low, high}.
    2 of 563 -> rate 0.00355, 95 % interval 0.00043 - 0.01277."""
    from scipy.stats import binomtest

    k, n = int(k), int(n)
    if n == 0:
        return {"k": 0, "n": 0, "rate": None, "low": None, "high": None, "confidence": confidence}
    ci = binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    return {"k": k, "n": n, "rate": k / n, "low": float(ci.low), "high": float(ci.high), "confidence": confidence}
