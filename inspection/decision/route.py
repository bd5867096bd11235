"""The line decision for one part: its route, PASS / REVIEW / REJECT / RETAKE.

This is the one implementation of the rule; web/src/route.js mirrors it for the browser and
tests/cases/route_cases.json is the table of cases both are checked against.

    RETAKE  the photo cannot be judged: unreadable, no casting / badly framed, camera check
            outside the range the model was validated under, or out of distribution for the model (reasons given)
    PASS    probability below the threshold and below the review band's low edge
    REJECT  probability at or above the threshold and at or above the band's high edge
    REVIEW  everything in between (a person looks at the part), and a photo the model would PASS whose
            out-of-distribution score is above the review limit (rule ``retake.ood.review_limit``): an unusual
            photo of a part, judged by a person rather than passed unseen

Without a review band (evaluate.review_band: null) the threshold alone decides PASS / REJECT.
A part is never passed when its probability is at or above the threshold, whatever the band.

A photo inside the validated camera range but outside the training photos' range is judged as usual, and its
reason carries a camera warning (rule ``warn.camera``): the lamp or the lens has drifted and should be checked
before it drifts out of the validated range, where every photo would go to RETAKE.
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence


ROUTES = ("PASS", "REVIEW", "REJECT", "RETAKE")
# One row per file, the same columns and words in the batch CLI (python -m commands.predict) and the page's CSV.
CSV_COLUMNS = ("file", "route", "reason", "defect_probability", "threshold", "ood_score", "camera_check",
               "brightness", "contrast", "sharpness", "model_version", "timestamp",
               # a person's review (the inspector page; empty from the batch CLI): the label they gave, the route
               # that follows from it (defect -> REJECT, ok -> PASS), who and when
               "reviewed_as", "final_route", "checked_by", "checked_at")


def route(probability: Optional[float], threshold: float, band: Optional[Sequence[float]] = None,
          retake: Iterable[str] = ()) -> tuple[str, str]:
    """(route, reason) for one part. ``retake``: reasons the photo cannot be judged (empty when it can);
    ``band``: (low, high) or None; ``probability`` may be None only with a retake reason."""
    reasons = [r for r in retake if r]
    if reasons:
        return "RETAKE", "; ".join(reasons)
    if probability is None:
        raise ValueError("a probability is needed when there is no retake reason")
    low, high = (band[0], band[1]) if band else (threshold, threshold)
    if probability < threshold and probability < low:
        return "PASS", f"defect probability below {min(threshold, low):.4f}"
    if probability >= threshold and probability >= high:
        return "REJECT", f"defect probability at or above {max(threshold, high):.4f}"
    return "REVIEW", f"defect probability in the review band [{min(threshold, low):.4f}, {max(threshold, high):.4f})"


def camera_reasons(stats: dict, camera: dict) -> list[str]:
    """Camera-check reasons: each feature of ``stats`` outside its [min, max] in ``camera``
    (metadata.json route.retake.camera; the training images' range), e.g. 'contrast low (3.10 < 21.40)'."""
    out = []
    for name, lim in camera.items():
        v = stats[name]
        if v < lim["min"]:
            out.append(f"{name} low ({v:.2f} < {lim['min']:.2f})")
        elif v > lim["max"]:
            out.append(f"{name} high ({v:.2f} > {lim['max']:.2f})")
    return out


def ood_reason(score: float, limit: float) -> str:
    """'' when the photo looks like the training photos, else the reason."""
    return "" if score <= limit else f"unlike the training photos (out-of-distribution score {score:.2f} > {limit:.2f})"


def unusual_reason(score: float, ood: Optional[dict]) -> str:
    """'' or why a photo the model would PASS goes to REVIEW: its OOD score is above the gate's review limit (below
    the RETAKE limit: unusual, not unjudgeable)."""
    limit = (ood or {}).get("review_limit")
    return "" if limit is None or score <= limit else (
        f"unusual photo (out-of-distribution score {score:.2f} > {limit:.2f}): a person checks the part")


def retake_reasons(stats: dict, ood_score: float, gate: dict) -> list[str]:
    """Every reason to RETAKE a readable photo, given its camera statistics, its OOD score and the
    model's gate (metadata.json ``route.retake``: {camera: {...}, ood: {limit: ...}})."""
    reasons = []
    if gate.get("camera"):
        cam = camera_reasons(stats, gate["camera"])
        if cam:
            reasons.append("camera check: " + ", ".join(cam))
    if gate.get("ood"):
        reasons.append(ood_reason(ood_score, gate["ood"]["limit"]))
    return [r for r in reasons if r]


WARNING = "camera warning: {}; the camera has drifted from the training photos, check the lamp and the focus"


def warning(stats: dict, rule: dict) -> str:
    """'' or the camera warning of a photo outside the training range (rule ``warn.camera``)."""
    camera = (rule.get("warn") or {}).get("camera")
    found = camera_reasons(stats, camera) if camera else []
    return WARNING.format(", ".join(found)) if found else ""


def decide(probability: float, stats: dict, ood_score: float, rule: dict) -> tuple[str, str]:
    """The whole decision from metadata.json's ``route`` block for a readable photo."""
    band = rule.get("review_band")
    gate = rule.get("retake") or {}
    route_, reason = route(probability, rule["threshold"], (band["low"], band["high"]) if band else None,
                           retake_reasons(stats, ood_score, gate))
    unusual = unusual_reason(ood_score, gate.get("ood")) if route_ == "PASS" else ""
    if unusual:
        route_, reason = "REVIEW", unusual
    warn = "" if route_ == "RETAKE" else warning(stats, rule)
    return route_, f"{reason}; {warn}" if warn else reason


def csv_safe(value: object) -> str:
    """A CSV cell that a spreadsheet will not run as a formula: text starting with = + - @ tab or CR gets a leading
    quote (plain numbers, negative ones included, stay as they are). web/src/route.js csvCell does the same."""
    import re

    s = "" if value is None else str(value)
    if s[:1] in ("=", "+", "-", "@", "\t", "\r") and not re.fullmatch(r"-?\d+(\.\d+)?", s):
        return "'" + s
    return s


REVIEWED_ROUTE = {"defect": "REJECT", "ok": "PASS"}   # what a person's label decides for the part


def csv_row(file: str, route_: str, reason: str, probability: Optional[float], threshold: float,
            ood_score: Optional[float], stats: Optional[dict], camera: Sequence[str], model_version: str,
            timestamp: str, reviewed_as: str = "", checked_by: str = "", checked_at: str = "") -> dict:
    """One CSV row (strings, fixed decimals; empty cells where a value does not exist, e.g. unreadable files). A
    review (``reviewed_as`` defect/ok) adds the final route it implies, who and when."""
    def num(v, digits):
        return "" if v is None else f"{v:.{digits}f}"
    stats = stats or {}
    return {k: csv_safe(v) for k, v in {"file": file, "route": route_, "reason": reason, "defect_probability": num(probability, 6),
            "threshold": num(threshold, 6), "ood_score": num(ood_score, 3),
            "camera_check": "; ".join(camera) if camera else ("" if not stats else "ok"),
            "brightness": num(stats.get("brightness"), 2), "contrast": num(stats.get("contrast"), 2),
            "sharpness": num(stats.get("sharpness"), 1), "model_version": model_version, "timestamp": timestamp,
            "reviewed_as": reviewed_as, "final_route": REVIEWED_ROUTE.get(reviewed_as, ""),
            "checked_by": checked_by, "checked_at": checked_at}.items()}


def make_rule(threshold: float, band: Optional[Sequence[float]], camera: Optional[dict], ood_limit: Optional[float],
              ood_method: str = "", warn_camera: Optional[dict] = None, ood_review_limit: Optional[float] = None) -> dict:
    """The ``route`` block of metadata.json / metrics.json: everything a consumer needs to decide. ``camera``:
    the RETAKE range (what the model was validated under); ``warn_camera``: the training photos' range, outside
    which a judged photo carries a camera warning; ``ood_review_limit``: above it (and at most ``ood_limit``) a
    photo is never passed unseen (REVIEW)."""
    rule = {"words": list(ROUTES), "threshold": float(threshold),
            "review_band": {"low": float(band[0]), "high": float(band[1])} if band else None,
            "retake": {"camera": camera or None,
                       "ood": None if ood_limit is None else {"limit": float(ood_limit), "output": "ood_score",
                                                               "method": ood_method}},
            "warn": {"camera": warn_camera} if warn_camera else None}
    if ood_limit is not None and ood_review_limit is not None and ood_review_limit < ood_limit:
        rule["retake"]["ood"]["review_limit"] = float(ood_review_limit)
    rule["rule"] = describe(rule)
    return rule


def describe(rule: dict) -> str:
    """The deployed rule in one plain sentence (the report's decision block, the page's About box)."""
    t, band, gate = rule["threshold"], rule.get("review_band"), rule.get("retake") or {}
    checks = ["is unreadable"] + [c for c, on in (
        ("fails the camera check (brightness, contrast or sharpness outside the range the model was validated "
         "under)", gate.get("camera")),
        ("scores above the out-of-distribution limit", gate.get("ood"))) if on]
    retake = f"RETAKE when the photo {', '.join(checks[:-1]) + ' or ' if len(checks) > 1 else ''}{checks[-1]}; otherwise "
    warn = (" A photo outside the training photos' camera range is judged with a camera warning."
            if (rule.get("warn") or {}).get("camera") else "")
    if (gate.get("ood") or {}).get("review_limit") is not None:
        warn = (" A photo it would pass whose out-of-distribution score is above "
                f"{gate['ood']['review_limit']:.2f} (an unusual photo) goes to REVIEW." + warn)
    if band:
        lo, hi = min(t, band["low"]), max(t, band["high"])
        return (f"{retake}PASS when the defect probability is below {lo:.4f}, REJECT at or above {hi:.4f}, "
                f"REVIEW in between.{warn}")
    return f"{retake}PASS when the defect probability is below {t:.4f}, REJECT at or above it (no review band).{warn}"
