"""Memory scaling of the training data path: `python tools/bench.py --memory-scaling` (part of `make bench`).

Trains one epoch (train.max_epochs=1) on the dataset (the Kaggle mirror) and on a set SCALE times larger at the
same image size, each in a scratch copy of the repository (this workspace's data/, models/, params.yaml and
MLflow store are not touched), and records wall time and peak resident memory of every stage process
(os.wait4 rusage of `python -m stages.<stage>`) plus the train stage's images/s, for train.input=stream (the
shards through tf.data) and train.input=memory (the whole split in one array: the path before the shards).

The larger set: every source image once as is plus SCALE-1 re-encoded variants (one of the 8 flips/right-angle
rotations, exposure gain 0.85-1.15 and offset -8..8 grey levels, JPEG quality 85-95; seeded), written as a
folder with the source's layout. Re-encoding takes ~1 ms per 300 px image; the synthetic generator
(data.source=synthetic) takes ~40 ms, i.e. ~45 min for 66,000 images on one core.
Both runs use split.near_duplicates.method=none: the thumbnail search is quadratic in the images (and would
group each variant with its original, which is right but not what is measured here).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from inspection.config import set_dotted
from inspection.fsutil import dir_size
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
METHOD = ("1 epoch per run, each stage its own process in a scratch copy of the repository, peak RSS from os.wait4; "
          "the larger set = every source image + re-encoded variants (D4 flip/rotation, gain 0.85-1.15, offset -8..8, "
          "JPEG q85-95); split.near_duplicates.method=none for both")
RSS_LIMIT = 1.30        # stream: peak RSS of the train stage, larger set / dataset
THROUGHPUT_LIMIT = 0.90  # stream images/s >= this x memory images/s


def _members(source: Path) -> list[tuple[str, bytes | Path]]:
    """(relative path, bytes or file) of every image in a zip or folder, sorted."""
    if source.is_file():
        with zipfile.ZipFile(source) as zf:
            return [(m.filename, zf.read(m)) for m in sorted(zf.infolist(), key=lambda m: m.filename)
                    if not m.is_dir() and Path(m.filename).suffix.lower() in IMAGE_SUFFIXES]
    return [(p.relative_to(source).as_posix(), p) for p in sorted(source.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


def make_larger(source: Path, dest: Path, scale: int, seed: int = 0) -> dict:
    """Write the source's images and scale-1 re-encoded variants of each into dest (see the module docstring)."""
    import cv2

    marker = dest / ".complete.json"
    recipe = {"source": str(source), "scale": scale, "seed": seed, "method": "D4 + gain/offset + JPEG q85-95"}
    if marker.exists() and json.loads(marker.read_text()).get("recipe") == recipe:
        return json.loads(marker.read_text())
    shutil.rmtree(dest, ignore_errors=True)
    members = _members(source)
    t0 = time.perf_counter()

    def one(i: int) -> int:
        rel, data = members[i]
        raw = data if isinstance(data, bytes) else data.read_bytes()
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
        img = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_GRAYSCALE)
        written = len(raw)
        if img is None:
            return written
        rng = np.random.default_rng([seed, i])
        for k in range(1, scale):
            v = np.rot90(img, k % 4)
            v = np.ascontiguousarray(v[:, ::-1] if (k // 4) % 2 else v)
            v = cv2.convertScaleAbs(v, alpha=float(rng.uniform(0.85, 1.15)), beta=float(rng.uniform(-8, 8)))
            ok, buf = cv2.imencode(".jpg", v, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(85, 96))])
            out = target.with_name(f"{target.stem}__v{k}.jpg")
            out.write_bytes(buf.tobytes())
            written += len(buf)
        return written

    with ThreadPoolExecutor(2) as pool:
        total = sum(pool.map(one, range(len(members))))
    seconds = time.perf_counter() - t0
    info = {"recipe": recipe, "images": len(members) * scale, "source_images": len(members), "bytes": total,
            "seconds": round(seconds, 1), "images_per_second": round(len(members) * scale / seconds, 1)}
    marker.write_text(json.dumps(info, indent=2))
    return info


def workspace(dest: Path) -> Path:
    """A copy of the repository's source files (what git tracks or would track; no data, models, venv)."""
    if dest.exists():
        shutil.rmtree(dest)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def set_params(ws: Path, changes: dict[str, object]) -> None:
    """ws/params.yaml = the repository's params.yaml with dotted-key changes (the scratch copy only)."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    set_dotted(params, changes)
    (ws / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_stage(ws: Path, stage: str) -> dict:
    """`python -m stages.<stage>` in ws; its wall time and peak RSS (rusage of exactly that process)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MLFLOW_TRACKING_URI=f"sqlite:///{(ws / 'mlflow.db').as_posix()}")
    log = ws / f"{stage}.log"
    t0 = time.perf_counter()
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", f"stages.{stage}"], cwd=ws, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        tail = log.read_text(errors="replace").splitlines()[-25:]
        sys.exit(f"error: stage {stage} failed in {ws} ({proc.returncode}):\n" + "\n".join(tail))
    res = {"seconds": round(seconds, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024)}
    print(f"bench: {ws.name}: {stage}: {res['seconds']} s, peak RSS {res['peak_rss_mib']} MiB", flush=True)
    return res




def prepare(ws: Path, data: Path, epochs: int) -> dict:
    base = {"data.source": "local", "data.local.path": str(data.resolve()), "data.local.sha256": None,
            "split.near_duplicates.method": "none", "train.max_epochs": epochs}
    set_params(ws, base)
    stages = {s: run_stage(ws, s) for s in ("download", "split", "shards")}
    split = json.loads((ws / "reports/data.json").read_text())["counts"]
    return {"params": base, "stages": stages, "counts": split,
            "train_images": sum(split["train"].values()), "raw_bytes": dir_size(ws / "data/raw"),
            "shard_bytes": dir_size(ws / "data/shards")}


def train(ws: Path, base: dict, mode: str) -> dict:
    set_params(ws, {**base, "train.input": mode})
    res = run_stage(ws, "train")
    run = json.loads((ws / "models/mlflow_run.json").read_text())
    return {"input": mode, **res, "train_images_per_second": round(run["train_images_per_second"], 1),
            "train_seconds": round(run["train_seconds"], 1), "epochs": run["epochs_run"]}


def median(rows: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rows]))


def measure(data: Path, scratch: Path, scale: int = 10, epochs: int = 1, repeats: int = 2,
            memory_on_larger: bool = True) -> dict:
    """The whole measurement; returns the dict stored under "memory_scaling" in reports/benchmark.json."""
    scratch.mkdir(parents=True, exist_ok=True)
    print(f"bench: memory scaling in {scratch}: {data} and a x{scale} set, {epochs} epoch(s)", flush=True)
    small_ws = workspace(scratch / "dataset")
    small = prepare(small_ws, data, epochs)
    small_runs = []
    for _ in range(repeats):  # alternate, so machine-load drift hits both inputs alike
        small_runs += [train(small_ws, small["params"], "memory"), train(small_ws, small["params"], "stream")]
    print(f"bench: generating the x{scale} set", flush=True)
    generated = make_larger(data, scratch / f"x{scale}-source", scale)
    print(f"bench: {generated['images']} images, {generated['bytes'] / 2**20:.0f} MiB in {generated['seconds']} s "
          f"({generated['images_per_second']} images/s)", flush=True)
    large_ws = workspace(scratch / f"x{scale}")
    large = prepare(large_ws, scratch / f"x{scale}-source", epochs)
    large_runs = [train(large_ws, large["params"], "stream")]
    if memory_on_larger:
        large_runs.append(train(large_ws, large["params"], "memory"))

    def summary(runs: list[dict], mode: str) -> dict | None:
        rows = [r for r in runs if r["input"] == mode]
        return {"peak_rss_mib": median(rows, "peak_rss_mib"),
                "train_images_per_second": median(rows, "train_images_per_second"), "runs": rows} if rows else None

    s_small, m_small = summary(small_runs, "stream"), summary(small_runs, "memory")
    s_large, m_large = summary(large_runs, "stream"), summary(large_runs, "memory")
    rss_ratio = s_large["peak_rss_mib"] / s_small["peak_rss_mib"]
    speed_ratio = s_small["train_images_per_second"] / m_small["train_images_per_second"]
    speed_ratio_large = (s_large["train_images_per_second"] / m_large["train_images_per_second"]) if m_large else None
    return {
        "method": METHOD,
        "scale": scale, "epochs": epochs,
        "datasets": {"dataset": {"source": str(data), **{k: v for k, v in small.items() if k != "params"}},
                     f"x{scale}": {"source": f"generated from {data}", "generation": generated,
                                   **{k: v for k, v in large.items() if k != "params"}}},
        "train": {"dataset": {"stream": s_small, "memory": m_small}, f"x{scale}": {"stream": s_large, "memory": m_large}},
        "checks": {
            "stream_peak_rss_ratio": round(rss_ratio, 3), "stream_peak_rss_limit": RSS_LIMIT,
            "stream_peak_rss_ok": rss_ratio <= RSS_LIMIT,
            "memory_peak_rss_ratio": round(m_large["peak_rss_mib"] / m_small["peak_rss_mib"], 3) if m_large else None,
            "stream_vs_memory_images_per_second": round(speed_ratio, 3),
            "stream_vs_memory_images_per_second_larger": round(speed_ratio_large, 3) if speed_ratio_large else None,
            "throughput_limit": THROUGHPUT_LIMIT, "throughput_ok": speed_ratio >= THROUGHPUT_LIMIT},
    }


def markdown(m: dict) -> str:
    key = f"x{m['scale']}"
    d, t, c = m["datasets"], m["train"], m["checks"]
    mib = lambda b: f"{b / 2**20:,.0f} MiB"  # noqa: E731

    def row(name: str, mode: str) -> str:
        r = t[name][mode]
        if r is None:
            return f"| {name} | {mode} | not run | | |"
        return (f"| {name} ({d[name]['train_images']:,} train images) | {mode} | {r['peak_rss_mib']:,.0f} MiB | "
                f"{r['train_images_per_second']:.0f} | {len(r['runs'])} |")

    g = d[key]["generation"]
    lines = ["## Memory scaling of the training data path", "",
             f"One epoch per run (train.max_epochs={m['epochs']}), `python tools/bench.py --memory-scaling`; the "
             f"{key} set: {g['images']:,} images generated in {g['seconds']} s ({g['images_per_second']:.0f} images/s) "
             "by re-encoding flipped/rotated, exposure-shifted copies of every source image.", "",
             "| dataset | train.input | train stage peak RSS | training images/s | runs (median) |", "|---|---|---|---|---|",
             row("dataset", "stream"), row("dataset", "memory"), row(key, "stream"), row(key, "memory"), "",
             f"Bytes on disk: source copy {mib(d['dataset']['raw_bytes'])} / {mib(d[key]['raw_bytes'])}, shards "
             f"{mib(d['dataset']['shard_bytes'])} / {mib(d[key]['shard_bytes'])}.", "",
             f"Stream peak RSS {key} / dataset: {c['stream_peak_rss_ratio']:.2f} (limit {c['stream_peak_rss_limit']}: "
             f"{'met' if c['stream_peak_rss_ok'] else 'NOT met'})"
             + (f"; the whole-array path: {c['memory_peak_rss_ratio']:.2f}" if c["memory_peak_rss_ratio"] else "") + ".",
             f"Stream / whole-array images/s on the dataset: {c['stream_vs_memory_images_per_second']:.3f} (limit "
             f"{c['throughput_limit']}: {'met' if c['throughput_ok'] else 'NOT met'})"
             + (f"; on the {key} set: {c['stream_vs_memory_images_per_second_larger']:.3f}"
                if c["stream_vs_memory_images_per_second_larger"] else "") + "."]
    return "\n".join(lines) + "\n"
