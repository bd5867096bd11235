"""The MLflow tracking store: which one to use, opening it safely, and checking that it works.

``tracking_uri`` is MLFLOW_TRACKING_URI or ``default_uri``, a sqlite mlflow.db in the main workspace shared with
DVC's temporary workspaces. ``mlflow_api`` returns mlflow pointed at it, creating or upgrading a sqlite store under a
file lock, so stages started together do not race on MLflow's schema migrations. ``check_store`` / ``store_problem``
check an HTTP server, a sqlite file or a folder store within seconds and stop with one line naming the problem
and the fix; ``configure_http`` caps MLflow's HTTP retries so an unreachable server fails in seconds, not minutes.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from inspection.errors import UserError


HTTP_CHECK_TIMEOUT = 3.0
# MLflow's own HTTP client retries for minutes by default; a stage should fail (or buffer) in seconds
HTTP_ENV = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
            "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}

_READY: set[str] = set()  # sqlite stores created in this process


def default_uri() -> str:
    """sqlite:///<main workspace>/mlflow.db: one store for the workspace and DVC's temporary ones."""
    from inspection.artifacts import main_root

    return f"sqlite:///{(main_root() / 'mlflow.db').as_posix()}"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or default_uri()


def mlflow_api():
    """The mlflow module, pointed at this run's store (created or upgraded first for sqlite), its logs quiet."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    mlflow.set_tracking_uri(tracking_uri())
    _init_sqlite_store(tracking_uri())
    return mlflow


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


def configure_http() -> None:
    for key, value in HTTP_ENV.items():
        os.environ.setdefault(key, value)


def store_fixes(uri: str) -> str:
    """What the user can do when the store at ``uri`` cannot be used: the second half of a one-line error."""
    if uri.startswith(("http://", "https://")):
        return (f"start the server (mlflow server --host 127.0.0.1 --port <port>), or unset MLFLOW_TRACKING_URI "
                f"to use the local store {default_uri()}")
    if "MLFLOW_TRACKING_URI" in os.environ:
        return f"fix the path in MLFLOW_TRACKING_URI, or unset it to use {default_uri()}"
    return "make that folder writable, or set MLFLOW_TRACKING_URI to another store"


def short_reason(exc: BaseException) -> str:
    """An MLflow/SQLAlchemy/requests exception in a few words for a one-line message (the known cause, if any)."""
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
    if path.exists() and not os.access(path, os.W_OK):   # sqlite opens it read-only without a word, and fails
        return f"{path} is read-only (chmod u+w {path}, or set MLFLOW_TRACKING_URI to another store)"   # on write
    try:
        con = sqlite3.connect(f"file:{path}?mode=rwc", uri=True, timeout=HTTP_CHECK_TIMEOUT)
        try:
            con.execute("select count(*) from sqlite_master").fetchone()
            has_version = con.execute("select 1 from sqlite_master where name = 'alembic_version'").fetchone()
            found = con.execute("select version_num from alembic_version").fetchone() if has_version else None
        finally:
            con.close()
    except sqlite3.Error as exc:
        return f"cannot open {path} ({exc}; a damaged file can be moved away, MLflow starts a new one)"
    return _schema_problem(path, found[0]) if found else None


def _schema_problem(path: Path, found: str) -> str | None:
    """The store's schema revision against this MLflow's: a newer MLflow's store must not get `mlflow db upgrade`
    advice, an older one needs exactly that (after a backup)."""
    try:
        import mlflow
        from alembic.script import ScriptDirectory
        from mlflow.store.db.utils import _get_alembic_config

        scripts = ScriptDirectory.from_config(_get_alembic_config(f"sqlite:///{path}"))
        head = scripts.get_current_head()
        known = {rev.revision for rev in scripts.walk_revisions()}
    except Exception:  # noqa: BLE001 - MLflow's internals moved: leave the check to MLflow itself
        return None
    if found == head:
        return None
    if found not in known:
        return (f"{path} was written by a newer MLflow (schema {found}; this MLflow {mlflow.__version__} knows up "
                f"to {head}); install the MLflow version of requirements.lock everywhere that writes it "
                "(make install), or use another store")
    return (f"{path} has an older MLflow schema ({found}, this MLflow {mlflow.__version__} needs {head}); back it "
            f"up, then run: mlflow db upgrade sqlite:///{path}")


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


def check_store() -> None:
    """Stop with one line when the tracking store every stage logs into (MLFLOW_TRACKING_URI or the default)
    cannot be used."""
    uri = tracking_uri()
    problem = store_problem(uri)
    if problem:
        which = "MLFLOW_TRACKING_URI" if "MLFLOW_TRACKING_URI" in os.environ else "the default"
        raise UserError(f"MLflow tracking store {uri} ({which}) cannot be used: {problem}; {store_fixes(uri)}")
