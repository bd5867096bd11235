"""The evaluate stage's CSV tables under reports/eval/ (DVC plots and the report read them).

thresholds.csv (precision/recall against the threshold, val and test), pr.csv and roc.csv (test curves),
confusion.csv (one row per test photo: actual, predicted), predictions.csv (every val/test photo with its
probability, verdict and, on test, route and OOD score), operating_points.csv (error counts at a few
thresholds), robustness.csv and ood.csv (the two batteries).
"""
from __future__ import annotations

from pathlib import Path
from sklearn.metrics import precision_recall_curve, roc_curve

from inspection.decision.metrics import operating_points, sweep
from inspection.fsutil import write_csv

NAMES = ("thresholds", "pr", "roc", "confusion", "predictions", "operating_points", "robustness", "ood")
PREDICTION_COLUMNS = ["path", "split", "label", "probability", "verdict", "correct", "route", "reason", "ood_score"]


def table_paths(root: Path) -> dict[str, Path]:
    return {name: root / f"{name}.csv" for name in NAMES}


def prediction_rows(data: dict, y: dict, probs: dict, threshold: float, decided, test_ood, name: dict) -> list[dict]:
    """Every val/test photo; routes are measured on test only."""
    per_split = (("val", [("", "")] * len(y["val"]), [None] * len(y["val"])), ("test", decided, test_ood))
    return [{"path": path, "split": s, "label": name[int(lab)], "probability": f"{prob:.6f}",
             "verdict": name[int(prob >= threshold)], "correct": int((prob >= threshold) == lab),
             "route": rt, "reason": why, "ood_score": "" if ood is None else f"{ood:.4f}"}
            for s, routes_, oods in per_split
            for path, lab, prob, (rt, why), ood in zip(data[s].paths, y[s], probs[s], routes_, oods)]


def write_tables(files: dict[str, Path], *, data, y, probs, chosen: dict, thresholds, decided, test_ood,
                 rob: list[dict], ood_rows: list[dict], names: dict, sweep_points: int) -> None:
    """Write every table to ``files`` (paths inside a staged_outputs transaction)."""
    threshold = chosen["threshold"]
    rows = sweep({s: (y[s], probs[s]) for s in ("val", "test")}, sweep_points)
    write_csv(files["thresholds"], rows, list(rows[0]))
    prec, rec, _ = precision_recall_curve(y["test"], probs["test"])
    write_csv(files["pr"], [{"recall": float(r), "precision": float(p)} for p, r in zip(prec, rec)],
              ["recall", "precision"])
    fpr, tpr, _ = roc_curve(y["test"], probs["test"])
    write_csv(files["roc"], [{"fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr)], ["fpr", "tpr"])
    write_csv(files["confusion"],
              [{"actual": names[int(a)], "predicted": names[int(p >= threshold)]} for a, p in zip(y["test"], probs["test"])],
              ["actual", "predicted"])
    write_csv(files["predictions"], prediction_rows(data, y, probs, threshold, decided, test_ood, names),
              PREDICTION_COLUMNS)
    ops = operating_points(y["test"], probs["test"], thresholds)
    for row in ops:
        row["chosen"] = row["threshold"] == threshold
        row["max_f1"] = row["threshold"] == chosen["max_f1"]
    write_csv(files["operating_points"], ops, list(ops[0]))
    write_csv(files["robustness"], rob, list(rob[0]))
    write_csv(files["ood"], ood_rows, list(ood_rows[0]))
