"""Every make target of the README on tiny data, asserting on what each writes: `make bench` (the pipeline
benchmark, the memory-scaling, batch-CLI and fingerprint tools), then `make results` (the same experiment, now
restored from DVC's run cache), `make serve` (start, one request, stop), `make status` and `make clean`. `make
run` is the end-to-end run (conftest.e2e_repo), `make mlflow-server` is in test_team.py, `make install` in
test_fresh_clone.py; `make seeds` trains a model per seed, so CI runs its tool on generated experiments
(test_seeds.py, --collect-only) instead."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
import zipfile
from pathlib import Path

import pytest

from conftest import make_cmd, sh


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_mirror(e2e_repo: Path, dest: Path) -> Path:
    """The e2e run's photos as a team mirror: a zip in the Kaggle archive's layout."""
    with zipfile.ZipFile(dest, "w") as z:
        for cls, folder in (("defect", "def_front"), ("ok", "ok_front")):
            for f in sorted((e2e_repo / "data/raw" / cls).glob("*.jpeg")):
                z.write(f, f"casting_data/casting_data/train/{folder}/{f.name}")
    return dest


def test_make_bench_then_make_results(e2e_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(e2e_repo, repo, symlinks=True)
    mirror = _tiny_mirror(e2e_repo, tmp_path / "mirror.zip")
    res = sh(make_cmd("bench", f"MIRROR={mirror}", "BENCH_SCALE=2", "BENCH_REPEATS=1", "BENCH_IMAGES=24",
                      "BENCH_LARGE=48", "BENCH_FILES=60", f"BENCH_SCRATCH={tmp_path / 'scratch'}"), repo)
    bench = json.loads((repo / "reports/benchmark.json").read_text())
    assert {"machine", "stage_seconds", "memory_scaling"} <= set(bench), sorted(bench)
    memory = bench["memory_scaling"]["train"]
    assert [len(memory[s][m]["runs"]) for s in ("dataset", "x2") for m in ("stream", "memory")] == [1, 1, 1, 1]
    assert set(bench["stage_seconds"]) >= {"download", "train", "evaluate", "export"}
    md = (repo / "reports/benchmark.md").read_text()
    assert bench["saved_model"]["latency_ms_p50"] > 0 and f"Machine: {bench['machine']['cpu']}" in md
    predict = json.loads((repo / "reports/bench_predict.json").read_text())
    assert predict["throughput"] and predict["peak_rss"]
    fingerprint = json.loads((repo / "reports/bench_fingerprint.json").read_text())
    assert fingerprint, res.stdout[-2000:]
    source = json.loads((repo / "data/raw/SOURCE.json").read_text())
    assert source["source"] == "local" and source["counts"] == {"defect": 70, "ok": 70}
    (repo / "reports/timings.json").unlink()
    res = sh(make_cmd("results", f"MIRROR={mirror}"), repo)   # the same experiment: DVC restores it
    timings = json.loads((repo / "reports/timings.json").read_text())
    assert timings["ran"]["train"] is False and timings["ran"]["sources"] is True, res.stdout[-2000:]
    assert timings["total"] > 0 and "Experiment results have been applied" in res.stdout


def test_make_serve_answers_one_request_and_stops(e2e_repo):
    port = _port()
    proc = subprocess.Popen(make_cmd("serve", f"PORT={port}"), cwd=e2e_repo, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env=dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"))
    try:
        for line in proc.stdout:
            if line.startswith("serving "):
                break
        else:
            raise AssertionError(f"make serve ended: {proc.wait()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as r:
            page = r.read().decode()
        assert r.status == 200 and "<html" in page.lower()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metadata.json", timeout=30) as r:
            assert json.loads(r.read())["route"]["words"] == ["PASS", "REVIEW", "REJECT", "RETAKE"]
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(60)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped


def test_decision_study_reproduces_the_evaluate_stage_verdict_and_judges_an_ensemble(e2e_repo, tmp_path):
    """tools/decision_study.py: the scores of the e2e run's model, re-judged with the library's decision code, give
    the band and verdict the evaluate stage wrote; an 'ensemble' of the same model twice is that model."""
    tool = str(Path(__file__).resolve().parents[1] / "tools/decision_study.py")
    scores = tmp_path / "scores.pkl"
    sh([sys.executable, tool, "scores", "--model", "models/model.keras", "--out", str(scores)], e2e_repo)
    out = tmp_path / "verdicts.json"
    sh([sys.executable, tool, "judge", str(scores), "--json", str(out)], e2e_repo)
    [v] = json.loads(out.read_text())
    decision = json.loads((e2e_repo / "reports/decision.json").read_text())
    metrics = json.loads((e2e_repo / "reports/metrics.json").read_text())
    assert v["ready"] == decision["ready"] and v["ood_limit"] == pytest.approx(metrics["ood"]["limit"], rel=1e-4)
    band = decision["review_band"] or {"low": decision["threshold"], "high": decision["threshold"]}
    assert v["band"] == pytest.approx([band["low"], band["high"]])
    assert v["ood_battery_passed"] == metrics["ood"]["battery_passed"] and v["ood_battery_images"] > 0
    same = tmp_path / "same.json"
    sh([sys.executable, tool, "judge", str(scores), str(scores), "--ensemble", "--json", str(same)], e2e_repo)
    [e] = json.loads(same.read_text())
    assert e["band"] == pytest.approx(v["band"]) and e["review_share"] == pytest.approx(v["review_share"])
    res = subprocess.run([sys.executable, tool, "judge", str(tmp_path / "none.pkl")], cwd=e2e_repo,
                         capture_output=True, text=True)
    assert res.returncode != 0 and res.stderr.strip().startswith("error: no score file")


def test_make_status_then_make_clean(e2e_repo, tmp_path):
    """`make status` on the finished run: nothing printed, exit 0; after a params change it names the stage that
    would re-run and exits 1. `make clean` then removes the pipeline's data, models and store."""
    import yaml

    repo = tmp_path / "repo"
    shutil.copytree(e2e_repo, repo, symlinks=True)
    res = sh(make_cmd("status"), repo, check=False)
    assert res.returncode == 0 and "error" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert not [ln for ln in res.stdout.splitlines() if ln.strip() and not ln.startswith(("make", ". ", "source"))], \
        res.stdout
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["report"]["parts_per_shift"] += 1                      # a knob only the report reads
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    res = sh(make_cmd("status"), repo, check=False)
    assert res.returncode != 0 and "report" in res.stdout, res.stdout + res.stderr
    assert "train" not in res.stdout.replace("params.yaml", ""), res.stdout
    sh(make_cmd("clean"), repo)
    for gone in ("data/raw", "data/split", "data/shards", "mlflow.db"):
        assert not (repo / gone).exists(), gone
    left = [p for folder in ("models", "reports") for p in (repo / folder).iterdir() if not p.name.startswith(".")]
    assert not left, left   # (DVC's .gitignore files stay: git tracks them)
