"""Is the model ready for the line? The report's targets judged on exact bounds, and reports/decision.json.

Each of ``report.targets`` is judged on the UPPER end of the exact (Clopper-Pearson) interval of what the test
split measured, at the evaluate stage's confidence: defects passed (per defective part), good parts rejected
(per good part), parts sent to REVIEW and photos sent to RETAKE (each a share of all parts at
``report.line_defect_rate``, the two classes' intervals combined: the same basis as the report's cost table),
and, with ``targets.robustness``, the missed, false-reject and RETAKE targets under every gated camera
perturbation, on the same bases. ``decision`` gathers them into the document the evaluate stage
writes as reports/decision.json: the report renders its verdict from it, export copies it into the model's
metadata.json and MLflow tags, and promote refuses a not-ready model as champion (promote.allow_not_ready).
"""
from __future__ import annotations

from inspection.decision.metrics import binomial_ci


def mix_interval(share: float, k1: int, n1: int, k2: int, n2: int, confidence: float) -> dict:
    """The rate ``share * k1/n1 + (1 - share) * k2/n2`` of a mix of two classes, with an interval that covers
    at least ``confidence``: each class's exact interval, combined with the line's weights (Bonferroni). The error
    1 - confidence is split between the classes by their weight on the line, so the class that is 97 % of the
    line gets 97 % of it: its interval is nearly the single-class one, and the 3 % class's wider interval
    counts 3 %. (An even split made 1 % unprovable with 432 good test parts even at zero events: 0.97 x 1.01 %.)"""
    alpha = 1 - confidence
    each = (1 - alpha * share, 1 - alpha * (1 - share))

    def one(k, n, level, weight):
        if weight <= 0:
            return {"rate": k / n if n else None, "low": 0.0, "high": 0.0}
        return binomial_ci(k, n, level)
    a, b = one(k1, n1, each[0], share), one(k2, n2, each[1], 1 - share)
    if a["rate"] is None or b["rate"] is None:
        return {"rate": None, "low": None, "high": None, "confidence": confidence}
    mix = lambda x, y: share * x + (1 - share) * y  # noqa: E731
    return {"rate": mix(a["rate"], b["rate"]), "low": mix(a["low"], b["low"]), "high": mix(a["high"], b["high"]),
            "confidence": confidence, "each_class": list(each)}


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


def robustness_rows(metrics: dict, csv_rows: list[dict], test: dict, confidence: float, targets,
                    defect_rate: float) -> list[dict]:
    """metrics.json's robustness rows with exact intervals from their route counts: defects passed, good parts
    rejected, and the REVIEW and RETAKE shares at the line's ``defect_rate`` from the per-class counts (as the cost
    table). A gated row meets the targets when the missed, false-reject and RETAKE bounds are within
    report.targets."""
    gated = {r["perturbation"]: r.get("gated") == "True" for r in csv_rows}
    nd, no = test["defects"], test["ok"]
    rows = []
    for name, r in (metrics.get("robustness") or {}).items():
        row = {"name": name, "gated": gated.get(name, False),
               "missed": binomial_ci(int(r["route_missed"]), nd, confidence),
               "false_rejects": binomial_ci(int(r["route_false_rejects"]), no, confidence)}
        for share in ("review", "retake"):
            k_defects, k_ok = int(r[f"route_{share}_defects"]), int(r[f"route_{share}_ok"])
            row[f"{share}_share"] = {**mix_interval(defect_rate, k_defects, nd, k_ok, no, confidence),
                                     "k": k_defects + k_ok, "ok_k": k_ok}
        row["meets"] = (row["missed"]["high"] is not None and row["missed"]["high"] <= targets.max_missed_rate and
                        row["false_rejects"]["high"] is not None and
                        row["false_rejects"]["high"] <= targets.max_false_reject_rate and
                        row["retake_share"]["high"] <= targets.max_retake_share)
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
        {"key": "retake", "what": "Photos sent to RETAKE", "scope": "share of all parts at the line's defect rate",
         "unit": "percent", "target": targets.max_retake_share, **_k(costs["retakes"])},
    ]
    gated = [r for r in robust if r["gated"]]
    if targets.robustness and gated:
        checks = [("missed", "Defects passed under camera drift", targets.max_missed_rate, "per1000"),
                  ("false_rejects", "Good parts rejected under camera drift", targets.max_false_reject_rate, "per1000"),
                  ("retake_share", "Photos sent to RETAKE under camera drift", targets.max_retake_share, "percent")]
        for key, what, limit, unit in checks:
            worst = max(gated, key=lambda r: r[key]["high"])
            failing = [r["name"] for r in gated if r[key]["high"] > limit]
            name = "robust_retake" if key == "retake_share" else f"robust_{key}"
            scope = f"worst of {len(gated)} gated perturbations ({worst['name']})" + (
                ", share of all parts at the line's defect rate" if key == "retake_share" else "")
            out.append({"key": name, "what": what, "scope": scope, "unit": unit, "target": limit, **_k(worst[key]),
                        "failing": failing, "worst": worst["name"]})
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
    robust = robustness_rows(metrics, robustness_rows_csv, test, conf, report.targets, report.line_defect_rate)
    targets = judge_targets(test, costs, robust, report.targets)
    ready, sentence = verdict(targets)
    counts = {"missed": (test["missed"], test["defects"]), "false_rejects": (test["false_rejects"], test["ok"]),
              "retake": (test["retake"], test["n"]), "review": (test["review"], test["n"])}
    for t in targets:   # the worst gated row's count
        if t["key"].startswith("robust_"):
            row = next(r for r in robust if r["name"] == t["worst"])
            k = row["retake_share" if t["key"] == "robust_retake" else t["key"][len("robust_"):]]["k"]
            counts[t["key"]] = (k, test["n"] if t["key"] == "robust_retake" else
                                test["defects"] if t["key"] == "robust_missed" else test["ok"])
    c = test["counts"]
    # REVIEW and RETAKE are judged at the line's mix: their k of n are the pooled test photos, and the rate and bound
    # re-weight each class's own count (defects: k of n defects, ok: k of n good parts) to report.line_defect_rate
    mixed = {"review": "REVIEW", "retake": "RETAKE"}
    by_class = {key: {"basis": f"line mix: {report.line_defect_rate:g} x (defects {c['defect'][w]}/{test['defects']}) + "
                               f"{1 - report.line_defect_rate:g} x (good parts {c['ok'][w]}/{test['ok']})",
                      "by_class": {"defect": {"k": c["defect"][w], "n": test["defects"]},
                                   "ok": {"k": c["ok"][w], "n": test["ok"]}}}
                for key, w in mixed.items()}
    return {"ready": ready, "sentence": sentence, "confidence": conf, "rule": route["rule"],
            "threshold": route["threshold"], "review_band": route["review_band"],
            "line_defect_rate": report.line_defect_rate,
            "targets": [{**t, "k": counts.get(t["key"], (None, None))[0], "n": counts.get(t["key"], (None, None))[1],
                         "bound": t["high"], **by_class.get(t["key"], {})} for t in targets],
            "model": model}
