"""Stage 4, evaluate: choose the operating threshold on validation, measure it on test.

Policies (evaluate.policy): min_recall = highest threshold whose validation defect
recall >= evaluate.min_recall; max_f1 = the validation F1 maximiser; fixed.
A part is called a defect when its probability >= threshold.
Outputs: reports/metrics.json (DVC metrics), reports/eval/{thresholds,pr,roc,confusion,predictions}.csv.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from sklearn.metrics import (accuracy_score, average_precision_score, confusion_matrix, f1_score,
                             precision_recall_curve, precision_score, recall_score, roc_auc_score, roc_curve)

from stages.config import EvaluateParams, load_params
from stages.errors import cli
from stages.fsutil import staged_outputs, write_csv, write_json

METRICS = Path("reports/metrics.json")
EVAL = Path("reports/eval")


def choose_threshold(y_val: np.ndarray, p_val: np.ndarray, e: EvaluateParams) -> float:
    if e.policy == "fixed":
        return float(e.fixed_threshold)
    precision, recall, thresholds = precision_recall_curve(y_val, p_val)
    precision, recall = precision[:-1], recall[:-1]  # align with thresholds (ascending)
    if e.policy == "min_recall":
        ok = np.flatnonzero(recall >= e.min_recall)
        return float(thresholds[ok[-1]])  # recall is non-increasing in the threshold; never empty (t_min -> 1.0)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    return float(thresholds[int(np.argmax(f1))])


def at_threshold(y: np.ndarray, prob: np.ndarray, threshold: float) -> dict:
    pred = (prob >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y)) == 2
    return {
        "n": int(len(y)), "tp": int(tp), "fp": int(fp), "tn": int(tn), "fn": int(fn),
        "accuracy": float(accuracy_score(y, pred)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "false_reject_rate": float(fp / max(1, fp + tn)),
        "miss_rate": float(fn / max(1, fn + tp)),
        "roc_auc": float(roc_auc_score(y, prob)) if both else None,
        "pr_auc": float(average_precision_score(y, prob)) if both else None,
    }


def sweep(splits: dict[str, tuple[np.ndarray, np.ndarray]], points: int) -> list[dict]:
    rows = []
    for t in np.linspace(0.0, 1.0, points):
        row = {"threshold": round(float(t), 6)}
        for name, (y, p) in splits.items():
            pred = (p >= t).astype(int)
            row[f"{name}_precision"] = float(precision_score(y, pred, zero_division=1))
            row[f"{name}_recall"] = float(recall_score(y, pred, zero_division=0))
            row[f"{name}_f1"] = float(f1_score(y, pred, zero_division=0))
        rows.append(row)
    return rows


def predict(model, images: np.ndarray, batch: int = 64) -> np.ndarray:
    return model.predict(images[..., None].astype(np.float32), batch_size=batch, verbose=0)[:, 0].astype(np.float64)


def main() -> None:
    params = load_params()
    e, t = params.evaluate, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    from stages.dataset import load_split
    from stages.tracking import resume_run
    from stages.train import MODEL

    pos, neg = params.data.positive_class, params.data.negative_class
    model = keras.models.load_model(MODEL)
    data = {s: load_split(s, t.image_size, pos) for s in ("val", "test")}
    probs = {s: predict(model, d.images) for s, d in data.items()}
    y = {s: d.labels for s, d in data.items()}

    threshold = choose_threshold(y["val"], probs["val"], e)
    metrics = {"threshold": threshold, "policy": e.policy,
               "policy_target": e.min_recall if e.policy == "min_recall" else None,
               "positive_class": pos,
               "val": at_threshold(y["val"], probs["val"], threshold),
               "test": at_threshold(y["test"], probs["test"], threshold)}
    files = {name: EVAL / f"{name}.csv" for name in ("thresholds", "pr", "roc", "confusion", "predictions")}
    with staged_outputs(METRICS, *files.values()) as out:
        write_json(out.path(METRICS), metrics)
        rows = sweep({s: (y[s], probs[s]) for s in ("val", "test")}, e.sweep_points)
        write_csv(out.path(files["thresholds"]), rows, list(rows[0]))
        prec, rec, _ = precision_recall_curve(y["test"], probs["test"])
        write_csv(out.path(files["pr"]), [{"recall": float(r), "precision": float(p)} for p, r in zip(prec, rec)],
                  ["recall", "precision"])
        fpr, tpr, _ = roc_curve(y["test"], probs["test"])
        write_csv(out.path(files["roc"]), [{"fpr": float(a), "tpr": float(b)} for a, b in zip(fpr, tpr)], ["fpr", "tpr"])
        name = {1: pos, 0: neg}
        write_csv(out.path(files["confusion"]),
                  [{"actual": name[int(a)], "predicted": name[int(p >= threshold)]} for a, p in zip(y["test"], probs["test"])],
                  ["actual", "predicted"])
        write_csv(out.path(files["predictions"]),
                  [{"path": path, "split": s, "label": name[int(lab)], "probability": f"{prob:.6f}",
                    "verdict": name[int(prob >= threshold)], "correct": int((prob >= threshold) == lab)}
                   for s in ("val", "test") for path, lab, prob in zip(data[s].paths, y[s], probs[s])],
                  ["path", "split", "label", "probability", "verdict", "correct"])

    with resume_run() as mlflow:
        mlflow.log_metric("threshold", threshold)
        for split in ("val", "test"):
            mlflow.log_metrics({f"{split}_{k}": float(v) for k, v in metrics[split].items() if v is not None})
        mlflow.log_artifact(str(METRICS), "reports")
        mlflow.log_artifacts(str(EVAL), "reports/eval")
        if Path("reports/data.json").exists():
            mlflow.log_artifact("reports/data.json", "reports")
    m = metrics["test"]
    print(f"evaluate: threshold {threshold:.4f} ({e.policy}) -> test recall {m['recall']:.4f} precision "
          f"{m['precision']:.4f} accuracy {m['accuracy']:.4f} ROC-AUC {m['roc_auc']} "
          f"(missed defects {m['fn']}, false rejects {m['fp']} of {m['n']})")


if __name__ == "__main__":
    cli(main)()
