"""Seeds as a benchmark: the pipeline up to the decision, queued as DVC experiments over train.seed 0..N-1.

Usage: python tools/seeds.py [--seeds 5] [--first 0] [--jobs 1] [-S key=value ...] [--collect-only]

It queues one `dvc exp run --queue --name seeds-<seed> -S train.seed=<seed> evaluate` per seed (the decision,
reports/decision.json, is the evaluate stage's), runs the queue (`dvc queue start`, ``--jobs`` workers) and
waits for it, printing each experiment's status as it changes. Then it reads every experiment's outputs from its
commit (git-tracked files with `git show`, DVC outputs from the cache by the md5 in the experiment's dvc.lock)
and writes reports/seeds.json and reports/seeds.md (not DVC outputs): one row per seed (epochs, best
validation loss, whether training settled, val/test ROC-AUC, threshold and band, missed / false rejects /
REVIEW / RETAKE with their exact bounds, ready) and the median, min and max of each column. ``--collect-only``
skips the runs and reads the experiments named seeds-<seed> that exist. The workspace and params.yaml are
not touched: queued experiments run in DVC's temporary workspaces.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_JSON, OUT_MD = ROOT / "reports/seeds.json", ROOT / "reports/seeds.md"
COLUMNS = [  # (key, header, format)
    ("seed", "seed", "{}"), ("epochs", "epochs", "{}"), ("best_val_loss", "best val loss", "{:.4f}"),
    ("settled", "settled", "{}"), ("val_auc", "val AUC", "{:.4f}"), ("test_auc", "test AUC", "{:.4f}"),
    ("threshold", "threshold", "{:.4f}"), ("band", "band", "{}"),
    ("missed", "missed", "{}"), ("missed_bound", "missed bound", "{:.2%}"),
    ("false_rejects", "false rejects", "{}"), ("false_reject_bound", "false-reject bound", "{:.2%}"),
    ("review_share", "REVIEW at line rate", "{:.2%}"), ("review_bound", "REVIEW bound", "{:.2%}"),
    ("retake", "RETAKE", "{}"), ("retake_bound", "RETAKE bound", "{:.2%}"), ("ready", "ready", "{}")]


def env() -> dict:
    """This interpreter's bin folder first on PATH: the queue worker starts `dvc` (and the stages `python`) by name,
    so the venv's must be found also when this tool runs without an activated venv."""
    import os

    return dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def run(cmd: list[str], check: bool = True) -> str:
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env())
    if check and res.returncode != 0:
        sys.exit(f"error: {' '.join(cmd)} failed: {(res.stderr or res.stdout).strip().splitlines()[-1:]}")
    return res.stdout


def branch() -> str | None:
    """The checked-out branch (refs/heads/...), None when HEAD is detached."""
    res = subprocess.run(["git", "symbolic-ref", "-q", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return res.stdout.strip() or None


def reattach(ref: str | None) -> None:
    """Queuing checks out the baseline commit and restores the branch; measured once here, a queue call left HEAD
    detached at the branch's own commit, and the next commits landed on no branch. Re-attach HEAD to ``ref`` when it
    is detached at exactly that branch's commit (nothing else is touched)."""
    if ref is None or branch() == ref:
        return
    tip = run(["git", "rev-parse", ref]).strip()
    if branch() is None and run(["git", "rev-parse", "HEAD"]).strip() == tip:
        run(["git", "symbolic-ref", "HEAD", ref])
        print(f"seeds: HEAD was left detached by the queue; re-attached to {ref.removeprefix('refs/heads/')}")


def queue(seeds: list[int], overrides: list[str]) -> list[str]:
    # finished tasks of an earlier round would share the names: drop their queue entries (their experiments stay)
    run(["dvc", "queue", "remove", "--success", "--failed"], check=False)
    ref = branch()
    names = []
    for seed in seeds:
        name = f"seeds-{seed}"
        cmd = ["dvc", "exp", "run", "--queue", "--name", name, "--set-param", f"train.seed={seed}"]
        for kv in overrides:
            cmd += ["--set-param", kv]
        run(cmd + ["evaluate"])
        reattach(ref)
        names.append(name)
        print(f"seeds: queued {name}")
    return names


def statuses() -> tuple[dict[str, str], int | None]:
    """({experiment name: status} from `dvc queue status` (Queued, Running, Success, Failed), active workers)."""
    out, active = {}, None
    for line in run(["dvc", "queue", "status"], check=False).splitlines()[1:]:
        parts = line.split()
        if line.startswith("Worker status:") and len(parts) >= 3 and parts[2].isdigit():
            active = int(parts[2])
        elif len(parts) >= 2 and parts[1].startswith("seeds-"):
            out.setdefault(parts[1], parts[-1])   # newest first: an older task of the same name is not ours
    return out, active


def start_workers(jobs: int) -> None:
    # not waited for: the workers inherit nothing of ours and run until the queue is empty
    subprocess.Popen(["dvc", "queue", "start", "--jobs", str(jobs)], cwd=ROOT, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True, env=env())


def stalled(now: dict[str, str], active: int | None, names: list[str]) -> bool:
    """Experiments still queued, none running and no active worker: the worker has gone. Measured here: DVC's
    worker (celery on kombu's filesystem broker) read a message file while it was being written, failed with
    JSONDecodeError and shut down after its task, leaving four experiments queued for good."""
    return active == 0 and any(now.get(n) == "Queued" for n in names) and not any(
        now.get(n) == "Running" for n in names)


def wait(names: list[str], jobs: int, poll: float = 20) -> None:
    """Start the queue's workers and poll `dvc queue status` until every experiment has finished, printing each
    status change; a worker that went away with experiments still queued is started again."""
    start_workers(jobs)
    seen: dict[str, str] = {}
    t0, idle_polls = time.time(), 0
    while True:
        now, active = statuses()
        for name in names:
            if now.get(name) != seen.get(name):
                print(f"seeds: {name} {now.get(name, '?')} after {time.time() - t0:.0f} s", flush=True)
        seen = {n: now.get(n, "?") for n in names}
        if all(seen[n] in ("Success", "Failed") for n in names):
            break
        idle_polls = idle_polls + 1 if stalled(now, active, names) else 0
        if idle_polls >= 2:   # twice in a row: a worker between two tasks is not mistaken for a dead one
            print("seeds: the queue's worker stopped with experiments still queued; starting it again", flush=True)
            start_workers(jobs)
            idle_polls = 0
        time.sleep(poll)
    failed = [n for n in names if seen[n] != "Success"]
    if failed:
        print(f"seeds: warning: {', '.join(failed)} failed; `dvc queue logs <name>` says why")


def exp_revs() -> dict[str, str]:
    """{experiment name: commit} of every DVC experiment (refs/exps/.../<name>); of several experiments with one
    name (earlier rounds, older baselines) the newest wins."""
    out = run(["git", "for-each-ref", "--format=%(committerdate:unix) %(refname) %(objectname)", "refs/exps"],
              check=False)
    refs = sorted((int(t), ref, sha) for t, ref, sha in (line.split() for line in out.splitlines() if line.strip()))
    return {ref.rsplit("/", 1)[-1]: sha for _, ref, sha in refs}


def cache_dir() -> Path:
    """The DVC cache: `dvc cache dir` (a team may keep one cache outside the repository), else .dvc/cache."""
    res = subprocess.run(["dvc", "cache", "dir"], cwd=ROOT, capture_output=True, text=True)
    return Path(res.stdout.strip()) if res.returncode == 0 and res.stdout.strip() else ROOT / ".dvc/cache"


def read_output(rev: str, path: str):
    """A JSON output of the experiment at ``rev``: from git when tracked, else from the DVC cache."""
    shown = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode == 0:
        return json.loads(shown.stdout)
    import yaml

    lock = yaml.safe_load(run(["git", "show", f"{rev}:dvc.lock"]))
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                md5 = out["md5"]
                return json.loads((cache_dir() / "files/md5" / md5[:2] / md5[2:]).read_text())
    raise FileNotFoundError(f"{path} is not an output of experiment {rev}")


def row(seed: int, rev: str) -> dict:
    run_file, metrics, decision = (read_output(rev, p) for p in
                                   ("models/mlflow_run.json", "reports/metrics.json", "reports/decision.json"))
    t = {x["key"]: x for x in decision["targets"]}
    band = decision.get("review_band")
    return {"seed": seed, "epochs": run_file["epochs_run"], "best_val_loss": run_file["best_val_loss"],
            "settled": run_file.get("settled"), "val_auc": metrics["val"]["roc_auc"],
            "test_auc": metrics["test"]["roc_auc"], "threshold": decision["threshold"],
            "band": f"[{band['low']:.3f}, {band['high']:.3f})" if band else "none",
            "missed": t["missed"]["k"], "missed_bound": t["missed"]["high"],
            "false_rejects": t["false_rejects"]["k"], "false_reject_bound": t["false_rejects"]["high"],
            "review_share": t["review"]["rate"], "review_bound": t["review"]["high"],
            "retake": t["retake"]["k"], "retake_bound": t["retake"]["high"], "ready": decision["ready"],
            "failed_targets": [x["key"] for x in decision["targets"] if not x["passed"]], "rev": rev}


def summary(rows: list[dict]) -> dict:
    out = {}
    for key, _, _ in COLUMNS:
        values = [r[key] for r in rows if isinstance(r[key], (int, float)) and not isinstance(r[key], bool)]
        if values and key != "seed":
            out[key] = {"median": statistics.median(values), "min": min(values), "max": max(values)}
    out["ready"] = sum(bool(r["ready"]) for r in rows)
    out["settled"] = sum(bool(r["settled"]) for r in rows)
    return out


def markdown(rows: list[dict], stats: dict) -> str:
    lines = ["| " + " | ".join(h for _, h, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(f.format(r[k]) if r[k] is not None else "" for k, _, f in COLUMNS) + " |")
    for what in ("median", "min", "max"):
        cells = [what] + [f.format(stats[k][what]) if k in stats and k != "seed" and isinstance(stats[k], dict)
                          else "" for k, _, f in COLUMNS[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nready: {stats['ready']} of {len(rows)} seeds; settled: {stats['settled']} of {len(rows)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5, help="number of seeds (default 5)")
    ap.add_argument("--first", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--jobs", type=int, default=1, help="queue workers (default 1: 2 cores train one model at a time)")
    ap.add_argument("-S", "--set-param", action="append", default=[], metavar="KEY=VALUE",
                    help="a further param override for every seed, as dvc exp run -S")
    ap.add_argument("--collect-only", action="store_true", help="read the existing seeds-<seed> experiments")
    args = ap.parse_args(argv)
    seeds = list(range(args.first, args.first + args.seeds))
    if not args.collect_only:
        wait(queue(seeds, args.set_param), args.jobs)
    revs = exp_revs()
    missing = [s for s in seeds if f"seeds-{s}" not in revs]
    if missing:
        sys.exit(f"error: no experiment for seed(s) {missing}; run without --collect-only")
    rows = [row(s, revs[f"seeds-{s}"]) for s in seeds]
    stats = summary(rows)
    OUT_JSON.parent.mkdir(exist_ok=True)
    OUT_JSON.write_text(json.dumps({"rows": rows, "summary": stats, "overrides": args.set_param}, indent=1))
    OUT_MD.write_text(markdown(rows, stats))
    print(OUT_MD.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
