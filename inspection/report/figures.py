"""The report's figures, as data: URIs embedded in the page (matplotlib, Agg backend: no display needed).

``curve_figures``: precision-recall and ROC on test with the operating threshold marked, and the score histogram
per class with the threshold and review band. ``training_figure``: loss and accuracy per epoch, train and
validation, with the kept epoch. ``trend_figure``: defects passed and good parts rejected per 1,000 over recent
runs. Figures are PNG; photos (``image_uri``) are JPEG, which keeps the page light.
"""
from __future__ import annotations

import base64
import io
import cv2
import numpy as np


DEFECT_COLOUR, OK_COLOUR, BAND_COLOUR = "#c0392b", "#2e86c1", "#f1c40f"


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_uri(img: np.ndarray, quality: int = 85) -> str:
    """Photos as JPEG: a tenth of the size of PNG, and the page stays light."""
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
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
    from sklearn.metrics import precision_recall_curve, roc_curve

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

    fig, ax = _figure(7.5, 3.4)
    bins = np.linspace(0, 1, 51)
    if band:  # the band tint sits behind the bars (zorder), so the bars keep the legend's colours
        ax.axvspan(band[0], band[1], color=BAND_COLOUR, alpha=0.25, lw=0, zorder=0, label="review band")
    # opaque bars side by side in each bin: no blending, the colours are exactly the legend's
    ax.hist([p[~y], p[y]], bins, color=[OK_COLOUR, DEFECT_COLOUR], label=[f"{names[1]} parts", f"{names[0]} parts"],
            zorder=2)
    ax.set_yscale("log")
    ax.axvline(threshold, color="black", ls="--", lw=1, zorder=3, label=f"threshold {threshold:.4f}")
    ax.set(xlabel="defect probability", ylabel="parts (log scale)", title="Scores per class (test)")
    ax.set_axisbelow(True)
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


def trend_figure(rows: list[dict]) -> str:
    """Defects passed and good parts rejected per 1,000 (test split), oldest run left."""
    rows = rows[::-1]
    x = np.arange(len(rows))

    def per_1000(row, key_routed, key_threshold, n):
        if row.get(key_routed) is not None and n:
            return 1000 * row[key_routed] / n
        return None if row.get(key_threshold) is None else 1000 * row[key_threshold]
    missed, fr = [], []
    for row in rows:
        nd = (row.get("test_tp") or 0) + (row.get("test_fn") or 0)
        no = (row.get("test_n") or 0) - nd
        missed.append(per_1000(row, "test_route_missed", "test_miss_rate", nd))
        fr.append(per_1000(row, "test_route_false_rejects", "test_false_reject_rate", no))
    fig, ax = _figure(7.5, 2.8)
    ax.plot(x, [np.nan if v is None else v for v in missed], "o-", color=DEFECT_COLOUR, label="defects passed / 1,000 defective")
    ax.plot(x, [np.nan if v is None else v for v in fr], "s-", color=OK_COLOUR, label="good parts rejected / 1,000 good")
    cur = [i for i, r in enumerate(rows) if r["current"]]
    for i in cur:
        ax.axvline(i, color="black", lw=1, ls=":", label="this run")
    ax.set_xticks(x, [r["start"][5:] for r in rows], rotation=30, ha="right", fontsize=7)
    ax.set(ylabel="per 1,000 parts", title="Trend of the last runs (test split)")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7)
    return _png(fig)


def band_figure(choice: dict, target: float) -> str:
    """The review band's trade-off on validation (metrics.json band_choice): the share of parts sent to REVIEW at
    the line's defect rate against the guaranteed (exact upper bound) missed-defect rate, one point per low edge
    of the band, with the chosen point and the target."""
    curve = choice["curve"]
    fig, ax = _figure(6.0, 3.6)
    ax.plot([100 * c["missed_bound"] for c in curve], [100 * c["review_share"] for c in curve], "o-", ms=3,
            label="candidate low edges (high edge fixed)")
    v = choice["validation"]
    chosen_bound = next((c["missed_bound"] for c in reversed(curve) if c["low"] <= choice["low"]), None)
    if chosen_bound is not None:
        ax.plot([100 * chosen_bound], [100 * v["review_share_at_line_rate"]], "s", color="black", ms=8,
                label=f"chosen: low {choice['low']:.4f}")
    ax.axvline(100 * target, color="tab:red", ls="--", lw=1, label=f"target {100 * target:.1f} %")
    ax.set(xlabel="missed defects, guaranteed (exact upper bound, %)", ylabel="parts to REVIEW (%)",
           title="Review band: cost against guarantee (validation)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)
