"""TODO docstring."""
from __future__ import annotations

import os
from pathlib import Path
import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve
from inspection.config import load_params
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs, write_csv, write_json
from inspection.decision.metrics import at_threshold, binomial_ci, bootstrap_rates, choose_threshold, operating_points, review_band, sweep
from inspection.decision.route import camera_reasons
from inspection.tracking.runs import mlflow_key
from inspection.artifacts import DRIFT_REFERENCE, EVAL, METRICS
from inspection.evaluation.batteries import battery, ood_battery, perturbed, robust_threshold, robustness, route_counts, routes
from inspection.evaluation.scoring import BATCH, predict, stream_split


def main() -> None:
    params = load_params()
    e, t = params.evaluate, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from inspection.data.dataset import open_shards

    pos, neg = params.data.positive_class, params.data.negative_class
    # the shards are checked against their index and the current manifest first (one-line errors, no TF import)
    data = {s: open_shards(s, t.image_size, pos) for s in ("train", "val", "test")}

    from inspection.data.imagestats import drift_reference, feature_table
    from inspection.model.architectures import load_model
    from inspection.artifacts import GATE
    from inspection.model.ood import METHOD, calibrate_limit, distances, feature_extractor, fit, save_gate, serving_model
    from inspection.decision.route import make_rule
    from inspection.tracking.runs import stage_run
    from inspection.artifacts import MODEL

    model = load_model(MODEL)
    extractor = feature_extractor(model)
    y = {s: d.labels for s, d in data.items()}
    conf = e.bootstrap.confidence

    def probability(images):
        return predict(model, images)

    def pooled(images):
        return extractor.predict(images[..., None].astype(np.float32), batch_size=BATCH, verbose=0)

    print("evaluate: drift reference and out-of-distribution gate from the training images")
    train = stream_split(data["train"], {"features": pooled, "stats": feature_table})
    val = stream_split(data["val"], {"probability": probability, "features": pooled, "stats": feature_table})
    probs = {"val": val["probability"], "test": stream_split(data["test"], {"probability": probability})["probability"]}
    drift_ref = drift_reference(None, e.drift_margin, table=train["stats"])
    gate = fit(train["features"])
    val_scores = distances(val["features"], gate)
    camera = {k: {"min": v["min"], "max": v["max"]} for k, v in drift_ref["features"].items()}
    val_camera = np.array([bool(e.retake.camera_check and camera_reasons({k: val["stats"][k][i] for k in camera}, camera))
                           for i in range(len(val_scores))], bool)
    del train, val
    gate["limit"], calibration = calibrate_limit(val_scores, val_camera, e.retake.max_share, e.bootstrap.confidence)
    print(f"evaluate: out-of-distribution limit {gate['limit']:.2f}: {calibration['val_retake']} of "
          f"{calibration['val_images']} validation photos to RETAKE (camera check {calibration['val_camera_flagged']}, "
          f"over the limit {calibration['val_over_limit']}), exact upper bound {calibration['val_retake_high']:.2%} "
          f"(budget {e.retake.max_share:.0%})")
    if not calibration["met"]:
        print(f"evaluate: warning: {calibration['val_images']} validation photos cannot show a RETAKE share within "
              f"{e.retake.max_share:.0%} (upper bound {calibration['val_retake_high']:.1%}); the limit is the highest "
              "validation score. More validation photos, or a wider camera check (evaluate.drift_margin), fix this")
    serving = serving_model(model, gate)

    threshold = choose_threshold(y["val"], probs["val"], e)
    per_condition = None
    if e.robust_threshold and e.policy == "min_recall":
        per_condition = robust_threshold(model, data["val"].paths, y["val"], e, t.image_size)
        threshold = min(per_condition.values())
    max_f1 = choose_threshold(y["val"], probs["val"], e.model_copy(update={"policy": "max_f1"}))
    rule = make_rule(threshold, e.review_band, camera if e.retake.camera_check else None, gate["limit"], METHOD)

    print("evaluate: routes of the test photos, robustness battery, out-of-distribution battery")
    battery_results = perturbed(serving, data["test"].paths, t.image_size, e.robustness, battery(e.robustness))
    clean = battery_results["clean"]
    decided = routes(clean, rule)
    b = e.bootstrap
    metrics = {"threshold": threshold, "policy": e.policy,
               "policy_target": e.min_recall if e.policy == "min_recall" else None,
               "threshold_by_condition": per_condition, "max_f1_threshold": max_f1,
               "positive_class": pos,
               "val": at_threshold(y["val"], probs["val"], threshold),
               "test": at_threshold(y["test"], probs["test"], threshold),
               "test_intervals": bootstrap_rates(y["test"], probs["test"], threshold, b.resamples, b.confidence, b.seed),
               "test_exact": {"missed": binomial_ci(int(((probs["test"] < threshold) & (y["test"] == 1)).sum()),
                                                    int(y["test"].sum()), conf),
                              "false_rejects": binomial_ci(int(((probs["test"] >= threshold) & (y["test"] == 0)).sum()),
                                                           int((y["test"] == 0).sum()), conf)},
               "review_band": (review_band(y["test"], probs["test"], *e.review_band) if e.review_band else None),
               "route": {**rule, "test": route_counts(y["test"], decided, conf)}}

    rob = robustness(battery_results, y["test"], rule, e.robustness, conf, camera)
    gated = [row for row in rob if row["gated"]]
    metrics["robustness"] = {row["perturbation"]: {k: row[k] for k in
                             ("recall", "missed", "false_reject_rate", "false_rejects", "roc_auc", "drift_flagged_share",
                              "route_missed", "route_false_rejects", "review_share", "retake_share")}
                             for row in rob}
    metrics["robustness_summary"] = {
        "targets": e.robustness.targets.model_dump(), "gated": len(gated),
        "all_gated_meet_targets": all(row["meets_targets"] for row in gated),
        "worst_recall": min((row["recall"] for row in gated), default=None),
        "worst_false_reject_rate": max((row["false_reject_rate"] for row in gated), default=None),
        "worst_recall_all_rows": min(row["recall"] for row in rob),
        "worst_false_reject_rate_all_rows": max(row["false_reject_rate"] for row in rob)}
    ood_rows = ood_battery(serving, data["test"].paths, t.image_size, rule, e.retake.ood_battery_per_kind,
                           e.robustness.seed)
    kinds = list(dict.fromkeys(row["kind"] for row in ood_rows))
    metrics["ood"] = {
        "method": METHOD, "limit": gate["limit"], "calibration": calibration,
        "shrinkage": gate["shrinkage"], "val_score_median": float(np.median(val_scores)),
        "test_score_median": float(np.median(clean["ood"])),
        "test_over_limit": int((clean["ood"] > gate["limit"]).sum()),
        "battery": {k: {"n": sum(1 for r in ood_rows if r["kind"] == k),
                        **{w: sum(1 for r in ood_rows if r["kind"] == k and r["route"] == w) for w in rule["words"]},
                        # which gate caught them (both may): the measurement behind the method choice
                        "camera_flagged": sum(1 for r in ood_rows if r["kind"] == k and "camera check" in r["reason"]),
                        "ood_flagged": sum(1 for r in ood_rows if r["kind"] == k and "out-of-distribution" in r["reason"])}
                    for k in kinds},
        "battery_passed": sum(1 for r in ood_rows if r["route"] == "PASS"),
        "battery_images": len(ood_rows)}

    thresholds = [threshold, max_f1, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, *(e.review_band or ())]
    files = {name: EVAL / f"{name}.csv" for name in
             ("thresholds", "pr", "roc", "confusion", "predictions", "operating_points", "robustness", "ood")}
    with staged_outputs(METRICS, DRIFT_REFERENCE, GATE, *files.values()) as out:
        write_json(out.path(METRICS), metrics)
        write_json(out.path(DRIFT_REFERENCE), drift_ref)
        save_gate(out.path(GATE), gate)
        rows = sweep({s: (y[s], probs[s]) for s in ("val", "test")}, e.sweep_points)
        write_csv(out.path(files["thresholds"]), rows, list(rows[0]))
        prec, rec, _ = precision_recall_curve(y["test"], probs["test"])
        write_csv(out.path(files["pr"]), [{"recall": float(r), "precision": float(p)} for p, r in zip(prec, rec)],
                  ["recall", "precision"])
        fpr, tpr, _ = roc_curve(y["test"], probs["test"])
        write_csv(out.path(files["roc"]), [{"fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr)], ["fpr", "tpr"])
        name = {1: pos, 0: neg}
        write_csv(out.path(files["confusion"]),
                  [{"actual": name[int(a)], "predicted": name[int(p >= threshold)]} for a, p in zip(y["test"], probs["test"])],
                  ["actual", "predicted"])
        val_routes = [("", "")] * len(y["val"])  # routes are measured on test only
        pred_rows = [{"path": path, "split": s, "label": name[int(lab)], "probability": f"{prob:.6f}",
                      "verdict": name[int(prob >= threshold)], "correct": int((prob >= threshold) == lab),
                      "route": rt, "reason": why, "ood_score": "" if ood is None else f"{ood:.4f}"}
                     for s, routes_, oods in (("val", val_routes, [None] * len(y["val"])),
                                              ("test", decided, clean["ood"]))
                     for path, lab, prob, (rt, why), ood in zip(data[s].paths, y[s], probs[s], routes_, oods)]
        write_csv(out.path(files["predictions"]), pred_rows,
                  ["path", "split", "label", "probability", "verdict", "correct", "route", "reason", "ood_score"])
        ops = operating_points(y["test"], probs["test"], thresholds)
        for row in ops:
            row["chosen"] = row["threshold"] == threshold
            row["max_f1"] = row["threshold"] == max_f1
        write_csv(out.path(files["operating_points"]), ops, list(ops[0]))
        write_csv(out.path(files["robustness"]), rob, list(rob[0]))
        write_csv(out.path(files["ood"]), ood_rows, list(ood_rows[0]))

    rt = metrics["route"]["test"]
    with stage_run("evaluate", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_metric("threshold", threshold)
        for split in ("val", "test"):
            mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in metrics[split].items() if v is not None})
        mlflow.log_metrics({"test_route_missed": rt["missed"], "test_route_false_rejects": rt["false_rejects"],
                            "test_review_share": rt["review_share"], "test_retake_share": rt["retake_share"],
                            "ood_limit": gate["limit"], "ood_battery_passed": metrics["ood"]["battery_passed"]})
        mlflow.log_metrics({mlflow_key(f"robust_{row['perturbation']}_{k}"): float(row[k])
                            for row in rob for k in ("recall", "false_reject_rate", "retake_share")})
        mlflow.log_artifact(str(METRICS), "reports")
        mlflow.log_artifacts(str(EVAL), "reports/eval")
        if Path("reports/data.json").exists():
            mlflow.log_artifact("reports/data.json", "reports")
    m, s = metrics["test"], metrics["robustness_summary"]
    print(f"evaluate: threshold {threshold:.4f} ({e.policy}) -> test recall {m['recall']:.4f} precision "
          f"{m['precision']:.4f} ROC-AUC {m['roc_auc']} (missed {m['fn']}, false rejects {m['fp']} of {m['n']}); "
          f"routes on test: {rt['missed']} defects passed, {rt['false_rejects']} good parts rejected, "
          f"REVIEW {rt['review_share']:.1%}, RETAKE {rt['retake_share']:.1%}; OOD battery: "
          f"{metrics['ood']['battery_passed']} of {len(ood_rows)} passed; robustness targets "
          f"{'met' if s['all_gated_meet_targets'] else 'NOT met'}")


if __name__ == "__main__":
    cli(main)()
