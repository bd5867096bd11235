import numpy as np
import pytest

from stages.config import EvaluateParams
from stages.evaluate import at_threshold, choose_threshold, sweep

Y = np.array([0] * 6 + [1] * 4)
P = np.array([0.01, 0.05, 0.1, 0.2, 0.3, 0.62, 0.4, 0.6, 0.8, 0.95])


def test_min_recall_picks_highest_threshold_meeting_target():
    t = choose_threshold(Y, P, EvaluateParams(policy="min_recall", min_recall=0.75))
    assert t == pytest.approx(0.6)  # 3 of 4 defects score >= 0.6; 0.8 keeps only 2
    assert at_threshold(Y, P, t)["recall"] >= 0.75
    t_full = choose_threshold(Y, P, EvaluateParams(policy="min_recall", min_recall=1.0))
    assert t_full == pytest.approx(0.4)


def test_max_f1_and_fixed():
    assert choose_threshold(Y, P, EvaluateParams(policy="max_f1")) == pytest.approx(0.4)
    assert choose_threshold(Y, P, EvaluateParams(policy="fixed", fixed_threshold=0.3)) == 0.3


def test_metrics_at_threshold_match_confusion():
    m = at_threshold(Y, P, 0.4)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (4, 1, 5, 0)
    assert m["precision"] == pytest.approx(0.8) and m["recall"] == 1.0
    assert m["false_reject_rate"] == pytest.approx(1 / 6)
    assert 0.9 < m["roc_auc"] <= 1.0


def test_sweep_is_monotone_in_recall():
    rows = sweep({"val": (Y, P)}, 11)
    recalls = [r["val_recall"] for r in rows]
    assert recalls[0] == 1.0 and all(a >= b for a, b in zip(recalls, recalls[1:]))
