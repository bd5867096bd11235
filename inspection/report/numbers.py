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
from inspection.decision.readiness import judge_targets, line_costs, robustness_rows, verdict
from inspection.decision.route import ROUTES as WORDS
from inspection.decision.route import route as route_of
from inspection.decision.route import unusual_reason


def lookup(doc, key: str):
    """A value by its path: 'a.b.c', or 'a|b c.d|e' when a name holds dots or spaces (robustness rows)."""
    for k in key.split("|" if "|" in key else "."):
        doc = doc[k]
    return doc


def confidence_of(metrics: dict, params) -> float:
    route = metrics.get("route") or {}
    iv = (route.get("test") or {}).get("intervals") or {}
    return float(iv.get("missed", {}).get("confidence") or params.evaluate.bootstrap.confidence)


def _test_block(counts: dict) -> dict:
    nd, no = sum(counts["defect"].values()), sum(counts["ok"].values())
    return {"counts": counts, "defects": nd, "ok": no, "n": nd + no}


def candidates(rows: list[dict], positive: str, route: dict, report, confidence: float) -> list[dict]:
    """Other settings of the same rule on the test split: the chosen band, its low edge moved down and up
    (x1/4 .. x4 in probability), its high edge halved and doubled, the threshold alone (no band) and the fixed
    band [0.02, 0.9). Each routes every row with the deployed rule (inspection.decision.route) with only the band
    changed: RETAKE photos stay RETAKE (the gate does not depend on the band) and an unusual photo (its
    out-of-distribution score above the rule's review limit) that the band would pass goes to REVIEW, as on the
    line. Each is judged on the clean targets with the same exact bounds as the decision; the chosen one was
    chosen on validation, and its counts are the route's own."""
    band, threshold = route.get("review_band"), route["threshold"]
    low = min(threshold, band["low"]) if band else threshold
    high = max(threshold, band["high"]) if band else threshold
    settings = [("chosen", low, high)]
    settings += [(f"low x{f:g}", low * f, high) for f in (0.25, 0.5, 2, 4) if low * f < high]
    settings += [(f"high x{f:g}", low, min(high * f, 0.999)) for f in (0.5, 2) if low < high * f < 1]
    settings += [("threshold alone", threshold, threshold), ("fixed band", 0.02, 0.9)]
    ood = (route.get("retake") or {}).get("ood")

    def word(row: dict, lo: float, hi: float) -> str:
        if row.get("route") == "RETAKE":
            return "RETAKE"
        w, _ = route_of(float(row["probability"]), lo, (lo, hi))
        score = row.get("ood_score")
        return "REVIEW" if w == "PASS" and score not in (None, "") and unusual_reason(float(score), ood) else w

    out, seen = [], set()
    for name, lo, hi in settings:
        if (round(lo, 6), round(hi, 6)) in seen:
            continue
        seen.add((round(lo, 6), round(hi, 6)))
        counts = {c: {w: 0 for w in WORDS} for c in ("defect", "ok")}
        for row in rows:
            counts["defect" if row["label"] == positive else "ok"][word(row, lo, hi)] += 1
        missed = binomial_ci(counts["defect"]["PASS"], sum(counts["defect"].values()), confidence)
        rejected = binomial_ci(counts["ok"]["REJECT"], sum(counts["ok"].values()), confidence)
        test = {**_test_block(counts), "intervals": {"missed": missed, "false_rejects": rejected}}
        costs = line_costs(test, report.line_defect_rate, report.parts_per_shift, confidence)
        # the decision's own judgement of the clean targets (no robustness rows: those need the perturbed photos)
        checks = {x["key"]: x["passed"] for x in judge_targets(test, costs, [], report.targets)}
        out.append({"name": name, "low": lo, "high": hi, "chosen": name == "chosen", "counts": counts,
                    "missed": missed, "false_rejects": rejected, "costs": costs, "checks": checks,
                    "passed": all(checks.values())})
    return out


def _worst_gated(robust: list[dict]) -> dict:
    """The worst gated row, on the route: the same figures as the robustness table and the targets."""
    gated = [row for row in robust if row["gated"]]
    if not gated:
        return {}
    return {"worst.gated.route_missed": max(row["missed"]["k"] for row in gated),
            "worst.gated.route_false_rejects": max(row["false_rejects"]["k"] for row in gated),
            "worst.gated.retake_high": max(row["retake_share"]["high"] for row in gated)}


def _options_flat(options: list[dict]) -> dict:
    flat = {}
    for i, c in enumerate(options):
        flat[f"option.{i}.low"], flat[f"option.{i}.high"] = c["low"], c["high"]
        for key in ("escapes", "false_rejects", "review"):
            flat[f"option.{i}.{key}"] = c["costs"][key]["per_shift"]
        flat[f"option.{i}.review_high"] = c["costs"]["review"]["per_shift_high"]
        flat[f"option.{i}.missed_k"] = c["missed"]["k"]
        flat[f"option.{i}.false_rejects_k"] = c["false_rejects"]["k"]
    return flat


def band_below_threshold(route: dict, predictions: list[dict] | None, positive: str) -> dict | None:
    """A review band whose low edge sits below the threshold sends good parts between them to REVIEW although
    the threshold alone would pass them: {low, threshold, ok_share (of the good test parts not RETAKE)}."""
    band = route.get("review_band")
    if not band or not predictions or band["low"] >= route["threshold"] - 1e-12:
        return None
    ok = [float(x["probability"]) for x in predictions if x["label"] != positive and x.get("route") != "RETAKE"]
    return {"low": band["low"], "threshold": route["threshold"],
            "ok_share": sum(band["low"] <= q < route["threshold"] for q in ok) / len(ok) if ok else 0.0}


def derive(metrics: dict, params, robustness_csv: list[dict], decision: dict | None = None,
           predictions: list[dict] | None = None) -> dict:
    """Everything the report computes from metrics.json and params: route block, per-shift costs, robustness
    intervals, targets, verdict, other settings of the rule (``predictions``: the test rows of
    predictions.csv), and ``flat``: every derived number the page shows, by its data-derived key. ``decision``
    (reports/decision.json) supplies the targets and the verdict when given: the page shows the judgement the
    evaluate stage recorded, never a second one."""
    report = params.report
    conf = confidence_of(metrics, params)
    route = metrics["route"]
    test = route["test"]
    costs = line_costs(test, report.line_defect_rate, report.parts_per_shift, conf)
    robust = robustness_rows(metrics, robustness_csv, test, conf, report.targets, report.line_defect_rate)
    if decision is not None:
        targets, ready, sentence = decision["targets"], decision["ready"], decision["sentence"]
    else:
        targets = judge_targets(test, costs, robust, report.targets)
        ready, sentence = verdict(targets)
    exact_threshold = metrics["test_exact"]
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
    flat.update(_worst_gated(robust))
    options = candidates(predictions, metrics.get("positive_class", "defect"), route, report, conf) if predictions else []
    flat.update(_options_flat(options))
    below = band_below_threshold(route, predictions, metrics.get("positive_class", "defect"))
    if below:
        flat["band_below_threshold.ok_share"] = below["ok_share"]
    best = {"defects": binomial_ci(0, test["defects"], conf)["high"], "ok": binomial_ci(0, test["ok"], conf)["high"]}
    put("zero_events_bound.", best)
    flat["test_defect_share"] = test["defects"] / test["n"] if test["n"] else 0.0
    return {"confidence": conf, "route": route, "costs": costs, "robust": robust,
            "targets": targets, "ready": ready, "decision": sentence, "exact_threshold": exact_threshold,
            "zero_events_bound": best, "flat": flat, "options": options, "band_below_threshold": below,
            "no_option_passes": bool(options) and not any(c["passed"] for c in options)}


def training_sentence(epochs_run: int, best_epoch: int, max_epochs: int, settled: bool | None = None) -> str:
    """What early stopping did, in words ("kept epoch N (the epoch limit)" when it never fired); a run that did
    not settle (models/mlflow_run.json ``settled``) says so first."""
    warn = ("WARNING: training did not settle: one of the last validation losses is far above the lowest (see "
            "the curves below); do not ship this model without looking at them. " if settled is False else "")
    if epochs_run < max_epochs:
        return warn + (f"Early stopping ended training after {epochs_run} of {max_epochs} epochs and kept epoch "
                       f"{best_epoch} (lowest validation loss).")
    if best_epoch == epochs_run:
        return warn + (f"Early stopping never fired: training ran all {max_epochs} epochs and kept epoch {best_epoch} "
                       f"(the epoch limit); validation loss was still falling, so more epochs may help.")
    return warn + (f"Training ran to the epoch limit ({max_epochs}) and kept epoch {best_epoch} (lowest validation "
                   f"loss); early stopping had not fired yet.")
