"""Re-log what stages kept while the MLflow store was unreachable (``.mlflow-pending/`` in the workspace).

    python -m commands.relog                 # replay every kept log into the store it was meant for
    python -m commands.relog --uri URI       # ... into another store (e.g. the server is now elsewhere)
    python -m commands.relog --new-run       # the run is gone from the store (database replaced): log into a new
                                           # run of the same experiment, tagged relogged_from_run_id
    python -m commands.relog --list          # only show what is waiting

Each journal is replayed in order and removed when done; a replay that stops half-way resumes where it
stopped (the count of replayed entries is kept in ``done``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from inspection.errors import UserError
from inspection.interrupts import check_interrupted
from inspection.artifacts import stage_name
from inspection.tracking.store import store_fixes, mlflow_api, short_reason, store_problem
from inspection.artifacts import PENDING
from inspection.tracking.store import sqlite_path


def pending_root() -> Path:
    from inspection.artifacts import main_root

    return main_root() / PENDING


def pending_journals() -> list[Path]:
    root = pending_root()
    return sorted(p.parent for p in root.glob("*/journal.jsonl")) if root.is_dir() else []


def pending_notice() -> str | None:
    n = len(pending_journals())
    if not n:
        return None
    return (f"tracking: {n} stage log(s) kept while the MLflow store was unreachable wait in {pending_root()}; "
            "re-log them with: python -m commands.relog")


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
    ``python -m commands.relog`` replays. A stage never fails because tracking failed mid-run.
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

    def log_dataset(self, name: str, digest: str, source: str, profile: dict, context: str = "training") -> None:
        """The run's input dataset (MLflow's Dataset column): name, digest (our sha256), where it came from and
        its counts (profile), as ``mlflow.log_input`` records it."""
        self._call({"op": "log_input", "name": name, "digest": digest, "source": source, "profile": profile,
                    "context": context})

    def end_run(self, status: str = "FINISHED") -> None:
        self._call({"op": "set_terminated", "status": status, "end_time": int(time.time() * 1000)},
                   interruptible=False)

    def __getattr__(self, name: str):
        return getattr(mlflow_api(), name)

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
                self.down = short_reason(exc)
        self._buffer(entry)

    def client(self):
        if self._client is None:
            mlflow_api()
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
                      f"{self.journal}; re-log it later with: python -m commands.relog", flush=True)
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
    elif op == "log_input":
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=entry["name"], digest=entry["digest"][:36], source_type="local",
                          source=json.dumps({"uri": entry["source"]}), profile=json.dumps(entry["profile"]))
        client.log_inputs(run_id, datasets=[DatasetInput(dataset, [InputTag("mlflow.data.context",
                                                                               entry["context"])])])
    elif op != "header":
        raise ValueError(f"unknown journal entry {op!r}")


def read_journal(folder: Path) -> tuple[dict, list[dict]]:
    lines = [json.loads(line) for line in (folder / "journal.jsonl").read_text().splitlines() if line.strip()]
    if not lines or lines[0].get("op") != "header":
        raise UserError(f"{folder}/journal.jsonl has no header; move the folder away")
    return lines[0], lines[1:]


def _new_run(client, header: dict) -> str:
    name = header.get("experiment") or "relogged"
    exp = client.get_experiment_by_name(name)
    exp_id = exp.experiment_id if exp else client.create_experiment(name)
    run = client.create_run(exp_id, tags={"relogged_from_run_id": header["run_id"]})
    return run.info.run_id


def relog(folder: Path, uri: str | None, new_run: bool) -> str:
    from mlflow.tracking import MlflowClient

    header, entries = read_journal(folder)
    target = uri or header["uri"]
    problem = store_problem(target)
    if problem:
        raise UserError(f"MLflow tracking store {target} cannot be used: {problem}; {store_fixes(target)}")
    client = MlflowClient(target)
    done_file = folder / "done"
    done = int(done_file.read_text()) if done_file.exists() else 0
    run_id = header.get("relog_run_id") or header["run_id"]
    try:
        client.get_run(run_id)
    except Exception as exc:
        if not new_run:
            raise UserError(f"run {run_id} is not in {target} ({short_reason(exc)}); the store was replaced or the run "
                            "deleted: re-log into a new run with --new-run") from None
        run_id = _new_run(client, header)
        header["relog_run_id"] = run_id
        lines = [json.dumps(header)] + [json.dumps(e) for e in entries]
        (folder / "journal.jsonl").write_text("\n".join(lines) + "\n")
    for i, entry in enumerate(entries):
        if i < done:
            continue
        check_interrupted()
        try:
            apply_entry(client, run_id, entry, base=folder)
        except Exception as exc:
            raise UserError(f"re-logging {folder.name} stopped at entry {i + 1} of {len(entries)} ({short_reason(exc)}); "
                            f"{store_fixes(target)}, then run python -m commands.relog again") from None
        done_file.write_text(str(i + 1))
    shutil.rmtree(folder)
    return f"relog: {header.get('stage') or 'stage'} ({len(entries)} entries) -> run {run_id} in {target}"
