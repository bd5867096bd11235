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


def apply_all(kind: str, value: float | None, images: list[np.ndarray], seed: int) -> list[np.ndarray]:
    """The same perturbation on every image, each with its own seeded random stream."""
    return [apply(kind, value, img, np.random.default_rng([seed, i])) for i, img in enumerate(images)]
