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
from stages.metrics import at_threshold, bootstrap_rates, choose_threshold, operating_points, review_band, sweep
from stages.tracking import mlflow_key

METRICS = Path("reports/metrics.json")
EVAL = Path("reports/eval")
DRIFT_REFERENCE = EVAL / "drift_reference.json"


def predict(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return model.predict(images[..., None].astype(np.float32), batch_size=batch, verbose=0)[:, 0].astype(np.float64)


def perturbed(model, photos: list[np.ndarray], size: int, r, drift_ref: dict, runs) -> dict[str, tuple]:
    """Each (name, kind, value, gated) of ``runs`` (see ``battery``) applied to every full-resolution photo, then the
    model's resize, then the model: {name: (probabilities, share of images the drift check flags)}.
    kind None is the clean photo."""
    from concurrent.futures import ThreadPoolExecutor

    from stages.images import resize
    from stages.imagestats import drift_flags, features
    from stages.perturb import apply

    def one(kind, value, i):
        img = photos[i] if kind is None else apply(kind, value, photos[i], np.random.default_rng([r.seed, i]))
        small = resize(img, size)
        return small, bool(drift_flags(features(small), drift_ref))

    out = {}
    with ThreadPoolExecutor(4) as pool:
        for name, kind, value, _ in runs:
            res = list(pool.map(lambda i: one(kind, value, i), range(len(photos))))
            out[name] = (predict(model, np.stack([o[0] for o in res])), float(np.mean([o[1] for o in res])))
    return out


def battery(r, gated_only: bool = False) -> list[tuple]:
    """[(name, kind, value, gated)], 'clean' first."""
    return [("clean", None, None, False), *((n, q.kind, q.value, q.gated) for n, q in r.perturbations.items()
                                             if q.gated or not gated_only)]


def robustness(model, photos: list[np.ndarray], y: np.ndarray, threshold: float, size: int, r, drift_ref: dict) -> list[dict]:
    """The perturbation battery on the test photos at the chosen threshold; row 'clean' is the reference."""
    rows = []
    runs = battery(r)
    probs = perturbed(model, photos, size, r, drift_ref, runs)
    for name, kind, value, gated in runs:
        prob, flagged = probs[name]
        m = at_threshold(y, prob, threshold)
        ok = m["recall"] >= r.targets.min_recall and m["false_reject_rate"] <= r.targets.max_false_reject_rate
        rows.append({"perturbation": name, "kind": kind or "none", "value": value, "gated": gated,
                     "recall": m["recall"], "missed": m["fn"], "false_reject_rate": m["false_reject_rate"],
                     "false_rejects": m["fp"], "roc_auc": m["roc_auc"],
                     "drift_flagged_share": flagged, "meets_targets": ok})
        print(f"evaluate: robustness {name:>16}: recall {m['recall']:.4f} false rejects "
              f"{m['false_reject_rate']:.4f} ROC-AUC {m['roc_auc']:.4f} drift flagged "
              f"{flagged:.0%}{'' if ok or not gated else '  << misses target'}")
    return rows


def robust_threshold(model, photos: list[np.ndarray], y_val: np.ndarray, e, size: int, drift_ref: dict) -> dict:
    """evaluate.robust_threshold: the policy's threshold on the validation photos, clean and under
    every gated perturbation; the lowest wins, so the recall target holds in all of them."""
    r = e.robustness
    probs = perturbed(model, photos, size, r, drift_ref, battery(r, gated_only=True))
    per = {name: choose_threshold(y_val, p, e) for name, (p, _) in probs.items()}
    for name, t in per.items():
        print(f"evaluate: validation threshold under {name:>16}: {t:.4f}")
    return per


def main() -> None:
    params = load_params()
    e, t = params.evaluate, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from stages.dataset import load_split
    from stages.images import read_many
    from stages.imagestats import drift_reference
    from stages.models import load_model
    from stages.tracking import resume_run
    from stages.train import MODEL

    pos, neg = params.data.positive_class, params.data.negative_class
    model = load_model(MODEL)
    data = {s: load_split(s, t.image_size, pos) for s in ("train", "val", "test")}
    probs = {s: predict(model, data[s].images) for s in ("val", "test")}
    y = {s: d.labels for s, d in data.items()}

    print("evaluate: drift reference from the training images")
    drift_ref = drift_reference(data["train"].images, e.drift_margin)
    threshold = choose_threshold(y["val"], probs["val"], e)
    per_condition = None
    if e.robust_threshold and e.policy == "min_recall":
        per_condition = robust_threshold(model, read_many(data["val"].paths), y["val"], e, t.image_size, drift_ref)
        threshold = min(per_condition.values())
    max_f1 = choose_threshold(y["val"], probs["val"], e.model_copy(update={"policy": "max_f1"}))
    b = e.bootstrap
    metrics = {"threshold": threshold, "policy": e.policy,
               "policy_target": e.min_recall if e.policy == "min_recall" else None,
               "threshold_by_condition": per_condition,
               "positive_class": pos,
               "val": at_threshold(y["val"], probs["val"], threshold),
               "test": at_threshold(y["test"], probs["test"], threshold),
               "test_intervals": bootstrap_rates(y["test"], probs["test"], threshold, b.resamples, b.confidence, b.seed),
               "review_band": (review_band(y["test"], probs["test"], *e.review_band) if e.review_band else None)}

    print("evaluate: robustness battery on the test photos")
    photos = read_many(data["test"].paths)
    rob = robustness(model, photos, y["test"], threshold, t.image_size, e.robustness, drift_ref)
    gated = [row for row in rob if row["gated"]]
    metrics["robustness"] = {row["perturbation"]: {k: row[k] for k in
                             ("recall", "missed", "false_reject_rate", "false_rejects", "roc_auc", "drift_flagged_share")}
                             for row in rob}
    metrics["robustness_summary"] = {
        "targets": e.robustness.targets.model_dump(), "gated": len(gated),
        "all_gated_meet_targets": all(row["meets_targets"] for row in gated),
        "worst_recall": min((row["recall"] for row in gated), default=None),
        "worst_false_reject_rate": max((row["false_reject_rate"] for row in gated), default=None)}

    thresholds = [threshold, max_f1, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, *(e.review_band or ())]
    files = {name: EVAL / f"{name}.csv" for name in
             ("thresholds", "pr", "roc", "confusion", "predictions", "operating_points", "robustness")}
    with staged_outputs(METRICS, DRIFT_REFERENCE, *files.values()) as out:
        write_json(out.path(METRICS), metrics)
        write_json(out.path(DRIFT_REFERENCE), drift_ref)
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
        write_csv(out.path(files["predictions"]),
                  [{"path": path, "split": s, "label": name[int(lab)], "probability": f"{prob:.6f}",
                    "verdict": name[int(prob >= threshold)], "correct": int((prob >= threshold) == lab)}
                   for s in ("val", "test") for path, lab, prob in zip(data[s].paths, y[s], probs[s])],
                  ["path", "split", "label", "probability", "verdict", "correct"])
        ops = operating_points(y["test"], probs["test"], thresholds)
        for row in ops:
            row["chosen"] = row["threshold"] == threshold
        write_csv(out.path(files["operating_points"]), ops, list(ops[0]))
        write_csv(out.path(files["robustness"]), rob, list(rob[0]))

    with resume_run() as mlflow:
        mlflow.log_metric("threshold", threshold)
        for split in ("val", "test"):
            mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in metrics[split].items() if v is not None})
        mlflow.log_metrics({mlflow_key(f"robust_{row['perturbation']}_{k}"): float(row[k])
                            for row in rob for k in ("recall", "false_reject_rate")})
        mlflow.log_artifact(str(METRICS), "reports")
        mlflow.log_artifacts(str(EVAL), "reports/eval")
        if Path("reports/data.json").exists():
            mlflow.log_artifact("reports/data.json", "reports")
    m, s = metrics["test"], metrics["robustness_summary"]
    print(f"evaluate: threshold {threshold:.4f} ({e.policy}) -> test recall {m['recall']:.4f} precision "
          f"{m['precision']:.4f} accuracy {m['accuracy']:.4f} ROC-AUC {m['roc_auc']} "
          f"(missed defects {m['fn']}, false rejects {m['fp']} of {m['n']}); robustness targets "
          f"{'met' if s['all_gated_meet_targets'] else 'NOT met'} (worst recall {s['worst_recall']}, "
          f"worst false-reject rate {s['worst_false_reject_rate']})")


if __name__ == "__main__":
    cli(main)()
