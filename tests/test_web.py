"""The page's image preparation (web/src/preprocess.js) against the Python pipeline's, in Node:
the resize must reproduce OpenCV's INTER_AREA pixel for pixel, the drift statistics must match
stages/imagestats.py, and the verdict/review routing must follow metadata.json."""
from __future__ import annotations

import json
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from conftest import REPO

from stages.imagestats import drift_flags, features

pytestmark = pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")


def run_js(tmp_path, script: str, arrays: dict[str, np.ndarray] | None = None, payload: object = None):
    """Run an ES module that imports web/src/preprocess.js as `P`; it gets `input` (JSON) and
    `bins[name]` (Uint8Array) and sets `output`."""
    for name, a in (arrays or {}).items():
        (tmp_path / f"{name}.bin").write_bytes(np.ascontiguousarray(a, np.uint8).tobytes())
    (tmp_path / "input.json").write_text(json.dumps(payload))
    module = tmp_path / "run.mjs"
    module.write_text(f"""
import {{ readFileSync, writeFileSync }} from 'node:fs';
import * as P from '{(REPO / 'web/src/preprocess.js').as_uri()}';
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


def test_drift_flags_follow_the_reference_like_python(tmp_path):
    ref = {"features": {"brightness": {"min": 120.0, "max": 160.0}, "contrast": {"min": 50.0, "max": 68.0},
                        "sharpness": {"min": 300.0, "max": 2000.0}}}
    cases = [{"brightness": 140, "contrast": 60, "sharpness": 900},
             {"brightness": 175, "contrast": 70, "sharpness": 900},
             {"brightness": 100, "contrast": 60, "sharpness": 120}]
    out = run_js(tmp_path, "output = input.cases.map((s) => P.driftFlags(s, input.ref));", payload={"cases": cases, "ref": ref})
    assert out == [drift_flags(c, ref) for c in cases]
    assert out == [[], ["brightness high", "contrast high"], ["brightness low", "sharpness low"]]


def test_verdict_uses_the_threshold_and_the_review_band(tmp_path):
    band = {"low": 0.02, "high": 0.9}
    probs = [0.0, 0.0199, 0.02, 0.5, 0.628, 0.9, 1.0]
    out = run_js(tmp_path, """output = {
  band: input.p.map((p) => P.verdict(p, 0.628, input.band)),
  none: input.p.map((p) => P.verdict(p, 0.628, null)) };""", payload={"p": probs, "band": band})
    assert [v["label"] for v in out["band"]] == ["ok"] * 4 + ["defect"] * 3
    assert [v["route"] for v in out["band"]] == ["pass", "pass", "review", "review", "review", "reject", "reject"]
    assert [v["route"] for v in out["none"]] == ["pass"] * 4 + ["reject"] * 3


def test_rgba_to_gray_is_opencv_rgb2gray(tmp_path):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((16, 16), 255, np.uint8)])
    out = run_js(tmp_path, "output = Array.from(P.rgbaToGray(bins.rgba, 16, 16));", {"rgba": rgba})
    np.testing.assert_array_equal(np.array(out, np.uint8).reshape(16, 16), cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
