"""The model folder's one schema (inspection/deploy/model_folder.py, mirrored for the page by web/src/schema.js):
what the export writes passes; a garbled, incomplete or mismatched metadata.json is refused with one line naming
the file and the key, in Python and in the browser's validator alike; the registry's pyfunc model ships the schema
and refuses a damaged folder outside the repository too. (The batch CLI's faults: tests/test_predict.py; the
page's: tests/test_page.py.)"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

WHERE = "models/metadata.json"
CAMERA = {"brightness": {"min": 40.0, "max": 215.0}, "contrast": {"min": 8.0, "max": 90.0},
          "sharpness": {"min": 1.0, "max": 20000.0}}
DELETE = object()


def good_metadata(size: int = 32, outputs: dict | None = None) -> dict:
    """A metadata.json as the export writes it (the keys consumers rely on and some informational ones)."""
    from inspection.decision.route import CSV_COLUMNS, make_rule

    wide = {k: {"min": v["min"] - 5, "max": v["max"] + 5} for k, v in CAMERA.items()}
    rule = make_rule(0.5, (0.2, 0.8), wide, 3.0, "Mahalanobis (test)", warn_camera=CAMERA)
    return {"version": "0123456789ab", "model": {"arch": "tiny", "parameters": 10}, "classes": ["ok", "defect"],
            "positive_class": "defect",
            "outputs": outputs or {"defect_probability": "Identity:0", "ood_score": "Identity_1:0"},
            "route": rule, "csv_columns": list(CSV_COLUMNS), "threshold": 0.5, "review_band": rule["review_band"],
            "input": {"height": size, "width": size, "channels": 1, "dtype": "float32", "name": "image",
                      "signature": "serving_default", "resize": "opencv INTER_AREA"},
            "test_metrics": {"n": 10}, "size_bytes": {"tfjs": 1}}


def changed(meta: dict, key: str, value) -> dict:
    """``meta`` with the dotted ``key`` set to ``value`` (or removed: DELETE)."""
    out = copy.deepcopy(meta)
    *path, last = key.split(".")
    node = out
    for k in path:
        node = node[k]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return out


# (fault, dotted key changed, new value, the key the message names): Python and the page's validator alike
FAULTS = [
    ("threshold not a number", "route.threshold", "abc", "route.threshold"),
    ("threshold above 1", "route.threshold", 1.5, "route.threshold"),
    ("threshold as text", "threshold", "0.5", "threshold"),
    ("route missing", "route", DELETE, "route"),
    ("band low above high", "route.review_band", {"low": 0.8, "high": 0.2}, "route.review_band"),
    ("band edge missing", "route.review_band", {"low": 0.2}, "route.review_band.high"),
    ("camera min above max", "route.retake.camera.contrast", {"min": 100.0, "max": 90.0}, "route.retake.camera.contrast"),
    ("camera limit not a number", "route.retake.camera.brightness.max", None, "route.retake.camera.brightness.max"),
    ("unknown camera statistic", "route.retake.camera.colour", {"min": 0.0, "max": 1.0}, "route.retake.camera"),
    ("warn camera garbled", "route.warn.camera", [1, 2], "route.warn.camera"),
    ("ood limit missing", "route.retake.ood", {"output": "ood_score"}, "route.retake.ood.limit"),
    ("ood review limit above the limit", "route.retake.ood.review_limit", 1e6, "route.retake.ood"),
    ("ood review limit not a number", "route.retake.ood.review_limit", "x", "route.retake.ood.review_limit"),
    ("retake gate missing", "route.retake", DELETE, "route.retake"),
    ("route words wrong", "route.words", ["PASS", "FAIL"], "route.words"),
    ("rule sentence missing", "route.rule", DELETE, "route.rule"),
    ("input height zero", "input.height", 0, "input.height"),
    ("input not square", "input.width", 48, "input.width"),
    ("three channels", "input.channels", 3, "input.channels"),
    ("input name missing", "input.name", DELETE, "input.name"),
    ("ood output missing", "outputs.ood_score", DELETE, "outputs.ood_score"),
    ("version missing", "version", DELETE, "version"),
    ("one class", "classes", ["defect"], "classes"),
    ("positive class not second", "positive_class", "ok", "positive_class"),
    ("thresholds disagree", "threshold", 0.4, "threshold"),
]


def test_what_the_export_writes_passes(tmp_path, monkeypatch):
    """inspection.deploy.metadata.model_metadata's dict (the export stage's metadata.json) passes the schema."""
    from inspection.config import load_params
    from inspection.decision.route import make_rule
    from inspection.deploy.metadata import TEST_METRICS, TEST_ROUTES, model_metadata
    from inspection.deploy.model_folder import validate_metadata

    params = load_params(REPO / "params.yaml")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reports/eval").mkdir(parents=True)
    (tmp_path / "reports/eval/drift_reference.json").write_text(json.dumps({"features": CAMERA}))
    for d in ("saved_model", "tfjs"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "model.json").write_text("{}")
    rule = make_rule(0.4, (0.3, 0.6), CAMERA, 12.5, "Mahalanobis", warn_camera=None)
    metrics = {"threshold": 0.4, "policy": "min_recall", "policy_target": 0.99, "tta": "d4",
               "route": {**rule, "test": dict.fromkeys(TEST_ROUTES, 0)}, "test": dict.fromkeys(TEST_METRICS, 0)}
    meta = model_metadata(params, parameters=10, outputs={"defect_probability": "Identity:0", "ood_score": "Identity_1:0"},
                          metrics=metrics, run={"run_id": "r"}, parity={}, saved_model=tmp_path / "saved_model",
                          tfjs=tmp_path / "tfjs")
    assert validate_metadata(json.loads(json.dumps(meta))) == meta   # as read back from the file
    assert validate_metadata(good_metadata()) == good_metadata()
    no_gates = changed(changed(good_metadata(), "route.retake", {"camera": None, "ood": None}), "route.warn", None)
    validate_metadata(changed(no_gates, "route.review_band", None))   # the threshold alone decides


@pytest.mark.parametrize("fault,key,value,named", FAULTS, ids=[f[0] for f in FAULTS])
def test_a_damaged_metadata_json_is_refused_in_one_line(fault, key, value, named):
    from inspection.deploy.model_folder import DAMAGED, validate_metadata
    from inspection.errors import UserError

    with pytest.raises(UserError) as err:
        validate_metadata(changed(good_metadata(), key, value), WHERE)
    message = str(err.value)
    assert message.startswith(f"{WHERE}: {named}: ") and message.endswith(DAMAGED), message
    assert "\n" not in message


def test_unreadable_files_are_refused_in_one_line(tmp_path):
    from inspection.deploy.model_folder import DAMAGED, load_metadata
    from inspection.errors import UserError

    folder = tmp_path / "models"
    folder.mkdir()
    for content, expect in ((b'{"version": "abc", "route": {', "is not valid JSON (Expecting"), (b"", "is not valid JSON"),
                            (b"\xff\xfe\x00garbage", "is not valid JSON"), (b"[1, 2]", "holds list instead of a JSON object"),
                            (json.dumps(changed(good_metadata(), "route.threshold", "abc")).encode(),
                             "route.threshold: Input should be a valid number")):
        (folder / "metadata.json").write_bytes(content)
        with pytest.raises(UserError) as err:
            load_metadata(folder)
        message = str(err.value)
        assert message.startswith(f"{folder / 'metadata.json'}: ") and expect in message and DAMAGED in message, message
        assert "\n" not in message
    (folder / "metadata.json").unlink()
    with pytest.raises(UserError, match="metadata.json: is missing; the model folder is damaged"):
        load_metadata(folder)
    (folder / "metadata.json").write_text(json.dumps(good_metadata()))
    assert load_metadata(folder)["version"] == load_metadata(folder / "metadata.json")["version"] == "0123456789ab"


def run_schema_js(tmp_path: Path, docs: list) -> list:
    """web/src/schema.js metadataProblem on each of ``docs`` in Node (null: valid)."""
    (tmp_path / "docs.json").write_text(json.dumps(docs))
    script = tmp_path / "schema.mjs"
    script.write_text(f"""
import {{ readFileSync }} from 'node:fs';
import {{ metadataProblem }} from '{(REPO / 'web/src/schema.js').as_uri()}';
const docs = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'docs.json'))}, 'utf8'));
console.log(JSON.stringify(docs.map((d) => metadataProblem(d))));
""")
    res = subprocess.run(["node", str(script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
def test_the_pages_validator_names_the_same_keys(tmp_path):
    """web/src/schema.js: the good metadata passes, and every fault of FAULTS names the key Python names."""
    docs = [good_metadata(), changed(good_metadata(), "route.warn", None), [1], None] + \
        [changed(good_metadata(), key, value) for _, key, value, _ in FAULTS]
    got = run_schema_js(tmp_path, docs)
    assert got[:4] == [None, None, "the file is not a JSON object", "the file is not a JSON object"]
    for (fault, _, _, named), problem in zip(FAULTS, got[4:]):
        assert problem and problem.startswith(named) and problem[len(named)] in " :", (fault, problem)
    assert got[4] == "route.threshold is not a number"


def test_pyfunc_ships_the_schemas_import_closure():
    """The registry's pyfunc model carries model_folder and everything of ours it imports (and nothing else)."""
    sys.path.insert(0, str(REPO / "tools"))
    import import_graph

    from inspection.tracking.registry import PYFUNC_MODULES

    shipped = set(PYFUNC_MODULES)
    closure = {m for m in import_graph.closure("inspection.deploy.model_folder", import_graph.graph())
               if import_graph.module_files()[m].name != "__init__.py"}
    assert closure == shipped


@pytest.fixture(scope="module")
def pyfunc_model(tmp_path_factory):
    """A tiny two-output SavedModel + metadata.json saved as the registry's pyfunc MLflow Model (no store)."""
    pytest.importorskip("keras")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import mlflow

    from inspection.deploy.saved_model import export_saved_model, graph_output_names
    from inspection.tracking.registry import pyfunc_parts
    from test_page import SIZE, tiny_serving_model

    root = tmp_path_factory.mktemp("pyfunc")
    export_saved_model(tiny_serving_model()[1], SIZE, root / "folder/saved_model")
    meta = good_metadata(SIZE, graph_output_names(root / "folder/saved_model"))
    (root / "folder/metadata.json").write_text(json.dumps(meta))
    (root / "parts").mkdir()
    mlflow.pyfunc.save_model(str(root / "model"), **pyfunc_parts(root / "parts", root / "folder/saved_model",
                                                                   root / "folder/metadata.json", root / "no-tfjs"))
    return root / "model"


LOAD = """
import sys, numpy as np, mlflow
try:
    model = mlflow.pyfunc.load_model(sys.argv[1])
except Exception as exc:
    print("REFUSED " + str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    sys.exit(3)
out = model.predict(np.full((2, 32, 32, 1), 100, np.float32))
print("OK", sorted(out), len(out["defect_probability"]), sys.modules["inspection.deploy.model_folder"].__file__)
"""


def _load_outside_the_repo(model: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "INSPECTION_PARAMS")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return subprocess.run([sys.executable, "-c", LOAD, str(model)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_pyfunc_model_validates_its_folder_outside_the_repo(pyfunc_model, tmp_path):
    res = _load_outside_the_repo(pyfunc_model, tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]
    assert res.stdout.startswith("OK ['defect_probability', 'ood_score'] 2 ")
    assert str(pyfunc_model) in res.stdout.split()[-1]   # the schema came with the model, not from the repository

    damaged = tmp_path / "damaged"
    shutil.copytree(pyfunc_model, damaged)
    meta_file = damaged / "artifacts/metadata.json"
    meta_file.write_text(json.dumps(changed(json.loads(meta_file.read_text()), "route.threshold", "abc")))
    res = _load_outside_the_repo(damaged, tmp_path)
    assert res.returncode == 3 and "REFUSED" in res.stdout, res.stdout + res.stderr[-3000:]
    assert "metadata.json: route.threshold: Input should be a valid number; the model folder is damaged" in res.stdout

    meta_file.write_text(json.dumps(changed(good_metadata(48), "outputs", json.loads(
        (pyfunc_model / "artifacts/metadata.json").read_text())["outputs"])))
    res = _load_outside_the_repo(damaged, tmp_path)
    assert res.returncode == 3 and "input.height: 48 but the SavedModel's signature 'serving_default' takes 32x32x1" \
        in res.stdout, res.stdout + res.stderr[-3000:]


def test_registry_registers_and_hands_out_only_whole_model_folders(tmp_path, monkeypatch):
    """log_and_register refuses a damaged models/metadata.json (nothing registered); a registered version is
    resolved, loaded by the pyfunc flavour and validated; a version damaged in the store is refused, never cached."""
    pytest.importorskip("keras")
    import mlflow
    import numpy as np

    from inspection.config import load_params
    from inspection.deploy import resolver
    from inspection.deploy.saved_model import export_saved_model, graph_output_names
    from inspection.errors import UserError
    from inspection.tracking import registry
    from test_page import SIZE, tiny_serving_model
    from test_registry import parent_run

    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("INSPECTION_MODEL_CACHE", str(tmp_path / "cache"))
    params = load_params(tmp_path / "params.yaml")
    parent_run(tmp_path, params, uri)
    export_saved_model(tiny_serving_model()[1], SIZE, tmp_path / "models/saved_model")
    meta = good_metadata(SIZE, graph_output_names(tmp_path / "models/saved_model"))
    meta_file = tmp_path / "models/metadata.json"
    meta_file.write_text(json.dumps(changed(meta, "route.review_band", {"low": 0.9, "high": 0.1})))
    with pytest.raises(UserError, match=r"^models/metadata.json: route.review_band: low 0.9 is above high 0.1; the model"):
        registry.log_and_register(params)
    assert mlflow.MlflowClient(uri).search_registered_models() == []

    meta_file.write_text(json.dumps(meta))
    ref = f"models:/{params.registry.model_name}/{registry.log_and_register(params)['version']}"
    assert resolver.load(ref).metadata == meta
    out = mlflow.pyfunc.load_model(ref).predict(np.full((2, SIZE, SIZE, 1), 100, np.float32))
    assert sorted(out) == ["defect_probability", "ood_score"] and len(out["defect_probability"]) == 2

    shutil.rmtree(tmp_path / "cache")
    stored, = [p for p in tmp_path.rglob("metadata.json")   # the registered version's copy in the artifact store
               if p.parent.name == "artifacts" and (p.parent / "saved_model").is_dir()]
    stored.write_text(json.dumps(changed(meta, "input.name", DELETE)))
    with pytest.raises(UserError, match=rf"^{re.escape(ref)} \(version 1\) metadata.json: input.name: missing; the model"):
        resolver.resolve_model_dir(ref)
    assert [p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")] == []
