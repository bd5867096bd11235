"""Image I/O shared by every stage and by deployment: decode once, grayscale, one resize method.

Consumers (the browser app, line software) must prepare images exactly like
``prepare``: decode to 8-bit grayscale, resize with OpenCV's INTER_AREA to the
model's square input, feed raw 0-255 values (the model rescales inside).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from stages.errors import UserError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
RESIZE_METHOD = "opencv INTER_AREA (pixel-area averaging), square, no crop or padding"
MIN_SIDE = 32


def decode_gray(data: bytes) -> tuple[np.ndarray | None, str]:
    """Decode image bytes to a 2-D uint8 grayscale array; on failure return (None, reason)."""
    if not data:
        return None, "empty file"
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
    if img is None:
        return None, "not a decodable image"
    if img.dtype != np.uint8:  # 16-bit PNG/TIFF
        img = cv2.convertScaleAbs(img, alpha=255.0 / max(1, int(img.max())))
    if min(img.shape[:2]) < MIN_SIDE:
        return None, f"too small ({img.shape[1]}x{img.shape[0]} px, need >= {MIN_SIDE})"
    return img, ""


def read_gray(path: Path | str) -> np.ndarray:
    """Read one image file as grayscale uint8 or raise UserError naming the file."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror}; check the path and permissions") from None
    img, reason = decode_gray(data)
    if img is None:
        raise UserError(f"{path}: {reason}; remove the file or re-run the split stage to quarantine it")
    return img


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """The one resize every consumer must reproduce (see RESIZE_METHOD)."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)


def prepare(img: np.ndarray, size: int) -> np.ndarray:
    """Grayscale uint8 image -> float32 [size, size, 1] of raw 0-255 values, the model's input."""
    return resize(img, size).astype(np.float32)[..., None]


def load_images(paths: Sequence[Path | str], size: int, desc: str = "decode", workers: int = 4) -> np.ndarray:
    """Decode and resize many files in parallel (OpenCV releases the GIL) into uint8 [N, size, size]."""
    out = np.empty((len(paths), size, size), np.uint8)

    def one(i: int) -> None:
        out[i] = resize(read_gray(paths[i]), size)

    with ThreadPoolExecutor(workers) as pool:
        list(tqdm(pool.map(one, range(len(paths))), total=len(paths), desc=desc, unit="img", mininterval=2))
    return out


def read_many(paths: Sequence[Path | str], workers: int = 4) -> list[np.ndarray]:
    """Decode many files at full resolution, in parallel, keeping their order."""
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(read_gray, paths))


def iter_image_files(folder: Path) -> Iterable[Path]:
    """Every regular, non-hidden file under ``folder`` in sorted order (non-images included)."""
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts):
            yield p


def encode_jpeg(img: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return buf.tobytes()
