"""MLflow tracking: `train` opens the run, later stages log into it via models/mlflow_run.json.

Outages: every stage checks the store first (``check_store``: an HTTP GET with a 3 s timeout, or the
sqlite file's folder and the file itself) and stops in seconds with one line. The stages log through a
``Tracker``; if the store goes away mid-run, the first failed call prints one line and everything the
stage still logs is kept in a journal under ``<main workspace>/.mlflow-pending/`` (outside DVC), the stage
finishes and publishes normally (its outputs always match dvc.lock), and ``python -m stages.relog``
replays the journal into the store later.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

from stages.errors import UserError, check_interrupted, stage_name
from stages.fsutil import read_json

RUN_FILE = Path("models/mlflow_run.json")
PENDING = ".mlflow-pending"  # under the main workspace, beside mlflow.db; not a DVC output
HTTP_CHECK_TIMEOUT = 3.0
# MLflow's own HTTP client retries for minutes by default; a stage should fail (or buffer) in seconds
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}


def default_uri() -> str:
    """sqlite:///<main workspace>/mlflow.db: one store for the workspace and DVC's temporary ones."""
    from stages.paths import main_root

    return f"sqlite:///{(main_root() / 'mlflow.db').as_posix()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def _mlflow():
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    _init_sqlite_store(tracking_uri())
    return mlflow


_READY: set[str] = set()


def _init_sqlite_store(uri: str) -> None:
    """Create or upgrade a sqlite store under an exclusive file lock (``<db>.lock`` beside it). Two stages
    opening a new mlflow.db at the same moment (``dvc queue start -j 2``) would both run MLflow's schema
    migrations and one would fail ('table ... already exists'); once the schema exists, opening is safe."""
    if not uri.startswith("sqlite:///") or uri in _READY:
        return
    import fcntl

    from mlflow.tracking import MlflowClient

    db = Path(uri[len("sqlite:///"):].split("?", 1)[0])
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
        lock = open(db.with_name(db.name + ".lock"), "a")
    except OSError:
        return  # an unusable folder is reported by the store check / the first call
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(uri).search_experiments(max_results=1)  # creates/migrates the schema
        except Exception:  # noqa: BLE001 - the caller's first real call reports it in its own words
            return
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    _READY.add(uri)


def mlflow_key(key: str) -> str:
    """MLflow names allow letters, digits and _ - . space : / only (params.yaml names may hold more)."""
    return re.sub(r"[^\w\-. :/]", "_", key)


def git_commit() -> str:
    """HEAD's commit, with '-dirty' if tracked files changed, or 'unknown' outside git. DVC's own bookkeeping
    (dvc.lock and the .gitignore files it maintains, rewritten by every `dvc repro`) does not count: a fresh run
    of a clean checkout is not dirty. params.yaml does (a `dvc exp run -S` change is not committed yet)."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".",
                                ":(exclude,glob)**/dvc.lock", ":(exclude,glob)**/.gitignore"],
                               capture_output=True, text=True, check=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def start_run(experiment: str, params: dict, tags: dict):
    """Open a new run (used by the train stage); returns (Tracker, run). If the store cannot create the
    run, the stage stops with one line before the expensive work."""
    uri = tracking_uri()
    _mlflow()
    from mlflow.tracking import MlflowClient
    from mlflow.tracking.context.registry import resolve_tags

    client = MlflowClient(uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = client.create_experiment(experiment)
            except Exception:  # another run created it at the same moment
                exp_id = client.get_experiment_by_name(experiment).experiment_id
        else:
            if exp.lifecycle_stage == "deleted":
                client.restore_experiment(exp.experiment_id)
            exp_id = exp.experiment_id
        run = client.create_run(exp_id, tags=resolve_tags(tags))
    except Exception as exc:
        raise UserError(f"cannot open an MLflow run in {uri} ({_reason(exc)}); {_fixes(uri)}") from None
    tracker = Tracker(uri, run.info.run_id, experiment)
    # MLflow caps a param value at 6000 chars; ours are short
    tracker.log_params({mlflow_key(k): str(v) for k, v in params.items()})
    return tracker, run


@contextlib.contextmanager
def resume_run(run_file: Path = RUN_FILE) -> Iterator["Tracker"]:
    """Log into the run the train stage opened (marked FINISHED again at the end, like MLflow's own
    ``start_run(run_id=...)`` block)."""
    info = read_json(run_file)
    tracker = Tracker(info.get("tracking_uri") or tracking_uri(), info["run_id"], info.get("experiment"))
    try:
        yield tracker
    except BaseException as exc:
        tracker.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end_run("FINISHED")


# ---- the store check -------------------------------------------------------------------------------------

def configure_http() -> None:
    for key, value in HTTP_ENV.items():
        os.environ.setdefault(key, value)


def _fixes(uri: str) -> str:
    if uri.startswith(("http://", "https://")):
        return (f"start the server (mlflow server --host 127.0.0.1 --port <port>), or unset MLFLOW_TRACKING_URI "
                f"to use the local store {default_uri()}")
    if "MLFLOW_TRACKING_URI" in os.environ:
        return f"fix the path in MLFLOW_TRACKING_URI, or unset it to use {default_uri()}"
    return "make that folder writable, or set MLFLOW_TRACKING_URI to another store"


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    for marker in ("Connection refused", "Max retries exceeded", "timed out", "Name or service not known",
                   "database is locked", "no such table", "file is not a database", "unable to open database"):
        if marker.lower() in text.lower():
            return marker.lower()
    return text[:160]


def _http_problem(uri: str) -> str | None:
    import socket
    import urllib.error
    import urllib.request

    base = uri.rstrip("/")
    last = None
    for path in ("/health", "/api/2.0/mlflow/experiments/search?max_results=1"):
        try:
            with urllib.request.urlopen(base + path, timeout=HTTP_CHECK_TIMEOUT) as res:
                if res.status < 400:
                    return None
        except urllib.error.HTTPError as exc:
            if exc.code < 500 and exc.code != 404:
                return None  # it answers (e.g. asks for credentials): the server is up
            last = f"HTTP {exc.code} from {path}"
        except (urllib.error.URLError, socket.timeout, TimeoutError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            if isinstance(reason, ConnectionRefusedError):
                return "connection refused"
            if isinstance(reason, (socket.timeout, TimeoutError)):
                return f"no answer within {HTTP_CHECK_TIMEOUT:g} s"
            return " ".join(str(reason).split())[:160] or type(reason).__name__
    return last


def sqlite_path(uri: str) -> Path | None:
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def _sqlite_problem(path: Path) -> str | None:
    import sqlite3

    folder = path.parent
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if path.is_dir():
        return f"{path} is a folder, not a database file"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        return f"cannot write in {folder} ({exc.strerror or exc})"
    try:
        con = sqlite3.connect(f"file:{path}?mode=rwc", uri=True, timeout=HTTP_CHECK_TIMEOUT)
        try:
            con.execute("select count(*) from sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"cannot open {path} ({exc}; a damaged file can be moved away, MLflow starts a new one)"
    return None


def store_problem(uri: str) -> str | None:
    """What is wrong with the tracking store at ``uri``, in a few words, or None (checked in seconds)."""
    if uri.startswith(("http://", "https://")):
        return _http_problem(uri)
    path = sqlite_path(uri)
    if path is not None:
        return _sqlite_problem(path)
    if uri.startswith("file:") or "://" not in uri:  # a local folder store
        folder = Path(uri[len("file://"):] if uri.startswith("file://") else uri[len("file:"):] if uri.startswith("file:") else uri)
        existing = folder
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            return f"{existing} is not a folder"
        if not os.access(existing, os.W_OK):
            return f"cannot write in {existing}"
    return None  # other stores (databricks, postgresql...) are checked by their first call


def check_store(run_file: Path | None = None) -> None:
    """Stop with one line when the tracking store (and the one ``run_file`` names) cannot be used."""
    uris = [tracking_uri()]
    if run_file is not None and Path(run_file).exists():
        try:
            recorded = read_json(run_file).get("tracking_uri")
        except (OSError, ValueError):
            recorded = None
        if recorded and recorded not in uris:
            uris.append(recorded)
    for uri in uris:
        problem = store_problem(uri)
        if problem:
            which = "recorded in " + str(run_file) if uri != uris[0] else "MLFLOW_TRACKING_URI" \
                if "MLFLOW_TRACKING_URI" in os.environ else "the default"
            raise UserError(f"MLflow tracking store {uri} ({which}) cannot be used: {problem}; {_fixes(uri)}")


# ---- logging that survives an outage ---------------------------------------------------------------------

def pending_root() -> Path:
    from stages.paths import main_root

    return main_root() / PENDING


def pending_journals() -> list[Path]:
    root = pending_root()
    return sorted(p.parent for p in root.glob("*/journal.jsonl")) if root.is_dir() else []


def pending_notice() -> str | None:
    n = len(pending_journals())
    if not n:
        return None
    return (f"tracking: {n} stage log(s) kept while the MLflow store was unreachable wait in {pending_root()}; "
            "re-log them with: python -m stages.relog")


def _file_identity(path: Path | None):
    try:
        st = path.stat() if path is not None else None
        return (st.st_dev, st.st_ino) if st else None
    except OSError:
        return "missing"


class Tracker:
    """The stages' MLflow handle for one run (``log_metric(s)``, ``log_param(s)``, ``set_tag(s)``,
    ``log_artifact(s)``, ``log_dict``, ``log_text``, ``end_run``), through ``MlflowClient``.

    The first call that fails (server gone, database deleted, locked or corrupt) prints one line; from
    then on calls go to a journal in ``.mlflow-pending/`` (artifacts copied there) that
    ``python -m stages.relog`` replays. A stage never fails because tracking failed mid-run.
    Other attributes are MLflow's module functions (e.g. ``register_model``), not buffered.
    """

    def __init__(self, uri: str, run_id: str, experiment: str | None = None):
        self.uri, self.run_id, self.experiment = uri, run_id, experiment
        self.down: str | None = None
        self.journal: Path | None = None
        self._client = None
        self._db = sqlite_path(uri)
        self._db_id = _file_identity(self._db) if self._db is not None else None
        self._buffer_failed = False
        self._n = 0

    # -- the fluent-style API the stages use
    def log_metric(self, key: str, value: float, step: int | None = None) -> None:
        self.log_metrics({key: value}, step=step)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        ts = int(time.time() * 1000)
        self._call({"op": "log_batch", "metrics": [[k, float(v), ts, int(step or 0)] for k, v in metrics.items()]})

    def log_param(self, key: str, value) -> None:
        self.log_params({key: value})

    def log_params(self, params: dict) -> None:
        items = [[k, str(v)] for k, v in params.items()]
        for i in range(0, len(items), 100):  # MLflow's batch limit
            self._call({"op": "log_batch", "params": items[i:i + 100]})

    def set_tag(self, key: str, value) -> None:
        self.set_tags({key: value})

    def set_tags(self, tags: dict) -> None:
        self._call({"op": "log_batch", "tags": [[k, str(v)] for k, v in tags.items()]})

    def log_artifact(self, local_path, artifact_path: str | None = None) -> None:
        self._call({"op": "log_artifact", "path": str(local_path), "artifact_path": artifact_path})

    def log_artifacts(self, local_dir, artifact_path: str | None = None) -> None:
        self._call({"op": "log_artifacts", "path": str(local_dir), "artifact_path": artifact_path})

    def log_text(self, text: str, artifact_file: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(artifact_file).name
            path.write_text(text)
            self.log_artifact(path, str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None)

    def log_dict(self, obj: dict, artifact_file: str) -> None:
        self.log_text(json.dumps(obj, indent=2, default=str), artifact_file)

    def end_run(self, status: str = "FINISHED") -> None:
        self._call({"op": "set_terminated", "status": status, "end_time": int(time.time() * 1000)},
                   interruptible=False)

    def __getattr__(self, name: str):
        return getattr(_mlflow(), name)

    # -- delivery
    def _call(self, entry: dict, interruptible: bool = True) -> None:
        if interruptible:
            check_interrupted()  # a safe point: per-epoch logging lets a swallowed Ctrl-C stop training
        if self.down is None:
            try:
                self._apply(entry)
                return
            except KeyboardInterrupt:
                raise
            except Exception as exc:
                self.down = _reason(exc)
        self._buffer(entry)

    def client(self):
        if self._client is None:
            _mlflow()
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(self.uri)
        return self._client

    def _apply(self, entry: dict, run_id: str | None = None) -> None:
        if self._db is not None and _file_identity(self._db) != self._db_id:
            raise RuntimeError(f"{self._db} was deleted or replaced during the run")
        apply_entry(self.client(), run_id or self.run_id, entry)

    def _buffer(self, entry: dict) -> None:
        if self._buffer_failed:
            return
        try:
            if self.journal is None:
                self.journal = pending_root() / f"{time.strftime('%Y%m%d-%H%M%S')}-{stage_name() or 'stage'}-{uuid.uuid4().hex[:6]}"
                (self.journal / "files").mkdir(parents=True)
                self._append({"op": "header", "uri": self.uri, "run_id": self.run_id, "experiment": self.experiment,
                              "stage": stage_name(), "reason": self.down, "created": time.time()})
                print(f"tracking: cannot log to {self.uri} ({self.down}); the stage goes on and keeps what it logs in "
                      f"{self.journal}; re-log it later with: python -m stages.relog", flush=True)
            if entry["op"] in ("log_artifact", "log_artifacts"):
                self._n += 1
                src = Path(entry["path"])
                dest = self.journal / "files" / str(self._n) / src.name
                dest.parent.mkdir(parents=True)
                (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
                entry = dict(entry, path=str(dest.relative_to(self.journal)))
            self._append(entry)
        except OSError as exc:
            self._buffer_failed = True
            print(f"tracking: cannot log to {self.uri} ({self.down}) nor keep the log in {pending_root()} "
                  f"({exc.strerror or exc}); this stage's MLflow entries are lost, its outputs are complete", flush=True)

    def _append(self, entry: dict) -> None:
        with open(self.journal / "journal.jsonl", "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def apply_entry(client, run_id: str, entry: dict, base: Path | None = None) -> None:
    """One journal entry through MlflowClient (``base``: the journal folder for buffered artifact copies)."""
    from mlflow.entities import Metric, Param, RunTag

    op = entry["op"]
    if op == "log_batch":
        client.log_batch(run_id, metrics=[Metric(k, v, ts, step) for k, v, ts, step in entry.get("metrics", [])],
                         params=[Param(k, v) for k, v in entry.get("params", [])],
                         tags=[RunTag(k, v) for k, v in entry.get("tags", [])])
    elif op in ("log_artifact", "log_artifacts"):
        path = str(base / entry["path"]) if base is not None else entry["path"]
        getattr(client, op)(run_id, path, entry.get("artifact_path"))
    elif op == "set_terminated":
        client.set_terminated(run_id, entry["status"], entry.get("end_time"))
    elif op != "header":
        raise ValueError(f"unknown journal entry {op!r}")


def run_id(run_file: Path = RUN_FILE) -> str:
    return read_json(run_file)["run_id"]


# ---- one MLflow run per experiment -------------------------------------------------------------------------

PARAMS_DIFF_TAG = "params_diff"


def params_changed_from(params, logged: dict) -> dict[str, str]:
    """The params (MLflow keys -> str values) whose value differs from ``logged`` (a run's params)."""
    from stages.config import flat_params

    current = {mlflow_key(k): str(v) for k, v in flat_params(params).items()}
    return {k: v for k, v in current.items() if logged.get(k) != v}


def experiment_run_id(stage: str, params, used: tuple[str, ...] = (), run_file: Path = RUN_FILE) -> str:
    """The run that ``stage`` logs into: the train stage's run (``run_file``) when every param equals what train
    logged there; otherwise a child run of it (tags ``mlflow.parentRunId`` and ``params_diff``) for exactly this
    set of changed params, created by the first stage that needs it and found again by the later ones, so a
    ``dvc exp run -S evaluate.min_recall=...`` that reuses the trained model gets its own run, with the params it
    used, instead of writing into the baseline's run. The child holds the changed params and the params of each
    stage that logged into it (``used``: dotted prefixes, default the stage's own section)."""
    import hashlib
    import json as _json

    info = read_json(run_file)
    parent_id = info["run_id"]
    try:
        _mlflow()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(info.get("tracking_uri") or tracking_uri())
        parent = client.get_run(parent_id)
        diff = params_changed_from(params, parent.data.params)
        if not diff:
            return parent_id
        key = hashlib.sha256(_json.dumps(sorted(diff.items())).encode()).hexdigest()[:16]
        found = client.search_runs([parent.info.experiment_id], max_results=1,
                                   filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                                 f"tags.{PARAMS_DIFF_TAG} = '{key}'")
        if found:
            child = found[0]
        else:
            name = ", ".join(f"{k}={v}" for k, v in sorted(diff.items()))
            base = parent.data.tags.get("mlflow.runName", parent_id[:8])
            child = client.create_run(parent.info.experiment_id, run_name=f"{base} + {name}"[:250],
                                      tags={"mlflow.parentRunId": parent_id, PARAMS_DIFF_TAG: key,
                                            "changed_params": _json.dumps(diff)[:5000]})
        from stages.config import flat_params
        from mlflow.entities import Param, RunTag

        prefixes = tuple(used) or (stage,)
        have = child.data.params
        todo = [Param(k, v) for k, v in ((mlflow_key(k), str(v)) for k, v in flat_params(params).items())
                if k not in have and (k in diff or any(k == p or k.startswith(p + ".") for p in prefixes))]
        for i in range(0, len(todo), 100):
            client.log_batch(child.info.run_id, params=todo[i:i + 100])
        client.log_batch(child.info.run_id, tags=[RunTag(f"stage.{stage}", "logged")])
        return child.info.run_id
    except Exception as exc:  # the store is down or odd: log into train's run (which reports/buffers the outage)
        print(f"tracking: could not choose a child run for {stage} ({' '.join(str(exc).split())[:160]}); "
              f"logging into run {parent_id}")
        return parent_id


@contextlib.contextmanager
def stage_run(stage: str, params, used: tuple[str, ...] = (), run_file: Path = RUN_FILE):
    """``resume_run`` for this experiment's run (see ``experiment_run_id``): train's run or its child run."""
    import tempfile as _tempfile

    from stages.fsutil import write_json

    info = read_json(run_file)
    info["run_id"] = experiment_run_id(stage, params, used, run_file)
    with _tempfile.TemporaryDirectory(prefix="stage-run-") as tmp:
        resolved = Path(tmp) / "mlflow_run.json"
        write_json(resolved, info)
        with resume_run(resolved) as mlflow:
            yield mlflow
