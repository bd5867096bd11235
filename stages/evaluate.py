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

Memory: nothing holds a whole split. The model-size images stream from the shards (stage shards,
``stages.dataset.open_shards``) ``CHUNK`` at a time (probabilities, pooled features, camera statistics); the
full-resolution photos (validation for the robust threshold, test for the routes and both batteries) are decoded
``CHUNK`` at a time with every perturbation applied to each chunk. What stays are per-image results (a probability,
an OOD score, a few camera statistics, the pooled features of train and val). CHUNK is a multiple of the model's
batch, so the model sees the same batches as on the whole split and the numbers are bit-identical to a one-shot run.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from sklearn.metrics import precision_recall_curve, roc_curve
from tqdm import tqdm

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


BATCH = 64    # images per model call
CHUNK = 256   # images per read: a run of shard images, or full-resolution photos decoded at a time. A multiple of
              # BATCH: the model then gets the batches it would get on the whole split (bit-identical numbers;
              # other chunks change the float32 outputs by a few ulp, batch composition steers the CPU kernels)


def predict(model, images: np.ndarray, batch: int | None = None) -> np.ndarray:
    return model.predict(images[..., None].astype(np.float32), batch_size=batch or BATCH,
                         verbose=0)[:, 0].astype(np.float64)


def joined(parts: list):
    """Per-chunk results -> one result: arrays concatenated, dicts key by key, lists chained."""
    first = parts[0]
    if isinstance(first, dict):
        return {k: joined([p[k] for p in parts]) for k in first}
    if isinstance(first, list):
        return [x for p in parts for x in p]
    return np.concatenate(parts)


def stream_split(reader, outputs: dict[str, Callable[[np.ndarray], object]], chunk: int | None = None) -> dict:
    """Each function of ``outputs`` on every image of a split read from the shards (``reader``:
    ``stages.dataset.open_shards``), ``chunk`` images at a time (uint8 [b, size, size] -> a per-image array or a
    dict of them); the results joined in manifest order. Memory holds one chunk of images."""
    from stages.errors import UserError

    chunk = chunk or CHUNK
    if not len(reader):
        raise UserError(f"split {reader.split!r} is empty in the shards; re-run the split and shards stages")
    parts: dict[str, list] = {k: [] for k in outputs}
    with tqdm(total=len(reader), desc=f"evaluate {reader.split} ({', '.join(outputs)})", unit="img",
              mininterval=2) as bar:
        for start in range(0, len(reader), chunk):
            images = reader.read(start, start + chunk)
            for k, fn in outputs.items():
                parts[k].append(fn(images))
            bar.update(len(images))
    return {k: joined(v) for k, v in parts.items()}


def photo_chunks(paths: Sequence[str], desc: str, chunk: int | None = None) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(index of the first photo in ``paths``, full-resolution photos) for consecutive runs of ``chunk`` paths."""
    from stages.images import read_many

    chunk = chunk or CHUNK
    with tqdm(total=len(paths), desc=desc, unit="img", mininterval=2) as bar:
        for start in range(0, len(paths), chunk):
            photos = read_many(paths[start:start + chunk])
            yield start, photos
            bar.update(len(photos))


def perturbation(kind: str | None, value, seed: int) -> Callable[[int, np.ndarray], np.ndarray] | None:
    """change(i, photo) for photo i of the split (its index in the whole split seeds its random stream, so the
    numbers do not depend on the chunks); None for the clean photo."""
    from stages.perturb import apply

    if kind is None:
        return None
    return lambda i, img: apply(kind, value, img, np.random.default_rng([seed, i]))


def perturbed(serving, paths: Sequence[str], size: int, r, runs, chunk: int | None = None) -> dict[str, dict]:
    """Each (name, kind, value, gated) of ``runs`` (see ``battery``) applied to every full-resolution photo, then the
    model's resize, then the deployed (two-output) model: {name: {"probability", "ood", "stats"}}.
    kind None is the clean photo. The photos are read ``chunk`` at a time and every run is applied to each chunk."""
    changes = {name: perturbation(kind, value, r.seed) for name, kind, value, _ in runs}
    parts: dict[str, list] = {name: [] for name in changes}
    for start, photos in photo_chunks(paths, f"evaluate: test photos x {len(runs)} conditions", chunk):
        for name, change in changes.items():
            parts[name].append(scored(serving, photos, size, change, first=start))
    return {name: joined(p) for name, p in parts.items()}


def scored(serving, photos: list[np.ndarray], size: int, change=None, first: int = 0) -> dict:
    """Full-resolution photos (each through ``change(first + i, photo)`` first: ``first`` is the index of
    ``photos[0]`` in its split) -> resize -> camera statistics and both model outputs:
    {"probability": [N], "ood": [N], "stats": [dict]}."""
    from concurrent.futures import ThreadPoolExecutor

    from stages.images import resize
    from stages.imagestats import features
    from stages.ood import predict_both

    def one(i):
        small = resize(photos[i] if change is None else change(first + i, photos[i]), size)
        return small, features(small)

    with ThreadPoolExecutor(4) as pool:
        res = list(pool.map(one, range(len(photos))))
    prob, ood = predict_both(serving, np.stack([o[0] for o in res]), BATCH)
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


def robustness(results: dict[str, dict], y: np.ndarray, rule: dict, r, confidence: float, camera: dict) -> list[dict]:
    """The perturbation battery (``results``: ``perturbed`` on the test photos with every run of ``battery(r)``) at
    the chosen threshold and route; row 'clean' is the reference. recall / false_reject_rate / missed are the
    threshold rule's; route_* count what the line would do (RETAKE and REVIEW are not passed), with exact intervals."""
    rows = []
    for name, kind, value, gated in battery(r):
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


def robust_threshold(model, paths: Sequence[str], y_val: np.ndarray, e, size: int, chunk: int | None = None) -> dict:
    """evaluate.robust_threshold: the policy's threshold on the validation photos (read ``chunk`` at a time),
    clean and under every gated perturbation; the lowest wins, so the recall target holds in all of them."""
    from stages.images import resize

    r = e.robustness
    changes = {name: perturbation(kind, value, r.seed) for name, kind, value, _ in battery(r, gated_only=True)}
    probs: dict[str, list] = {name: [] for name in changes}
    for start, photos in photo_chunks(paths, f"evaluate: validation photos x {len(changes)} conditions", chunk):
        for name, change in changes.items():
            small = np.stack([resize(img if change is None else change(start + i, img), size)
                              for i, img in enumerate(photos)])
            probs[name].append(predict(model, small))
    per = {}
    for name, p in probs.items():
        per[name] = choose_threshold(y_val, np.concatenate(p), e)
        print(f"evaluate: validation threshold under {name:>16}: {per[name]:.4f}")
    return per


def ood_battery(serving, paths: Sequence[str], size: int, rule: dict, per_kind: int, seed: int) -> list[dict]:
    """Images the model was not trained to judge (stages.perturb.OOD_KINDS), made from the first ``per_kind`` test
    photos (only those are read): one row per image with its route. None may be PASS."""
    from stages.images import read_many
    from stages.perturb import OOD_KINDS, ood_image

    base = read_many(paths[:per_kind])
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

    from stages.dataset import open_shards

    pos, neg = params.data.positive_class, params.data.negative_class
    # the shards are checked against their index and the current manifest first (one-line errors, no TF import)
    data = {s: open_shards(s, t.image_size, pos) for s in ("train", "val", "test")}

    from stages.imagestats import drift_reference, feature_table
    from stages.models import load_model
    from stages.ood import GATE, METHOD, calibrate_limit, distances, feature_extractor, fit, save_gate, serving_model
    from stages.route import camera_reasons, make_rule
    from stages.tracking import stage_run
    from stages.train import MODEL

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
