"""Synthetic impeller castings: a disc with hub and curved blades, seen from the top.

Defective parts carry one or two small defects (pin holes, cracks, burrs on the
rim, chipped rims) at random positions and contrast, so a model must look at
local detail; lighting, pose and noise vary the same way for both classes, so
global image statistics do not give the answer away.
"""
from __future__ import annotations

import math
import cv2
import numpy as np


DEFECT_KINDS = ("hole", "crack", "burr", "chip")


SUPERSAMPLING = 4  # parts are drawn at 4x and reduced: smooth edges


def _draw_casting(rng: np.random.Generator, big: int) -> tuple[np.ndarray, dict]:
    """A good casting at ``big`` px: background, rim, curved blades from hub to rim, hub and bore."""
    bg = rng.uniform(25, 60)
    img = np.full((big, big), bg, np.float32)
    cx = big / 2 + rng.normal(0, 0.01) * big
    cy = big / 2 + rng.normal(0, 0.01) * big
    c = (int(cx), int(cy))
    radius = big * rng.uniform(0.40, 0.44)
    body = rng.uniform(120, 170)
    cv2.circle(img, c, int(radius), body, -1, cv2.LINE_AA)
    cv2.circle(img, c, int(radius * 0.93), body + rng.uniform(10, 25), max(1, int(radius * 0.03)), cv2.LINE_AA)
    n_blades = int(rng.integers(6, 9))
    phase = rng.uniform(0, 2 * math.pi)
    sweep = rng.uniform(0.5, 0.9)
    shade = body - rng.uniform(30, 55)
    for k in range(n_blades):
        a0 = phase + 2 * math.pi * k / n_blades
        pts = []
        for t in np.linspace(0.0, 1.0, 24):
            r = radius * (0.22 + 0.62 * t)
            a = a0 + sweep * t
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        cv2.polylines(img, [np.array(pts, np.int32)], False, shade, max(1, int(big * 0.018)), cv2.LINE_AA)
    hub = body + rng.uniform(20, 45)
    cv2.circle(img, c, int(radius * 0.22), hub, -1, cv2.LINE_AA)
    cv2.circle(img, c, int(radius * 0.09), bg * 0.7, -1, cv2.LINE_AA)
    return img, {"cx": cx, "cy": cy, "radius": radius, "body": body, "bg": bg}


def _draw_defect(img: np.ndarray, rng: np.random.Generator, kind: str, part: dict, big: int) -> tuple[float, float]:
    """Draw one defect of ``kind`` on the casting; returns its centre in ``big`` px."""
    cx, cy, radius, body = part["cx"], part["cy"], part["radius"], part["body"]
    a = rng.uniform(0, 2 * math.pi)
    contrast = rng.uniform(0.45, 0.9)
    if kind == "hole":
        r = radius * rng.uniform(0.3, 0.85)
        p = (cx + r * math.cos(a), cy + r * math.sin(a))
        cv2.circle(img, (int(p[0]), int(p[1])), int(big * rng.uniform(0.012, 0.025)),
                   body * (1 - contrast), -1, cv2.LINE_AA)
    elif kind == "crack":
        r = radius * rng.uniform(0.3, 0.8)
        p = np.array([cx + r * math.cos(a), cy + r * math.sin(a)])
        direction = rng.uniform(0, 2 * math.pi)
        pts = [p.copy()]
        for _ in range(int(rng.integers(6, 12))):
            direction += rng.normal(0, 0.5)
            p = p + big * 0.012 * np.array([math.cos(direction), math.sin(direction)])
            pts.append(p.copy())
        cv2.polylines(img, [np.array(pts, np.int32)], False, body * (1 - contrast),
                      max(1, int(big * rng.uniform(0.004, 0.008))), cv2.LINE_AA)
        p = pts[len(pts) // 2]
    elif kind == "burr":
        r = radius * 1.0
        p = (cx + r * math.cos(a), cy + r * math.sin(a))
        axes = (int(big * rng.uniform(0.02, 0.035)), int(big * rng.uniform(0.008, 0.015)))
        cv2.ellipse(img, (int(p[0]), int(p[1])), axes, math.degrees(a), 0, 360,
                    body * rng.uniform(0.9, 1.15), -1, cv2.LINE_AA)
    else:  # chip: a bite out of the rim
        r = radius * rng.uniform(1.0, 1.04)
        p = (cx + r * math.cos(a), cy + r * math.sin(a))
        cv2.circle(img, (int(p[0]), int(p[1])), int(big * rng.uniform(0.03, 0.05)), part["bg"], -1, cv2.LINE_AA)
    return float(p[0]), float(p[1])


def _camera(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Lighting gradient, reduction to ``size`` px, camera blur and sensor noise, identical for both classes."""
    big = img.shape[0]
    yy, xx = np.mgrid[0:big, 0:big].astype(np.float32) / big
    g = rng.uniform(-0.15, 0.15, size=2)
    img *= 1.0 + g[0] * (xx - 0.5) + g[1] * (yy - 0.5)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.3, 0.9))
    img += rng.normal(0, rng.uniform(2, 6), img.shape).astype(np.float32)
    return np.clip(img * rng.uniform(0.85, 1.15), 0, 255).astype(np.uint8)


def render_part(rng: np.random.Generator, size: int, defects: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Return (uint8 grayscale image, list of defects drawn with their kind and centre in px)."""
    big = size * SUPERSAMPLING
    img, part = _draw_casting(rng, big)
    drawn = []
    for kind in (rng.choice(DEFECT_KINDS, size=defects, replace=True) if defects else []):
        x, y = _draw_defect(img, rng, str(kind), part, big)
        drawn.append({"kind": str(kind), "x": x / SUPERSAMPLING, "y": y / SUPERSAMPLING})
    return _camera(img, rng, size), drawn


def generate(n_per_class: int, size: int, seed: int):
    """Yield (class_key, index, image, defects) with class_key 'defect' or 'ok', deterministically."""
    for key, n_defects in (("defect", (1, 2)), ("ok", (0, 0))):
        for i in range(n_per_class):
            rng = np.random.default_rng([seed, 0 if key == "defect" else 1, i])
            k = int(rng.integers(n_defects[0], n_defects[1] + 1))
            img, drawn = render_part(rng, size, k)
            yield key, i, img, drawn
