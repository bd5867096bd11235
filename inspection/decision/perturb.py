"""Camera drift, simulated: the perturbations of the robustness battery (evaluate stage).

Each perturbation acts on a full-resolution 8-bit grayscale photo, as the camera would
deliver it, before the model's resize. All are deterministic given the seed.

kinds (value):
  gain (factor)        exposure: pixel * factor, clipped to 0-255
  gamma (exponent)     255 * (pixel / 255) ** exponent
  contrast (factor)    (pixel - image mean) * factor + image mean
  blur (sigma px)      Gaussian defocus
  noise (sigma levels) additive Gaussian sensor noise
  jpeg (quality)       JPEG re-compression at that quality
  rotate (degrees)     rotation about the centre; no value = a random angle per image
  shift (fraction)     translation by that fraction of the side, random direction per image
  scale (factor)       zoom about the centre (>1 closer, <1 farther)
Borders uncovered by rotate/shift/scale are filled by reflection.
"""
from __future__ import annotations

import cv2
import numpy as np


KINDS = ("gain", "gamma", "contrast", "blur", "noise", "jpeg", "rotate", "shift", "scale")


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _warp(img: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = img.shape
    return cv2.warpAffine(img, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def apply(kind: str, value: float | None, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One perturbation of one uint8 [H, W] image; returns uint8 [H, W]."""
    x = img.astype(np.float32)
    h, w = img.shape
    if kind == "gain":
        return _clip(x * value)
    if kind == "gamma":
        return _clip(255.0 * (x / 255.0) ** value)
    if kind == "contrast":
        return _clip((x - x.mean()) * value + x.mean())
    if kind == "blur":
        return cv2.GaussianBlur(img, (0, 0), sigmaX=value, borderType=cv2.BORDER_REFLECT_101)
    if kind == "noise":
        return _clip(x + rng.normal(0.0, value, img.shape))
    if kind == "jpeg":
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(value)])
        return cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    if kind == "rotate":
        angle = float(rng.uniform(0.0, 360.0)) if value is None else value
        return _warp(img, cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), angle, 1.0))
    if kind == "shift":
        theta = rng.uniform(0.0, 2 * np.pi)
        dx, dy = value * w * np.cos(theta), value * h * np.sin(theta)
        return _warp(img, np.float32([[1, 0, dx], [0, 1, dy]]))
    if kind == "scale":
        return _warp(img, cv2.getRotationMatrix2D((w / 2 - 0.5, h / 2 - 0.5), 0.0, value))
    raise ValueError(f"unknown perturbation kind {kind!r}; use one of {', '.join(KINDS)}")


# ----- out-of-distribution battery -------------------------------------------------------------
# Photos the model was not trained to judge. Every one must be routed RETAKE or REVIEW, never PASS
# (issue 11); the evaluate stage writes the routes to reports/eval/ood.csv.
OOD_KINDS = ("blank grey 60", "blank grey 128", "blank grey 200", "black", "white", "noise", "cut off",
             "zoomed in", "foreign object", "label card", "label on the part", "exposure x0.5", "exposure x2",
             "heavy blur")


def _background(img: np.ndarray) -> float:
    """The fixture's grey level: median of the four 10 % corners."""
    h, w = img.shape
    k = max(1, min(h, w) // 10)
    return float(np.median(np.concatenate([img[:k, :k].ravel(), img[:k, -k:].ravel(),
                                           img[-k:, :k].ravel(), img[-k:, -k:].ravel()])))


def _label(out: np.ndarray, rng: np.random.Generator, size: float) -> np.ndarray:
    """A white card (``size`` x the frame's width) with printed lines and a bar code, at a random angle, on ``out``."""
    h, w = out.shape
    card = np.full((int(0.6 * size * h), int(size * w)), float(rng.uniform(225, 250)), np.float32)
    ch, cw = card.shape
    for i, y in enumerate(np.linspace(0.12, 0.55, 4) * ch):   # lines of print
        x = int(0.08 * cw)
        while x < cw * (0.9 if i else 0.6):
            word = int(rng.uniform(0.04, 0.12) * cw)
            card[int(y):int(y + 0.06 * ch), x:x + word] = float(rng.uniform(10, 60))
            x += word + int(0.03 * cw)
    bars = rng.integers(0, 2, max(8, cw // 6))                  # a bar code along the bottom
    for j, bar in enumerate(np.repeat(bars, max(1, int(0.8 * cw) // (2 * len(bars))))):
        if bar and int(0.1 * cw) + j < cw:
            card[int(0.68 * ch):int(0.9 * ch), int(0.1 * cw) + j] = 15.0
    centre = (w / 2 + rng.uniform(-0.15, 0.15) * w, h / 2 + rng.uniform(-0.15, 0.15) * h)
    m = cv2.getRotationMatrix2D((cw / 2, ch / 2), float(rng.uniform(0, 360)), 1.0)
    m[:, 2] += (centre[0] - cw / 2, centre[1] - ch / 2)
    warped = cv2.warpAffine(card, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=-1.0)
    mask = cv2.warpAffine(np.ones_like(card), m, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)
    return _clip(np.where(mask > 0.5, warped, out))


def ood_image(kind: str, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One out-of-distribution image of ``kind`` made from (or shaped like) the photo ``img``."""
    h, w = img.shape
    sensor = lambda level: _clip(np.full((h, w), level, np.float32) + rng.normal(0.0, 2.0, (h, w)))  # noqa: E731
    if kind.startswith("blank grey"):
        return sensor(float(kind.split()[-1]))
    if kind == "black":
        return sensor(3.0)
    if kind == "white":
        return sensor(252.0)
    if kind == "noise":
        return rng.integers(0, 256, (h, w), dtype=np.uint8)
    if kind == "cut off":  # the part half out of the frame, the rest is fixture
        theta = rng.uniform(0.0, 2 * np.pi)
        dx, dy = 0.5 * w * np.cos(theta), 0.5 * h * np.sin(theta)
        return cv2.warpAffine(img, np.float32([[1, 0, dx], [0, 1, dy]]), (w, h), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_CONSTANT, borderValue=_background(img))
    if kind == "zoomed in":  # the camera far too close: a third of the part fills the frame
        cy, cx = int(rng.uniform(0.3, 0.7) * h), int(rng.uniform(0.3, 0.7) * w)
        r = max(8, min(h, w) // 6)
        crop = img[max(0, cy - r):cy + r, max(0, cx - r):cx + r]
        return cv2.resize(crop, (w, h), interpolation=cv2.INTER_CUBIC)
    if kind == "foreign object":  # a wrench and a bolt on the fixture instead of a casting
        out = np.full((h, w), _background(img), np.float32) + rng.normal(0.0, 2.0, (h, w))
        c = (w / 2 + rng.uniform(-0.1, 0.1) * w, h / 2 + rng.uniform(-0.1, 0.1) * h)
        box = cv2.boxPoints((c, (0.8 * w, 0.12 * h), float(rng.uniform(0, 180))))
        cv2.fillPoly(out, [box.astype(np.int32)], float(rng.uniform(150, 220)), cv2.LINE_AA)
        bolt = (int(rng.uniform(0.2, 0.8) * w), int(rng.uniform(0.2, 0.8) * h))
        cv2.circle(out, bolt, int(0.1 * w), float(rng.uniform(120, 200)), -1, cv2.LINE_AA)
        cv2.circle(out, bolt, int(0.05 * w), 20.0, -1, cv2.LINE_AA)
        return _clip(out)
    if kind == "label card":  # the part's label card photographed instead of the part
        return _label(np.full((h, w), _background(img), np.float32) + rng.normal(0.0, 2.0, (h, w)), rng, 0.7)
    if kind == "label on the part":  # a label card left lying on the casting, covering a third of it
        return _label(img.astype(np.float32), rng, 0.45)
    if kind == "exposure x0.5":
        return apply("gain", 0.5, img, rng)
    if kind == "exposure x2":
        return apply("gain", 2.0, img, rng)
    if kind == "heavy blur":
        return apply("blur", 0.03 * min(h, w), img, rng)
    raise ValueError(f"unknown out-of-distribution kind {kind!r}; use one of {', '.join(OOD_KINDS)}")
