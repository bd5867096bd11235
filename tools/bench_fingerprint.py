"""Benchmark of the sources stage's fingerprint on a large folder (part of `make bench`).

Usage: python tools/bench_fingerprint.py [--files 50000] [--out reports/bench_fingerprint.json]

Builds a temporary folder of ``--files`` photos in two class folders (copies of one 300x300 JPEG, each made
unique by a trailing byte, as a plant's image folder would hold), then times inspection.data.fingerprint on it:
cold (no hash cache: every file is read), warm (the cache from the cold run: one stat per file), and after
adding one photo and replacing another (two files read). Writes the seconds and cache hits/misses as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build(folder: Path, n: int) -> None:
    import cv2
    import numpy as np

    img = np.random.default_rng(0).integers(0, 255, (300, 300), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpeg", img)
    data = buf.tobytes()
    for cls in ("def_front", "ok_front"):
        (folder / cls).mkdir(parents=True)
    for i in range(n):
        (folder / ("def_front" if i % 2 else "ok_front") / f"cast_{i:06d}.jpeg").write_bytes(data + i.to_bytes(4, "big"))


def timed(folder: Path, cache_file: Path) -> dict:
    from inspection.data.fingerprint import HashCache, fingerprint

    cache = HashCache(cache_file)
    t0 = time.perf_counter()
    fp = fingerprint(str(folder), cache)
    seconds = time.perf_counter() - t0
    cache.save()
    return {"seconds": round(seconds, 3), "files": fp["files"], "hashed": cache.misses, "from_cache": cache.hits,
            "sha256": fp["sha256"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=50000)
    ap.add_argument("--out", default=str(ROOT / "reports/bench_fingerprint.json"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-fingerprint-") as tmp:
        folder, cache_file = Path(tmp) / "photos", Path(tmp) / "cache.json"
        t0 = time.perf_counter()
        build(folder, args.files)
        print(f"bench_fingerprint: {args.files} files written in {time.perf_counter() - t0:.1f} s")
        cold = timed(folder, cache_file)
        warm = timed(folder, cache_file)
        (folder / "ok_front" / "new.jpeg").write_bytes(b"new photo")
        (folder / "def_front" / "cast_000001.jpeg").write_bytes(b"replaced")
        changed = timed(folder, cache_file)
    result = {"files": args.files, "cold": cold, "warm": warm, "two_changed": changed,
              "warm_over_cold": round(warm["seconds"] / cold["seconds"], 3)}
    assert warm["sha256"] == cold["sha256"] and changed["sha256"] != warm["sha256"]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    for k in ("cold", "warm", "two_changed"):
        r = result[k]
        print(f"bench_fingerprint: {k:>11}: {r['seconds']:.2f} s ({r['hashed']} read, {r['from_cache']} from the cache)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
