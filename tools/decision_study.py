"""Decision studies without retraining: score a model once, then re-judge it (or an ensemble) in seconds.

``scores`` runs what the evaluate stage runs on the validation and test photos (the deployed views, clean and
under every perturbation of evaluate.robustness; probability, OOD score, camera statistics) and keeps every
per-photo number in one file. ``judge`` applies the decision of this checkout's params to one or more such files
with the library's own code (the band chooser, the RETAKE gate's ranges and limit, the routes, the readiness
targets): the same verdict the evaluate stage writes to reports/decision.json, and the out-of-distribution
battery's PASS count. Several files of the same photos with ``--ensemble`` are judged as one model averaging their logits (the
OOD score averaged too). Run from the repository root with the data of the scored models (same manifest):

    python tools/decision_study.py scores --model models/model.keras --out /tmp/seed0.pkl
    python tools/decision_study.py judge /tmp/seed0.pkl /tmp/seed1.pkl            # one verdict per model
    python tools/decision_study.py judge /tmp/seed0.pkl /tmp/seed1.pkl --ensemble # one verdict for the pair
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def scores(model_path: str, out: str) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from inspection.config import load_params
    from inspection.data.dataset import open_shards
    from inspection.evaluation.batteries import battery, perturbed
    from inspection.evaluation.gate import fit_gate
    from inspection.model.architectures import load_model
    from inspection.model.ood import serving_model
    from inspection.model.tta import probability_model

    params = load_params()
    e, t = params.evaluate, params.train
    data = {s: open_shards(s, t.image_size, params.data.positive_class) for s in ("train", "val", "test")}
    model = load_model(model_path)
    fitted = fit_gate(model, probability_model(model, e.tta), data, e, None)   # the gate's mean/precision, ranges
    serving = serving_model(model, fitted.gate, e.tta)
    res = {"y_val": np.asarray(data["val"].labels), "y_test": np.asarray(data["test"].labels),
           "val": perturbed(serving, data["val"].paths, t.image_size, e.robustness, battery(e.robustness, True)),
           "test": perturbed(serving, data["test"].paths, t.image_size, e.robustness, battery(e.robustness)),
           "ood_battery": ood_battery(serving, data["test"].paths, t.image_size, e),
           "drift_reference": fitted.drift_reference, "model": str(model_path)}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "wb") as f:
        pickle.dump(res, f)
    print(f"decision_study: scores of {model_path} written to {out}")


def ood_battery(serving, paths, size: int, e) -> dict:
    """The evaluate stage's out-of-distribution battery (same images, same seeds), scored but not routed."""
    from inspection.data.images import read_many
    from inspection.decision.perturb import OOD_KINDS, ood_image
    from inspection.evaluation.scoring import scored

    base = read_many(paths[:e.retake.ood_battery_per_kind])
    return {kind: scored(serving, [ood_image(kind, img, np.random.default_rng([e.robustness.seed, k, i]))
                                   for i, img in enumerate(base)], size) for k, kind in enumerate(OOD_KINDS)}


def _table(stats: list[dict]) -> dict:
    return {k: np.array([s[k] for s in stats]) for k in stats[0]}


def ensemble(runs: list[dict]) -> dict:
    """One model from several scored on the same photos: mean logit of the probabilities, mean OOD score."""
    from scipy.special import expit, logit

    if len({len(r["y_test"]) for r in runs}) != 1 or any((r["y_test"] != runs[0]["y_test"]).any() for r in runs):
        sys.exit("error: the score files do not cover the same photos; score every model on the same data")
    out = {**runs[0], "val": {}, "test": {}, "ood_battery": {}, "model": " + ".join(r["model"] for r in runs)}
    for split in [k for k in ("val", "test", "ood_battery") if k in runs[0]]:
        for k, base in runs[0][split].items():
            p = [np.clip(r[split][k]["probability"], 1e-7, 1 - 1e-7) for r in runs]
            out[split][k] = {**base, "probability": expit(np.mean([logit(x) for x in p], axis=0)),
                             "ood": np.mean([r[split][k]["ood"] for r in runs], axis=0)}
    return out


def judge(run: dict, params) -> dict:
    """reports/decision.json's verdict for the scored photos under this checkout's decision params."""
    from inspection.evaluation.batteries import robustness, route_counts, routes
    from inspection.evaluation.gate import camera_ranges, ood_limit
    from inspection.evaluation.policy import choose, deployed_rule, readiness
    from inspection.evaluation.summary import robustness_metrics

    e = params.evaluate
    val, test = run["val"], run["test"]
    gated = [k for k in val if k != "clean"]
    tables = {k: _table(v["stats"]) for k, v in val.items()}
    camera, warn = camera_ranges(e, run["drift_reference"], {k: tables[k] for k in gated})
    limit, calibration = ood_limit(e, camera, {k: v["ood"] for k, v in val.items()}, tables)
    yv, yt = run["y_val"].astype(int), run["y_test"].astype(int)
    with contextlib.redirect_stdout(io.StringIO()):
        chosen = choose(None, None, yv, val["clean"]["probability"], params,
                        {k: v["probability"] for k, v in val.items()})
        rule = deployed_rule(chosen, e, camera, warn, limit, calibration.get("review_limit"), "")
        rob = robustness(test, yt, rule, e.robustness, e.bootstrap.confidence, warn or camera)
    metrics = {"route": {**rule, "test": route_counts(yt, routes(test["clean"], rule), e.bootstrap.confidence)},
               "robustness": robustness_metrics(rob)}
    dec = readiness(metrics, params.report, rob, {})
    band = chosen["band_choice"] or {"low": chosen["threshold"], "high": (chosen["band"] or (None, None))[1],
                                     "validation": {"review_share_at_line_rate": None}}
    t = {x["key"]: x for x in dec["targets"]}
    battery = [w for kind in run.get("ood_battery", {}).values() for w, _ in routes(kind, rule)]
    return {"model": run["model"], "ready": dec["ready"],
            "ood_battery_passed": battery.count("PASS"), "ood_battery_retake": battery.count("RETAKE"), "ood_battery_images": len(battery), "band": [band["low"], band["high"]], "ood_limit": limit,
            "val_review_share": band["validation"]["review_share_at_line_rate"],
            "review_share": t["review"]["rate"], "review_bound": t["review"]["high"],
            "missed": t["missed"]["k"], "false_rejects": t["false_rejects"]["k"], "retake": t["retake"]["k"],
            "failed_targets": [k for k, x in t.items() if not x["passed"]], "sentence": dec["sentence"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("scores", help="score one model on the validation and test photos, every condition")
    s.add_argument("--model", default="models/model.keras")
    s.add_argument("--out", required=True)
    j = sub.add_parser("judge", help="the decision of this checkout's params for each score file (or their ensemble)")
    j.add_argument("files", nargs="+")
    j.add_argument("--ensemble", action="store_true", help="judge the files as one model (mean logit)")
    j.add_argument("--json", help="also write the verdicts to this file")
    args = ap.parse_args(argv)
    if args.cmd == "scores":
        scores(args.model, args.out)
        return 0
    from inspection.config import load_params

    missing = [f for f in args.files if not Path(f).is_file()]
    if missing:
        sys.exit(f"error: no score file {missing[0]}; make one with: python tools/decision_study.py scores --out FILE")
    runs = []
    for f in args.files:
        with open(f, "rb") as fh:
            run = pickle.load(fh)
        runs.append({**run, "model": run.get("model", f), "y_val": np.asarray(run["y_val"]),
                     "y_test": np.asarray(run["y_test"])})
    params = load_params()
    verdicts = [judge(ensemble(runs), params)] if args.ensemble else [judge(run, params) for run in runs]
    for v in verdicts:
        print(f"{v['model']}: {'ready' if v['ready'] else 'not ready'}; band [{v['band'][0]:.4f}, {v['band'][1]:.4f}), "
              f"REVIEW {v['review_share']:.2%} of parts at the line's rate (bound {v['review_bound']:.2%}, validation "
              f"{v['val_review_share']:.2%}), missed {v['missed']}, false rejects {v['false_rejects']}, RETAKE "
              f"{v['retake']}, " + (f"OOD battery {v['ood_battery_passed']} of {v['ood_battery_images']} passed "
                                     f"({v['ood_battery_retake']} RETAKE)"
                                     if v["ood_battery_images"] else "OOD battery not in the score file")
              + (f"; fails {', '.join(v['failed_targets'])}" if v["failed_targets"] else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(verdicts, indent=2, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
