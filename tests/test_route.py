"""The route rule (inspection/decision/route.py) against the shared table of cases that web/src/route.js also passes."""
import json

import pytest

from conftest import REPO
from inspection.decision.route import ROUTES, camera_reasons, decide, ood_reason, route

CASES = json.loads((REPO / "tests/cases/route_cases.json").read_text())["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_shared_route_cases(case):
    assert decide(case["probability"], case["stats"], case["ood_score"], case["rule"]) == (case["route"], case["reason"])


def test_the_table_covers_every_route():
    assert {c["route"] for c in CASES} == set(ROUTES)


def test_never_pass_at_or_above_the_threshold():
    for t in (0.01, 0.2, 0.5, 0.95):
        for band in (None, (0.02, 0.9), (0.3, 0.6)):
            for p in (t, min(1.0, t + 1e-6), 0.999):
                assert route(p, t, band)[0] != "PASS"


def test_retake_wins_and_needs_no_probability():
    assert route(None, 0.5, None, ["unreadable: not a decodable image"]) == ("RETAKE", "unreadable: not a decodable image")
    with pytest.raises(ValueError):
        route(None, 0.5, None, [])


def test_reasons_name_the_feature_and_the_limit():
    cam = {"contrast": {"min": 20.0, "max": 70.0}}
    assert camera_reasons({"contrast": 3.0}, cam) == ["contrast low (3.00 < 20.00)"]
    assert camera_reasons({"contrast": 30.0}, cam) == []
    assert ood_reason(2.0, 5.0) == "" and "out-of-distribution score 6.00 > 5.00" in ood_reason(6.0, 5.0)


def test_csv_cells_never_start_a_formula():
    from inspection.decision.route import csv_row, csv_safe

    assert csv_safe("=SUM(1+1)*cmd|' -C calc'!A0.jpg") == "'=SUM(1+1)*cmd|' -C calc'!A0.jpg"
    assert [csv_safe(v) for v in ("+1x", "-x", "@a", "\tz", "-0.5", "12", "ok")] == ["'+1x", "'-x", "'@a", "'\tz", "-0.5", "12", "ok"]
    row = csv_row("=evil.jpg", "RETAKE", "unreadable: empty file", None, 0.5, None, None, [], "v1", "t")
    assert row["file"] == "'=evil.jpg" and row["defect_probability"] == ""


def test_make_rule_splits_retake_and_camera_warning():
    """The RETAKE range is what the model was validated under; the training range only warns."""
    from inspection.decision.route import decide, make_rule

    validated = {"brightness": {"min": 60.0, "max": 200.0}}
    training = {"brightness": {"min": 90.0, "max": 160.0}}
    rule = make_rule(0.3, (0.1, 0.8), validated, 20.0, "m", training)
    assert rule["warn"] == {"camera": training} and "camera warning" in rule["rule"]
    inside = decide(0.05, {"brightness": 120.0}, 1.0, rule)
    drifted = decide(0.05, {"brightness": 180.0}, 1.0, rule)
    outside = decide(0.05, {"brightness": 210.0}, 1.0, rule)
    assert inside == ("PASS", "defect probability below 0.1000")
    assert drifted[0] == "PASS" and drifted[1].startswith("defect probability below 0.1000; camera warning: brightness high")
    assert outside[0] == "RETAKE" and "camera warning" not in outside[1]
    assert make_rule(0.3, None, validated, 20.0)["warn"] is None
