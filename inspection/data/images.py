"""Image I/O shared by every stage and by deployment: decode once, grayscale, one resize method.

Consumers (the browser app, line software) must prepare images exactly like
``prepare``: decode to 8-bit grayscale, resize with OpenCV's INTER_AREA to the
model's square input, feed raw 0-255 values (the model rescales inside).
"""
from __future__ import annotations

import io
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Sequence
import cv2
import numpy as np
from tqdm import tqdm
from inspection.errors import UserError
from inspection.interrupts import check_interrupted


IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp"}
ARCHIVES = {".zip", ".tar", ".gz", ".tgz", ".bz2", ".xz", ".7z", ".rar"}   # nested archives are refused, never read
RESIZE_METHOD = "opencv INTER_AREA (pixel-area averaging), square, no crop or padding"
MIN_SIDE = 32


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) read from the image header only (Pillow parses the first bytes; no pixels are
    decoded), or None when Pillow does not know the format."""
    from PIL import Image, UnidentifiedImageError

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)  # we apply our own limit
    try:
        with Image.open(io.BytesIO(data)) as im:
            return int(im.size[0]), int(im.size[1])
    except Image.DecompressionBombError as exc:  # above twice Pillow's own limit: ask the format plugin itself
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept is not None and not accept(data[:16]):
                continue
            try:
                return tuple(int(v) for v in factory(io.BytesIO(data), "").size)
            except Exception:  # noqa: BLE001 - not this format
                continue
        m = re.search(r"\((\d+) pixels\)", str(exc))
        return (int(m.group(1)), 1) if m else (1 << 31, 1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, IndexError, TypeError, EOFError):
        return None


def high_bit_depth(data: bytes) -> str:
    """The reason to refuse a 16-bit (or 32-bit) image, read from its header, else ''. Decoded to 8 bits by the
    top byte, a 12-bit sensor image in a 16-bit PNG would become nearly black; scaling by its own maximum would
    make every photo's exposure look alike. The line's cameras write 8-bit JPEG/PNG: ask for that. The page
    (web/src/preprocess.js pngBitDepth, and TIFF's BitsPerSample) gives the same reason."""
    if data[:8] == PNG_SIGNATURE and len(data) > 25 and data[12:16] == b"IHDR":
        return f"{data[24]}-bit image; save it as an 8-bit JPEG or PNG" if data[24] > 8 else ""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            mode = im.mode
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, IndexError, TypeError, EOFError,
            Image.DecompressionBombError):
        return ""
    if mode.startswith("I;16") or mode in ("I", "F"):
        return f"{16 if mode.startswith('I;16') else 32}-bit image; save it as an 8-bit JPEG or PNG"
    return ""


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def has_alpha(data: bytes) -> bool:
    """From the header: a PNG with an alpha channel or a transparent palette entry (tRNS), or a TIFF with
    extra (alpha) samples."""
    if data[:8] == PNG_SIGNATURE and len(data) > 25:
        return data[25] in (4, 6) or b"tRNS" in data[:data.find(b"IDAT") if b"IDAT" in data else 4096]
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        from PIL import Image

        try:
            with Image.open(io.BytesIO(data)) as im:
                return im.mode in ("RGBA", "LA", "PA")
        except Exception:  # noqa: BLE001 - OpenCV decides what it can read
            return False
    return False


def flatten_alpha(img: np.ndarray) -> np.ndarray:
    """A decoded image with an alpha channel (BGRA, or gray+alpha) -> 8-bit gray over black, as the page does it
    (web/src/preprocess.js rgbaToGray with alpha): gray = (gray(RGB) * alpha + 127) // 255."""
    if img.ndim == 3 and img.shape[2] == 4:
        gray, alpha = cv2.cvtColor(img[..., :3], cv2.COLOR_BGR2GRAY), img[..., 3]
    else:
        gray, alpha = img[..., 0], img[..., 1]
    return ((gray.astype(np.uint32) * alpha + 127) // 255).astype(np.uint8)


def too_large(data: bytes, max_pixels: int) -> str:
    """The quarantine reason when the header says the image has more than ``max_pixels`` pixels, else ''."""
    size = header_size(data)
    if size is None or size[0] * size[1] <= max_pixels:
        return ""
    shown = f"{size[0]}x{size[1]} px" if size[1] > 1 else f"{size[0]:,} px"
    return (f"too large ({shown} = {size[0] * size[1] / 1e6:.0f} MP, limit data.max_image_pixels "
            f"{max_pixels / 1e6:g} MP; read from the header, not decoded)")


def decode_gray(data: bytes, max_pixels: int | None = None) -> tuple[np.ndarray | None, str]:
    """Decode image bytes to a 2-D uint8 grayscale array; on failure return (None, reason).
    With ``max_pixels`` (data.max_image_pixels), larger images are refused from their header alone."""
    if not data:
        return None, "empty file"
    if max_pixels is not None:
        reason = too_large(data, max_pixels)
        if reason:
            return None, reason
    deep = high_bit_depth(data)
    if deep:   # split quarantines it, predict and the page route it RETAKE: never a silent 8-bit squeeze
        return None, deep
    try:
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)
        if img is not None and has_alpha(data):   # the page's contract: over black, not OpenCV's drop of alpha
            full = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
            if full is not None and full.dtype == np.uint8 and full.ndim == 3 and full.shape[2] in (2, 4):
                img = flatten_alpha(full)
    except cv2.error as exc:  # e.g. above OpenCV's own pixel limit (CV_IO_MAX_IMAGE_PIXELS)
        if "CV_IO_MAX_IMAGE" in str(exc):
            return None, "too large to decode (above OpenCV's CV_IO_MAX_IMAGE_PIXELS)"
        return None, "not a decodable image (OpenCV error)"
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
        check_interrupted()  # after Ctrl-C the queued decodes end at once instead of running to the end
        out[i] = resize(read_gray(paths[i]), size)

    with ThreadPoolExecutor(workers) as pool:
        list(tqdm(pool.map(one, range(len(paths))), total=len(paths), desc=desc, unit="img", mininterval=2))
    return out


def read_many(paths: Sequence[Path | str], workers: int = 4) -> list[np.ndarray]:
    """Decode many files at full resolution, in parallel, keeping their order."""
    def one(path: Path | str) -> np.ndarray:
        check_interrupted()
        return read_gray(path)

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, paths))


def undecodable_name(path: Path | str) -> str:
    """The quarantine reason when a file name is not valid UTF-8 (it cannot go into a CSV, JSON or a log
    line as it is), else ''. The name is shown with the odd bytes escaped."""
    try:
        str(path).encode("utf-8")
        return ""
    except UnicodeEncodeError:
        return f"file name is not valid UTF-8 ({printable_name(path)}); rename it"


def printable_name(path: Path | str) -> str:
    """A path as text, with bytes that are not UTF-8 escaped (\\xe9)."""
    import os

    return os.fsencode(str(path)).decode("utf-8", "backslashreplace")


def not_a_photo_path(part: str) -> bool:
    """A hidden file or folder, or a macOS zip's resource forks (__MACOSX): every reader of folders and archives
    passes over them."""
    return part.startswith(".") or part == "__MACOSX"


def pixel_sha256(img: np.ndarray) -> str:
    """The identity of a decoded photo: sha256 of its grayscale pixels and shape (the split manifest's sha256;
    promote matches golden photos against it)."""
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(img).tobytes() + str(img.shape).encode()).hexdigest()


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
