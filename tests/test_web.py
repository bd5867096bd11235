"""The page's image preparation (web/src/preprocess.js) and route rule (web/src/route.js) against the
Python pipeline's, in Node: the resize must reproduce OpenCV's INTER_AREA pixel for pixel, the camera
statistics must match inspection/data/imagestats.py, and routes, reasons and CSV cells must be byte-identical to
inspection/decision/route.py."""
from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from conftest import REPO

from inspection.data.imagestats import features
from inspection.decision.route import CSV_COLUMNS, csv_row

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def run_js(tmp_path, script: str, arrays: dict[str, np.ndarray] | None = None, payload: object = None):
    """Run an ES module that imports web/src/preprocess.js as `P` and web/src/route.js as `R`; it gets
    `input` (JSON) and `bins[name]` (Uint8Array) and sets `output`."""
    for name, a in (arrays or {}).items():
        (tmp_path / f"{name}.bin").write_bytes(np.ascontiguousarray(a, np.uint8).tobytes())
    (tmp_path / "input.json").write_text(json.dumps(payload))
    module = tmp_path / "run.mjs"
    module.write_text(f"""
import {{ readFileSync, writeFileSync }} from 'node:fs';
import * as P from '{(REPO / 'web/src/preprocess.js').as_uri()}';
import * as R from '{(REPO / 'web/src/route.js').as_uri()}';
const dir = {json.dumps(str(tmp_path))};
const input = JSON.parse(readFileSync(dir + '/input.json', 'utf8'));
const bins = Object.fromEntries({json.dumps(list(arrays or {}))}.map((n) => [n, new Uint8Array(readFileSync(dir + '/' + n + '.bin'))]));
let output;
{script}
writeFileSync(dir + '/output.json', JSON.stringify(output));
""")
    res = subprocess.run(["node", str(module)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads((tmp_path / "output.json").read_text())


def realistic(rng, h, w):
    """A casting-like image: smooth disc and rings plus noise, so every grey level occurs."""
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2) / min(h, w)
    img = 140 + 80 * np.cos(r * 25) * (r < 0.45) + rng.normal(0, 12, (h, w))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,size", [((300, 300), 128), ((300, 300), 150), ((96, 96), 64), ((256, 256), 128),
                                        ((150, 200), 64), ((301, 299), 128), ((64, 64), 64), ((300, 300), 100), ((400, 400), 100)])
def test_resize_reproduces_opencv_inter_area_exactly(tmp_path, shape, size):
    rng = np.random.default_rng(sum(shape) + size)
    imgs = [realistic(rng, *shape), rng.integers(0, 256, shape, dtype=np.uint8)]
    out = run_js(tmp_path, """
const [h, w] = input.shape;
output = [0, 1].map((i) => Array.from(P.resizeArea(bins.imgs.subarray(i * h * w, (i + 1) * h * w), w, h, input.size)));
""", {"imgs": np.stack(imgs)}, {"shape": list(shape), "size": size})
    for img, js in zip(imgs, out):
        expected = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(np.array(js, np.uint8).reshape(size, size), expected)


def test_drift_statistics_match_imagestats(tmp_path):
    rng = np.random.default_rng(0)
    imgs = np.stack([realistic(rng, 64, 64), rng.integers(0, 256, (64, 64), dtype=np.uint8),
                     np.full((64, 64), 77, np.uint8)])
    out = run_js(tmp_path, "output = [0, 1, 2].map((i) => P.features(bins.imgs.subarray(i * 4096, (i + 1) * 4096), 64));",
                 {"imgs": imgs})
    for img, js in zip(imgs, out):
        py = features(img)
        for k in ("brightness", "contrast", "sharpness"):
            assert js[k] == pytest.approx(py[k], rel=1e-5, abs=1e-6), k


def test_rgba_to_gray_is_opencv_rgb2gray(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((16, 16), 255, np.uint8)])
    out = run_js(tmp_path, "output = Array.from(P.rgbaToGray(bins.rgba, 16, 16));", {"rgba": rgba})
    np.testing.assert_array_equal(np.array(out, np.uint8).reshape(16, 16), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))


def test_route_js_passes_the_shared_route_cases():
    """web/tools/route_cases.mjs: every case of tests/cases/route_cases.json, route and reason byte for byte."""
    res = subprocess.run(["node", str(REPO / "web/tools/route_cases.mjs")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ", 0 failed" in res.stdout


def test_route_cases_runner_fails_on_a_mismatch(tmp_path):
    cases = json.loads((REPO / "tests/cases/route_cases.json").read_text())
    cases["cases"][0]["reason"] += " (changed)"
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    res = subprocess.run(["node", str(REPO / "web/tools/route_cases.mjs"), str(tmp_path / "cases.json")],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "MISMATCH" in res.stdout and ", 1 failed" in res.stdout


def tricky_numbers() -> list[float]:
    """Exact binary ties (k/8, k/16 ...) where JS toFixed and Python's format disagree, negative zero,
    tiny negatives, random values and large ones."""
    rng = np.random.default_rng(7)
    ties = [k / 8 for k in range(0, 41)] + [120.125, 0.5, 1.5, 2.5, 254.375, 0.0625, 0.03125, 1 / 1024]
    return ties + [-0.0, -0.001, -0.125, -2.5, 1e-7, 0.9999995, 999999.5, 1e15 + 0.5] + \
        list(rng.uniform(0, 300, 300)) + list(rng.uniform(0, 1, 300)) + [float(v) for v in rng.integers(0, 4096, 50) / 4096]


def test_number_formatting_is_pythons(tmp_path):
    xs = tricky_numbers()
    digits = [0, 1, 2, 3, 4, 6]
    out = run_js(tmp_path, "output = input.d.map((d) => input.x.map((x) => R.fixed(x, d)));",
                 payload={"x": xs, "d": digits})
    for d, got in zip(digits, out):
        expected = [f"{x:.{d}f}" for x in xs]
        bad = [(x, g, e) for x, g, e in zip(xs, got, expected) if g != e]
        assert not bad, (d, bad[:5])
    neg0 = run_js(tmp_path, "output = [R.fixed(-0, 2), R.fixed(NaN, 2), R.fixed(Infinity, 2), R.fixed(-Infinity, 2)];")
    assert neg0 == [f"{-0.0:.2f}", "nan", "inf", "-inf"]


def test_csv_rows_equal_python_csv_row(tmp_path):
    """route.js csvRow == inspection.decision.route.csv_row for readable, unreadable and camera-flagged parts."""
    stats = [{"brightness": 120.125, "contrast": 40.0625, "sharpness": 300.25},
             {"brightness": 231.5, "contrast": 2.0, "sharpness": 0.15}, None, {}]
    args = [
        ["cast_def_0_4073.jpeg", "REJECT", "defect probability at or above 0.9000", 0.95, 0.18, 3.0625, stats[0], [],
         "abc123", "2024-05-01T10:00:00+00:00"],
        ["blank.png", "RETAKE", "camera check: contrast low (2.00 < 20.00)", 0.0001, 0.18, 80.0, stats[1],
         ["contrast low (2.00 < 20.00)", "sharpness low (0.15 < 50.00)"], "abc123", "t"],
        ["notes.jpg", "RETAKE", "unreadable: not a decodable image", None, 0.18, None, stats[2], [], "abc123", "t"],
        ["x.jpg", "PASS", "defect probability below 0.0200", 0.0000005, 0.5, 0.0005, stats[3], [], "v", "t"],
        ["r.jpg", "REVIEW", "defect probability in the review band [0.0200, 0.9000)", 0.5, 0.5, 1.0, stats[0], [],
         "v", "t", "defect", "QA Jane", "2026-12-06T10:00:00+00:00"],   # a person's review: REJECT, who, when
    ]
    out = run_js(tmp_path, "output = input.map((a) => R.csvRow(...a));", payload=args)
    assert out == [csv_row(*a) for a in args]
    assert list(out[0]) == list(CSV_COLUMNS)
    js_columns = run_js(tmp_path, "output = R.CSV_COLUMNS;")
    assert js_columns == list(CSV_COLUMNS)


def test_csv_cells_escape_formulas_and_parse_back(tmp_path):
    import csv
    import io

    names = ["=SUM(1+1)*cmd|' -C calc'!A0.jpg", "+1.jpg", "-x.jpg", "@foo.png", "\tTab.png", "\rcr.png",
             'quote ".jpg', "comma,name.jpg", "plain.jpg", "-0.25", "0.5"]
    text = run_js(tmp_path, "output = R.csvText(input.map((n) => ({ file: n, route: 'PASS' })));", payload=names)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == list(CSV_COLUMNS)
    files = [r[0] for r in rows[1:]]
    for name, cell in zip(names, files):
        risky = name[0] in "=+-@\t\r" and name not in ("-0.25",)
        assert cell == ("'" + name if risky else name), (name, cell)
    assert text.endswith("0.5,PASS" + "," * (len(CSV_COLUMNS) - 2) + "\n") and all(r[1] == "PASS" for r in rows[1:])


def test_operator_rules_in_node(tmp_path):
    """web/src/operator.js: which rows may be labelled for retraining (castings only: a RETAKE, an escalated or an
    unusual-photo row needs "It is a casting" first) and the RETAKE escalation, which compares causes, not the
    measured numbers, and starts again after an escalation."""
    module = tmp_path / "op.mjs"
    module.write_text(f"""
import * as O from '{(REPO / 'web/src/operator.js').as_uri()}';
const row = (route, reason, extra = {{}}) => ({{ route, reason, probability: 0.01, ...extra }});
const rows = [row('REVIEW', 'defect probability in the review band [0.0200, 0.9000)'),
  row('RETAKE', 'camera check: contrast low (3.10 < 21.40)'),
  row('REVIEW', 'unusual photo (out-of-distribution score 25.00 > 20.00): a person checks the part'),
  row('REVIEW', 'second RETAKE for the same reason (...)', {{ escalated: true }}),
  row('RETAKE', 'camera check: contrast low (3.10 < 21.40)', {{ casting: true }}),
  {{ route: 'RETAKE', reason: 'unreadable: empty file', probability: null }}];
const escalate = O.retakeEscalator();
const seq = [escalate(row('RETAKE', 'camera check: sharpness high (2109.60 > 2011.80)')),
  escalate(row('RETAKE', 'camera check: sharpness high (2250.10 > 2011.80), contrast high (90.00 > 81.30)')),
  escalate(row('RETAKE', 'camera check: sharpness high (2109.60 > 2011.80)')),
  escalate(row('RETAKE', 'camera check: brightness low (40.00 > 94.00)'))];
console.log(JSON.stringify({{ fixable: rows.map(O.fixable), confirmable: rows.map(O.confirmable),
  routes: seq.map((r) => r.route), escalated: seq.map((r) => r.escalated === true),
  action: O.operatorAction(rows[1]) }}));
""")
    res = subprocess.run(["node", str(module)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["fixable"] == [True, False, False, False, True, False]
    assert out["confirmable"] == [False, True, True, True, False, False]
    assert out["routes"] == ["RETAKE", "REVIEW", "RETAKE", "RETAKE"]   # other numbers, same cause: escalated
    assert out["escalated"] == [False, True, False, False]
    assert out["action"] == "Flat photo: check the lamp and that the part fills the frame"
