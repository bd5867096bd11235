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

from inspection.artifacts import DATA_REPORT, DECISION, DRIFT_REFERENCE, EVAL, GATE, METRICS, MODEL, RUN_FILE
from inspection.config import load_params
from inspection.evaluation.batteries import battery, ood_battery, perturbed, robustness, routes, val_conditions
from inspection.evaluation.policy import choose, deployed_rule, readiness
from inspection.evaluation.summary import headline_line, ood_summary, summarize
from inspection.evaluation.tables import table_paths, write_tables
from inspection.fsutil import staged_outputs, write_json
from inspection.runner.cli import cli
from inspection.tracking.runs import mlflow_key


def judge(metrics: dict, params, rob: list[dict]) -> dict:
    """reports/decision.json for the model this stage evaluated (its run, its file's hash)."""
    from inspection.fsutil import read_json, sha256_file

    run = read_json(RUN_FILE)
    return readiness(metrics, params.report, rob, {"mlflow_run_id": run.get("run_id"), "model_sha256": sha256_file(MODEL),
                                                   "settled": run.get("settled"), "tta": metrics.get("tta")})


def log(params, metrics: dict, rob: list[dict], judged: dict) -> None:
    from inspection.tracking.runs import stage_run

    rt = metrics["route"]["test"]
    with stage_run("evaluate", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.set_tags({"ready_for_line": str(judged["ready"]).lower(), "decision": judged["sentence"][:5000]})
        mlflow.log_metric("ready_for_line", float(judged["ready"]))
        mlflow.log_artifact(str(DECISION), "reports")
        mlflow.log_metric("threshold", metrics["threshold"])
        for split in ("val", "test"):
            mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in metrics[split].items() if v is not None})
        line = {t["key"]: t["rate"] for t in judged["targets"]}   # at the line's defect rate, as the decision
        mlflow.log_metrics({"test_route_missed": rt["missed"], "test_route_false_rejects": rt["false_rejects"],
                            "test_review_share": rt["review_share"], "test_retake_share": rt["retake_share"],
                            "review_share_line": line["review"], "retake_share_line": line["retake"],
                            "ood_limit": metrics["ood"]["limit"], "ood_battery_passed": metrics["ood"]["battery_passed"]})
        mlflow.log_metrics({mlflow_key(f"robust_{row['perturbation']}_{k}"): float(row[k])
                            for row in rob for k in ("recall", "false_reject_rate", "retake_share")})
        mlflow.log_artifact(str(METRICS), "reports")
        mlflow.log_artifacts(str(EVAL), "reports/eval")
        if Path(DATA_REPORT).exists():
            mlflow.log_artifact(str(DATA_REPORT), "reports")


def main() -> None:
    params = load_params()
    evaluate, train = params.evaluate, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.data.dataset import open_shards
    from inspection.evaluation.gate import fit_gate, pooled_features
    from inspection.model.architectures import load_model
    from inspection.model.ood import method as ood_method, save_gate, serving_model

    pos, neg = params.data.positive_class, params.data.negative_class
    # the shards are checked against their index and the current manifest first (one-line errors, no TF import)
    data = {s: open_shards(s, train.image_size, pos) for s in ("train", "val", "test")}
    from inspection.model.tta import probability_model

    model = load_model(MODEL)
    prob_model = probability_model(model, evaluate.tta)   # what the deployed graph computes (inspection.model.tta)
    y = {s: d.labels for s, d in data.items()}
    stats: dict = {}   # the validation photos under each gated perturbation: camera statistics, pooled features
    pooled: dict = {}
    validated = evaluate.retake.ood_limit in ("validated", "tiered")
    conditions = (val_conditions(prob_model, data["val"].paths, evaluate, train.image_size, stats=stats,
                                 features=pooled_features(model) if validated else None, pooled=pooled)
                  if evaluate.robust_threshold or evaluate.retake.camera_range == "validated" or validated else None)
    fitted = fit_gate(model, prob_model, data, evaluate, stats, pooled)
    method = ood_method(evaluate.retake.ood_fit, bool(fitted.calibration.get("by_condition")),
                        fitted.calibration.get("margin"))
    probs, serving = fitted.probs, serving_model(model, fitted.gate, evaluate.tta)
    chosen = choose(prob_model, data["val"].paths, y["val"], probs["val"], params, conditions)
    rule = deployed_rule(chosen, evaluate, fitted.camera, fitted.warn_camera, fitted.gate["limit"],
                         fitted.gate.get("review_limit"), method)

    print("evaluate: routes of the test photos, robustness battery, out-of-distribution battery")
    results = perturbed(serving, data["test"].paths, train.image_size, evaluate.robustness,
                        battery(evaluate.robustness))
    decided = routes(results["clean"], rule)
    warned = fitted.warn_camera or fitted.camera   # drift_flagged_share: outside the training range
    rob = robustness(results, y["test"], rule, evaluate.robustness, evaluate.bootstrap.confidence, warned)
    ood_rows = ood_battery(serving, data["test"].paths, train.image_size, rule, evaluate.retake.ood_battery_per_kind,
                           evaluate.robustness.seed)
    ood = ood_summary(fitted, results["clean"], ood_rows, rule["words"], method)
    metrics = summarize(evaluate, pos, y, probs, chosen, rule, decided, rob, ood)

    thresholds = [chosen["threshold"], chosen["max_f1"], 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, *(chosen["band"] or ())]
    judged = judge(metrics, params, rob)
    files = table_paths(EVAL)
    with staged_outputs(METRICS, DECISION, DRIFT_REFERENCE, GATE, *files.values()) as out:
        write_json(out.path(METRICS), metrics)
        write_json(out.path(DECISION), judged)
        write_json(out.path(DRIFT_REFERENCE), fitted.drift_reference)
        save_gate(out.path(GATE), fitted.gate)
        write_tables({k: out.path(v) for k, v in files.items()}, data=data, y=y, probs=probs, chosen=chosen,
                     thresholds=thresholds, decided=decided, test_ood=results["clean"]["ood"], rob=rob,
                     ood_rows=ood_rows, names={1: pos, 0: neg}, sweep_points=evaluate.sweep_points)
    log(params, metrics, rob, judged)
    print(headline_line(metrics))
    print(f"evaluate: {judged['sentence']}")


if __name__ == "__main__":
    cli(main)()
