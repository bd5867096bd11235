"""The report's example photos: which test photos to show, with their routes, notes, thumbnails and Grad-CAM.

``pick_cases`` chooses among the test rows of predictions.csv (each with evaluate's route), by route: the line's
errors (escaped defects, false rejects), defects only a gate stopped, the defects nearest PASS, parts sent to
REVIEW, RETAKE photos, the most uncertain correct automatic decisions and a few confidently found defects.
``case_images`` adds plain-language notes (``case_notes``), a JPEG thumbnail and a Grad-CAM overlay to each.
``promotion_section`` reads reports/promotion.json with thumbnails of the parts whose route changed.
"""
from __future__ import annotations

from pathlib import Path
import numpy as np
from inspection.fsutil import read_json
from inspection.report.figures import image_uri


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
                row["photo"] = image_uri(resize(read_gray(p), thumb))
            except Exception:  # an unreadable file: listed without a picture
                row["photo"] = None
    return {"doc": promo, "changed": changed, "shown": min(cap, len(changed))}


def _logit(q: float) -> float:
    q = min(max(q, 1e-7), 1 - 1e-7)
    return float(np.log(q / (1 - q)))


def pick_cases(rows: list[dict], threshold: float, report, band: dict | None = None) -> list[dict]:
    """The gallery, by what the line does (the route), not by the threshold alone:

    * errors of the line (up to report.max_misclassified): defects routed PASS, then good parts routed REJECT;
    * defects only the RETAKE gate stopped: their probability is below the PASS edge, so a re-photo that passes
      the camera check would let them through ("missed under a re-photo?"); likewise those only the unusual-photo
      check sent to REVIEW;
    * the defects at or above the PASS edge nearest it (report.uncertain_cases): the parts that decide the band's low edge;
    * parts sent to REVIEW nearest the edges (report.uncertain_cases): handled by a person, not errors;
    * the other RETAKE photos, the correct automatic decisions closest to an edge, and a few clear defects."""
    low = min(threshold, band["low"]) if band else threshold
    lo_logit = _logit(low)

    def is_defect(row):
        return row["label"] == row["positive"]

    def prob(row):
        return float(row["probability"])

    def tagged(rows_, kind):
        return [dict(row, kind=kind) for row in rows_]
    escaped = sorted((x for x in rows if x["route"] == "PASS" and is_defect(x)), key=prob)
    rejected = sorted((x for x in rows if x["route"] == "REJECT" and not is_defect(x)), key=lambda x: -prob(x))
    errors = (tagged(escaped, "escaped defect") + tagged(rejected, "false reject"))[:report.max_misclassified]
    below = sorted((x for x in rows if is_defect(x) and x["route"] != "PASS" and prob(x) < low), key=prob)
    retake_only = tagged([x for x in below if x["route"] == "RETAKE"], "caught only by RETAKE")
    unusual_only = tagged([x for x in below if x["route"] == "REVIEW"], "caught only as an unusual photo")
    nearest = tagged(sorted((x for x in rows if is_defect(x) and x["route"] in ("REVIEW", "REJECT")
                             and prob(x) >= low), key=prob)[:report.uncertain_cases], "defect nearest PASS")
    taken = {x["path"] for x in errors + retake_only + unusual_only + nearest}
    review = tagged(sorted((x for x in rows if x["route"] == "REVIEW" and x["path"] not in taken),
                           key=lambda x: abs(_logit(prob(x)) - lo_logit))[:report.uncertain_cases], "sent to review")
    taken |= {x["path"] for x in review}
    retake = tagged([x for x in rows if x["route"] == "RETAKE" and x["path"] not in taken][:report.uncertain_cases],
                    "retake")
    taken |= {x["path"] for x in retake}
    right = sorted((x for x in rows if x["path"] not in taken and (x["route"] == "REJECT") == is_defect(x)
                    and x["route"] in ("PASS", "REJECT")), key=lambda x: abs(_logit(prob(x)) - lo_logit))
    uncertain = tagged(right[:report.uncertain_cases], "uncertain")
    taken |= {x["path"] for x in uncertain}
    found = sorted((x for x in rows if is_defect(x) and x["route"] == "REJECT" and x["path"] not in taken),
                   key=lambda x: -prob(x))
    reference = tagged(found[:report.reference_defects], "reference defect")
    return errors + retake_only + unusual_only + nearest + review + retake + uncertain + reference


def case_notes(c: dict, ood_limit: float | None, low: float | None = None) -> list[str]:
    """Plain-language notes on a photo: out of distribution (an off-angle or badly framed shot looks like this
    to the model), camera check, RETAKE, and for a defect only RETAKE stopped, what a re-photo would do."""
    notes = []
    reason = c.get("reason") or ""
    score = c.get("ood_score")
    score = float(score) if score not in (None, "") else None
    if (score is not None and ood_limit is not None and score > ood_limit) or "unlike the training photos" in reason:
        notes.append("Out of distribution: this photo is unlike the training photos (e.g. taken off-angle, badly framed "
                     "or with a changed camera), so the model's probability is not to be trusted"
                     + (f" (score {score:.1f} > limit {ood_limit:.1f})" if score is not None and ood_limit else "") + ".")
    if reason.startswith("unusual photo"):
        notes.append("Unusual photo: its out-of-distribution score is above the clean validation limit, so the line "
                     "does not pass it unseen although the model scores it low; a person judges it (REVIEW).")
    if "camera check" in reason:
        notes.append("The camera check fails: brightness, contrast or sharpness is outside the range the model was "
                     "validated under.")
    if c.get("kind") == "caught only by RETAKE":
        notes.append(f"Missed under a re-photo? The model scores this defect {float(c['probability']):.4f}, below the "
                     f"PASS edge {low:.4f}: only the RETAKE gate stopped it. If a new photo passes the camera and "
                     "out-of-distribution checks, the line would PASS it. It counts as caught, not as safe.")
    elif c.get("kind") == "caught only as an unusual photo":
        notes.append(f"Missed on a more usual photo? The model scores this defect {float(c['probability']):.4f}, below "
                     f"the PASS edge {low:.4f}: only the unusual-photo check sent it to REVIEW. A photo of it that "
                     "looks like the training photos would PASS. It counts as caught, not as safe.")
    elif c.get("route") == "RETAKE":
        notes.append("The line asks for a new photo instead of judging this one.")
    if c.get("kind") == "sent to review":
        notes.append("Not an error: the line sends this part to a person, who decides.")
    if c.get("kind") == "defect nearest PASS":
        notes.append(f"One of the lowest-scoring defects the line still stops: defects like it decide how low the PASS "
                     f"edge ({low:.4f}) must sit, and so how many good parts go to REVIEW.")
    return notes


def case_images(model, cases: list[dict], size: int, thumb: int, ood_limit: float | None = None,
                low: float | None = None) -> None:
    from inspection.model.gradcam import gradcam, overlay
    from inspection.data.images import read_gray, resize

    for c in cases:
        c["name"] = Path(c["path"]).name
        c["notes"] = case_notes(c, ood_limit, low)
    if not cases:
        return
    photos = [read_gray(c["path"]) for c in cases]
    x = np.stack([resize(img, size) for img in photos]).astype(np.float32)[..., None]
    heat = gradcam(model, x)
    for c, img, h in zip(cases, photos, heat):
        small = resize(img, thumb)
        c["photo"] = image_uri(small)
        c["gradcam"] = image_uri(overlay(small, h))
