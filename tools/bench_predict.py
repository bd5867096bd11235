"""Benchmark of the batch CLI (python -m commands.predict): throughput and peak memory.

Throughput on 300x300 JPEGs including decoding, and peak memory at two input sizes (it must stay flat: the CLI streams).

Usage: python tools/bench_predict.py [--model models] [--images 2000] [--large 20000] [--repeats 3]
Input photos: the test split's files (data/split/manifest.csv; the Kaggle photos are 300x300 JPEGs),
hard-linked over and over into a temporary folder, or synthetic 300 px parts when there is no split.
Writes reports/bench_predict.json and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def photos(folder: Path, n: int) -> list[Path]:
    """n JPEG files in folder: links to the test split's photos, cycled (or synthetic parts)."""
    src: list[Path] = []
    manifest = ROOT / "data/split/manifest.csv"
    if manifest.exists():
        from inspection.fsutil import read_csv

        src = [ROOT / r["path"] for r in read_csv(manifest) if r["split"] == "test"]
    if not src:
        import numpy as np

        from inspection.data.images import encode_jpeg
        from inspection.data.synthetic import render_part

        for i in range(64):
            p = folder / f"src_{i}.jpeg"
            p.write_bytes(encode_jpeg(render_part(np.random.default_rng(i), 300, i % 2)[0]))
            src.append(p)
    out = []
    for i in range(n):
        dst = folder / "in" / f"{i:06d}.jpeg"
        dst.parent.mkdir(exist_ok=True)
        if not dst.exists():
            os.link(src[i % len(src)], dst)
        out.append(dst)
    return out


def throughput(model: str, files: list[Path], repeats: int) -> dict:
    from inspection.deploy.predictor import expand, load_predictor, predict_items

    pred = load_predictor(model)
    list(predict_items(expand([str(f) for f in files[:128]]), pred))  # warm-up: graph tracing, thread pools
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = sum(1 for _ in predict_items(expand([str(f) for f in files]), pred))
        rates.append(n / (time.perf_counter() - t0))
    return {"images": len(files), "repeats": repeats, "images_per_second_median": statistics.median(rates),
            "images_per_second": rates}


def peak_rss_mib(model: str, folder: Path) -> float:
    """Peak resident memory of one CLI process over the whole folder (ru_maxrss of the child, measured from a fresh
    wrapper process so that earlier children do not count)."""
    code = ("import os, resource, subprocess, sys; subprocess.run([sys.executable, '-m', 'commands.predict', sys.argv[1], "
            "'--model', sys.argv[2], '--out', os.devnull], check=True, stderr=subprocess.DEVNULL); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)")
    res = subprocess.run([sys.executable, "-c", code, str(folder), model], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    return float(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="models")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--large", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        small_dir, large_dir = Path(tmp) / "small", Path(tmp) / "large"
        small_dir.mkdir(), large_dir.mkdir()
        files = photos(small_dir, args.images)
        speed = throughput(args.model, files, args.repeats)
        print(f"predict: {speed['images_per_second_median']:.0f} images/s (median of {args.repeats}, "
              f"{args.images} 300x300 JPEGs, decoding included)")
        photos(large_dir, args.large)
        rss = {"small": {"images": args.images, "peak_rss_mib": peak_rss_mib(args.model, small_dir / "in")},
               "large": {"images": args.large, "peak_rss_mib": peak_rss_mib(args.model, large_dir / "in")}}
        print(f"predict: peak RSS {rss['small']['peak_rss_mib']:.0f} MiB for {args.images} files, "
              f"{rss['large']['peak_rss_mib']:.0f} MiB for {args.large} files")
    out = {"throughput": speed, "peak_rss": rss, "cpus": os.cpu_count(), "model": args.model}
    (ROOT / "reports").mkdir(exist_ok=True)
    (ROOT / "reports/bench_predict.json").write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
