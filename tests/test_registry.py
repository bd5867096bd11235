"""MLflow Model + Model Registry (inspection/tracking/registry.py), `mlflow models serve` parity, registry references for
consumers, and one MLflow run per experiment (inspection.tracking.runs.stage_run: child runs when params changed)."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO

NAME = "casting-inspector"
COPIED = ("models/saved_model", "models/tfjs", "models/metadata.json", "data/split/manifest.csv", "data/raw",
          "params.yaml", "reports/decision.json")


def parent_run(root: Path, params, uri: str) -> str:
    """A train-like run holding every param (what the train stage logs), recorded in models/mlflow_run.json."""
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from inspection.config import flat_params
    from inspection.tracking.runs import mlflow_key

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test") or client.get_experiment(client.create_experiment("test"))
    run = client.create_run(exp.experiment_id, run_name="train")
    items = [Param(mlflow_key(k), str(v)) for k, v in flat_params(params).items()]
    for i in range(0, len(items), 100):
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    client.set_terminated(run.info.run_id)
    (root / "models").mkdir(exist_ok=True)
    (root / "models/mlflow_run.json").write_text(json.dumps({"run_id": run.info.run_id, "experiment": "test",
                                                             "tracking_uri": uri}))
    return run.info.run_id


def make_store(src: Path, root: Path, monkeypatch) -> str:
    """A fresh sqlite store (artifacts beside it) in ``root`` with ``src``'s exported model, manifest, photos and
    params, a train-like parent run, and ``root`` as the working directory. Returns the tracking URI."""
    from inspection.config import load_params

    for rel in COPIED:
        s, d = src / rel, root / rel
        d.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if s.is_dir() else shutil.copy2)(s, d)
    monkeypatch.chdir(root)
    uri = f"sqlite:///{root / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("INSPECTION_MODEL_CACHE", str(root / "model-cache"))
    parent_run(root, load_params(root / "params.yaml"), uri)
    return uri


@contextlib.contextmanager
def mlflow_warnings():
    """Every warning (warnings module, each one shown even if seen before in this process) and every record of
    MLflow's loggers raised inside the block, as a list of messages."""
    import logging

    said: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            said.append(record.getMessage())

    handler, logger = Keep(level=logging.DEBUG), logging.getLogger("mlflow")
    logger.addHandler(handler)
    warnings.onceregistry.clear()   # MLflow shows its type-hint warning "once" per process: forget earlier ones
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield said
        said.extend(str(w.message) for w in caught)
    finally:
        logger.removeHandler(handler)


@pytest.fixture
def store(e2e_repo, tmp_path, monkeypatch):
    return make_store(e2e_repo, tmp_path / "work", monkeypatch)


def test_export_logs_an_mlflow_model_and_registers_it_once(store, tmp_path):
    import mlflow

    from inspection.deploy import resolver
    from inspection.tracking import registry
    from inspection.config import load_params
    from inspection.deploy.predictor import load_predictor

    params = load_params()
    with mlflow_warnings() as said:
        first = registry.log_and_register(params)
    assert first["new"] and first["version"] == 1
    # the pyfunc model's predict has type hints MLflow accepts: no "Add type hints" warning (nor any other about
    # type hints), and no filter hiding one
    assert not [m for m in said if "type hint" in m.lower()], said
    assert not [f for f in warnings.filters if f[1] is not None and "type hint" in f[1].pattern], warnings.filters
    again = registry.log_and_register(params)   # same content: the same version, nothing new registered
    assert again == {**first, "new": False}

    client = mlflow.MlflowClient(store)
    mv = client.get_model_version(NAME, "1")
    meta = json.loads(Path("models/metadata.json").read_text())
    assert mv.tags["content_hash"] == registry.content_hash(meta)
    assert mv.tags["model_version"] == meta["version"] and float(mv.tags["threshold"]) == meta["threshold"]
    assert mv.tags["dataset_sha256"] == meta["dataset_sha256"]
    manifest = registry.download_manifest(mv, tmp_path / "m")   # which photos it trained / validated / tested on
    assert manifest.read_bytes() == Path("data/split/manifest.csv").read_bytes()

    # the MLflow Model: signature, and the TF.js bundle + metadata.json shipped with it
    info = mlflow.models.get_model_info(f"models:/{NAME}/1")
    (spec,) = info.signature.inputs.inputs
    assert spec.name == "image" and spec.shape == (-1, meta["input"]["height"], meta["input"]["width"], 1)
    assert {o.name for o in info.signature.outputs.inputs} == {"defect_probability", "ood_score"}
    folder = resolver.resolve_model_dir(f"models:/{NAME}/1")
    assert (folder / "saved_model").is_dir() and (folder / "tfjs/model.json").is_file()
    assert json.loads((folder / "metadata.json").read_text()) == meta

    # a registry reference gives the same verdicts as the folder
    registry.set_alias(NAME, "champion", 1)
    assert resolver.resolve_model_dir(f"models:/{NAME}@champion") == folder
    local, remote = load_predictor("models"), load_predictor(f"models:/{NAME}@champion")
    from inspection.fsutil import read_csv
    from inspection.data.images import load_images

    paths = [r["path"] for r in read_csv("data/split/manifest.csv") if r["split"] == "test"][:6]
    imgs = load_images(paths, local.size)
    for a, b in zip(local(imgs), remote(imgs)):
        np.testing.assert_array_equal(a, b)
    # the pyfunc flavour agrees too, with the array or the {input name: array} form, and loads without a warning
    with mlflow_warnings() as said:
        model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    assert not [m for m in said if "type hint" in m.lower()], said
    hints = model.unwrap_python_model().predict_type_hints
    assert hints.input is np.ndarray and hints.output == dict[str, np.ndarray]
    out = model.predict(imgs[..., None].astype(np.float32))
    np.testing.assert_allclose(out["defect_probability"], local(imgs)[0], atol=1e-6)
    np.testing.assert_allclose(out["ood_score"], local(imgs)[1], rtol=1e-5)
    named = model.predict({"image": imgs[..., None].astype(np.float32)})
    assert set(named) == {"defect_probability", "ood_score"}
    for key in named:
        assert named[key].dtype == np.float32 and named[key].shape == (len(imgs),)
        np.testing.assert_array_equal(named[key], out[key])


def test_registry_references_fail_with_one_line(store, tmp_path):
    from inspection.deploy import resolver
    from inspection.tracking import registry
    from inspection.config import load_params
    from inspection.errors import UserError

    with pytest.raises(UserError, match="not a registry reference"):
        registry.parse_ref("models:/casting-inspector")
    with pytest.raises(UserError, match="no model 'nope'"):
        resolver.resolve_model_dir("models:/nope@champion")
    registry.log_and_register(load_params())
    with pytest.raises(UserError, match="has no alias 'staging'"):
        resolver.resolve_model_dir(f"models:/{NAME}@staging")
    with pytest.raises(UserError, match="has no version 7"):
        resolver.resolve_model_dir(f"models:/{NAME}/7")
    with pytest.raises(UserError, match="not a model folder"):
        resolver.resolve_model_dir(tmp_path)
    assert resolver.resolve_model_dir("models") == Path("models")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_matches_the_saved_model(e2e_repo, tmp_path):
    """`mlflow models serve -m models:/casting-inspector@champion --env-manager local` on 127.0.0.1, from a copy of
    the end-to-end run's store (its promote stage made version 1 champion), run outside the repository: /invocations
    answers with the SavedModel's numbers."""
    from inspection.deploy.saved_model import saved_model_outputs
    from inspection.fsutil import read_csv
    from inspection.data.images import load_images

    promotion = json.loads((e2e_repo / "reports/promotion.json").read_text())
    assert promotion["decision"] == "first model" and promotion["alias"] == "champion"
    shutil.copy2(e2e_repo / "mlflow.db", tmp_path / "mlflow.db")   # the artifacts stay where the run put them
    meta = json.loads((e2e_repo / "models/metadata.json").read_text())
    paths = [str(e2e_repo / r["path"]) for r in read_csv(e2e_repo / "data/split/manifest.csv") if r["split"] == "test"][:5]
    imgs = load_images(paths, meta["input"]["height"])
    expected = saved_model_outputs(e2e_repo / "models/saved_model", imgs)

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "INSPECTION_PARAMS")}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}")
    log = open(tmp_path / "serve.log", "w")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                             f"models:/{NAME}@champion", "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 600   # a guard against a hung start, not a speed requirement
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=5) as res:
                    if res.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert proc.poll() is None, f"mlflow models serve exited:\n{(tmp_path / 'serve.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping"
            time.sleep(1)
        body = json.dumps({"inputs": {"image": imgs[..., None].astype(float).tolist()}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as res:
            pred = json.loads(res.read())["predictions"]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    p_diff = float(np.max(np.abs(np.array(pred["defect_probability"]) - expected["defect_probability"])))
    o_diff = float(np.max(np.abs(np.array(pred["ood_score"]) - expected["ood_score"])
                          / np.maximum(1.0, np.abs(expected["ood_score"]))))
    print(f"serve parity on {len(paths)} photos: max |diff| probability {p_diff:.2e}, OOD score (relative) {o_diff:.2e}")
    assert p_diff <= 1e-5 and o_diff <= 1e-5


# ---- one MLflow run per experiment -------------------------------------------------------------------------

@pytest.fixture
def tracked(tmp_path, monkeypatch):
    """params from the repo, a tmp store with a train-like parent run, cwd = tmp_path."""
    from inspection.config import load_params

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = load_params(tmp_path / "params.yaml")
    return params, parent_run(tmp_path, params, uri), uri


def test_unchanged_params_log_into_the_train_run(tracked):
    from inspection.tracking.runs import experiment_run_id, stage_run

    params, parent, _ = tracked
    assert experiment_run_id("evaluate", params) == parent
    with stage_run("evaluate", params) as t:
        t.log_metric("threshold", 0.3)
    import mlflow

    assert mlflow.MlflowClient(tracked[2]).get_run(parent).data.metrics["threshold"] == 0.3


def test_changed_params_log_into_one_child_run_per_experiment(tracked):
    import mlflow

    from inspection.tracking.runs import experiment_run_id, stage_run

    params, parent, uri = tracked
    changed = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"min_recall": 0.95})})
    with stage_run("evaluate", changed) as t:
        t.log_metric("threshold", 0.2)
    child = experiment_run_id("export", changed)   # a later stage of the same experiment: the same child
    assert child != parent
    client = mlflow.MlflowClient(uri)
    run = client.get_run(child)
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert run.data.params["evaluate.min_recall"] == "0.95"      # the params it actually used
    assert run.data.params["evaluate.policy"] == params.evaluate.policy and "export.quantize" in run.data.params
    assert run.data.metrics["threshold"] == 0.2
    assert "threshold" not in client.get_run(parent).data.metrics   # the baseline's run is untouched
    assert {"stage.evaluate", "stage.export"} <= set(run.data.tags)
    other = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"min_recall": 0.9})})
    assert experiment_run_id("evaluate", other) not in (parent, child)


def test_a_dvc_experiment_names_its_child_run(tracked, monkeypatch):
    """Under `dvc exp run -n NAME` a stage whose params differ from train's run logs into a child run named NAME
    and tagged like a run train opens (dvc_exp_name); the experiment's later stages find that child again, and
    another experiment with the same change gets its own run."""
    import mlflow

    from inspection.tracking.runs import experiment_run_id

    params, parent, uri = tracked
    changed = params.model_copy(update={"export": params.export.model_copy(update={"parity_images": 12})})
    monkeypatch.setenv("DVC_EXP_NAME", "mate")
    child = experiment_run_id("export", changed)
    assert experiment_run_id("promote", changed) == child != parent
    run = mlflow.MlflowClient(uri).get_run(child)
    assert run.info.run_name == "mate" and run.data.tags["dvc_exp_name"] == "mate"
    assert run.data.tags["mlflow.parentRunId"] == parent
    assert json.loads(run.data.tags["changed_params"]) == {"export.parity_images": "12"}
    monkeypatch.setenv("DVC_EXP_NAME", "other")
    assert experiment_run_id("export", changed) not in (parent, child)


def test_a_missing_alias_is_none_from_a_local_store_and_from_a_server():
    """version_by_alias: "no such alias / model" is None whether a local store (MlflowException) or a tracking server
    (RestException, its subclass) says it; any other error is raised, not taken for "no champion"."""
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    from inspection.tracking import registry

    class Client:
        def __init__(self, exc):
            self.exc = exc

        def get_model_version_by_alias(self, name, alias):
            raise self.exc

    missing = (MlflowException("Registered model alias champion not found.", INVALID_PARAMETER_VALUE),  # sqlite
               RestException({"error_code": "INVALID_PARAMETER_VALUE",
                              "message": "Registered model alias champion not found."}),
               RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model not found"}))
    for exc in missing:
        assert registry.version_by_alias(NAME, "champion", Client(exc)) is None, exc
    for exc in (RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "the database is down"}),
                ConnectionError("refused")):
        with pytest.raises(type(exc)):
            registry.version_by_alias(NAME, "champion", Client(exc))
