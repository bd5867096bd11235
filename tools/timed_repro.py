"""Run the pipeline stage by stage with `dvc repro -s` and print each stage's wall time.

Usage: python tools/timed_repro.py [-S key=value ...]   (values are written to params.yaml first,
like `dvc exp run -S`). Writes reports/timings.json (not a DVC output): seconds per stage and the
peak resident memory of the stage processes so far (getrusage of waited-for children).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml



def stages() -> list[str]:
    """The stages in dvc.yaml's order (which is the data's order)."""
    return list(yaml.safe_load(Path("dvc.yaml").read_text())["stages"])


def set_params(pairs: list[str]) -> None:
    params = yaml.safe_load(Path("params.yaml").read_text())
    for pair in pairs:
        key, _, value = pair.partition("=")
        node = params
        *parents, last = key.split(".")
        for k in parents:
            node = node[k]
        node[last] = yaml.safe_load(value)
    Path("params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("-S", dest="set", action="append", default=[], help="params override key=value")
    args = ap.parse_args()
    if args.set:
        set_params(args.set)
    timings, peak = {}, {}
    t_all = time.perf_counter()
    for stage in stages():
        t0 = time.perf_counter()
        res = subprocess.run(["dvc", "repro", "-s", stage])
        timings[stage] = round(time.perf_counter() - t0, 1)
        peak[stage] = round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)  # KiB -> MiB
        print(f"== {stage}: {timings[stage]} s (peak RSS so far {peak[stage]} MiB)", flush=True)
        if res.returncode != 0:
            sys.exit(res.returncode)
    timings["total"] = round(time.perf_counter() - t_all, 1)
    timings["peak_rss_mib_after_stage"] = peak
    Path("reports").mkdir(exist_ok=True)
    Path("reports/timings.json").write_text(json.dumps(timings, indent=2) + "\n")
    print(json.dumps(timings))


if __name__ == "__main__":
    main()
