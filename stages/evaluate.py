"""Stage 4, evaluate: choose the operating threshold on validation, measure it on test.

Policies (evaluate.policy): min_recall = highest threshold whose validation defect
recall >= evaluate.min_recall (with evaluate.robust_threshold: on the clean validation photos
and under every gated perturbation of the robustness battery, the lowest of those thresholds);
max_f1 = the validation F1 maximiser; fixed.
A part is called a defect when its probability >= threshold.
Also: bootstrap intervals of the test error rates, the review band (evaluate.review_band), the
robustness battery (evaluate.robustness, stages/perturb.py) and the drift reference statistics
of the training images that deployment compares incoming images with (stages/imagestats.py).
Outputs: reports/metrics.json (DVC metrics), reports/eval/drift_reference.json and
reports/eval/{thresholds,pr,roc,confusion,predictions,operating_points,robustness}.csv.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve

from stages.config import load_params
from stages.errors import cli
from stages.fsutil import staged_outputs, write_csv, write_json
from stages.metrics import (at_threshold, binomial_ci, bootstrap_rates, choose_threshold, operating_points, review_band,
                            sweep)
from stages.route import camera_reasons
from stages.tracking import mlflow_key

METRICS = Path("reports/metrics.json")
EVAL = Path("reports/eval")
DRIFT_REFERENCE = EVAL / "drift_reference.json"


def predict(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return model.predict(images[..., None].astype(np.float32), batch_size=batch, verbose=0)[:, 0].astype(np.float64)


def perturbed(serving, photos: list[np.ndarray], size: int, r, runs) -> dict[str, dict]:
    """Each (name, kind, value, gated) of ``runs`` (see ``battery``) applied to every full-resolution photo, then the
    model's resize, then the deployed (two-output) model: {name: {"probability", "ood", "stats"}}.
    kind None is the clean photo."""
    from stages.perturb import apply

    return {name: scored(serving, photos, size, (lambda i, img, k=kind, v=value: img if k is None else
                                                 apply(k, v, img, np.random.default_rng([r.seed, i]))))
            for name, kind, value, _ in runs}


def scored(serving, photos: list[np.ndarray], size: int, change=None) -> dict:
    """Full-resolution photos (each through ``change(i, photo)`` first) -> resize -> camera statistics and both
    model outputs: {"probability": [N], "ood": [N], "stats": [dict]}."""
    from concurrent.futures import ThreadPoolExecutor

    from stages.images import resize
    from stages.imagestats import features
    from stages.ood import predict_both

    def one(i):
        small = resize(photos[i] if change is None else change(i, photos[i]), size)
        return small, features(small)

    with ThreadPoolExecutor(4) as pool:
        res = list(pool.map(one, range(len(photos))))
    prob, ood = predict_both(serving, np.stack([o[0] for o in res]))
    return {"probability": prob, "ood": ood, "stats": [o[1] for o in res]}


def routes(s: dict, rule: dict) -> list[tuple[str, str]]:
    from stages.route import decide

    return [decide(p, st, o, rule) for p, o, st in zip(s["probability"], s["ood"], s["stats"])]


def route_counts(y: np.ndarray, decided: list[tuple[str, str]], confidence: float) -> dict:
    """Routes per true class on labelled parts, the line's error counts and their exact intervals.
    missed = defects routed PASS (the only way a defect escapes); false_rejects = good parts routed REJECT."""
    from stages.route import ROUTES

    r = np.array([d[0] for d in decided])
    y = np.asarray(y).astype(bool)
    counts = {cls: {w: int(((r == w) & m).sum()) for w in ROUTES} for cls, m in (("defect", y), ("ok", ~y))}
    n, nd, no = len(y), int(y.sum()), int((~y).sum())
    missed, fr = counts["defect"]["PASS"], counts["ok"]["REJECT"]
    review, retake = int((r == "REVIEW").sum()), int((r == "RETAKE").sum())
    ci = lambda k, m: binomial_ci(k, m, confidence)  # noqa: E731
    return {"n": n, "defects": nd, "ok": no, "counts": counts, "missed": missed, "false_rejects": fr,
            "review": review, "retake": retake,
            "recall_not_passed": (nd - missed) / nd if nd else None,
            "false_reject_rate": fr / no if no else None,
            "review_share": review / n if n else None, "retake_share": retake / n if n else None,
            "intervals": {"missed": ci(missed, nd), "false_rejects": ci(fr, no), "review": ci(review, n),
                          "retake": ci(retake, n), "defect_review": ci(counts["defect"]["REVIEW"], nd),
                          "ok_review": ci(counts["ok"]["REVIEW"], no), "defect_retake": ci(counts["defect"]["RETAKE"], nd),
                          "ok_retake": ci(counts["ok"]["RETAKE"], no)}}


def battery(r, gated_only: bool = False) -> list[tuple]:
    """[(name, kind, value, gated)], 'clean' first."""
    return [("clean", None, None, False), *((n, q.kind, q.value, q.gated) for n, q in r.perturbations.items()
                                             if q.gated or not gated_only)]


def robustness(serving, photos: list[np.ndarray], y: np.ndarray, rule: dict, size: int, r, confidence: float,
               camera: dict) -> list[dict]:
    """The perturbation battery on the test photos at the chosen threshold and route; row 'clean' is the reference.
    recall / false_reject_rate / missed are the threshold rule's; route_* count what the line would do (RETAKE and
    REVIEW are not passed), with exact intervals."""
    rows = []
    runs = battery(r)
    results = perturbed(serving, photos, size, r, runs)
    for name, kind, value, gated in runs:
        res = results[name]
        m = at_threshold(y, res["probability"], rule["threshold"])
        rc = route_counts(y, routes(res, rule), confidence)
        ok = m["recall"] >= r.targets.min_recall and m["false_reject_rate"] <= r.targets.max_false_reject_rate
        flagged = float(np.mean([bool(camera_reasons(st, camera)) for st in res["stats"]]))
        ivl = rc["intervals"]
        rows.append({"perturbation": name, "kind": kind or "none", "value": value, "gated": gated,
                     "recall": m["recall"], "missed": m["fn"], "false_reject_rate": m["false_reject_rate"],
                     "false_rejects": m["fp"], "roc_auc": m["roc_auc"],
                     "drift_flagged_share": flagged, "meets_targets": ok,
                     "route_missed": rc["missed"], "route_missed_high": ivl["missed"]["high"],
                     "route_false_rejects": rc["false_rejects"], "route_false_rejects_high": ivl["false_rejects"]["high"],
                     "review_share": rc["review_share"], "retake_share": rc["retake_share"],
                     "defects": rc["defects"], "ok": rc["ok"],
                     "missed_low": binomial_ci(m["fn"], rc["defects"], confidence)["low"],
                     "missed_high": binomial_ci(m["fn"], rc["defects"], confidence)["high"],
                     "false_reject_low": binomial_ci(m["fp"], rc["ok"], confidence)["low"],
                     "false_reject_high": binomial_ci(m["fp"], rc["ok"], confidence)["high"]})
        print(f"evaluate: robustness {name:>16}: recall {m['recall']:.4f} false rejects "
              f"{m['false_reject_rate']:.4f} ROC-AUC {m['roc_auc']:.4f}; routes: {rc['missed']} defects passed, "
              f"RETAKE {rc['retake_share']:.0%}{'' if ok or not gated else '  << misses target'}")
    return rows


def robust_threshold(model, photos: list[np.ndarray], y_val: np.ndarray, e, size: int) -> dict:
    """evaluate.robust_threshold: the policy's threshold on the validation photos, clean and under
    every gated perturbation; the lowest wins, so the recall target holds in all of them."""
    from stages.images import resize
    from stages.perturb import apply

    r = e.robustness
    per = {}
    for name, kind, value, _ in battery(r, gated_only=True):
        small = np.stack([resize(img if kind is None else apply(kind, value, img, np.random.default_rng([r.seed, i])),
                                 size) for i, img in enumerate(photos)])
        per[name] = choose_threshold(y_val, predict(model, small), e)
        print(f"evaluate: validation threshold under {name:>16}: {per[name]:.4f}")
    return per


def ood_battery(serving, photos: list[np.ndarray], size: int, rule: dict, per_kind: int, seed: int) -> list[dict]:
    """Images the model was not trained to judge (stages.perturb.OOD_KINDS), made from the first ``per_kind`` test
    photos: one row per image with its route. None may be PASS."""
    from stages.perturb import OOD_KINDS, ood_image

    base = photos[:per_kind]
    rows = []
    for kind in OOD_KINDS:
        made = [ood_image(kind, img, np.random.default_rng([seed, k, i])) for k, i, img in
                ((OOD_KINDS.index(kind), i, img) for i, img in enumerate(base))]
        res = scored(serving, made, size)
        for i, (route_, reason) in enumerate(routes(res, rule)):
            rows.append({"kind": kind, "index": i, "route": route_, "reason": reason,
                         "probability": round(float(res["probability"][i]), 6),
                         "ood_score": round(float(res["ood"][i]), 4)})
    return rows


def main() -> None:
    params = load_params()
    e, t = params.evaluate, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from stages.dataset import load_split
    from stages.images import read_many
    from stages.imagestats import drift_reference
    from stages.models import load_model
    from stages.ood import GATE, METHOD, distances, feature_extractor, fit, save_gate, serving_model
    from stages.route import make_rule
    from stages.tracking import stage_run
    from stages.train import MODEL

    pos, neg = params.data.positive_class, params.data.negative_class
    model = load_model(MODEL)
    data = {s: load_split(s, t.image_size, pos) for s in ("train", "val", "test")}
    probs = {s: predict(model, data[s].images) for s in ("val", "test")}
    y = {s: d.labels for s, d in data.items()}
    conf = e.bootstrap.confidence

    print("evaluate: drift reference and out-of-distribution gate from the training images")
    drift_ref = drift_reference(data["train"].images, e.drift_margin)
    extractor = feature_extractor(model)
    feats = {s: extractor.predict(data[s].images[..., None].astype(np.float32), batch_size=64, verbose=0)
             for s in ("train", "val")}
    gate = fit(feats["train"])
    val_scores = distances(feats["val"], gate)
    gate["limit"] = float(np.quantile(val_scores, e.retake.ood_quantile))
    serving = serving_model(model, gate)

    threshold = choose_threshold(y["val"], probs["val"], e)
    per_condition = None
    if e.robust_threshold and e.policy == "min_recall":
        per_condition = robust_threshold(model, read_many(data["val"].paths), y["val"], e, t.image_size)
        threshold = min(per_condition.values())
    max_f1 = choose_threshold(y["val"], probs["val"], e.model_copy(update={"policy": "max_f1"}))
    camera = {k: {"min": v["min"], "max": v["max"]} for k, v in drift_ref["features"].items()}
    rule = make_rule(threshold, e.review_band, camera if e.retake.camera_check else None, gate["limit"], METHOD)

    print("evaluate: routes of the test photos, robustness battery, out-of-distribution battery")
    photos = read_many(data["test"].paths)
    clean = scored(serving, photos, t.image_size)
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

    rob = robustness(serving, photos, y["test"], rule, t.image_size, e.robustness, conf, camera)
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
    ood_rows = ood_battery(serving, photos, t.image_size, rule, e.retake.ood_battery_per_kind, e.robustness.seed)
    kinds = list(dict.fromkeys(row["kind"] for row in ood_rows))
    metrics["ood"] = {
        "method": METHOD, "limit": gate["limit"], "quantile": e.retake.ood_quantile,
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
