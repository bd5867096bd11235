"""The evaluate stage's batteries: routes of the test photos, camera drift (robustness) and odd photos (OOD).

The threshold is chosen on validation and measured on test.

Policies (evaluate.policy): min_recall = highest threshold whose validation defect
recall >= evaluate.min_recall (with evaluate.robust_threshold: on the clean validation photos
and under every gated perturbation of the robustness battery, the lowest of those thresholds);
max_f1 = the validation F1 maximiser; fixed.
A part is called a defect when its probability >= threshold.
Also: bootstrap intervals of the test error rates, the review band (evaluate.review_band), the
robustness battery (evaluate.robustness, inspection/decision/perturb.py) and the drift reference statistics
of the training images that deployment compares incoming images with (inspection/data/imagestats.py).
Outputs: reports/metrics.json (DVC metrics), reports/eval/drift_reference.json and
reports/eval/{thresholds,pr,roc,confusion,predictions,operating_points,robustness}.csv.

Memory: nothing holds a whole split. The model-size images stream from the shards (stage shards,
``inspection.data.dataset.open_shards``) ``CHUNK`` at a time (probabilities, pooled features, camera statistics); the
full-resolution photos (validation for the robust threshold, test for the routes and both batteries) are decoded
``CHUNK`` at a time with every perturbation applied to each chunk. What stays are per-image results (a probability,
an OOD score, a few camera statistics, the pooled features of train and val). CHUNK is a multiple of the model's
batch, so the model sees the same batches as on the whole split and the numbers are bit-identical to a one-shot run.
"""
from __future__ import annotations

from typing import Callable, Sequence
import numpy as np
from inspection.decision.metrics import at_threshold, binomial_ci, choose_threshold
from inspection.decision.route import camera_reasons
from inspection.evaluation.scoring import joined, photo_chunks, predict, scored


def perturbation(kind: str | None, value, seed: int) -> Callable[[int, np.ndarray], np.ndarray] | None:
    """change(i, photo) for photo i of the split (its index in the whole split seeds its random stream, so the
    numbers do not depend on the chunks); None for the clean photo."""
    from inspection.decision.perturb import apply

    if kind is None:
        return None
    return lambda i, img: apply(kind, value, img, np.random.default_rng([seed, i]))


def perturbed(serving, paths: Sequence[str], size: int, robustness_params, runs,
              chunk: int | None = None) -> dict[str, dict]:
    """Each (name, kind, value, gated) of ``runs`` (see ``battery``) applied to every full-resolution photo, then the
    model's resize, then the deployed (two-output) model: {name: {"probability", "ood", "stats"}}.
    kind None is the clean photo. The photos are read ``chunk`` at a time and every run is applied to each chunk."""
    changes = {name: perturbation(kind, value, robustness_params.seed) for name, kind, value, _ in runs}
    parts: dict[str, list] = {name: [] for name in changes}
    for start, photos in photo_chunks(paths, f"evaluate: test photos x {len(runs)} conditions", chunk):
        for name, change in changes.items():
            parts[name].append(scored(serving, photos, size, change, first=start))
    return {name: joined(p) for name, p in parts.items()}


def routes(s: dict, rule: dict) -> list[tuple[str, str]]:
    from inspection.decision.route import decide

    return [decide(p, st, o, rule) for p, o, st in zip(s["probability"], s["ood"], s["stats"])]


def route_counts(y: np.ndarray, decided: list[tuple[str, str]], confidence: float) -> dict:
    """Routes per true class on labelled parts, the line's error counts and their exact intervals.
    missed = defects routed PASS (the only way a defect escapes); false_rejects = good parts routed REJECT."""
    from inspection.decision.route import ROUTES

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


def battery(robustness_params, gated_only: bool = False) -> list[tuple]:
    """[(name, kind, value, gated)], 'clean' first."""
    return [("clean", None, None, False),
            *((n, q.kind, q.value, q.gated) for n, q in robustness_params.perturbations.items()
              if q.gated or not gated_only)]


def robustness(results: dict[str, dict], y: np.ndarray, rule: dict, robustness_params, confidence: float,
               camera: dict) -> list[dict]:
    """The perturbation battery (``results``: ``perturbed`` on the test photos with every run of ``battery``) at
    the chosen route; row 'clean' is the reference. route_* count what the line would do, per true class (the
    decision module judges them against report.targets at the line's defect rate); recall, missed,
    false_reject_rate and false_rejects are the threshold alone's (threshold figures, no band, no RETAKE)."""
    rows = []
    for name, kind, value, gated in battery(robustness_params):
        res = results[name]
        m = at_threshold(y, res["probability"], rule["threshold"])
        rc = route_counts(y, routes(res, rule), confidence)
        flagged = float(np.mean([bool(camera_reasons(st, camera)) for st in res["stats"]]))
        ivl, c = rc["intervals"], rc["counts"]
        rows.append({"perturbation": name, "kind": kind or "none", "value": value, "gated": gated,
                     "recall": m["recall"], "missed": m["fn"], "false_reject_rate": m["false_reject_rate"],
                     "false_rejects": m["fp"], "roc_auc": m["roc_auc"],
                     "drift_flagged_share": flagged,
                     "route_missed": rc["missed"], "route_missed_high": ivl["missed"]["high"],
                     "route_false_rejects": rc["false_rejects"], "route_false_rejects_high": ivl["false_rejects"]["high"],
                     "route_review_defects": c["defect"]["REVIEW"], "route_review_ok": c["ok"]["REVIEW"],
                     "route_retake_defects": c["defect"]["RETAKE"], "route_retake_ok": c["ok"]["RETAKE"],
                     "review_share": rc["review_share"], "retake_share": rc["retake_share"],
                     "defects": rc["defects"], "ok": rc["ok"],
                     "missed_low": binomial_ci(m["fn"], rc["defects"], confidence)["low"],
                     "missed_high": binomial_ci(m["fn"], rc["defects"], confidence)["high"],
                     "false_reject_low": binomial_ci(m["fp"], rc["ok"], confidence)["low"],
                     "false_reject_high": binomial_ci(m["fp"], rc["ok"], confidence)["high"]})
        print(f"evaluate: robustness {name:>16}: routes: {rc['missed']} of {rc['defects']} defects passed, "
              f"{rc['false_rejects']} of {rc['ok']} good parts rejected, REVIEW {rc['review_share']:.1%}, RETAKE "
              f"{rc['retake_share']:.1%} ({c['ok']['RETAKE']} good parts); ROC-AUC {m['roc_auc']:.4f}")
    return rows


def val_conditions(model, paths: Sequence[str], evaluate, size: int, chunk: int | None = None,
                   stats: dict | None = None, features: Callable | None = None,
                   pooled: dict | None = None) -> dict[str, np.ndarray]:
    """The probabilities of the validation photos (read ``chunk`` at a time), clean and under every gated
    perturbation: {name: probabilities}. ``stats``, a dict, receives each condition's camera feature table;
    ``pooled``, a dict, each gated condition's ``features(images)`` (the OOD gate's pooled features)."""
    from inspection.data.images import resize
    from inspection.data.imagestats import feature_table

    r = evaluate.robustness
    changes = {name: perturbation(kind, value, r.seed) for name, kind, value, _ in battery(r, gated_only=True)}
    probs: dict[str, list] = {name: [] for name in changes}
    tables: dict[str, list] = {name: [] for name in changes}
    feats: dict[str, list] = {name: [] for name in changes if name != "clean"}
    for start, photos in photo_chunks(paths, f"evaluate: validation photos x {len(changes)} conditions", chunk):
        for name, change in changes.items():
            small = np.stack([resize(img if change is None else change(start + i, img), size)
                              for i, img in enumerate(photos)])
            probs[name].append(predict(model, small))
            tables[name].append(feature_table(small))
            if features is not None and pooled is not None and name in feats:
                feats[name].append(features(small))
    if pooled is not None and features is not None:
        pooled.update({name: np.concatenate(parts) for name, parts in feats.items()})
    if stats is not None:
        stats.update({name: {k: np.concatenate([t[k] for t in parts]) for k in parts[0]}
                      for name, parts in tables.items()})
    return {name: np.concatenate(p) for name, p in probs.items()}


def robust_threshold(model, paths: Sequence[str], y_val: np.ndarray, evaluate, size: int, chunk: int | None = None,
                     probs: dict[str, np.ndarray] | None = None) -> dict:
    """evaluate.robust_threshold: the policy's threshold on the validation photos, clean and under every gated
    perturbation (``val_conditions``); the lowest wins, so the recall target holds in all of them."""
    probs = probs if probs is not None else val_conditions(model, paths, evaluate, size, chunk)
    per = {}
    for name, p in probs.items():
        per[name] = choose_threshold(y_val, p, evaluate)
        print(f"evaluate: validation threshold under {name:>16}: {per[name]:.4f}")
    return per


def ood_battery(serving, paths: Sequence[str], size: int, rule: dict, per_kind: int, seed: int) -> list[dict]:
    """Images the model was not trained to judge (inspection.decision.perturb.OOD_KINDS), made from the first ``per_kind`` test
    photos (only those are read): one row per image with its route. None may be PASS."""
    from inspection.data.images import read_many
    from inspection.decision.perturb import OOD_KINDS, ood_image

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
