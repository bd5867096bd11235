"""Stage evaluate: choose the operating threshold and the route rule on validation, measure them on test.

Reads the shards (model-size images), the full-resolution photos in data/raw (robust threshold, routes and
both batteries), models/model.keras and the run file. Steps: fit and calibrate the RETAKE gate
(inspection.evaluation.gate), choose the threshold (evaluate.policy, optionally robust to the gated
perturbations), route the test photos, run the robustness and out-of-distribution batteries, then write
reports/metrics.json, the gate (models/ood_gate.npz), the drift reference and the reports/eval/*.csv tables,
and log them to the training run in MLflow.
"""
from __future__ import annotations

import os
from pathlib import Path

from inspection.artifacts import DATA_REPORT, DRIFT_REFERENCE, EVAL, GATE, METRICS, MODEL
from inspection.config import load_params
from inspection.decision.metrics import choose_threshold
from inspection.evaluation.batteries import battery, ood_battery, perturbed, robust_threshold, robustness, routes
from inspection.evaluation.summary import headline_line, ood_summary, summarize
from inspection.evaluation.tables import table_paths, write_tables
from inspection.fsutil import staged_outputs, write_json
from inspection.runner.cli import cli
from inspection.tracking.runs import mlflow_key


def choose(model, data: dict, y: dict, probs: dict, e, size: int) -> dict:
    """The threshold (evaluate.policy; with robust_threshold, the lowest over the gated perturbations)."""
    threshold, per_condition = choose_threshold(y["val"], probs["val"], e), None
    if e.robust_threshold and e.policy == "min_recall":
        per_condition = robust_threshold(model, data["val"].paths, y["val"], e, size)
        threshold = min(per_condition.values())
    max_f1 = choose_threshold(y["val"], probs["val"], e.model_copy(update={"policy": "max_f1"}))
    return {"threshold": threshold, "max_f1": max_f1, "threshold_by_condition": per_condition}


def log(params, metrics: dict, rob: list[dict]) -> None:
    from inspection.tracking.runs import stage_run

    rt = metrics["route"]["test"]
    with stage_run("evaluate", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_metric("threshold", metrics["threshold"])
        for split in ("val", "test"):
            mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in metrics[split].items() if v is not None})
        mlflow.log_metrics({"test_route_missed": rt["missed"], "test_route_false_rejects": rt["false_rejects"],
                            "test_review_share": rt["review_share"], "test_retake_share": rt["retake_share"],
                            "ood_limit": metrics["ood"]["limit"], "ood_battery_passed": metrics["ood"]["battery_passed"]})
        mlflow.log_metrics({mlflow_key(f"robust_{row['perturbation']}_{k}"): float(row[k])
                            for row in rob for k in ("recall", "false_reject_rate", "retake_share")})
        mlflow.log_artifact(str(METRICS), "reports")
        mlflow.log_artifacts(str(EVAL), "reports/eval")
        if Path(DATA_REPORT).exists():
            mlflow.log_artifact(str(DATA_REPORT), "reports")


def main() -> None:
    params = load_params()
    e, t = params.evaluate, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.data.dataset import open_shards
    from inspection.decision.route import make_rule
    from inspection.evaluation.gate import fit_gate
    from inspection.model.architectures import load_model
    from inspection.model.ood import METHOD, save_gate, serving_model

    pos, neg = params.data.positive_class, params.data.negative_class
    # the shards are checked against their index and the current manifest first (one-line errors, no TF import)
    data = {s: open_shards(s, t.image_size, pos) for s in ("train", "val", "test")}
    model = load_model(MODEL)
    y = {s: d.labels for s, d in data.items()}
    fitted = fit_gate(model, data, e)
    probs, serving = fitted.probs, serving_model(model, fitted.gate)
    chosen = choose(model, data, y, probs, e, t.image_size)
    rule = make_rule(chosen["threshold"], e.review_band, fitted.camera if e.retake.camera_check else None,
                     fitted.gate["limit"], METHOD)

    print("evaluate: routes of the test photos, robustness battery, out-of-distribution battery")
    results = perturbed(serving, data["test"].paths, t.image_size, e.robustness, battery(e.robustness))
    decided = routes(results["clean"], rule)
    rob = robustness(results, y["test"], rule, e.robustness, e.bootstrap.confidence, fitted.camera)
    ood_rows = ood_battery(serving, data["test"].paths, t.image_size, rule, e.retake.ood_battery_per_kind,
                           e.robustness.seed)
    ood = ood_summary(fitted, results["clean"], ood_rows, rule["words"], METHOD)
    metrics = summarize(e, pos, y, probs, chosen, rule, decided, rob, ood)

    thresholds = [chosen["threshold"], chosen["max_f1"], 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, *(e.review_band or ())]
    files = table_paths(EVAL)
    with staged_outputs(METRICS, DRIFT_REFERENCE, GATE, *files.values()) as out:
        write_json(out.path(METRICS), metrics)
        write_json(out.path(DRIFT_REFERENCE), fitted.drift_reference)
        save_gate(out.path(GATE), fitted.gate)
        write_tables({k: out.path(v) for k, v in files.items()}, data=data, y=y, probs=probs, chosen=chosen,
                     thresholds=thresholds, decided=decided, test_ood=results["clean"]["ood"], rob=rob,
                     ood_rows=ood_rows, names={1: pos, 0: neg}, sweep_points=e.sweep_points)
    log(params, metrics, rob)
    print(headline_line(metrics))


if __name__ == "__main__":
    cli(main)()
