"""End to end: `dvc repro` of every stage on the synthetic source, in a copy of the repo;
the report is opened in headless Chromium."""
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
    "reports/eval/operating_points.csv", "reports/eval/robustness.csv", "reports/eval/drift_reference.json",
    "models/saved_model/saved_model.pb", "models/tfjs/model.json", "models/metadata.json", "reports/report.html",
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
    params["evaluate"]["robustness"]["perturbations"] = {
        "exposure x1.25": {"kind": "gain", "value": 1.25}, "blur 1.5px": {"kind": "blur", "value": 1.5},
        "rotate any": {"kind": "rotate"}, "jpeg q40": {"kind": "jpeg", "value": 40, "gated": False}}
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
    assert set(m["robustness"]) == {"clean", "exposure x1.25", "blur 1.5px", "rotate any", "jpeg q40"}
    assert m["robustness"]["clean"]["recall"] == m["test"]["recall"]
    assert m["robustness_summary"]["gated"] == 3
    ci = m["test_intervals"]["missed_per_1000_defects"]
    assert ci["low"] <= ci["value"] <= ci["high"]
    band = m["review_band"]
    assert band["auto_pass"] + band["review"] + band["auto_reject"] == m["test"]["n"]
    data = json.loads((repo / "reports/data.json").read_text())
    assert {"feature_auc", "combined_test_auc", "flagged"} <= set(data["confound"])


def test_metadata_describes_the_deployed_model(repo):
    meta = json.loads((repo / "models/metadata.json").read_text())
    assert meta["input"]["height"] == meta["input"]["width"] == 64
    assert meta["classes"] == ["ok", "defect"] and meta["positive_class"] == "defect"
    assert meta["parity"]["max_abs_diff_saved_model_vs_keras"] <= 1e-5
    assert meta["mlflow_run_id"] == json.loads((repo / "models/mlflow_run.json").read_text())["run_id"]
    assert len(meta["dataset_sha256"]) == 64
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert (meta["review_band"]["low"], meta["review_band"]["high"]) == (metrics["review_band"]["low"], metrics["review_band"]["high"])
    assert set(meta["drift"]["features"]) == {"brightness", "contrast", "sharpness"}


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
    assert "reports/report.html" in {a.path for a in client.list_artifacts(run_id, "reports")}
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


def _lookup(doc: dict, dotted: str):
    for k in dotted.split("."):
        doc = doc[k]
    return doc


def test_report_in_a_real_browser_shows_the_metrics_and_every_image(repo, browser):
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    data = json.loads((repo / "reports/data.json").read_text())
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("requestfailed", lambda r: errors.append(r.url))
    page.goto((repo / "reports/report.html").as_uri(), wait_until="load")
    images = page.evaluate("""() => Array.from(document.images).map(i => [i.alt, i.complete && i.naturalWidth > 0])""")
    assert len(images) >= 6 and all(ok for _, ok in images), [alt for alt, ok in images if not ok]
    shown = page.evaluate("""() => Array.from(document.querySelectorAll('[data-metric]')).map(e =>
        [e.dataset.metric, e.textContent.trim(), e.dataset.digits || null, e.dataset.scale || null])""")
    keys = {k for k, *_ in shown}
    assert {"test.fn", "test.fp", "test.n", "threshold", "test.recall", "test.precision",
            "test_intervals.missed_per_1000_defects.value", "review_band.review"} <= keys
    for key, text, digits, scale in shown:
        value = _lookup(data, key[5:]) if key.startswith("data.") else _lookup(metrics, key)
        value *= float(scale or 1)
        expected = round(value, int(digits)) if digits else value
        assert float(text.replace(",", "")) == expected, (key, text, value)
    overflow = page.evaluate("() => document.documentElement.scrollWidth > window.innerWidth")
    assert not overflow, "the page scrolls sideways"
    shot = repo / "reports" / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000 and not errors
    page.close()
