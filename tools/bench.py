"""Benchmark: the whole pipeline on a dataset, then the exported model's speed on this CPU.

Usage: python tools/bench.py [--data ZIP_OR_FOLDER] [--skip-repro] [-S key=value ...]
       python tools/bench.py --memory-scaling [--data ZIP_OR_FOLDER] [--scale 10] [--repeats 2] [--scratch DIR]
         (tools/bench_memory.py: the train stage's peak memory and images/s on the data and on a 10x larger
         set, streamed from the shards and with the whole split in memory; adds a section to the reports)
Runs tools/timed_repro.py (wall time and peak memory per stage) with data.source=local, then measures
the SavedModel's throughput at batch 64 and single-image latency (medians of repeated runs, after
warm-up), and writes reports/benchmark.json and reports/benchmark.md with the machine it ran on.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def machine() -> dict:
    import psutil

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": model, "cores": os.cpu_count(), "ram_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}


def saved_model_speed(images: np.ndarray, batch: int = 64, repeats: int = 7, single: int = 300) -> dict:
    """The exported model as every consumer runs it: the model folder loaded and checked against its metadata.json
    (input name, signature, outputs) by inspection.deploy.predictor, both outputs read by name."""
    from inspection.deploy.predictor import load_predictor

    model = load_predictor("models")
    n = len(images) - len(images) % batch
    batches = [images[i:i + batch] for i in range(0, n, batch)]
    for b in batches[:3]:
        model(b)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for b in batches:
            model(b)
        rates.append(n / (time.perf_counter() - t0))
    ones = [images[i % len(images)][None] for i in range(single)]
    for o in ones[:10]:
        model(o)
    lat = []
    for o in ones:
        t0 = time.perf_counter()
        model(o)
        lat.append(1000 * (time.perf_counter() - t0))
    return {"batch": batch, "images_per_run": n, "repeats": repeats,
            "throughput_images_per_s_median": float(np.median(rates)),
            "throughput_images_per_s_all": [round(r, 1) for r in rates],
            "single_image_runs": single, "latency_ms_p50": float(np.percentile(lat, 50)),
            "latency_ms_p95": float(np.percentile(lat, 95))}


def markdown(b: dict) -> str:
    t, m, s, tr = b["stage_seconds"], b["test"], b["saved_model"], b["training"]
    stage_names = [k for k, v in t.items() if k not in ("total", "peak_rss_mib", "exit_code")
                   and isinstance(v, (int, float))]
    lines = [f"Machine: {b['machine']['cpu']}, {b['machine']['cores']} cores, {b['machine']['ram_gib']} GiB RAM, "
             f"Python {b['machine']['python']}", "",
             "| " + " | ".join(stage_names) + " | total |", "|" + "---|" * (len(stage_names) + 1),
             "| " + " | ".join(f"{t[k]} s" for k in stage_names) + f" | {t['total']} s |", "",
             "| measure | value |", "|---|---|",
             f"| model | {tr['arch']}, {tr['parameters']:,} parameters, {tr['image_size']} px |",
             f"| training | {tr['epochs_run']} epochs, {tr['seconds_per_epoch']:.1f} s/epoch (median), "
             f"{tr['train_images_per_second']:.0f} images/s, {tr['train_seconds']:.0f} s |",
             f"| peak resident memory (any stage) | "
             f"{'%s MiB' % b['peak_rss_mib'] if b['peak_rss_mib'] is not None else 'not measured (timings from an older run)'} |",
             f"| test recall / precision | {m['recall']:.4f} / {m['precision']:.4f} |",
             f"| test ROC-AUC | {m['roc_auc']:.4f} |",
             f"| SavedModel throughput, batch {s['batch']} | {s['throughput_images_per_s_median']:.0f} images/s (median of {s['repeats']}) |",
             f"| SavedModel single image p50 / p95 | {s['latency_ms_p50']:.2f} / {s['latency_ms_p95']:.2f} ms |",
             f"| TF.js model | {b['tfjs_bytes']:,} bytes |"]
    for name, r in (b.get("browser") or {}).items():
        if r.get("available"):
            lines.append(f"| browser ({r['detail']}), one image: model / whole page | {r['model_only']['mean_ms']:.1f} "
                         f"(p95 {r['model_only']['p95_ms']:.1f}) / {r['page_per_image']['mean_ms']:.1f} "
                         f"(p95 {r['page_per_image']['p95_ms']:.1f}) ms |")
    return "\n".join(lines) + "\n"


def write_reports(bench: dict) -> str:
    """reports/benchmark.{json,md}; a memory-scaling section from an earlier --memory-scaling run is kept."""
    from tools.bench_memory import markdown as memory_markdown

    path = Path("reports/benchmark.json")
    previous = json.loads(path.read_text()) if path.exists() else {}
    if "memory_scaling" not in bench and "memory_scaling" in previous:
        bench = {**bench, "memory_scaling": previous["memory_scaling"]}
    path.parent.mkdir(exist_ok=True)
    path.write_text(json.dumps(bench, indent=2) + "\n")
    md = markdown(bench) if "stage_seconds" in bench else ""
    if "memory_scaling" in bench:
        md += ("\n" if md else "") + memory_markdown(bench["memory_scaling"])
    Path("reports/benchmark.md").write_text(md)
    return md


def memory_scaling(args: argparse.Namespace) -> None:
    """--memory-scaling: tools/bench_memory.py's measurement, added to the reports as their memory section."""
    from tools.bench_memory import measure

    if not Path(args.data).exists():
        sys.exit(f"error: {args.data} not found; pass --data with the Kaggle zip or a folder of class folders")
    if args.repeats < 1:
        sys.exit(f"error: --repeats {args.repeats}: give 1 or more runs per input")
    result = measure(Path(args.data).resolve(), Path(args.scratch), args.scale, repeats=args.repeats,
                     memory_on_larger=not args.skip_memory_larger)
    previous = Path("reports/benchmark.json")
    print(write_reports({**(json.loads(previous.read_text()) if previous.exists() else {}),
                         "memory_scaling": result}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    # relative to the repository, as params.yaml writes it: dvc.lock records the value, so no machine's folder
    ap.add_argument("--data", default="../shared/datasets/casting-product-train.zip")
    ap.add_argument("--skip-repro", action="store_true", help="measure the outputs already in place")
    ap.add_argument("-S", dest="set", action="append", default=[])
    ap.add_argument("--memory-scaling", action="store_true",
                    help="train 1 epoch on --data and on a --scale times larger set, streamed and in memory")
    ap.add_argument("--scale", type=int, default=10, help="--memory-scaling: size of the larger set")
    ap.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "inspection-bench-memory"),
                    help="--memory-scaling: scratch folder (the generated set is reused from here)")
    ap.add_argument("--repeats", type=int, default=2,
                    help="--memory-scaling: runs per input on --data (the medians are reported)")
    ap.add_argument("--skip-memory-larger", action="store_true",
                    help="--memory-scaling: do not train the whole-array path on the larger set")
    args = ap.parse_args()
    os.chdir(ROOT)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.memory_scaling:
        memory_scaling(args)
        return
    if not args.skip_repro:
        if not Path(args.data).exists():
            sys.exit(f"error: {args.data} not found; pass --data with the Kaggle zip or a folder of class folders")
        cmd = [sys.executable, "tools/timed_repro.py", "-S", "data.source=local", "-S",
               f"data.local.path={args.data}", *(x for kv in args.set for x in ("-S", kv))]
        if subprocess.run(cmd).returncode:
            sys.exit("error: the pipeline failed; see the output above")
    from inspection.config import load_params
    from inspection.data.dataset import load_split

    params = load_params()
    timings = json.loads(Path("reports/timings.json").read_text())
    run = json.loads(Path("models/mlflow_run.json").read_text())
    metrics = json.loads(Path("reports/metrics.json").read_text())
    from inspection.deploy.model_folder import load_metadata

    meta = load_metadata("models")
    test = load_split("test", params.train.image_size, params.data.positive_class)
    print("bench: timing the SavedModel")
    bench = {
        "machine": machine(), "stage_seconds": timings,
        "peak_rss_mib": (max(timings["peak_rss_mib_after_stage"].values())
                         if "peak_rss_mib_after_stage" in timings else None),
        "training": {"arch": params.train.arch, "image_size": params.train.image_size,
                     **{k: run[k] for k in ("epochs_run", "best_epoch", "seconds_per_epoch", "train_seconds",
                                            "train_images_per_second", "parameters")}},
        "test": {k: metrics["test"][k] for k in ("n", "recall", "precision", "roc_auc", "fn", "fp")},
        "threshold": metrics["threshold"],
        "saved_model": saved_model_speed(test.images),
        "tfjs_bytes": meta["size_bytes"]["tfjs"],
        "browser": (json.loads(Path("reports/export/browser_benchmark.json").read_text())["backends"]
                    if Path("reports/export/browser_benchmark.json").exists() else None),
    }
    print(write_reports(bench))


if __name__ == "__main__":
    main()
