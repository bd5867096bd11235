"""Stage 6, report: reports/report.html, one self-contained page for the quality engineer.

Verdict at the chosen operating point with bootstrap intervals, operating-point table and
review band, curves, bad cases with Grad-CAM, training, data, robustness and identity.
Figures are matplotlib PNGs and photos are PNGs, all embedded as data URIs; the page is
rendered by Jinja2 from stages/templates/report.html.j2 and logged to the MLflow run.
"""
from __future__ import annotations

import base64
import datetime as dt
import io
import os
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

import cv2
import numpy as np

from stages.config import load_params, changed_params
from stages.errors import UserError, cli
from stages.fsutil import read_csv, read_json, staged_outputs

REPORT = Path("reports/report.html")
TEMPLATES = Path(__file__).parent / "templates"
LIBRARIES = ("tensorflow", "keras", "tensorflowjs", "scikit-learn", "opencv-python-headless", "numpy",
             "mlflow", "dvc", "matplotlib", "jinja2")
DEFECT_COLOUR, OK_COLOUR = "#c0392b", "#2e86c1"


# ----- figures ------------------------------------------------------------------------------

def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _image_uri(img: np.ndarray) -> str:
    """Photos as JPEG (quality 88): a tenth of the size of PNG, and the page stays light."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 88])
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
    from sklearn.metrics import confusion_matrix, precision_recall_curve, roc_curve

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

    fig, ax = _figure(4.2, 3.6)
    ax.grid(False)
    cm = confusion_matrix(y, pred, labels=[True, False])
    ax.imshow(cm, cmap="Blues")
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, f"{v}", ha="center", va="center", fontsize=15,
                color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks([0, 1], [f"called {names[0]}", f"called {names[1]}"])
    ax.set_yticks([0, 1], [f"is {names[0]}", f"is {names[1]}"])
    ax.set_title("Confusion matrix (test)")
    figs["confusion"] = _png(fig)

    fig, ax = _figure(7.5, 3.4)
    bins = np.linspace(0, 1, 51)
    ax.hist(p[~y], bins, alpha=0.65, color=OK_COLOUR, label=f"{names[1]} parts")
    ax.hist(p[y], bins, alpha=0.65, color=DEFECT_COLOUR, label=f"{names[0]} parts")
    ax.set_yscale("log")
    ax.axvline(threshold, color="black", ls="--", lw=1, label=f"threshold {threshold:.4f}")
    if band:
        ax.axvspan(band[0], band[1], color="#f1c40f", alpha=0.2, label="review band")
    ax.set(xlabel="defect probability", ylabel="parts (log scale)", title="Scores per class (test)")
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


# ----- bad cases ----------------------------------------------------------------------------

def pick_cases(rows: list[dict], threshold: float, r) -> list[dict]:
    """Every misclassified test image (up to report.max_misclassified), the most uncertain correct
    ones (closest to the threshold in log-odds) and a few confidently found defects."""
    def logit(q):
        q = min(max(q, 1e-7), 1 - 1e-7)
        return np.log(q / (1 - q))

    wrong = [dict(row, kind="misclassified") for row in rows if row["correct"] == "0"]
    wrong.sort(key=lambda row: -abs(logit(float(row["probability"])) - logit(threshold)))
    right = [row for row in rows if row["correct"] == "1"]
    right.sort(key=lambda row: abs(logit(float(row["probability"])) - logit(threshold)))
    uncertain = [dict(row, kind="uncertain") for row in right[:r.uncertain_cases]]
    found = sorted((row for row in right if row["label"] == row["positive"]),
                   key=lambda row: -float(row["probability"]))
    reference = [dict(row, kind="reference defect") for row in found[:r.reference_defects]]
    return wrong[:r.max_misclassified] + uncertain + reference


def case_images(model, cases: list[dict], size: int, thumb: int) -> None:
    from stages.gradcam import gradcam, overlay
    from stages.images import read_gray, resize

    if not cases:
        return
    photos = [read_gray(c["path"]) for c in cases]
    x = np.stack([resize(img, size) for img in photos]).astype(np.float32)[..., None]
    heat = gradcam(model, x)
    for c, img, h in zip(cases, photos, heat):
        small = resize(img, thumb)
        c["photo"] = _image_uri(small)
        c["gradcam"] = _image_uri(overlay(small, h))
        c["name"] = Path(c["path"]).name


# ----- page ---------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib_metadata.version(lib)
        except importlib_metadata.PackageNotFoundError:
            pass
    return out


def main() -> None:
    params = load_params()
    r, t = params.report, params.train
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    t0 = time.perf_counter()
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    from stages.dataset import dataset_sha256
    from stages.evaluate import EVAL, METRICS
    from stages.models import load_model
    from stages.split import DATA_REPORT
    from stages.tracking import RUN_FILE, git_commit, resume_run
    from stages.train import HISTORY, MODEL

    for needed in (METRICS, DATA_REPORT, HISTORY, RUN_FILE, MODEL):
        if not Path(needed).exists():
            raise UserError(f"{needed} is missing; run the earlier stages first (dvc repro)")
    metrics, data, run = read_json(METRICS), read_json(DATA_REPORT), read_json(RUN_FILE)
    pos, neg = params.data.positive_class, params.data.negative_class
    threshold = metrics["threshold"]
    test_rows = [dict(row, positive=pos) for row in read_csv(EVAL / "predictions.csv") if row["split"] == "test"]
    y = np.array([row["label"] == pos for row in test_rows])
    p = np.array([float(row["probability"]) for row in test_rows])
    band = metrics.get("review_band")

    print("report: figures")
    figures = curve_figures(y, p, threshold, (band["low"], band["high"]) if band else None, (pos, neg))
    history = read_csv(HISTORY)
    figures["training"] = training_figure(history, int(run["best_epoch"]))

    cases = pick_cases(test_rows, threshold, r)
    print(f"report: Grad-CAM for {len(cases)} test images")
    case_images(load_model(MODEL), cases, t.image_size, r.thumbnail)

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html", "j2"]),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    html = env.get_template("report.html.j2").render(
        m=metrics, data=data, run=run, figures=figures, cases=cases, pos=pos, neg=neg,
        operating_points=read_csv(EVAL / "operating_points.csv"),
        robustness=read_csv(EVAL / "robustness.csv"),
        history_rows=len(history), params=params,
        identity={"git commit": git_commit(), "dataset sha256": dataset_sha256(),
                  "MLflow run": f"{run['run_id']} (experiment {run['experiment']}, {run['tracking_uri']})",
                  "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")},
        changed=changed_params(params), versions=versions())
    with staged_outputs(REPORT) as out:
        out.path(REPORT).write_text(html, encoding="utf-8")
    with resume_run() as mlflow:
        mlflow.log_artifact(str(REPORT), "reports")
        mlflow.log_metric("report_seconds", time.perf_counter() - t0)
    print(f"report: {REPORT} ({REPORT.stat().st_size / 1e6:.2f} MB, {len(cases)} cases) in "
          f"{time.perf_counter() - t0:.1f} s; logged to MLflow run {run['run_id']}")


if __name__ == "__main__":
    cli(main)()
