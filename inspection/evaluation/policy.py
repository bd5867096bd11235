"""The decision made for a scored model, from validation only: the threshold and review band (``choose``), the
route rule that ships (``deployed_rule``) and the readiness verdict (``readiness``, reports/decision.json).

The evaluate stage and tools/decision_study.py (which re-judges saved scores in seconds) both call these, so a
study judges exactly what the stage would ship.
"""
from __future__ import annotations

from inspection.decision.band import choose_band
from inspection.decision.metrics import choose_threshold
from inspection.decision.readiness import decision
from inspection.decision.route import make_rule
from inspection.evaluation.batteries import robust_threshold


def choose(prob_model, val_paths, y_val, p_val, params, conditions: dict | None) -> dict:
    """The threshold and the review band. evaluate.review_band auto: one rule gives both
    (inspection.decision.band: the narrowest band whose missed-defect and false-reject rates hold
    evaluate.band_targets at the exact bound, clean and, with robust_threshold, under every gated perturbation:
    ``conditions``, validation probabilities per condition); otherwise evaluate.policy chooses the threshold
    (robust: the lowest over the conditions, scored with ``prob_model`` on ``val_paths``) and the band is the
    fixed one (or none)."""
    evaluate, size, report = params.evaluate, params.train.image_size, params.report
    conditions = conditions if evaluate.robust_threshold else None
    max_f1 = choose_threshold(y_val, p_val, evaluate.model_copy(update={"policy": "max_f1"}))
    if evaluate.review_band == "auto":
        gated = {k: v for k, v in (conditions or {}).items() if k != "clean"}
        band = choose_band(y_val, p_val, evaluate.band_targets.max_missed_rate,
                           evaluate.band_targets.max_false_reject_rate, evaluate.bootstrap.confidence,
                           report.line_defect_rate, gated)
        v = band["validation"]
        print(f"evaluate: review band [{band['low']:.4f}, {band['high']:.4f}) chosen on validation"
              f"{' (no review needed)' if band['review_empty'] else ''}: {v['missed']} of {v['defects']} defects "
              f"passed, {v['false_rejects']} of {v['ok']} good parts rejected, REVIEW {v['review_share_at_line_rate']:.1%}"
              f" of parts at {report.line_defect_rate:.0%} defective")
        return {"threshold": band["low"], "band": None if band["review_empty"] else (band["low"], band["high"]),
                "band_choice": band, "max_f1": max_f1, "policy": "review_band auto",
                "threshold_by_condition": {k: v["low"] for k, v in band["edges_by_condition"].items()}}
    threshold, per_condition = choose_threshold(y_val, p_val, evaluate), None
    if conditions is not None and evaluate.policy == "min_recall":
        per_condition = robust_threshold(prob_model, val_paths, y_val, evaluate, size, probs=conditions)
        threshold = min(per_condition.values())
    return {"threshold": threshold, "band": evaluate.review_band, "band_choice": None, "max_f1": max_f1,
            "policy": evaluate.policy, "threshold_by_condition": per_condition}


def deployed_rule(chosen: dict, evaluate, camera: dict, warn_camera: dict | None, limit: float,
                  review_limit: float | None, method: str) -> dict:
    """The route rule (inspection.decision.route) for the chosen threshold and band and the fitted RETAKE gate
    (camera ranges, out-of-distribution limits); evaluate.retake.camera_check false leaves the camera out."""
    camera_on = evaluate.retake.camera_check
    return make_rule(chosen["threshold"], chosen["band"], camera if camera_on else None, limit, method,
                     warn_camera if camera_on else None, review_limit)


def readiness(metrics: dict, report, rob: list[dict], model: dict) -> dict:
    """reports/decision.json: is the model ready for the line (inspection.decision.readiness), from metrics.json's
    route block, the robustness rows ``rob`` and ``model`` (what identifies it: run id, file hash)."""
    return decision(metrics, report, [{"perturbation": r["perturbation"], "gated": str(r["gated"])} for r in rob],
                    model)
