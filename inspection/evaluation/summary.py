"""reports/metrics.json: the evaluate stage's numbers in one dict, and the line it prints.

``summarize`` joins the threshold's error rates (validation and test, bootstrap and exact intervals), the
routes of the test photos, the robustness battery (per perturbation: route counts per class, and the threshold
alone's figures; judged against report.targets by inspection.decision.readiness, not here) and the
out-of-distribution battery (per kind: routes and which check caught
the photo). Every consumer (export's metadata and headline, the report, MLflow) reads this dict.
"""
from __future__ import annotations

import numpy as np

from inspection.decision.metrics import at_threshold, binomial_ci, bootstrap_rates, review_band
from inspection.evaluation.batteries import route_counts

ROBUSTNESS_KEYS = ("recall", "missed", "false_reject_rate", "false_rejects", "roc_auc", "drift_flagged_share",
                   "route_missed", "route_false_rejects", "route_review_defects", "route_review_ok",
                   "route_retake_defects", "route_retake_ok", "review_share", "retake_share", "defects", "ok")


def exact_errors(y: np.ndarray, prob: np.ndarray, threshold: float, confidence: float) -> dict:
    """Missed defects and false rejects at ``threshold`` with exact (Clopper-Pearson) intervals."""
    return {"missed": binomial_ci(int(((prob < threshold) & (y == 1)).sum()), int(y.sum()), confidence),
            "false_rejects": binomial_ci(int(((prob >= threshold) & (y == 0)).sum()), int((y == 0).sum()), confidence)}


def robustness_summary(rob: list[dict]) -> dict:
    """The worst gated row's route counts (measurements only: reports/decision.json judges them)."""
    gated = [row for row in rob if row["gated"]]
    worst = lambda key: max((row[key] for row in gated), default=None)  # noqa: E731
    return {"gated": len(gated), "worst_route_missed": worst("route_missed"),
            "worst_route_false_rejects": worst("route_false_rejects"), "worst_retake_share": worst("retake_share")}


def ood_summary(fitted, clean: dict, ood_rows: list[dict], words, method: str) -> dict:
    gate = fitted.gate
    kinds = list(dict.fromkeys(row["kind"] for row in ood_rows))
    return {
        "method": method, "limit": gate["limit"], "calibration": fitted.calibration,
        "shrinkage": gate["shrinkage"], "val_score_median": float(np.median(fitted.val_scores)),
        "test_score_median": float(np.median(clean["ood"])),
        "test_over_limit": int((clean["ood"] > gate["limit"]).sum()),
        "review_limit": gate.get("review_limit"),
        "test_over_review_limit": (None if gate.get("review_limit") is None else
                                   int((clean["ood"] > gate["review_limit"]).sum())),
        "battery": {k: {"n": sum(1 for r in ood_rows if r["kind"] == k),
                        **{w: sum(1 for r in ood_rows if r["kind"] == k and r["route"] == w) for w in words},
                        # which gate caught them (both may): the measurement behind the method choice
                        "camera_flagged": sum(1 for r in ood_rows if r["kind"] == k and "camera check" in r["reason"]),
                        "ood_flagged": sum(1 for r in ood_rows if r["kind"] == k and "out-of-distribution" in r["reason"])}
                    for k in kinds},
        "battery_passed": sum(1 for r in ood_rows if r["route"] == "PASS"),
        "battery_images": len(ood_rows)}


def robustness_metrics(rob: list[dict]) -> dict:
    """metrics.json's robustness block: per perturbation, its rows' ROBUSTNESS_KEYS."""
    return {row["perturbation"]: {k: row[k] for k in ROBUSTNESS_KEYS} for row in rob}


def summarize(evaluate, pos: str, y: dict, probs: dict, chosen: dict, rule: dict, decided, rob, ood: dict) -> dict:
    """The metrics dict; ``chosen`` holds threshold, max_f1 and threshold_by_condition."""
    threshold, b = chosen["threshold"], evaluate.bootstrap
    band = chosen["band"]
    return {"threshold": threshold, "policy": chosen["policy"],
            "policy_target": evaluate.min_recall if chosen["policy"] == "min_recall" else None, "tta": evaluate.tta,
            "band_choice": chosen["band_choice"],
            "threshold_by_condition": chosen["threshold_by_condition"], "max_f1_threshold": chosen["max_f1"],
            "positive_class": pos,
            "val": at_threshold(y["val"], probs["val"], threshold),
            "test": at_threshold(y["test"], probs["test"], threshold),
            "test_intervals": bootstrap_rates(y["test"], probs["test"], threshold, b.resamples, b.confidence, b.seed),
            "test_exact": exact_errors(y["test"], probs["test"], threshold, b.confidence),
            "review_band": (review_band(y["test"], probs["test"], *band) if band else None),
            "route": {**rule, "test": route_counts(y["test"], decided, b.confidence)},
            "robustness": robustness_metrics(rob),
            "robustness_summary": robustness_summary(rob),
            "ood": ood}


def headline_line(metrics: dict) -> str:
    m, s, rt, o = metrics["test"], metrics["robustness_summary"], metrics["route"]["test"], metrics["ood"]
    return (f"evaluate: routes on test: {rt['missed']} of {rt['defects']} defects passed, {rt['false_rejects']} of "
            f"{rt['ok']} good parts rejected, REVIEW {rt['review_share']:.1%}, RETAKE {rt['retake_share']:.1%} of the "
            f"test split; worst gated camera perturbation: {s['worst_route_missed']} defects passed, "
            f"{s['worst_route_false_rejects']} good parts rejected; OOD battery: {o['battery_passed']} of "
            f"{o['battery_images']} passed (threshold {metrics['threshold']:.4f} alone: {m['fn']} missed, {m['fp']} "
            f"rejected, ROC-AUC {m['roc_auc']})")
