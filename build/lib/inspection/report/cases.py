"""The report's example photos: which test photos to show, with their routes, notes, thumbnails and Grad-CAM.

``with_routes`` gives each predictions.csv row its route (evaluate's, or derived from the threshold and review
band). ``pick_cases`` chooses misclassified photos (escaped defects first, then false rejects), RETAKE photos,
the most uncertain correct ones and a few confidently found defects. ``case_images`` adds plain-language notes
(``case_notes``), a JPEG thumbnail and a Grad-CAM overlay to each. ``promotion_section`` reads
reports/promotion.json with thumbnails of the parts whose route changed.
"""
from __future__ import annotations

from pathlib import Path
import numpy as np
from inspection.fsutil import read_json
from inspection.report.figures import _image_uri


def promotion_section(path: Path, thumb: int, cap: int) -> dict | None:
    """reports/promotion.json with thumbnails for the first ``cap`` parts whose route changed; None without one."""
    if not Path(path).exists():
        return None
    from inspection.data.images import read_gray, resize

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


def _logit(q: float) -> float:
    q = min(max(q, 1e-7), 1 - 1e-7)
    return float(np.log(q / (1 - q)))


def with_routes(rows: list[dict], threshold: float, band: dict | None) -> list[dict]:
    """Each test row with its route and reason: predictions.csv's (evaluate's) when it has them, else the
    threshold and band rule (no RETAKE information; marked ``route_derived``)."""
    from inspection.decision.route import route

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
    from inspection.model.gradcam import gradcam, overlay
    from inspection.data.images import read_gray, resize

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
