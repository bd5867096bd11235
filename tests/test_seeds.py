"""tools/seeds.py: reading an experiment's outputs (git-tracked and DVC-cached) and the seed table."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import seeds  # noqa: E402


def decision(ready: bool, missed: int, review: float) -> dict:
    def target(key, k, n, high, passed=True):
        return {"key": key, "k": k, "n": n, "rate": k / n if n else review, "high": high, "bound": high,
                "passed": passed}
    return {"ready": ready, "threshold": 0.1, "review_band": {"low": 0.1, "high": 0.7},
            "targets": [target("missed", missed, 563, 0.0065 + missed / 563), target("false_rejects", 0, 432, 0.0085),
                        {**target("review", 0, 0, review + 0.02, ready), "rate": review},
                        target("retake", 2, 995, 0.0072)]}


def commit_experiment(root: Path, seed: int) -> str:
    """A commit like a DVC experiment's: decision.json in git, the run file and metrics in the DVC cache."""
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports/decision.json").write_text(json.dumps(decision(seed != 1, seed, 0.02 + 0.01 * seed)))
    outs = {}
    for path, doc in (("models/mlflow_run.json", {"epochs_run": 14, "best_val_loss": 0.03 + seed / 100,
                                                  "settled": True}),
                      ("reports/metrics.json", {"val": {"roc_auc": 0.999}, "test": {"roc_auc": 0.998 - seed / 1000}})):
        md5 = f"{seed:02d}{abs(hash(path)) % 10**30:030d}"
        cached = root / ".dvc/cache/files/md5" / md5[:2] / md5[2:]
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(doc))
        outs[path] = md5
    lock = {"schema": "2.0", "stages": {"train": {"outs": [{"path": "models/mlflow_run.json",
                                                              "md5": outs["models/mlflow_run.json"]}]},
                                        "evaluate": {"outs": [{"path": "reports/metrics.json",
                                                               "md5": outs["reports/metrics.json"]}]}}}
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    for cmd in (["git", "add", "dvc.lock", "reports/decision.json"],
                ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", f"seed {seed}"]):
        subprocess.run(cmd, cwd=root, check=True, capture_output=True)
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    subprocess.run(["git", "update-ref", f"refs/exps/ab/cdef/seeds-{seed}", sha], cwd=root, check=True)
    return sha


def test_seed_table_from_experiment_commits(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    revs = [commit_experiment(tmp_path, s) for s in range(3)]
    monkeypatch.setattr(seeds, "ROOT", tmp_path)
    monkeypatch.setattr(seeds, "OUT_JSON", tmp_path / "reports/seeds.json")
    monkeypatch.setattr(seeds, "OUT_MD", tmp_path / "reports/seeds.md")
    assert seeds.exp_revs() == {f"seeds-{s}": revs[s] for s in range(3)}
    assert seeds.main(["--seeds", "3", "--collect-only"]) == 0
    doc = json.loads((tmp_path / "reports/seeds.json").read_text())
    rows = doc["rows"]
    assert [r["seed"] for r in rows] == [0, 1, 2] and [r["ready"] for r in rows] == [True, False, True]
    assert [r["missed"] for r in rows] == [0, 1, 2] and rows[1]["failed_targets"] == ["review"]
    assert rows[2]["test_auc"] == 0.996 and rows[0]["band"] == "[0.100, 0.700)"
    s = doc["summary"]
    assert s["ready"] == 2 and s["review_share"] == {"median": 0.03, "min": 0.02, "max": 0.04}
    md = (tmp_path / "reports/seeds.md").read_text()
    assert md.count("\n| ") == 6 and "ready: 2 of 3 seeds" in md      # header, 3 seeds, median, min, max


def test_outputs_are_read_from_the_configured_dvc_cache(tmp_path, monkeypatch):
    """A cache outside the repository (`dvc cache dir`, e.g. a team's shared one) is where the outputs are read."""
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    monkeypatch.setattr(seeds, "ROOT", repo)
    assert seeds.cache_dir() == repo / ".dvc/cache"        # not a DVC project yet: the default
    subprocess.run(["dvc", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["dvc", "cache", "dir", "--local", str(tmp_path / "shared-cache")], cwd=repo, check=True)
    assert seeds.cache_dir() == tmp_path / "shared-cache"


def test_missing_experiment_is_one_line(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    monkeypatch.setattr(seeds, "ROOT", tmp_path)
    try:
        seeds.main(["--seeds", "2", "--collect-only"])
    except SystemExit as exc:
        assert str(exc) == "error: no experiment for seed(s) [0, 1]; run without --collect-only"
    else:
        raise AssertionError("no error for missing experiments")


def test_a_queue_that_leaves_head_detached_is_reattached_to_the_branch(tmp_path, monkeypatch):
    """dvc's queue once left HEAD detached at the branch's commit (later commits then landed on no branch):
    make seeds re-attaches it, and only when HEAD sits exactly on that branch's commit."""
    git = lambda *a: subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True, text=True).stdout  # noqa: E731
    git("init", "-q", "-b", "main")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "one")
    monkeypatch.setattr(seeds, "ROOT", tmp_path)
    assert seeds.branch() == "refs/heads/main"
    git("checkout", "-q", "--detach")
    assert seeds.branch() is None
    seeds.reattach("refs/heads/main")
    assert seeds.branch() == "refs/heads/main"
    # detached somewhere else: left alone
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "two")
    git("checkout", "-q", "--detach", "HEAD~1")
    seeds.reattach("refs/heads/main")
    assert seeds.branch() is None


def _queue_status(rows: dict[str, str], active: int) -> str:
    """`dvc queue status` as DVC 3 prints it."""
    body = "".join(f"{i:07x}  {name}  09:22 PM   {status}\n" for i, (name, status) in enumerate(rows.items()))
    return f"Task     Name     Created    Status\n{body}\nWorker status: {active} active, 0 idle\n"


def test_a_queue_worker_that_dies_with_experiments_queued_is_started_again(monkeypatch, capsys):
    """Measured here: DVC's queue worker shut down after one experiment (kombu read a half-written message) and
    left four queued for good. make seeds notices (queued, nothing running, no worker: twice in a row) and starts
    it again; a worker merely between two tasks (one poll) is left alone."""
    names = ["seeds-0", "seeds-1"]
    polls = iter([
        _queue_status({"seeds-0": "Running", "seeds-1": "Queued"}, 1),
        _queue_status({"seeds-0": "Success", "seeds-1": "Queued"}, 0),   # between tasks, or gone
        _queue_status({"seeds-0": "Success", "seeds-1": "Queued"}, 1),   # between tasks: it was alive
        _queue_status({"seeds-0": "Success", "seeds-1": "Queued"}, 0),
        _queue_status({"seeds-0": "Success", "seeds-1": "Queued"}, 0),   # gone: started again
        _queue_status({"seeds-0": "Success", "seeds-1": "Running"}, 1),
        _queue_status({"seeds-0": "Success", "seeds-1": "Success"}, 0)])
    starts = []
    monkeypatch.setattr(seeds, "run", lambda cmd, check=True: next(polls))
    monkeypatch.setattr(seeds, "start_workers", lambda jobs: starts.append(jobs))
    seeds.wait(names, jobs=1, poll=0)
    out = capsys.readouterr().out
    assert starts == [1, 1], out                      # the first start, then one restart
    assert out.count("starting it again") == 1 and "seeds-1 Success" in out
    # no "Worker status" line (another DVC version): never restarted on a guess
    assert not seeds.stalled({"seeds-1": "Queued"}, None, ["seeds-1"])
    assert seeds.stalled({"seeds-1": "Queued"}, 0, ["seeds-1"])
