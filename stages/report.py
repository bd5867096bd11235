"""Stage 6, report: reports/report.html and reports/report.pdf, what a quality engineer reads and signs.

From the top: the decision block (the deployed route rule in one sentence, the acceptance targets of
``report.targets`` against what was achieved, each judged on the upper bound of its exact binomial
interval, and the verdict), the expected cost per shift at the line's defect rate, the comparison with
the model on the line (reports/promotion.json, when the promote stage wrote one), the test results,
operating points, curves, robustness, bad cases with Grad-CAM, the trend of the last MLflow runs,
training, data, and a sign-off block. Figures are matplotlib PNGs and photos JPEGs, embedded as data
URIs; the page is rendered by Jinja2 from stages/templates/report.html.j2, printed to PDF by the
system Chromium (web.chromium) and both are logged to the MLflow run.

Every rate that is a count over parts (missed defects, false rejects, REVIEW and RETAKE shares, on
the test split and on each robustness row) has an exact Clopper-Pearson interval
(stages.metrics.binomial_ci); the bootstrap is kept for precision only. Numbers shown carry
``data-metric`` (a key of reports/metrics.json), ``data-derived`` (a value this module derives from
metrics.json and params, see ``derive``) or ``data-promotion`` (reports/promotion.json) so tests can
check every one of them.
"""
from __future__ import annotations

import base64
import datetime as dt
import html as html_lib
import io
import os
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

import cv2
import numpy as np

from stages.config import changed_params, load_params
from stages.errors import UserError, cli
from stages.fsutil import read_csv, read_json, staged_outputs
from stages.metrics import binomial_ci

REPORT = Path("reports/report.html")
PDF = Path("reports/report.pdf")
PROMOTION = Path("reports/promotion.json")
METADATA = Path("models/metadata.json")
TEMPLATES = Path(__file__).parent / "templates"
LIBRARIES = ("tensorflow", "keras", "tensorflowjs", "scikit-learn", "opencv-python-headless", "numpy",
             "mlflow", "dvc", "matplotlib", "jinja2", "scipy", "playwright")
DEFECT_COLOUR, OK_COLOUR, BAND_COLOUR = "#c0392b", "#2e86c1", "#f1c40f"
WORDS = ("PASS", "REVIEW", "REJECT", "RETAKE")


# ----- numbers: exact intervals, targets, costs (pure functions, unit-tested) ------------------

def lookup(doc, key: str):
    """A value by its path: 'a.b.c', or 'a|b c.d|e' when a name holds dots or spaces (robustness rows)."""
    for k in key.split("|" if "|" in key else "."):
        doc = doc[k]
    return doc


def _fallback_route(metrics: dict, confidence: float) -> dict:
    """The route block from an evaluate that predates the route (threshold and review band only, no RETAKE)."""
    t, b = metrics["test"], metrics.get("review_band")
    nd, no = t["tp"] + t["fn"], t["tn"] + t["fp"]
    if b:
        d = {"PASS": b["defects_slipping_through"], "REVIEW": b["review_defects"], "RETAKE": 0}
        o = {"REVIEW": b["review_ok"], "REJECT": b["ok_auto_rejected"], "RETAKE": 0}
        d["REJECT"], o["PASS"] = nd - d["PASS"] - d["REVIEW"], no - o["REVIEW"] - o["REJECT"]
    else:
        d = {"PASS": t["fn"], "REVIEW": 0, "REJECT": t["tp"], "RETAKE": 0}
        o = {"PASS": t["tn"], "REVIEW": 0, "REJECT": t["fp"], "RETAKE": 0}
    counts = {"defect": {w: int(d[w]) for w in WORDS}, "ok": {w: int(o[w]) for w in WORDS}}
    n = nd + no
    review, retake = d["REVIEW"] + o["REVIEW"], 0
    ci = lambda k, m: binomial_ci(k, m, confidence)  # noqa: E731
    test = {"n": n, "defects": nd, "ok": no, "counts": counts, "missed": d["PASS"], "false_rejects": o["REJECT"],
            "review": review, "retake": retake,
            "intervals": {"missed": ci(d["PASS"], nd), "false_rejects": ci(o["REJECT"], no), "review": ci(review, n),
                          "retake": ci(retake, n), "defect_review": ci(d["REVIEW"], nd), "ok_review": ci(o["REVIEW"], no),
                          "defect_retake": ci(0, nd), "ok_retake": ci(0, no)}}
    band = {"low": b["low"], "high": b["high"]} if b else None
    return {"threshold": metrics["threshold"], "review_band": band, "retake": None,
            "rule": rule_sentence(metrics["threshold"], band, None), "test": test}


def rule_sentence(threshold: float, band: dict | None, retake: dict | None) -> str:
    """The deployed route in one sentence (used when metrics.json carries no ``route.rule``)."""
    gate = ""
    if retake:
        why = ["it is unreadable"] + (["the camera check fails"] if retake.get("camera") else []) + \
              (["it scores above the out-of-distribution limit"] if retake.get("ood") else [])
        gate = f"RETAKE when {', '.join(why[:-1]) + ' or ' if len(why) > 1 else ''}{why[-1]}; otherwise "
    if band:
        lo, hi = min(threshold, band["low"]), max(threshold, band["high"])
        return f"{gate}PASS when the defect probability is below {lo:.4f}, REJECT at or above {hi:.4f}, REVIEW in between."
    return f"{gate}PASS when the defect probability is below {threshold:.4f}, REJECT at or above it (no review band)."


def route_block(metrics: dict, confidence: float) -> tuple[dict, bool]:
    """(metrics.json's route block, True), or one derived from the threshold and review band (False)."""
    if metrics.get("route") and metrics["route"].get("test"):
        return metrics["route"], True
    return _fallback_route(metrics, confidence), False


def mix_interval(share: float, k1: int, n1: int, k2: int, n2: int, confidence: float) -> dict:
    """The rate ``share * k1/n1 + (1 - share) * k2/n2`` of a mix of two classes, with an interval that covers
    at least ``confidence``: each class's exact interval at 1 - (1 - confidence)/2 (Bonferroni), combined."""
    each = 1 - (1 - confidence) / 2
    a, b = binomial_ci(k1, n1, each), binomial_ci(k2, n2, each)
    if a["rate"] is None or b["rate"] is None:
        return {"rate": None, "low": None, "high": None, "confidence": confidence}
    mix = lambda x, y: share * x + (1 - share) * y  # noqa: E731
    return {"rate": mix(a["rate"], b["rate"]), "low": mix(a["low"], b["low"]), "high": mix(a["high"], b["high"]),
            "confidence": confidence, "each_class": each}


def line_costs(test: dict, defect_rate: float, parts: int, confidence: float) -> dict:
    """Expected escapes, false rejects, parts to review and retakes per shift of ``parts`` parts at the line's
    ``defect_rate``, from the test split's per-class route counts. Each: {rate (share of all parts), low, high,
    per_shift, per_shift_low, per_shift_high}."""
    c, nd, no = test["counts"], test["defects"], test["ok"]

    def one_class(k, n, share):  # a rate over one class, times that class's share of the line
        ci = binomial_ci(k, n, confidence)
        if ci["rate"] is None:
            return {"rate": None, "low": None, "high": None, "confidence": confidence}
        return {"rate": share * ci["rate"], "low": share * ci["low"], "high": share * ci["high"],
                "confidence": confidence}

    out = {"escapes": one_class(c["defect"]["PASS"], nd, defect_rate),
           "false_rejects": one_class(c["ok"]["REJECT"], no, 1 - defect_rate),
           "review": mix_interval(defect_rate, c["defect"]["REVIEW"], nd, c["ok"]["REVIEW"], no, confidence),
           "retakes": mix_interval(defect_rate, c["defect"]["RETAKE"], nd, c["ok"]["RETAKE"], no, confidence)}
    for v in out.values():
        for k in ("rate", "low", "high"):
            v[f"per_shift{'' if k == 'rate' else '_' + k}"] = None if v[k] is None else parts * v[k]
    return out


def robustness_rows(metrics: dict, csv_rows: list[dict], test: dict, confidence: float, targets) -> list[dict]:
    """metrics.json's robustness rows with exact intervals from their counts: defects passed (route_missed, or the
    threshold's misses before the route existed), good parts rejected, REVIEW and RETAKE shares; a gated row meets
    the targets when both error intervals' upper bounds are within report.targets."""
    gated = {r["perturbation"]: r.get("gated") == "True" for r in csv_rows}
    nd, no, n = test["defects"], test["ok"], test["n"]
    rows = []
    for name, r in (metrics.get("robustness") or {}).items():
        missed = int(r.get("route_missed", r["missed"]))
        fr = int(r.get("route_false_rejects", r["false_rejects"]))
        row = {"name": name, "gated": gated.get(name, False), "routed": "route_missed" in r,
               "missed": binomial_ci(missed, nd, confidence), "false_rejects": binomial_ci(fr, no, confidence)}
        for share in ("review_share", "retake_share"):
            if r.get(share) is not None:
                row[share] = binomial_ci(int(round(r[share] * n)), n, confidence)
        row["meets"] = (row["missed"]["high"] is not None and row["missed"]["high"] <= targets.max_missed_rate and
                        row["false_rejects"]["high"] is not None and
                        row["false_rejects"]["high"] <= targets.max_false_reject_rate)
        rows.append(row)
    return rows


def judge_targets(test: dict, costs: dict, robust: list[dict], targets) -> list[dict]:
    """report.targets against what was achieved; each passes when the UPPER bound of its interval is within
    the target (a small test split cannot prove a low rate; the bound says how high it may really be)."""
    iv = test["intervals"]
    out = [
        {"key": "missed", "what": "Defects passed (missed)", "scope": "clean test split, per defective part",
         "unit": "per1000", "target": targets.max_missed_rate, **_k(iv["missed"])},
        {"key": "false_rejects", "what": "Good parts rejected", "scope": "clean test split, per good part",
         "unit": "per1000", "target": targets.max_false_reject_rate, **_k(iv["false_rejects"])},
        {"key": "review", "what": "Parts sent to REVIEW", "scope": "share of all parts at the line's defect rate",
         "unit": "percent", "target": targets.max_review_share, **_k(costs["review"])},
        {"key": "retake", "what": "Photos sent to RETAKE", "scope": "share of the clean test split",
         "unit": "percent", "target": targets.max_retake_share, **_k(iv["retake"])},
    ]
    gated = [r for r in robust if r["gated"]]
    if targets.robustness and gated:
        for key, what, limit in (("missed", "Defects passed under camera drift", targets.max_missed_rate),
                                 ("false_rejects", "Good parts rejected under camera drift", targets.max_false_reject_rate)):
            worst = max(gated, key=lambda r: r[key]["high"])
            failing = [r["name"] for r in gated if r[key]["high"] > limit]
            out.append({"key": f"robust_{key}", "what": what,
                        "scope": f"worst of {len(gated)} gated perturbations ({worst['name']})",
                        "unit": "per1000", "target": limit, **_k(worst[key]), "failing": failing})
    for t in out:
        t["passed"] = t["high"] is not None and t["high"] <= t["target"]
    return out


def _k(ci: dict) -> dict:
    return {"rate": ci["rate"], "low": ci["low"], "high": ci["high"], "confidence": ci["confidence"]}


def _fmt_rate(v: float, unit: str) -> str:
    return f"{1000 * v:.1f} per 1,000" if unit == "per1000" else f"{100 * v:.1f} %"


def verdict(targets: list[dict]) -> tuple[bool, str]:
    """(ready, the decision sentence)."""
    failed = [t for t in targets if not t["passed"]]
    if not failed:
        return True, ("Ready for the line: every target holds at the upper bound of its "
                      f"{round(100 * targets[0]['confidence'])} % interval.")
    reasons = []
    for t in failed:
        if t["high"] is None:
            reasons.append(f"{t['what'].lower()} could not be measured")
            continue
        where = f" ({', '.join(t['failing'])})" if t.get("failing") else ""
        reasons.append(f"{t['what'].lower()}{where} could be as high as {_fmt_rate(t['high'], t['unit'])} "
                       f"(target {_fmt_rate(t['target'], t['unit'])})")
    return False, "Not ready for the line, because " + "; ".join(reasons) + "."


def confidence_of(metrics: dict, params) -> float:
    route = metrics.get("route") or {}
    iv = (route.get("test") or {}).get("intervals") or {}
    return float(iv.get("missed", {}).get("confidence") or params.evaluate.bootstrap.confidence)


def derive(metrics: dict, params, robustness_csv: list[dict]) -> dict:
    """Everything the report computes from metrics.json and params: route block, per-shift costs, robustness
    intervals, targets, verdict, and ``flat``: every derived number the page shows, by its data-derived key."""
    r = params.report
    conf = confidence_of(metrics, params)
    route, from_metrics = route_block(metrics, conf)
    test = route["test"]
    costs = line_costs(test, r.line_defect_rate, r.parts_per_shift, conf)
    robust = robustness_rows(metrics, robustness_csv, test, conf, r.targets)
    targets = judge_targets(test, costs, robust, r.targets)
    ready, sentence = verdict(targets)
    t = metrics["test"]
    exact_threshold = metrics.get("test_exact") or {
        "missed": binomial_ci(t["fn"], t["tp"] + t["fn"], conf), "false_rejects": binomial_ci(t["fp"], t["tn"] + t["fp"], conf)}
    flat: dict[str, float] = {}

    def put(prefix, d):
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                flat[f"{prefix}{k}"] = v
    for k, v in costs.items():
        put(f"cost.{k}.", v)
    for tg in targets:
        put(f"target.{tg['key']}.", tg)
    for row in robust:
        for k in ("missed", "false_rejects", "review_share", "retake_share"):
            if k in row:
                put(f"robust|{row['name']}|{k}|", row[k])
    put("exact_threshold.missed.", exact_threshold["missed"])
    put("exact_threshold.false_rejects.", exact_threshold["false_rejects"])
    if not from_metrics:
        put("route.test.", test)
        for k, v in test["intervals"].items():
            put(f"route.test.intervals.{k}.", v)
        for cls, v in test["counts"].items():
            put(f"route.test.counts.{cls}.", v)
    rob, gated = metrics.get("robustness") or {}, {r["name"] for r in robust if r["gated"]}
    for scope, names in (("gated", [k for k in rob if k in gated]), ("all", list(rob))):
        if names:
            flat[f"worst.{scope}.recall"] = min(rob[k]["recall"] for k in names)
            flat[f"worst.{scope}.false_reject_rate"] = max(rob[k]["false_reject_rate"] for k in names)
    best = {"defects": binomial_ci(0, test["defects"], conf)["high"], "ok": binomial_ci(0, test["ok"], conf)["high"]}
    put("zero_events_bound.", best)
    flat["test_defect_share"] = test["defects"] / test["n"] if test["n"] else 0.0
    return {"confidence": conf, "route": route, "route_from_metrics": from_metrics, "costs": costs, "robust": robust,
            "targets": targets, "ready": ready, "decision": sentence, "exact_threshold": exact_threshold,
            "zero_events_bound": best, "flat": flat}


def training_sentence(epochs_run: int, best_epoch: int, max_epochs: int) -> str:
    """What early stopping did, in words ("kept epoch N (the epoch limit)" when it never fired)."""
    if epochs_run < max_epochs:
        return (f"Early stopping ended training after {epochs_run} of {max_epochs} epochs and kept epoch {best_epoch} "
                f"(lowest validation loss).")
    if best_epoch == epochs_run:
        return (f"Early stopping never fired: training ran all {max_epochs} epochs and kept epoch {best_epoch} "
                f"(the epoch limit); validation loss was still falling, so more epochs may help.")
    return (f"Training ran to the epoch limit ({max_epochs}) and kept epoch {best_epoch} (lowest validation loss); "
            f"early stopping had not fired yet.")


# ----- figures ------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_uri(img: np.ndarray, quality: int = 85) -> str:
    """Photos as JPEG: a tenth of the size of PNG, and the page stays light."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def _figure(w=5.0, h=3.6):
    fig, ax = _pyplot().subplots(figsize=(w, h))
    ax.grid(alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def curve_figures(y: np.ndarray, p: np.ndarray, threshold: float, band, names: tuple[str, str]) -> dict[str, str]:
    from sklearn.metrics import precision_recall_curve, roc_curve

    pred = p >= threshold
    tp, fp, fn, tn = (y & pred).sum(), (~y & pred).sum(), (y & ~pred).sum(), (~y & ~pred).sum()
    figs = {}

    fig, ax = _figure()
    prec, rec, _ = precision_recall_curve(y, p)
    ax.plot(rec, prec, color="#34495e")
    ax.plot([tp / max(1, tp + fn)], [tp / max(1, tp + fp)], "o", color=DEFECT_COLOUR, label=f"threshold {threshold:.4f}")
    ax.set(xlabel="defect recall", ylabel="precision", title="Precision-recall (test)")
    ax.set_xlim(0.9, 1.002), ax.set_ylim(0.9, 1.002)
    ax.legend(loc="lower left")
    figs["pr"] = _png(fig)

    fig, ax = _figure()
    fpr, tpr, _ = roc_curve(y, p)
    ax.plot(fpr, tpr, color="#34495e")
    ax.plot([fp / max(1, fp + tn)], [tp / max(1, tp + fn)], "o", color=DEFECT_COLOUR, label=f"threshold {threshold:.4f}")
    ax.set(xlabel="false-reject rate (good parts rejected)", ylabel="defect recall", title="ROC (test)")
    ax.set_xscale("symlog", linthresh=0.01)
    ax.set_xlim(0, 1), ax.set_ylim(0.8, 1.005)
    ax.legend(loc="lower right")
    figs["roc"] = _png(fig)

    fig, ax = _figure(7.5, 3.4)
    bins = np.linspace(0, 1, 51)
    if band:  # the band tint sits behind the bars (zorder), so the bars keep the legend's colours
        ax.axvspan(band[0], band[1], color=BAND_COLOUR, alpha=0.25, lw=0, zorder=0, label="review band")
    # opaque bars side by side in each bin: no blending, the colours are exactly the legend's
    ax.hist([p[~y], p[y]], bins, color=[OK_COLOUR, DEFECT_COLOUR], label=[f"{names[1]} parts", f"{names[0]} parts"],
            zorder=2)
    ax.set_yscale("log")
    ax.axvline(threshold, color="black", ls="--", lw=1, zorder=3, label=f"threshold {threshold:.4f}")
    ax.set(xlabel="defect probability", ylabel="parts (log scale)", title="Scores per class (test)")
    ax.set_axisbelow(True)
    ax.legend(fontsize=8)
    figs["histogram"] = _png(fig)
    return figs


def training_figure(history: list[dict], best_epoch: int) -> str:
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 3.4))
    epochs = [int(r["epoch"]) for r in history]
    for ax, metric, label in ((axes[0], "loss", "loss (binary cross-entropy)"), (axes[1], "accuracy", "accuracy")):
        ax.plot(epochs, [float(r[metric]) for r in history], "o-", label="train (augmented)")
        ax.plot(epochs, [float(r[f"val_{metric}"]) for r in history], "o-", label="validation")
        ax.axvline(best_epoch, color="black", ls="--", lw=1, label=f"kept: epoch {best_epoch}")
        ax.set(xlabel="epoch", title=label)
        if metric == "loss":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _png(fig)


# ----- trend (MLflow) -----------------------------------------------------------------------

TREND_METRICS = ("threshold", "test_n", "test_tp", "test_fn", "test_fp", "test_recall", "test_miss_rate",
                 "test_false_reject_rate", "test_roc_auc", "test_route_missed", "test_route_false_rejects",
                 "test_review_share", "test_retake_share")


def trend(experiment: str, runs: int, current_run: str | None, tracking_uri: str | None = None) -> dict:
    """Headline numbers of the last ``runs`` evaluated runs of ``experiment`` (newest first) and a plot.
    {"rows": [...], "figure": uri | None, "note": str}; never raises (the store may be unreachable)."""
    try:
        import logging

        from mlflow import MlflowClient

        from stages.tracking import tracking_uri as default_uri

        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        uri = tracking_uri or default_uri()
        client = MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(experiment)
        found = [] if exp is None else client.search_runs(
            [exp.experiment_id], filter_string="metrics.test_recall >= 0", max_results=runs,
            order_by=["attributes.start_time DESC"])
    except Exception as exc:  # an optional section: say why it is empty instead of failing the report
        return {"rows": [], "figure": None, "note": f"the MLflow store could not be read ({type(exc).__name__}: {exc})"}
    rows = []
    for run in found:
        m, tags = run.data.metrics, run.data.tags
        commit = tags.get("git_commit", "")
        rows.append({"run_id": run.info.run_id, "name": run.info.run_name or run.info.run_id[:8],
                     "start": dt.datetime.fromtimestamp(run.info.start_time / 1000, dt.timezone.utc)
                     .strftime("%Y-%m-%d %H:%M"),
                     "commit": commit[:10] + (" dirty" if commit.endswith("-dirty") else ""),
                     "current": run.info.run_id == current_run,
                     **{k: m.get(k) for k in TREND_METRICS}})
    note = "" if rows else f"no evaluated run in MLflow experiment {experiment!r} yet"
    return {"rows": rows, "figure": trend_figure(rows) if len(rows) >= 2 else None, "note": note, "uri": uri}


def trend_figure(rows: list[dict]) -> str:
    """Defects passed and good parts rejected per 1,000 (test split), oldest run left."""
    rows = rows[::-1]
    x = np.arange(len(rows))

    def per_1000(row, key_routed, key_threshold, n):
        if row.get(key_routed) is not None and n:
            return 1000 * row[key_routed] / n
        return None if row.get(key_threshold) is None else 1000 * row[key_threshold]
    missed, fr = [], []
    for row in rows:
        nd = (row.get("test_tp") or 0) + (row.get("test_fn") or 0)
        no = (row.get("test_n") or 0) - nd
        missed.append(per_1000(row, "test_route_missed", "test_miss_rate", nd))
        fr.append(per_1000(row, "test_route_false_rejects", "test_false_reject_rate", no))
    fig, ax = _figure(7.5, 2.8)
    ax.plot(x, [np.nan if v is None else v for v in missed], "o-", color=DEFECT_COLOUR, label="defects passed / 1,000 defective")
    ax.plot(x, [np.nan if v is None else v for v in fr], "s-", color=OK_COLOUR, label="good parts rejected / 1,000 good")
    cur = [i for i, r in enumerate(rows) if r["current"]]
    for i in cur:
        ax.axvline(i, color="black", lw=1, ls=":", label="this run")
    ax.set_xticks(x, [r["start"][5:] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="per 1,000 parts", title="Trend of the last runs (test split)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    return _png(fig)


# ----- promotion (reports/promotion.json, written by the promote stage) -------------------

def promotion_section(path: Path, thumb: int, cap: int) -> dict | None:
    """reports/promotion.json with thumbnails for the first ``cap`` parts whose route changed; None without one."""
    if not Path(path).exists():
        return None
    from stages.images import read_gray, resize

    promo = read_json(path)
    changed = list(promo.get("changed") or [])
    for row in changed[:cap]:
        p = Path(row.get("path", ""))
        row["name"] = p.name
        if p.is_file():
            try:
                row["photo"] = _image_uri(resize(read_gray(p), thumb))
            except Exception:  # an unreadable file: listed without a picture
                row["photo"] = None
    return {"doc": promo, "changed": changed, "shown": min(cap, len(changed))}


# ----- bad cases ----------------------------------------------------------------------------

def _logit(q: float) -> float:
    q = min(max(q, 1e-7), 1 - 1e-7)
    return float(np.log(q / (1 - q)))


def with_routes(rows: list[dict], threshold: float, band: dict | None) -> list[dict]:
    """Each test row with its route and reason: predictions.csv's (evaluate's) when it has them, else the
    threshold and band rule (no RETAKE information; marked ``route_derived``)."""
    from stages.route import route

    out = []
    for row in rows:
        row = dict(row)
        if not row.get("route"):
            row["route"], row["reason"] = route(float(row["probability"]), threshold,
                                                (band["low"], band["high"]) if band else None)
            row["route_derived"] = True
        out.append(row)
    return out


def pick_cases(rows: list[dict], threshold: float, r) -> list[dict]:
    """Misclassified test images (up to report.max_misclassified): defects routed PASS first, then good parts
    routed REJECT, then the others (worst first); the most uncertain correct ones (closest to the threshold in
    log-odds), test photos the line would RETAKE, and a few confidently found defects."""
    def key(row):
        escaped = row["route"] == "PASS" and row["label"] == row["positive"]
        rejected = row["route"] == "REJECT" and row["label"] != row["positive"]
        return (0 if escaped else 1 if rejected else 2, -abs(_logit(float(row["probability"])) - _logit(threshold)))

    def kind(row):
        if row["route"] == "PASS" and row["label"] == row["positive"]:
            return "escaped defect"
        if row["route"] == "REJECT" and row["label"] != row["positive"]:
            return "false reject"
        return "misclassified"
    wrong = sorted((row for row in rows if row["correct"] == "0"), key=key)
    wrong = [dict(row, kind=kind(row)) for row in wrong]
    right = [row for row in rows if row["correct"] == "1"]
    retake = [dict(row, kind="retake") for row in right if row["route"] == "RETAKE"][:r.uncertain_cases]
    right = [row for row in right if row["route"] != "RETAKE"]
    right.sort(key=lambda row: abs(_logit(float(row["probability"])) - _logit(threshold)))
    uncertain = [dict(row, kind="uncertain") for row in right[:r.uncertain_cases]]
    found = sorted((row for row in right if row["label"] == row["positive"]), key=lambda row: -float(row["probability"]))
    taken = {row["path"] for row in uncertain}
    reference = [dict(row, kind="reference defect") for row in found if row["path"] not in taken][:r.reference_defects]
    return wrong[:r.max_misclassified] + retake + uncertain + reference


def case_notes(c: dict, ood_limit: float | None) -> list[str]:
    """Plain-language notes on a photo: out of distribution (an off-angle or badly framed shot looks like this
    to the model), camera check, RETAKE."""
    notes = []
    reason = c.get("reason") or ""
    score = c.get("ood_score")
    score = float(score) if score not in (None, "") else None
    if (score is not None and ood_limit is not None and score > ood_limit) or "unlike the training photos" in reason:
        notes.append("Out of distribution: this photo is unlike the training photos (e.g. taken off-angle, badly framed "
                     "or with a changed camera), so the model's probability is not to be trusted"
                     + (f" (score {score:.1f} > limit {ood_limit:.1f})" if score is not None and ood_limit else "") + ".")
    if "camera check" in reason:
        notes.append("The camera check fails: brightness, contrast or sharpness is outside the training range.")
    if c.get("route") == "RETAKE":
        notes.append("The line asks for a new photo instead of judging this one.")
    return notes


def case_images(model, cases: list[dict], size: int, thumb: int, ood_limit: float | None = None) -> None:
    from stages.gradcam import gradcam, overlay
    from stages.images import read_gray, resize

    for c in cases:
        c["name"] = Path(c["path"]).name
        c["notes"] = case_notes(c, ood_limit)
    if not cases:
        return
    photos = [read_gray(c["path"]) for c in cases]
    x = np.stack([resize(img, size) for img in photos]).astype(np.float32)[..., None]
    heat = gradcam(model, x)
    for c, img, h in zip(cases, photos, heat):
        small = resize(img, thumb)
        c["photo"] = _image_uri(small)
        c["gradcam"] = _image_uri(overlay(small, h))


# ----- page ---------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def _number(value, digits, scale) -> str:
    if value is None:
        return "n/a"
    if digits is None and isinstance(value, int) and scale == 1:
        return f"{value:,}"
    v = value * scale
    return f"{v:,.{digits if digits is not None else 0}f}"


def number_helpers(metrics: dict, flat: dict, promotion: dict | None):
    """Jinja globals that print a number with the attribute tests check it by."""
    from markupsafe import Markup

    def make(attr, source):
        def show(key, digits=None, scale=1, cls=""):
            value = source(key)
            extra = (f' data-digits="{digits}"' if digits is not None else "") + \
                    (f' data-scale="{scale}"' if scale != 1 else "") + (f' class="{cls}"' if cls else "")
            return Markup(f'<span {attr}="{html_lib.escape(key)}"{extra}>{_number(value, digits, scale)}</span>')
        return show
    return {"M": make("data-metric", lambda k: lookup(metrics, k)),
            "D": make("data-derived", lambda k: flat[k]),
            "P": make("data-promotion", lambda k: lookup(promotion, k))}


def render(context: dict) -> str:
    """The page from stages/templates/report.html.j2 and the values of ``context``."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    d = context["derived"]
    helpers = number_helpers(context["m"], d["flat"], (context["promotion"] or {}).get("doc"))
    # a route number: metrics.json's key when evaluate wrote the route, else the value derived here
    helpers["R"] = helpers["M"] if d["route_from_metrics"] else helpers["D"]
    env.globals.update(helpers)
    return env.get_template("report.html.j2").render(**context)


def print_pdf(browser, html_path: Path, pdf_path: Path, footer: str) -> int:
    """Print ``html_path`` (its print stylesheet) to ``pdf_path`` as A4 with page numbers; returns the pages."""
    page = browser.new_page()
    try:
        page.goto(Path(html_path).resolve().as_uri(), wait_until="load")
        page.pdf(path=str(pdf_path), format="A4", print_background=True, display_header_footer=True,
                 header_template="<span></span>",
                 footer_template=f'<div style="font-size:8px;width:100%;text-align:center;color:#555">'
                                 f'{html_lib.escape(footer)} &middot; page <span class="pageNumber"></span> of '
                                 f'<span class="totalPages"></span></div>',
                 margin={"top": "14mm", "bottom": "16mm", "left": "12mm", "right": "12mm"})
    finally:
        page.close()
    return pdf_pages(pdf_path)


def pdf_pages(path: Path) -> int:
    """Pages of a PDF (count of /Type /Page objects; Chromium writes them uncompressed)."""
    import re

    return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", Path(path).read_bytes()))


def collect(params) -> dict:
    """Read the pipeline's outputs (in the working directory) and build everything the page shows."""
    r, t = params.report, params.train
    from stages.dataset import dataset_sha256
    from stages.evaluate import EVAL, METRICS
    from stages.models import load_model
    from stages.split import DATA_REPORT
    from stages.tracking import RUN_FILE, git_commit
    from stages.train import HISTORY, MODEL

    for needed in (METRICS, DATA_REPORT, HISTORY, RUN_FILE, MODEL, EVAL / "predictions.csv"):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the earlier stages first (dvc repro)")
    metrics, data, run = read_json(METRICS), read_json(DATA_REPORT), read_json(RUN_FILE)
    pos, neg = params.data.positive_class, params.data.negative_class
    robustness_csv = read_csv(EVAL / "robustness.csv") if (EVAL / "robustness.csv").exists() else []
    derived = derive(metrics, params, robustness_csv)
    route = derived["route"]
    threshold = metrics["threshold"]
    band = route.get("review_band")
    test_rows = with_routes([dict(row, positive=pos) for row in read_csv(EVAL / "predictions.csv")
                             if row["split"] == "test"], threshold, band)
    y = np.array([row["label"] == pos for row in test_rows])
    p = np.array([float(row["probability"]) for row in test_rows])

    print("report: figures")
    figures = curve_figures(y, p, threshold, (band["low"], band["high"]) if band else None, (pos, neg))
    history = read_csv(HISTORY)
    figures["training"] = training_figure(history, int(run["best_epoch"]))

    ood = metrics.get("ood") or {}
    cases = pick_cases(test_rows, threshold, r)
    print(f"report: Grad-CAM for {len(cases)} test images")
    case_images(load_model(MODEL), cases, t.image_size, r.thumbnail, ood.get("limit"))

    print("report: trend of the last MLflow runs")
    trend_ = trend(t.mlflow_experiment, r.trend_runs, run.get("run_id"))
    promotion = promotion_section(PROMOTION, max(64, r.thumbnail // 2), r.max_misclassified)
    meta = read_json(METADATA) if METADATA.exists() else {}
    commit = git_commit()
    return dict(
        m=metrics, data=data, run=run, figures=figures, cases=cases, pos=pos, neg=neg, derived=derived,
        route=route, operating_points=read_csv(EVAL / "operating_points.csv"), max_f1=metrics.get("max_f1_threshold"),
        ood=ood, trend=trend_, promotion=promotion, history_rows=len(history), params=params, meta=meta,
        commit=commit, dirty=commit.endswith("-dirty"),
        training_note=training_sentence(int(run.get("epochs_run") or len(history)), int(run["best_epoch"]),
                                        t.max_epochs),
        identity={"git commit": commit, "dataset sha256": dataset_sha256(),
                  "model version": meta.get("version", "not exported yet"),
                  "MLflow run": f"{run['run_id']} (experiment {run['experiment']}, {run['tracking_uri']})",
                  "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")},
        changed=changed_params(params), versions=versions())


def main() -> None:
    params = load_params()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    from stages.browser import chromium
    from stages.tracking import stage_run

    if not Path(params.web.chromium).exists():
        raise UserError(f"Chromium not found at {params.web.chromium} (it prints reports/report.pdf); install it "
                        f"(apt-get install chromium) or set web.chromium in params.yaml")
    context = collect(params)
    html = render(context)
    meta, commit, run = context["meta"], context["commit"], context["run"]
    with staged_outputs(REPORT, PDF) as out:
        out.path(REPORT).write_text(html, encoding="utf-8")
        print("report: printing the PDF with Chromium")
        with chromium(params.web.chromium) as browser:
            pages = print_pdf(browser, out.path(REPORT), out.path(PDF),
                              f"Casting inspection report, model {meta.get('version', '?')}, commit {commit[:12]}")
    with stage_run("report", params) as mlflow:  # train's run, or a child run when params changed
        mlflow.log_artifact(str(REPORT), "reports")
        mlflow.log_artifact(str(PDF), "reports")
        mlflow.log_metric("report_seconds", time.perf_counter() - t0)
        logged_to = getattr(mlflow, "run_id", run["run_id"])
    print(f"report: {REPORT} ({REPORT.stat().st_size / 1e6:.2f} MB, {len(context['cases'])} cases), {PDF} "
          f"({PDF.stat().st_size / 1e6:.2f} MB, {pages} pages) in {time.perf_counter() - t0:.1f} s. "
          f"{context['derived']['decision']} Logged to MLflow run {logged_to}")


if __name__ == "__main__":
    cli(main)()
