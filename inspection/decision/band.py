"""The review band chosen on validation: the narrowest [low, high) whose miss and false-reject rates are guaranteed.

Routes by defect probability: PASS below ``low``, REVIEW in [low, high), REJECT from ``high``. A defect is
missed only when it passes (prob < low), a good part is falsely rejected only when prob >= high, so each
target constrains one edge:

* ``low`` is the largest candidate whose validation miss rate P(prob < low | defect) is guaranteed at most
  ``max_missed_rate``;
* ``high`` is the smallest candidate whose false-reject rate P(prob >= high | ok) is guaranteed at most
  ``max_false_reject_rate``.

"Guaranteed" is Learn-then-Test (Angelopoulos et al. 2022) with fixed-sequence testing, by MAPIE's
``BinaryClassificationController``: the candidates are a fixed grid (data-independent), tested in order from
the safe end (low = 0, high = 1) with exact binomial p-values, stopping at the first one that fails, so the
search over many candidates costs no multiplicity correction. Each edge is tested at one-sided level
(1 - confidence) / 2, which makes "valid" the same statement as the report's: the upper end of the exact
two-sided Clopper-Pearson interval at ``confidence`` is within the target. Widening neither edge can break a
target, so the narrowest valid band also minimises the share of parts sent to REVIEW at any defect rate. When
the edges cross (low >= high), no part needs a person: one threshold between them meets both targets.

The threshold of the threshold-only figures is ``low`` (a part at or above it is not passed automatically):
threshold and band come from this one rule.
"""
from __future__ import annotations

import math

import numpy as np

GRID = 1 / (1 + np.exp(-np.linspace(-12, 12, 481)))   # candidate edges, uniform in logit (0.05 steps)


def _controller(risk: str, target: float, one_sided: float):
    from mapie.risk_control import BinaryClassificationController

    return BinaryClassificationController(
        predict_function=lambda prob: np.stack([1 - prob, prob], axis=1), risk=risk, target_level=target,
        confidence_level=1 - one_sided, list_predict_params=GRID, fwer_method="fixed_sequence")


def _valid_edges(y: np.ndarray, prob: np.ndarray, max_missed_rate: float, max_false_reject_rate: float,
                 confidence: float) -> tuple[np.ndarray, np.ndarray]:
    one_sided = (1 - confidence) / 2
    lows = _controller("recall", 1 - max_missed_rate, one_sided).calibrate(prob, y).valid_predict_params
    highs = _controller("fpr", max_false_reject_rate, one_sided).calibrate(prob, y).valid_predict_params
    return np.asarray(lows, float), np.asarray(highs, float)


def review_share(y: np.ndarray, prob: np.ndarray, low: float, high: float, defect_rate: float) -> float:
    """Expected share of parts routed REVIEW at the line's defect rate (per class, then mixed)."""
    inside = (prob >= low) & (prob < high)
    pos, neg = y == 1, y == 0
    return float(defect_rate * inside[pos].mean() + (1 - defect_rate) * inside[neg].mean())


def data_needed(target: float, confidence: float) -> int:
    """Validation parts of a class needed so that zero errors prove ``target`` at ``confidence``."""
    one_sided = (1 - confidence) / 2
    return math.ceil(math.log(one_sided) / math.log1p(-target))


def choose_band(y, prob, max_missed_rate: float, max_false_reject_rate: float, confidence: float,
                defect_rate: float) -> dict:
    """The band (see module doc) with what it costs on validation and the trade-off curve."""
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, float)
    lows, highs = _valid_edges(y, prob, max_missed_rate, max_false_reject_rate, confidence)
    low = float(lows.max()) if len(lows) else 0.0       # low = 0 passes nothing: no miss
    high = float(highs.min()) if len(highs) else 1.0    # high = 1 rejects nothing: no false reject
    crossed = low >= high
    if crossed:  # one threshold meets both targets: the middle of the overlap (in logit), REVIEW empty
        between = GRID[(GRID >= high) & (GRID <= low)]
        low = high = float(between[len(between) // 2])
    curve = []
    for candidate in GRID[GRID <= max(low, float(lows.max()) if len(lows) else 0.0)][::8]:
        k = int(((prob < candidate) & (y == 1)).sum())
        curve.append({"low": float(candidate), "missed": k, "missed_bound": _upper(k, int((y == 1).sum()), confidence),
                      "review_share": review_share(y, prob, float(candidate), max(high, float(candidate)), defect_rate)})
    return {
        "low": low, "high": high, "threshold": low, "review_empty": crossed,
        "rule": (f"low = largest edge with missed-defect bound <= {max_missed_rate:g}, high = smallest edge with "
                 f"false-reject bound <= {max_false_reject_rate:g} (exact {confidence:.0%} bounds on validation; "
                 "Learn-then-Test, fixed-sequence testing over a fixed grid)"),
        "validation": {"defects": int((y == 1).sum()), "ok": int((y == 0).sum()),
                       "missed": int(((prob < low) & (y == 1)).sum()),
                       "false_rejects": int(((prob >= high) & (y == 0)).sum()),
                       "review_share_at_line_rate": review_share(y, prob, low, high, defect_rate)},
        "data_needed": {"defects_for_zero_missed": data_needed(max_missed_rate, confidence),
                        "ok_for_zero_false_rejects": data_needed(max_false_reject_rate, confidence)},
        "curve": curve,
    }


def _upper(k: int, n: int, confidence: float) -> float | None:
    from inspection.decision.metrics import binomial_ci

    return binomial_ci(k, n, confidence)["high"]
