"""The review band chosen on validation: the narrowest [low, high) whose miss and false-reject rates are guaranteed.

Routes by defect probability: PASS below ``low``, REVIEW in [low, high), REJECT from ``high``. A defect is
missed only when it passes (prob < low), a good part is falsely rejected only when prob >= high, so each
target constrains one edge:

* ``low`` is the largest candidate whose validation miss rate P(prob < low | defect) is guaranteed at most
  ``max_missed_rate``;
* ``high`` is the smallest candidate whose false-reject rate P(prob >= high | ok) is guaranteed at most
  ``max_false_reject_rate``.

"Guaranteed" is Learn-then-Test (Angelopoulos et al. 2022) with fixed-sequence testing: the candidates are a
fixed grid (data-independent), tested in order from the safe end (low = 0, high = 1) with exact binomial
p-values (scipy), stopping at the first one that fails, so the search over many candidates costs no
multiplicity correction. MAPIE's ``BinaryClassificationController`` implements the same procedure with
Hoeffding-Bentkus p-values, which are valid for any bounded loss but looser than the exact binomial one for
a 0/1 loss: on the generated distributions of tests/test_band.py (600 parts a class, 5 % targets at 80 %)
its bands missed 1.7 % of defects on average against 3.6 % here, i.e. more parts sent to REVIEW for the
same guarantee; and the report judges every target on the exact bound, so the chooser uses the same one. Each edge is tested at one-sided level
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


def _passes(errors: np.ndarray, n: int, target: float, level: float) -> np.ndarray:
    """Exact binomial p-value of H0 "error rate > target" for each candidate, <= level. Candidates come in the
    fixed order of the sequence (safe end first); the first that fails ends the sequence."""
    from scipy.stats import binom

    if n == 0:
        return np.zeros(len(errors), bool)
    ok = binom.cdf(errors, n, target) <= level
    return np.cumprod(ok).astype(bool)   # fixed-sequence testing: stop at the first failure


def _valid_edges(y: np.ndarray, prob: np.ndarray, max_missed_rate: float, max_false_reject_rate: float,
                 confidence: float) -> tuple[np.ndarray, np.ndarray]:
    level = (1 - confidence) / 2
    pos, neg = np.sort(prob[y == 1]), np.sort(prob[y == 0])
    missed = np.searchsorted(pos, GRID, side="left")               # defects with prob < low, low = GRID
    rejected = len(neg) - np.searchsorted(neg, GRID, side="left")  # ok parts with prob >= high, high = GRID
    lows = GRID[_passes(missed, len(pos), max_missed_rate, level)]                              # from low = 0 up
    highs = GRID[::-1][_passes(rejected[::-1], len(neg), max_false_reject_rate, level)]         # from high = 1 down
    return lows, highs


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
                defect_rate: float, conditions: dict | None = None, more_data: tuple[int, ...] = (2, 4)) -> dict:
    """The band (see module doc) with what it costs on validation and the trade-off curve.

    ``conditions``: further probabilities of the same validation parts (the gated camera perturbations); each
    edge must then be valid on every one of them too (low = the lowest valid low, high = the highest valid
    high), so the targets hold under each perturbation with the same guarantee as on the clean photos."""
    y = np.asarray(y).astype(int)
    prob = np.asarray(prob, float)
    edges = {}
    for name, p in {"clean": prob, **(conditions or {})}.items():
        lows, highs = _valid_edges(y, np.asarray(p, float), max_missed_rate, max_false_reject_rate, confidence)
        edges[name] = {"low": float(lows.max()) if len(lows) else 0.0,    # low = 0 passes nothing: no miss
                       "high": float(highs.min()) if len(highs) else 1.0}  # high = 1 rejects nothing
    lows, _ = _valid_edges(y, prob, max_missed_rate, max_false_reject_rate, confidence)
    low = min(e["low"] for e in edges.values())
    high = max(e["high"] for e in edges.values())
    crossed = low >= high
    if crossed:  # one threshold meets both targets: the middle of the overlap (in logit), REVIEW empty
        between = GRID[(GRID >= high) & (GRID <= low)]
        low = high = float(between[len(between) // 2])
    curve = tradeoff(y, prob, GRID[GRID <= max(low, float(lows.max()) if len(lows) else 0.0)][::8], high,
                     confidence, defect_rate)
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
        "edges_by_condition": edges,
        # what more validation data would buy: the same scores k times over (same rates, k x the parts)
        "more_data": {f"{k}x": choose_band(np.tile(y, k), np.tile(prob, k), max_missed_rate, max_false_reject_rate,
                                           confidence, defect_rate, more_data=())["validation"]
                      ["review_share_at_line_rate"] for k in more_data},
    }


def upper_bound(k: np.ndarray, n: int, confidence: float) -> np.ndarray:
    """Upper end of the exact two-sided Clopper-Pearson interval at ``confidence`` (vectorised binomial_ci high)."""
    from scipy.stats import beta

    k = np.asarray(k)
    return np.where(k >= n, 1.0, beta.ppf(1 - (1 - confidence) / 2, k + 1, np.maximum(n - k, 1)))


def tradeoff(y: np.ndarray, prob: np.ndarray, lows: np.ndarray, high: float, confidence: float,
             defect_rate: float) -> list[dict]:
    """For each low edge (high fixed): missed defects, their guaranteed (upper-bound) rate, and the REVIEW share."""
    pos = np.sort(prob[y == 1])
    missed = np.searchsorted(pos, lows, side="left")
    bounds = upper_bound(missed, len(pos), confidence) if len(pos) else np.ones(len(lows))
    return [{"low": float(lo), "missed": int(k), "missed_bound": float(b),
             "review_share": review_share(y, prob, float(lo), max(high, float(lo)), defect_rate)}
            for lo, k, b in zip(lows, missed, bounds)]
