"""The review-band chooser (inspection/decision/band.py) on generated score distributions."""
import numpy as np
import pytest
from scipy.stats import beta

from inspection.decision.band import GRID, choose_band, data_needed, review_share
from inspection.decision.metrics import binomial_ci

DEFECT, OK = (4.0, 1.5), (1.5, 4.0)   # beta(a, b) defect probabilities of defective and good parts (overlapping:
                                      # the edges do not cross, so each one is where its own guarantee puts it)


def draw(rng, n_defect, n_ok, defect=DEFECT, ok=OK):
    y = np.r_[np.ones(n_defect, int), np.zeros(n_ok, int)]
    return y, np.r_[rng.beta(*defect, n_defect), rng.beta(*ok, n_ok)]


def test_the_guarantee_holds_at_its_confidence_over_1000_draws():
    """The true miss and false-reject rates of the chosen band exceed their targets in at most (1 - confidence)/2
    of the draws each (plus Monte-Carlo slack): the band is chosen on one sample, judged on the distribution."""
    rng = np.random.default_rng(0)
    draws, target, confidence = 2000, 0.05, 0.80    # one-sided level 0.10 per edge
    missed, false_rejects = [], []
    for _ in range(draws):
        y, p = draw(rng, 600, 600)
        band = choose_band(y, p, target, target, confidence, 0.03, more_data=())
        missed.append(beta.cdf(band["low"], *DEFECT))      # the true rates of the chosen edges
        false_rejects.append(beta.sf(band["high"], *OK))
    missed_over = np.mean(np.array(missed) > target)
    false_rejects_over = np.mean(np.array(false_rejects) > target)
    level = (1 - confidence) / 2
    slack = 3 * np.sqrt(level * (1 - level) / draws)
    assert missed_over <= level + slack
    assert false_rejects_over <= level + slack
    # not vacuous: the chooser spends most of each budget (exact bounds on 600 parts cost the rest)
    assert np.mean(missed) > target / 2 and np.mean(false_rejects) > target / 2


def test_edges_are_where_the_exact_bound_reaches_the_target():
    y, p = draw(np.random.default_rng(1), 564, 431)
    band = choose_band(y, p, 0.01, 0.02, 0.95, 0.03)
    n1, n0 = int(y.sum()), int((1 - y).sum())
    assert binomial_ci(((p < band["low"]) & (y == 1)).sum(), n1)["high"] <= 0.01
    nxt = GRID[GRID > band["low"]][0]
    assert binomial_ci(((p < nxt) & (y == 1)).sum(), n1)["high"] > 0.01
    assert binomial_ci(((p >= band["high"]) & (y == 0)).sum(), n0)["high"] <= 0.02
    prev = GRID[GRID < band["high"]][-1]
    assert binomial_ci(((p >= prev) & (y == 0)).sum(), n0)["high"] > 0.02
    assert band["threshold"] == band["low"] < band["high"] and not band["review_empty"]
    v = band["validation"]
    assert v["review_share_at_line_rate"] == pytest.approx(review_share(y, p, band["low"], band["high"], 0.03))
    assert [c["low"] for c in band["curve"]] == sorted(c["low"] for c in band["curve"])
    assert all(c["missed_bound"] <= 0.01 for c in band["curve"])


def test_separable_scores_need_no_review():
    y, p = draw(np.random.default_rng(2), 564, 431, defect=(60, 1), ok=(1, 60))
    band = choose_band(y, p, 0.01, 0.02, 0.95, 0.03)
    assert band["review_empty"] and band["low"] == band["high"]
    assert band["validation"]["missed"] == band["validation"]["false_rejects"] == 0
    assert band["validation"]["review_share_at_line_rate"] == 0


def test_too_little_validation_data_reviews_everything_and_says_what_is_needed():
    y, p = draw(np.random.default_rng(3), 40, 40)
    band = choose_band(y, p, 0.01, 0.02, 0.95, 0.03)
    assert band["low"] == 0.0 and band["high"] == 1.0    # no edge can be proven with 40 parts a class
    assert band["data_needed"] == {"defects_for_zero_missed": data_needed(0.01, 0.95),
                                   "ok_for_zero_false_rejects": data_needed(0.02, 0.95)}
    assert data_needed(0.01, 0.95) == 368    # 0.99^368 < 0.025 <= 0.99^367
