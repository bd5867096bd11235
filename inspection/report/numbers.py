"""The report's numbers and sentences: everything reports/report.html shows, derived from the pipeline's outputs.

From the top: the decision block (the deployed route rule in one sentence, the acceptance targets of
``report.targets`` against what was achieved, each judged on the upper bound of its exact binomial
interval, and the verdict), the expected cost per shift at the line's defect rate, the comparison with
the model on the line (reports/promotion.json, when the promote stage wrote one), the test results,
operating points, curves, robustness, bad cases with Grad-CAM, the trend of the last MLflow runs,
training, data, and a sign-off block. Figures are matplotlib PNGs and photos JPEGs, embedded as data
URIs; the page is rendered by Jinja2 from inspection/report/templates/report.html.j2, printed to PDF by the
system Chromium (web.chromium) and both are logged to the MLflow run.

Every rate that is a count over parts (missed defects, false rejects, REVIEW and RETAKE shares, on
the test split and on each robustness row) has an exact Clopper-Pearson interval
(inspection.decision.metrics.binomial_ci); the bootstrap is kept for precision only. Numbers shown carry
``data-metric`` (a key of reports/metrics.json), ``data-derived`` (a value this module derives from
metrics.json and params, see ``derive``) or ``data-promotion`` (reports/promotion.json) so tests can
check every one of them.
"""
from __future__ import annotations

from inspection.decision.metrics import binomial_ci


WORDS = ("PASS", "REVIEW", "REJECT", "RETAKE")


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
