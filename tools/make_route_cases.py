"""Regenerate tests/cases/route_cases.json from inspection/decision/route.py (then review the diff: it is the line's rule)."""
import json, sys
sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[1]))
from inspection.decision.route import decide
cam = {"brightness": {"min": 60.0, "max": 180.0}, "contrast": {"min": 20.0, "max": 70.0},
       "sharpness": {"min": 50.0, "max": 900.0}}
ok_stats = {"brightness": 120.0, "contrast": 40.0, "sharpness": 300.0}
gate = {"camera": cam, "ood": {"limit": 25.0}}
band = {"low": 0.02, "high": 0.9}
cases = []
train_cam = {"brightness": {"min": 80.0, "max": 160.0}, "contrast": {"min": 25.0, "max": 60.0},
             "sharpness": {"min": 100.0, "max": 700.0}}


def add(name, p, stats, ood, threshold, band_, gate_=gate, warn=None):
    rule = {"threshold": threshold, "review_band": band_, "retake": gate_}
    if warn is not None:
        rule["warn"] = warn
    r, reason = decide(p, stats, ood, rule)
    cases.append({"name": name, "probability": p, "stats": stats, "ood_score": ood, "rule": rule,
                  "route": r, "reason": reason})
for p in (0.0, 0.01, 0.019999, 0.02, 0.1, 0.18, 0.5, 0.8999, 0.9, 0.95, 1.0):
    add(f"band p={p}", p, ok_stats, 3.0, 0.18, band)
for p in (0.0, 0.1799, 0.18, 0.9):
    add(f"no band p={p}", p, ok_stats, 3.0, 0.18, None)
add("threshold below band low: never pass at/above threshold", 0.015, ok_stats, 3.0, 0.01, band)
add("threshold above band high: reject needs the threshold", 0.92, ok_stats, 3.0, 0.95, band)
add("blank frame: contrast low", 0.001, {"brightness": 128.0, "contrast": 0.5, "sharpness": 0.2}, 80.0, 0.18, band)
add("over-exposed", 0.001, {"brightness": 230.0, "contrast": 25.0, "sharpness": 100.0}, 3.0, 0.18, band)
add("noise: sharpness high", 0.3, {"brightness": 120.0, "contrast": 40.0, "sharpness": 5000.0}, 3.0, 0.18, band)
add("out of distribution only", 0.001, ok_stats, 25.01, 0.18, band)
add("ood at the limit is fine", 0.001, ok_stats, 25.0, 0.18, band)
add("camera drift inside the validated range: judged, with a warning", 0.001,
    {"brightness": 170.0, "contrast": 40.0, "sharpness": 300.0}, 3.0, 0.18, band, gate, {"camera": train_cam})
add("camera drift, in the band: REVIEW with a warning", 0.5,
    {"brightness": 120.0, "contrast": 40.0, "sharpness": 60.0}, 3.0, 0.18, band, gate, {"camera": train_cam})
add("outside the validated range: RETAKE, no warning", 0.001,
    {"brightness": 190.0, "contrast": 40.0, "sharpness": 300.0}, 3.0, 0.18, band, gate, {"camera": train_cam})
add("inside the training range: no warning", 0.95, ok_stats, 3.0, 0.18, band, gate, {"camera": train_cam})
tiered = {"camera": cam, "ood": {"limit": 25.0, "review_limit": 18.0}}
add("unusual photo the model would pass: REVIEW", 0.001, ok_stats, 18.01, 0.18, band, tiered)
add("unusual photo at the review limit: PASS", 0.001, ok_stats, 18.0, 0.18, band, tiered)
add("unusual photo the model rejects: REJECT", 0.95, ok_stats, 20.0, 0.18, band, tiered)
add("unusual photo in the band: REVIEW for the band", 0.5, ok_stats, 20.0, 0.18, band, tiered)
add("unusual photo, no band: REVIEW", 0.001, ok_stats, 20.0, 0.18, None, tiered)
add("unusual photo with camera drift: REVIEW with a warning", 0.001,
    {"brightness": 170.0, "contrast": 40.0, "sharpness": 300.0}, 20.0, 0.18, band, tiered, {"camera": train_cam})
add("above the RETAKE limit of a tiered gate: RETAKE", 0.001, ok_stats, 25.5, 0.18, band, tiered)
add("no gate in metadata", 0.001, {"brightness": 0.0, "contrast": 0.0, "sharpness": 0.0}, 99.0, 0.18, band, {})
json.dump({"about": "Shared table of route cases: inspection/decision/route.py (tests/test_route.py) and web/src/route.js "
           "(web/tools/route_cases.mjs) must both give these routes and reasons. Regenerate with care: "
           "every change here is a change of the line's decision rule.", "cases": cases},
          open("tests/cases/route_cases.json", "w"), indent=1)
print(len(cases))
for c in cases: print(c["name"], c["route"], c["reason"])
