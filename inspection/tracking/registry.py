"""MLflow Model Registry: the exported model as an MLflow Model, its registered versions and aliases.

    export   -> log_and_register(params): logs an MLflow Model (pyfunc) of models/saved_model into the export
                stage's run, with metadata.json and the TF.js bundle as artifacts, the split manifest as a run
                artifact (split/manifest.csv), and registers a new version of registry.model_name, tagged
                with the model's version, threshold, dataset sha256, the manifest's sha256 and a content hash.
                Idempotent: a version with the same content hash is reused, never registered twice.
    promote  -> find_version / set_alias (stages/promote.py): the `champion` / `challenger` aliases.
    consumers-> inspection.deploy.resolver.resolve_model_dir(ref): a folder (models/) or a registry reference
                (models:/casting-inspector@champion, models:/casting-inspector/3) -> a local folder holding
                saved_model/, metadata.json and tfjs/ (what commands.predict, the web stage and promote read).

The MLflow Model is a pyfunc "model from code" (inspection/tracking/pyfunc_model.py, logged as a file): it validates its
metadata.json with the model folder's schema (inspection/deploy/model_folder.py, shipped with the model as code,
PYFUNC_MODULES), loads the SavedModel with tf.saved_model.load and checks its signature against the file; it needs
nothing else from this repository, so `mlflow models serve -m models:/casting-inspector@champion --env-manager
local` serves it:
POST /invocations {"inputs": [[[[0-255 ...]]]]} (float32 [N, H, W, 1], raw grey levels) ->
{"predictions": {"defect_probability": [N], "ood_score": [N]}}.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from inspection.errors import UserError
from inspection.fsutil import sha256_file
from inspection.artifacts import MANIFEST, METADATA, SAVED_MODEL, TFJS
from inspection.deploy.model_folder import load_metadata


MODEL_NAME_IN_RUN = "model"                  # the logged MLflow Model's name in the run
MANIFEST_ARTIFACT = "split/manifest.csv"     # run artifact: which images the version trained/validated/tested on
CHAMPION, CHALLENGER = "champion", "challenger"
TAG_CONTENT = "content_hash"
# The repository modules the pyfunc model ships in its code/ folder: the model folder's schema and its imports
# (tests/test_model_folder.py checks this is model_folder's import closure).
PYFUNC_MODULES = ("inspection.artifacts", "inspection.errors", "inspection.decision.route",
                  "inspection.deploy.model_folder")
# The pyfunc model's code, logged as a file (MLflow's "models from code"); never imported by this package.
PYFUNC_FILE = Path(__file__).with_name("pyfunc_model.py")
def content_hash(metadata: dict, tfjs: Path | None = TFJS) -> str:
    """What the line gets from this model: its weights and graph (the TF.js bundle's content hash,
    inspection.deploy.saved_model.tfjs_digest; the metadata "version" without the bundle at hand) and its decision
    rule (threshold, review band, RETAKE gate), input and classes. Same hash = same deployed model."""
    from inspection.deploy.saved_model import tfjs_digest

    h = hashlib.sha256()
    keys = ("classes", "positive_class", "threshold", "review_band", "route", "input", "outputs")
    h.update(json.dumps({k: metadata.get(k) for k in keys}, sort_keys=True, default=str).encode())
    bundle = tfjs is not None and (Path(tfjs) / "model.json").is_file()
    h.update((tfjs_digest(Path(tfjs)) if bundle else str(metadata.get("version"))).encode())
    return h.hexdigest()[:16]


REF = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[A-Za-z0-9_\-]+)|/(?P<version>\d+))$")


def is_registry_ref(ref: str | Path) -> bool:
    return str(ref).startswith("models:/")


def parse_ref(ref: str) -> tuple[str, str | None, int | None]:
    """models:/name@alias -> (name, alias, None); models:/name/3 -> (name, None, 3)."""
    m = REF.match(str(ref))
    if not m:
        raise UserError(f"{ref!r} is not a registry reference; use models:/<name>@<alias> (e.g. "
                        "models:/casting-inspector@champion) or models:/<name>/<version>")
    return m["name"], m["alias"], (int(m["version"]) if m["version"] else None)


def registry_client():
    """(mlflow, MlflowClient) on this run's tracking store, which also holds the registry."""
    from inspection.tracking.store import mlflow_api

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    mlflow = mlflow_api()
    return mlflow, mlflow.MlflowClient()


def quiet_mlflow_warnings():
    """MLflow's FutureWarnings on model loading/logging are about its own API, not the user's model: not shown."""
    warnings.filterwarnings("ignore", category=FutureWarning, module="mlflow")


def find_version(name: str, content: str, client=None):
    """The registered version of ``name`` whose content hash tag is ``content``, or None."""
    if client is None:
        _, client = registry_client()
    try:
        found = client.search_model_versions(f"name='{name}' and tags.{TAG_CONTENT}='{content}'")
    except Exception as exc:  # MlflowException when the model does not exist in some stores
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")):
            return None
        raise
    return min(found, key=lambda v: int(v.version)) if found else None


def version_by_alias(name: str, alias: str, client=None):
    """The version ``alias`` points to, or None (no such model or alias). A tracking server answers "no such alias"
    with a RestException (an MlflowException subclass) carrying the same error codes as a local store."""
    from mlflow.exceptions import MlflowException

    if client is None:
        _, client = registry_client()
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None   # no such model / "Registered model alias ... not found."
        raise


def set_alias(name: str, alias: str, version: int | str, client=None) -> None:
    if client is None:
        _, client = registry_client()
    client.set_registered_model_alias(name, alias, str(version))


def delete_alias(name: str, alias: str, client=None) -> None:
    if client is None:
        _, client = registry_client()
    client.delete_registered_model_alias(name, alias)


def signature(metadata: dict):
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    h, w = int(metadata["input"]["height"]), int(metadata["input"]["width"])
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, h, w, 1), metadata["input"].get("name", "image"))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,), "defect_probability"),
                        TensorSpec(np.dtype(np.float32), (-1,), "ood_score")]))


def input_example(metadata: dict, manifest: Path):
    """One test photo of the split, prepared like every consumer does (float32 [1, H, W, 1], 0-255)."""
    import numpy as np

    from inspection.fsutil import read_csv
    from inspection.data.images import prepare, read_gray

    size = int(metadata["input"]["height"])
    rows = [r for r in read_csv(manifest) if r["split"] == "test"] if manifest.exists() else []
    img = prepare(read_gray(rows[0]["path"]), size) if rows else np.full((size, size, 1), 128, np.float32)
    return {metadata["input"].get("name", "image"): img[None]}


def pyfunc_parts(tmp: Path, saved_model: Path = SAVED_MODEL, metadata_path: Path = METADATA,
                 tfjs: Path = TFJS) -> dict:
    """mlflow.pyfunc.log_model / save_model's python_model, artifacts and code_paths, written under ``tmp``:
    the model's code (PYFUNC_FILE), the model folder, and the schema modules (PYFUNC_MODULES) as a package the
    model imports."""
    import importlib

    code = tmp / "casting_inspector_pyfunc.py"
    shutil.copy2(PYFUNC_FILE, code)
    package = tmp / "code" / "inspection"
    for name in PYFUNC_MODULES:
        parts = name.split(".")
        for depth in range(1, len(parts)):   # the package __init__ files on the way (docstrings only)
            init = Path(importlib.import_module(".".join(parts[:depth])).__file__)
            (tmp / "code").joinpath(*parts[:depth]).mkdir(parents=True, exist_ok=True)
            shutil.copy2(init, (tmp / "code").joinpath(*parts[:depth], "__init__.py"))
        shutil.copy2(importlib.import_module(name).__file__, (tmp / "code").joinpath(*parts[:-1], parts[-1] + ".py"))
    artifacts = {"saved_model": str(saved_model), "metadata": str(metadata_path)}
    if Path(tfjs).is_dir():
        artifacts["tfjs"] = str(tfjs)
    return {"python_model": str(code), "artifacts": artifacts, "code_paths": [str(package)]}


def log_and_register(params, saved_model: Path = SAVED_MODEL, tfjs: Path = TFJS, metadata_path: Path = METADATA,
                     manifest: Path = MANIFEST, stage: str = "export") -> dict:
    """Log the exported model as an MLflow Model in ``stage``'s run of this experiment (inspection.tracking
    .experiment_run_id) and register it as a new version of registry.model_name, or reuse the version with the
    same content hash (so re-running export or promote never registers twice). Returns
    {"name", "version", "run_id", "content_hash", "new"}."""
    from inspection.tracking.runs import experiment_run_id

    name = params.registry.model_name
    metadata = load_metadata(metadata_path)   # a damaged model folder is never registered
    content = content_hash(metadata, tfjs)
    mlflow, client = registry_client()
    existing = find_version(name, content, client)
    if existing is not None:
        print(f"registry: {name} version {existing.version} already holds this model (content {content}); reused")
        return {"name": name, "version": int(existing.version), "run_id": existing.run_id, "content_hash": content,
                "new": False}
    import numpy as np
    import pydantic
    import tensorflow as tf

    manifest_sha = sha256_file(manifest) if manifest.exists() else None
    run_id = experiment_run_id(stage, params)
    quiet_mlflow_warnings()
    with tempfile.TemporaryDirectory(prefix="pyfunc-") as tmp, mlflow.start_run(run_id=run_id):
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN, **pyfunc_parts(Path(tmp), saved_model, metadata_path, tfjs),
            signature=signature(metadata), input_example=input_example(metadata, manifest),
            pip_requirements=[f"mlflow=={mlflow.__version__}", f"tensorflow=={tf.__version__}",
                              f"numpy=={np.__version__}", f"pydantic=={pydantic.VERSION}"],
            metadata={"casting_inspector": {k: metadata.get(k) for k in ("version", "threshold", "positive_class",
                                                                         "classes", "dataset_sha256")}})
        if manifest.exists():
            mlflow.log_artifact(str(manifest), str(Path(MANIFEST_ARTIFACT).parent))
        tags = {TAG_CONTENT: content, "model_version": metadata.get("version"),
                "threshold": metadata.get("threshold"), "dataset_sha256": metadata.get("dataset_sha256"),
                "split_manifest_sha256": manifest_sha, "split_manifest": f"runs:/{run_id}/{MANIFEST_ARTIFACT}",
                "git_commit": metadata.get("git_commit"), "image_size": metadata["input"]["height"]}
        mv = mlflow.register_model(info.model_uri, name, tags={k: str(v) for k, v in tags.items() if v is not None})
    print(f"registry: registered {name} version {mv.version} (model {metadata.get('version')}, content {content})")
    return {"name": name, "version": int(mv.version), "run_id": run_id, "content_hash": content, "new": True}


def register_after_export(params) -> dict | None:
    """The export stage's last step: log and register the model it just published. Export's outputs are complete
    by then, so a failure here is reported in one line and left to the promote stage, which registers the same
    model (idempotently, by content hash) before it compares it with the champion."""
    try:
        return log_and_register(params)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        print(f"registry: could not log/register the model ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}); "
              "the promote stage will register it")
        return None


def model_version(ref: str, client=None):
    """The registered ModelVersion a reference names, or a UserError saying what is missing."""
    from inspection.tracking.store import tracking_uri

    name, alias, version = parse_ref(ref)
    if client is None:
        _, client = registry_client()
    try:
        client.get_registered_model(name)
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        from inspection.tracking.store import store_fixes, store_problem

        uri = tracking_uri()
        problem = store_problem(uri)   # "server unreachable" when it is, not "no model"
        if problem or not (isinstance(exc, MlflowException)
                           and getattr(exc, "error_code", "") == "RESOURCE_DOES_NOT_EXIST"):
            what = "server unreachable" if uri.startswith(("http://", "https://")) and problem else "cannot be read"
            raise UserError(f"{ref}: the MLflow registry at {uri}: {what} "
                            f"({problem or ' '.join(str(exc).split())[:160]}); {store_fixes(uri)}") from None
        raise UserError(f"{ref}: no model {name!r} in the registry at {uri}; run the pipeline "
                        "(dvc repro) to register one, or set MLFLOW_TRACKING_URI to the store that holds it") from None
    try:
        return client.get_model_version_by_alias(name, alias) if alias else client.get_model_version(name, str(version))
    except Exception:
        what = f"alias {alias!r}" if alias else f"version {version}"
        raise UserError(f"{ref}: model {name!r} has no {what}; see `mlflow models` / the MLflow UI for its "
                        "versions and aliases (champion is set by the promote stage)") from None


def download_manifest(mv, dest: Path) -> Path | None:
    """The split manifest logged with a version (tag split_manifest), or None if it has none."""
    mlflow, _ = registry_client()
    uri = (mv.tags or {}).get("split_manifest")
    if not uri:
        return None
    return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dest)))
