"""Run the pipeline as one DVC experiment and record each stage's wall time and peak memory.

Usage: python tools/timed_repro.py [-S key=value ...] [-n NAME] [--force] [STAGE ...]

It runs `dvc exp run [--force] [--name NAME] --set-param key=value ... [STAGE ...]` in the workspace, so
dvc.lock and the outputs are the run's and the run is listed by `dvc exp show`. This tool never writes
params.yaml: overrides whose value params.yaml already holds are dropped (any -S makes DVC rewrite the whole
file), the others DVC applies itself (comments kept; `git diff params.yaml` shows them). An absolute path
among the values gets a warning: dvc.lock would record it.

While DVC runs, the tool reads DVC's output line by line ("Running stage 'x':" starts a stage, "Stage 'x'
didn't change" / "is cached" skips one) and samples the peak resident memory (VmHWM) of the processes under
DVC. It writes reports/timings.json (not a DVC output): seconds per stage (from its line to the next stage's,
so DVC hashing the stage's outputs counts), which stages ran, the total, peak
RSS per stage, its running maximum and the largest child process overall (getrusage).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGE_START = re.compile(r"^Running stage '([^']+)'")
STAGE_SKIP = re.compile(r"^Stage '([^']+)' (?:didn't change|is cached)")


def exp_run_command(overrides: list[str], name: str | None = None, force: bool = False,
                    targets: list[str] | None = None) -> list[str]:
    cmd = ["dvc", "exp", "run"]
    if force:
        cmd.append("--force")
    if name:
        cmd += ["--name", name]
    for kv in overrides:
        cmd += ["--set-param", kv]
    return cmd + list(targets or [])


def without_noops(overrides: list[str], params_file: Path) -> list[str]:
    """Drop overrides whose value params.yaml already holds: `dvc exp run -S` rewrites the whole file when
    given any (flow lists become block lists), so a no-op override would still change params.yaml."""
    import yaml

    params = yaml.safe_load(params_file.read_text()) or {}
    kept = []
    for kv in overrides:
        key, _, value = kv.partition("=")
        node, found = params, True
        for part in key.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            else:
                found = False
                break
        try:
            same = found and node == yaml.safe_load(value)
        except yaml.YAMLError:
            same = False
        if not same:
            kept.append(kv)
    return kept


def absolute_path_overrides(overrides: list[str]) -> list[str]:
    """Overrides whose value is an absolute path: dvc.lock would record it, tying the lock to this machine."""
    return [kv for kv in overrides if kv.partition("=")[2].strip("'\"").startswith(("/", "~"))]


def hwm_mib(pid: int) -> float:
    """Peak resident memory of one process so far (VmHWM), MiB; 0 if it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


class PeakSampler(threading.Thread):
    """Every `interval` s: the largest VmHWM among the descendants of `pid`, attributed to the running stage."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.stage: str | None = None
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.wait(self.interval):
            stage = self.stage
            if stage is None:
                continue
            try:
                pids = [p.pid for p in root.children(recursive=True)]
            except psutil.Error:
                continue
            peak = max((hwm_mib(p) for p in pids), default=0.0)
            self.peaks[stage] = max(self.peaks.get(stage, 0.0), peak)


def dvc_env() -> dict[str, str]:
    """The environment for `dvc exp run`: unbuffered Python, and the venv's bin on PATH when it is not activated."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    beside = Path(sys.executable).with_name("dvc")
    if shutil.which("dvc") is None and beside.is_file():  # venv not activated: its dvc and python for the stages
        env["PATH"] = f"{beside.parent}{os.pathsep}{env.get('PATH', '')}"
    elif shutil.which("dvc") is None:
        sys.exit("error: dvc not found on PATH; run `make results`, or activate the project's venv first "
                 "(. .venv/bin/activate)")
    return env


def follow(proc: subprocess.Popen, sampler: PeakSampler, start: float) -> tuple[dict[str, float], dict[str, bool], int]:
    """Echo DVC's output while timing each stage from its "Running stage" line to the next stage line (or DVC's
    exit) and telling the sampler which stage runs. Returns (seconds per stage run, ran or skipped, exit code)."""
    seconds: dict[str, float] = {}
    ran: dict[str, bool] = {}
    current, t0 = None, start

    def close(now: float) -> None:
        if current is not None:
            seconds[current] = round(now - t0, 1)
            print(f"== {current}: {seconds[current]} s (peak RSS {sampler.peaks.get(current, 0):.0f} MiB)", flush=True)

    assert proc.stdout is not None
    for line in proc.stdout:
        started, skipped = STAGE_START.match(line), STAGE_SKIP.match(line)
        if started or skipped:
            now = time.perf_counter()
            close(now)  # the previous stage's summary line comes before the next stage's output
            current, t0 = None, now
            if started:
                current = started.group(1)
                ran[current] = True
                sampler.stage = current
            else:
                ran[skipped.group(1)] = False
        sys.stdout.write(line)
        sys.stdout.flush()
    code = proc.wait()
    close(time.perf_counter())
    return seconds, ran, code


def timings_record(cmd: list[str], code: int, seconds: dict[str, float], ran: dict[str, bool],
                   peaks: dict[str, float], total: float) -> dict:
    """The timings record (reports/timings.json): seconds per stage, the total, which stages ran, peak RSS."""
    by_stage = {s: round(peaks.get(s, 0.0)) for s in seconds}
    running_max, after = 0, {}
    for s in seconds:
        running_max = max(running_max, by_stage[s])
        after[s] = running_max
    return {
        **seconds,
        "total": total,
        "ran": ran,
        "peak_rss_mib_by_stage": by_stage,
        "peak_rss_mib_after_stage": after,  # running maximum (what tools/bench.py reads)
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),  # KiB -> MiB
        "command": cmd,
        "exit_code": code,
    }


def run(overrides: list[str], name: str | None, force: bool, out: Path, targets: list[str] | None = None) -> dict:
    """Run `dvc exp run` with the overrides, echo its output, and write the timings to ``out``; returns them."""
    cmd = exp_run_command(overrides, name, force, targets)
    print("$ " + " ".join(cmd), flush=True)
    env = dvc_env()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, env=env)
    sampler = PeakSampler(proc.pid)
    sampler.start()
    t_all = time.perf_counter()
    seconds, ran, code = follow(proc, sampler, t_all)
    sampler.done.set()
    sampler.join()
    total = round(time.perf_counter() - t_all, 1)
    timings = timings_record(cmd, code, seconds, ran, sampler.peaks, total)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(timings, indent=2) + "\n")
    return timings


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-S", "--set-param", dest="set", action="append", default=[],
                    help="params override key=value, passed to `dvc exp run --set-param`")
    ap.add_argument("-n", "--name", help="experiment name (dvc exp show)")
    ap.add_argument("-f", "--force", action="store_true", help="run every stage even if nothing changed")
    ap.add_argument("--out", type=Path, default=ROOT / "reports/timings.json")
    ap.add_argument("targets", nargs="*", help="stages to run (with what they depend on); default: all")
    args = ap.parse_args()
    for kv in absolute_path_overrides(args.set):
        print(f"warning: {kv.partition('=')[0]} is an absolute path: dvc.lock will record it and the lock will "
              "only match this machine; prefer a path relative to the repository (e.g. ../shared/...)", flush=True)
    overrides = without_noops(args.set, ROOT / "params.yaml")
    timings = run(overrides, args.name, args.force, args.out, args.targets)
    if overrides:
        print(f"note: DVC wrote {', '.join(kv.partition('=')[0] for kv in overrides)} into params.yaml (a workspace "
              "experiment: dvc.lock matches it); `git diff params.yaml` shows it, `git checkout params.yaml` undoes it")
    summary = {k: v for k, v in timings.items() if isinstance(v, (int, float)) and k != "exit_code"}
    print(json.dumps({**summary, "peak_rss_mib_by_stage": timings["peak_rss_mib_by_stage"]}))
    if timings["exit_code"]:
        sys.exit(timings["exit_code"])


if __name__ == "__main__":
    main()
