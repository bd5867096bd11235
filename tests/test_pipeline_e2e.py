"""End to end: `dvc repro` of all five stages on the synthetic source, in a copy of the repo."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_repo

OUTPUTS = [
    "data/raw/SOURCE.json", "data/split/manifest.csv", "reports/data.json", "models/model.keras",
    "models/mlflow_run.json", "reports/train/history.csv", "reports/metrics.json", "reports/eval/thresholds.csv",
    "reports/eval/pr.csv", "reports/eval/roc.csv", "reports/eval/confusion.csv", "reports/eval/predictions.csv",
    "models/saved_model/saved_model.pb", "models/tfjs/model.json", "models/metadata.json",
]


def sh(cmd, cwd, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(source="synthetic", synthetic={"per_class": 70, "size": 96, "seed": 3})
    params["train"].update(image_size=64, max_epochs=3, patience=2, batch_size=16)
    params["export"].update(parity_images=16)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "e2e"]):
        sh(cmd, root)
    sh(["dvc", "repro"], root)
    return root


def test_every_declared_output_exists(repo):
    missing = [o for o in OUTPUTS if not (repo / o).exists()]
    assert not missing


def test_metrics_have_their_keys(repo):
    m = json.loads((repo / "reports/metrics.json").read_text())
    assert {"threshold", "policy", "val", "test"} <= set(m)
    for key in ("accuracy", "precision", "recall", "f1", "roc_auc", "pr_auc", "tp", "fp", "tn", "fn"):
        assert key in m["test"]
    assert 0 < m["threshold"] < 1
    assert m["val"]["recall"] >= 0.995  # the min_recall policy held on validation


def test_metadata_describes_the_deployed_model(repo):
    meta = json.loads((repo / "models/metadata.json").read_text())
    assert meta["input"]["height"] == meta["input"]["width"] == 64
    assert meta["classes"] == ["ok", "defect"] and meta["positive_class"] == "defect"
    assert meta["parity"]["max_abs_diff_saved_model_vs_keras"] <= 1e-5
    assert meta["mlflow_run_id"] == json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    assert len(meta["dataset_sha256"]) == 64


def test_mlflow_run_holds_params_metrics_artifacts(repo):
    import mlflow

    run_id = json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.params["train.image_size"] == "64" and run.data.params["data.source"] == "synthetic"
    assert "test_recall" in run.data.metrics and "val_loss" in run.data.metrics and "tfjs_bytes" in run.data.metrics
    assert len(client.get_metric_history(run_id, "loss")) >= 1
    assert run.data.tags["dataset_sha256"] == json.loads((repo / "data/raw/SOURCE.json").read_text())["dataset_sha256"]
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"reports", "model"} <= top
    model_files = {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"model/metadata.json", "model/saved_model", "model/tfjs"} <= model_files


def test_status_clean_and_second_repro_runs_nothing(repo):
    status = sh(["dvc", "status"], repo).stdout
    assert "up to date" in status.lower() or status.strip() == "", status
    again = sh(["dvc", "repro"], repo).stdout
    assert "Running stage" not in again, again


def test_bad_param_is_one_line_and_leaves_outputs(repo):
    params = (repo / "params.yaml").read_text()
    try:
        (repo / "params.yaml").write_text(params.replace("  policy: min_recall", "  policy: min_recal"))
        res = sh([sys.executable, "-m", "stages.evaluate"], repo, check=False)
        assert res.returncode == 2
        err = res.stderr.strip().splitlines()
        assert err[-1].startswith("error: params.yaml: evaluate.policy:") and "Traceback" not in res.stderr
    finally:
        (repo / "params.yaml").write_text(params)
