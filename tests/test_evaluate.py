import numpy as np
import pytest

from conftest import section
from inspection.decision.metrics import at_threshold, bootstrap_rates, choose_threshold, operating_points, review_band, sweep

Y = np.array([0] * 6 + [1] * 4)
P = np.array([0.01, 0.05, 0.1, 0.2, 0.3, 0.62, 0.4, 0.6, 0.8, 0.95])


def test_min_recall_picks_highest_threshold_meeting_target():
    t = choose_threshold(Y, P, section("evaluate", policy="min_recall", min_recall=0.75))
    assert t == pytest.approx(0.6)  # 3 of 4 defects score >= 0.6; 0.8 keeps only 2
    assert at_threshold(Y, P, t)["recall"] >= 0.75
    t_full = choose_threshold(Y, P, section("evaluate", policy="min_recall", min_recall=1.0))
    assert t_full == pytest.approx(0.4)


def test_max_f1_and_fixed():
    assert choose_threshold(Y, P, section("evaluate", policy="max_f1")) == pytest.approx(0.4)
    assert choose_threshold(Y, P, section("evaluate", policy="fixed", fixed_threshold=0.3)) == 0.3


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


def test_bootstrap_interval_brackets_the_point_estimate_and_repeats():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(400, int), np.ones(400, int)]
    p = np.clip(np.r_[rng.normal(0.2, 0.15, 400), rng.normal(0.8, 0.15, 400)], 0, 1)
    a = bootstrap_rates(y, p, 0.5, resamples=500, confidence=0.95, seed=1)
    m = at_threshold(y, p, 0.5)
    miss = a["missed_per_1000_defects"]
    assert miss["value"] == pytest.approx(1000 * m["miss_rate"])
    assert miss["low"] <= miss["value"] <= miss["high"] and miss["high"] - miss["low"] > 0
    assert a["recall"]["low"] <= m["recall"] <= a["recall"]["high"]
    assert a == bootstrap_rates(y, p, 0.5, resamples=500, confidence=0.95, seed=1)
    narrow = bootstrap_rates(y, p, 0.5, resamples=500, confidence=0.5, seed=1)["missed_per_1000_defects"]
    assert narrow["high"] - narrow["low"] < miss["high"] - miss["low"]


def test_review_band_counts_add_up():
    band = review_band(Y, P, 0.1, 0.62)
    # prob < 0.1: 0.01, 0.05 (ok) -> auto-pass; >= 0.62: 0.62 (ok), 0.8, 0.95 (defects) -> auto-reject
    assert band["auto_pass"] == 2 and band["auto_reject"] == 3 and band["review"] == 5
    assert band["auto_pass"] + band["review"] + band["auto_reject"] == len(Y)
    assert band["review_defects"] == 2 and band["review_ok"] == 3
    assert band["defects_slipping_through"] == 0 and band["ok_auto_rejected"] == 1
    assert band["review_share"] == pytest.approx(0.5)
    slip = review_band(Y, P, 0.5, 0.9)
    assert slip["defects_slipping_through"] == 1 and slip["slipping_per_1000_defects"] == pytest.approx(250)


def test_operating_points_table():
    rows = operating_points(Y, P, [0.4, 0.6, 0.4])
    assert [r["threshold"] for r in rows] == [0.4, 0.6]
    assert rows[0]["missed"] == 0 and rows[0]["false_rejects"] == 1
    assert rows[1]["missed_per_1000_defects"] == pytest.approx(250)


class _DarkSpotModel:
    """Stands in for a Keras model: the defect score is how dark the image centre is, relative to
    an absolute level, so brighter photos score lower, like a model fooled by exposure."""

    def predict(self, x, batch_size=None, verbose=0):
        centre = x[:, 12:20, 12:20, 0].mean(axis=(1, 2))
        return np.clip((200 - centre) / 200, 0, 1)[:, None]


def test_robust_threshold_is_the_lowest_over_the_gated_perturbations(tmp_path):
    import cv2

    from inspection.evaluation.batteries import robust_threshold

    rng = np.random.default_rng(0)
    y = np.array([1] * 20 + [0] * 20)
    photos = []  # the stage reads the photos from their files, a chunk at a time
    for i, label in enumerate(y):
        img = np.full((64, 64), 180, np.uint8)
        img[24:40, 24:40] = rng.integers(60, 120) if label else rng.integers(150, 175)
        photos.append(str(tmp_path / f"{i}.png"))
        cv2.imwrite(photos[-1], img)
    e = section("evaluate", policy="min_recall", min_recall=1.0, robust_threshold=True, robustness={
        "seed": 0, "perturbations": {"bright": {"kind": "gain", "value": 1.3, "gated": True},
                          "dark": {"kind": "gain", "value": 0.8, "gated": True},
                          "ignored": {"kind": "gain", "value": 2.0, "gated": False}}})
    per = robust_threshold(_DarkSpotModel(), photos, y, e, 32)
    assert set(per) == {"clean", "bright", "dark"}  # ungated perturbations do not set the threshold
    assert per["bright"] < per["clean"] < per["dark"]
    assert min(per.values()) == per["bright"]


def test_exact_binomial_interval_known_values():
    from inspection.decision.metrics import binomial_ci

    ci = binomial_ci(2, 563)
    assert 1000 * ci["low"] == pytest.approx(0.43, abs=0.005) and 1000 * ci["high"] == pytest.approx(12.77, abs=0.005)
    ci = binomial_ci(3, 432)
    assert 1000 * ci["low"] == pytest.approx(1.4, abs=0.05) and 1000 * ci["high"] == pytest.approx(20.2, abs=0.05)
    zero = binomial_ci(0, 100)
    assert zero["low"] == 0.0 and zero["high"] == pytest.approx(0.0362, abs=1e-4)
    assert binomial_ci(0, 0)["rate"] is None


def test_ood_limit_keeps_the_validation_retake_share_within_budget_with_confidence():
    from inspection.decision.metrics import binomial_ci
    from inspection.model.ood import calibrate_limit

    rng = np.random.default_rng(3)
    scores = rng.normal(10, 1, 995)
    camera = np.zeros(995, bool)
    limit, info = calibrate_limit(scores, camera, 0.01, 0.95)
    # 3 of 995 has an exact upper bound 0.88 % <= 1 %; 4 of 995 is above 1 %
    assert binomial_ci(3, 995)["high"] <= 0.01 < binomial_ci(4, 995)["high"]
    assert info["allowed"] == 3 and info["val_over_limit"] == 3 and info["met"]
    assert limit == np.sort(scores)[-4]  # the lowest limit with only 3 photos above it
    assert limit < np.quantile(scores, 0.999) and limit > np.quantile(scores, 0.99)
    # photos the camera check sends to RETAKE use the same budget
    camera[np.argsort(scores)[:2]] = True
    limit2, info2 = calibrate_limit(scores, camera, 0.01, 0.95)
    assert info2["val_retake"] == 3 and info2["val_over_limit"] == 1 and limit2 > limit


def test_ood_limit_with_too_few_photos_to_show_the_budget():
    from inspection.model.ood import calibrate_limit

    scores = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    limit, info = calibrate_limit(scores, np.zeros(5, bool), 0.01, 0.95)
    assert limit == 5.0 and info["val_over_limit"] == 0 and not info["met"] and info["allowed"] == 0


def test_validated_ood_limit_holds_the_budget_in_every_validated_condition():
    """ood_limit validated: each condition's own calibrated limit, the highest wins; a photo merely rotated (a
    condition whose scores run higher) is no longer sent to RETAKE, and the clean photos' budget still holds."""
    from inspection.model.ood import calibrate_limit, calibrate_limit_validated

    rng = np.random.default_rng(5)
    clean = rng.normal(10, 1, 995)
    rotated = clean + rng.normal(1.5, 0.5, 995)       # the same photos, scored higher under a gated perturbation
    noisy = clean + rng.normal(0.3, 0.2, 995)
    zeros = np.zeros(995, bool)
    scores = {"clean": clean, "rotate any": rotated, "noise 8": noisy}
    limit, info = calibrate_limit_validated(scores, {k: zeros for k in scores}, 0.01, 0.95)
    own = {k: calibrate_limit(v, zeros, 0.01, 0.95)[0] for k, v in scores.items()}
    assert limit == max(own.values()) == own["rotate any"] and info["set_by"] == "rotate any"
    assert limit > own["clean"]
    for k, v in scores.items():   # within the budget in every condition (3 of 995 allowed at 1 %)
        assert info["by_condition"][k]["over_limit"] == int((v > limit).sum()) <= 3
    assert info["val_over_limit"] == int((clean > limit).sum()) and info["met"]
    # the clean-only limit sends many rotated photos to RETAKE: what the validated limit is for
    assert int((rotated > own["clean"]).sum()) > 100


def test_tiered_ood_limit_retakes_beyond_the_widened_validated_limit_and_reviews_above_the_clean_one():
    """evaluate.retake.ood_limit tiered (inspection.evaluation.gate.ood_limit): the RETAKE limit is the validated one
    x (1 + ood_margin), the review limit the clean one; the rule then routes a photo between them that the model
    would pass to REVIEW, one above the RETAKE limit to RETAKE, and a confident REJECT stays REJECT."""
    from types import SimpleNamespace

    from inspection.decision.route import decide, make_rule
    from inspection.evaluation.gate import ood_limit
    from inspection.model.ood import calibrate_limit, calibrate_limit_validated

    rng = np.random.default_rng(5)
    clean = rng.normal(10, 1, 995)
    scores = {"clean": clean, "exposure x1.25": clean + rng.normal(1.0, 0.3, 995)}
    stats = {"brightness": np.full(995, 120.0)}
    tables = {k: stats for k in scores}
    camera = {"brightness": {"min": 0.0, "max": 255.0}}

    def params(mode):
        return SimpleNamespace(retake=SimpleNamespace(ood_limit=mode, ood_margin=0.1, camera_check=True,
                                                      max_share=0.01),
                               bootstrap=SimpleNamespace(confidence=0.95))
    zeros = {k: np.zeros(995, bool) for k in scores}
    own_clean = calibrate_limit(clean, zeros["clean"], 0.01, 0.95)[0]
    validated = calibrate_limit_validated(scores, zeros, 0.01, 0.95)[0]
    assert ood_limit(params("clean"), camera, scores, tables)[0] == own_clean
    assert ood_limit(params("validated"), camera, scores, tables)[0] == validated > own_clean
    limit, info = ood_limit(params("tiered"), camera, scores, tables)
    assert limit == pytest.approx(validated * 1.1) and info["review_limit"] == own_clean and info["margin"] == 0.1
    assert info["val_review"] == int((clean > own_clean).sum()) <= 3 and info["val_over_limit"] == 0
    assert info["by_condition"]["exposure x1.25"]["over_limit"] == int((scores["exposure x1.25"] > limit).sum()) == 0

    rule = make_rule(0.3, (0.1, 0.8), None, limit, "m", None, info["review_limit"])
    ok = {"brightness": 120.0}
    between = (own_clean + limit) / 2
    assert decide(0.01, ok, own_clean, rule)[0] == "PASS"
    assert decide(0.01, ok, between, rule) == ("REVIEW", f"unusual photo (out-of-distribution score {between:.2f} > "
                                                          f"{own_clean:.2f}): a person checks the part")
    assert decide(0.95, ok, between, rule)[0] == "REJECT"
    assert decide(0.01, ok, limit + 0.01, rule)[0] == "RETAKE"
    assert "goes to REVIEW" in rule["rule"] and rule["retake"]["ood"]["review_limit"] == own_clean
    # without a review limit (clean, validated) nothing between the limits changes
    assert decide(0.01, ok, between, make_rule(0.3, (0.1, 0.8), None, limit, "m"))[0] == "PASS"


def test_validated_range_joins_the_training_range_with_the_validated_conditions():
    """The RETAKE range: the training [p0.5, p99.5] joined with each validated condition's whole range (every
    photo of it was judged); the training range (+ margin) stays the warning range."""
    from inspection.data.imagestats import drift_reference
    from inspection.evaluation.gate import validated_range

    rng = np.random.default_rng(0)
    train = {"brightness": rng.normal(120, 10, 2000), "contrast": rng.normal(40, 4, 2000),
             "sharpness": rng.normal(300, 30, 2000), "background": rng.normal(20, 2, 2000)}
    ref = drift_reference(None, 0.1, table=train)
    darker = {**train, "brightness": train["brightness"] * 0.75}
    blurred = {**train, "sharpness": train["sharpness"] * 0.4}
    got = validated_range(ref, {"exposure x0.75": darker, "blur": blurred})
    assert got["brightness"]["min"] == pytest.approx(darker["brightness"].min())
    # the blurred photos keep the training brightness: their whole range reaches past the training p99.5
    assert got["brightness"]["max"] == pytest.approx(train["brightness"].max())
    assert got["brightness"]["max"] > ref["features"]["brightness"]["p99_5"]
    assert got["sharpness"]["min"] == pytest.approx(blurred["sharpness"].min())
    assert got["contrast"] == {"min": pytest.approx(train["contrast"].min()), "max": pytest.approx(train["contrast"].max())}
    # a photo of a validated condition is never outside the range: the hull, not a percentile cut
    for table in (darker, blurred):
        for k in ("brightness", "contrast", "sharpness"):
            assert got[k]["min"] <= table[k].min() and table[k].max() <= got[k]["max"]
    assert validated_range(ref, {})["brightness"]["min"] == ref["features"]["brightness"]["p0_5"]


def test_rotated_training_features_do_not_depend_on_the_chunks():
    """ood_fit rotated: each training image is rotated by its own seeded angle, numbered in arrival order, so the
    features are the same whether the split streams in one chunk or several (and differ from the unrotated ones)."""
    from inspection.evaluation.gate import rotated_features

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 32, 32)).astype(np.uint8)
    images[:, :8, :] = 255   # an asymmetric image: a rotation changes it
    pooled = lambda x: x.reshape(len(x), -1).astype(np.float64)  # noqa: E731
    whole = rotated_features(pooled, 3)(images)
    f = rotated_features(pooled, 3)
    parts = np.concatenate([f(images[:4]), f(images[4:7]), f(images[7:])])
    assert np.array_equal(whole, parts)
    assert not np.array_equal(whole, pooled(images))
    assert not np.array_equal(whole, rotated_features(pooled, 4)(images))


def test_the_ood_method_sentence_says_how_the_gate_was_fitted_and_calibrated():
    from inspection.model.ood import METHOD, method

    assert method("clean", False) == METHOD
    assert "once rotated" in method("rotated", False) and "once rotated" not in METHOD
    assert method("clean", True).startswith(METHOD) and "every gated camera perturbation" in method("clean", True)
