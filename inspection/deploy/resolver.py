"""Model references resolved to a local folder: a model folder as it is, or an MLflow registry version downloaded.

``resolve_model_dir`` accepts a folder holding saved_model/ and metadata.json (models/, or a downloaded MLflow
Model folder with them under artifacts/) or a registry reference models:/<name>@<alias> / models:/<name>/<version>.
A registry version is downloaded once into a cache (INSPECTION_MODEL_CACHE, default
<tmp>/casting-inspector-models) keyed by the tracking store, name, version and source; the download lands in a
``.partial-`` folder that is renamed into place, so concurrent callers never see half a model. ``load`` adds the
metadata and the ModelVersion; ``model_folder`` (the predictor) and ``model_paths`` (the web stage) return the
folder or its metadata.json, saved_model/ and tfjs/ paths. Every downloaded version passes the model folder's schema
(inspection.deploy.model_folder) before it is cached, so a damaged download is never handed out; a local folder is
validated by resolve_model_dir, or by the consumer itself (the batch CLI, the web stage) with its own advice.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from inspection.artifacts import PIPELINE_MODEL
from inspection.errors import UserError
from inspection.deploy.model_folder import is_model_folder, load_metadata, parts
from inspection.tracking.registry import registry_client, quiet_mlflow_warnings, is_registry_ref, model_version


def _model_folder(path: Path) -> Path | None:
    for cand in (path, path / "artifacts"):
        if is_model_folder(cand):
            return cand
    return None


def cache_root() -> Path:
    return Path(os.environ.get("INSPECTION_MODEL_CACHE") or Path(tempfile.gettempdir()) / "casting-inspector-models")


def resolve_model_dir(ref: str | Path = PIPELINE_MODEL) -> Path:
    """A local folder holding saved_model/, metadata.json (and tfjs/ when the version has it) for ``ref``:
    a folder (models/, or a downloaded MLflow Model folder) as it is, or a registry reference
    models:/<name>@<alias> / models:/<name>/<version>, downloaded once into a cache (INSPECTION_MODEL_CACHE,
    default <tmp>/casting-inspector-models) keyed by the tracking store, name, version and its source."""
    if not is_registry_ref(ref):
        folder = _model_folder(Path(ref))
        if folder is None:
            raise UserError(f"{ref} is not a model folder (needs metadata.json and saved_model/); run `dvc repro "
                            "export` or pass a registry reference such as models:/casting-inspector@champion")
        load_metadata(folder)
        return folder
    from inspection.tracking.store import tracking_uri

    mlflow, client = registry_client()
    mv = model_version(str(ref), client)
    key = hashlib.sha256(f"{tracking_uri()}\0{mv.name}\0{mv.version}\0{mv.source}\0{mv.creation_timestamp}"
                         .encode()).hexdigest()[:16]
    dest = cache_root() / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', mv.name)}-v{mv.version}-{key}"
    if _model_folder(dest) is None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".partial-{uuid.uuid4().hex[:8]}-{dest.name}")
        try:
            quiet_mlflow_warnings()
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{mv.name}/{mv.version}", dst_path=str(partial))
            if _model_folder(partial) is None:
                raise UserError(f"{ref} (version {mv.version}) holds no saved_model/ and metadata.json; it was not "
                                "registered by this pipeline's export stage")
            load_metadata(_model_folder(partial), f"{ref} (version {mv.version}) metadata.json")   # refused, not cached
            try:
                os.replace(partial, dest)
            except OSError:  # another process got there first
                pass
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return _model_folder(dest)


@dataclass
class Resolved:
    ref: str
    folder: Path
    metadata: dict
    version: object | None   # the registered ModelVersion (None for a plain folder)


def load(ref: str | Path = PIPELINE_MODEL) -> Resolved:
    """resolve_model_dir plus the metadata and, for a registry reference, the ModelVersion."""
    folder = resolve_model_dir(ref)
    mv = model_version(str(ref)) if is_registry_ref(ref) else None
    return Resolved(str(ref), folder, load_metadata(folder), mv)


def model_folder(ref: str) -> Path:
    """The folder of ``ref``: a registry reference models:/name@alias (or /version) downloaded and validated
    (resolve_model_dir), or a folder path as given: the batch CLI checks a local folder itself, with advice that
    names its --model option, and validates its metadata.json before loading TensorFlow."""
    return Path(resolve_model_dir(ref)) if is_registry_ref(ref) else Path(ref)


def model_paths(ref: str) -> tuple[Path, Path, Path]:
    """(metadata.json, saved_model/, tfjs/) of a model folder (default models/, the pipeline's artifacts) or a
    registry reference models:/casting-inspector@champion (resolve_model_dir downloads it). The web stage checks a
    local folder's files itself, naming the stage that makes a missing one."""
    from inspection.artifacts import METADATA, SAVED_MODEL, TFJS

    if ref == PIPELINE_MODEL:
        return METADATA, SAVED_MODEL, TFJS
    folder = model_folder(ref)
    return parts(folder)
