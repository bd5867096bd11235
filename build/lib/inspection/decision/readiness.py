"""Is the model ready for the line? The report's targets judged on exact bounds, and reports/decision.json.

Each of ``report.targets`` is judged on the UPPER end of the exact (Clopper-Pearson) interval of what the test
split measured, at the evaluate stage's confidence: defects passed (per defective part), good parts rejected
(per good part), parts sent to REVIEW (share of all parts at ``report.line_defect_rate``, the two classes'
intervals combined), photos sent to RETAKE, and, with ``targets.robustness``, the missed and false-reject
targets under every gated camera perturbation. ``decision`` gathers them into the document the evaluate stage
writes as reports/decision.json: the report renders its verdict from it, export copies it into the model's
metadata.json and MLflow tags, and promote refuses a not-ready model as champion (promote.allow_not_ready).
"""
from __future__ import annotations

from inspection.decision.metrics import binomial_ci


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


def decision(metrics: dict, report, robustness_rows_csv: list[dict], model: dict) -> dict:
    """reports/decision.json from metrics.json (its route block and robustness rows), ``report`` (params.report)
    and ``model`` (what identifies the judged model: run id, file hash)."""
    route = metrics["route"]
    test, conf = route["test"], float(route["test"]["intervals"]["missed"]["confidence"])
    costs = line_costs(test, report.line_defect_rate, report.parts_per_shift, conf)
    robust = robustness_rows(metrics, robustness_rows_csv, test, conf, report.targets)
    targets = judge_targets(test, costs, robust, report.targets)
    ready, sentence = verdict(targets)
    counts = {"missed": (test["missed"], test["defects"]), "false_rejects": (test["false_rejects"], test["ok"]),
              "retake": (test["retake"], test["n"]), "review": (test["review"], test["n"])}
    return {"ready": ready, "sentence": sentence, "confidence": conf, "rule": route["rule"],
            "threshold": route["threshold"], "review_band": route["review_band"],
            "line_defect_rate": report.line_defect_rate,
            "targets": [{**t, "k": counts.get(t["key"], (None, None))[0], "n": counts.get(t["key"], (None, None))[1],
                         "bound": t["high"]} for t in targets],
            "model": model}
