"""MLflow tracking: `train` opens the run, later stages log into it via models/mlflow_run.json.

Outages: every stage checks the store first (``check_store``: an HTTP GET with a 3 s timeout, or the
sqlite file's folder and the file itself) and stops in seconds with one line. The stages log through a
``Tracker``; if the store goes away mid-run, the first failed call prints one line and everything the
stage still logs is kept in a journal under ``<main workspace>/.mlflow-pending/`` (outside DVC), the stage
finishes and publishes normally (its outputs always match dvc.lock), and ``python -m commands.relog``
replays the journal into the store later.
"""
from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path
from typing import Iterator
from inspection.errors import UserError
from inspection.fsutil import read_json
from inspection.artifacts import RUN_FILE
from inspection.tracking.journal import Tracker
from inspection.tracking.store import store_fixes, mlflow_api, short_reason, tracking_uri




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


def run_identity(params: dict) -> tuple[str | None, dict[str, str]]:
    """The run's name and identity tags. Under `dvc exp run` (also queued and --temp runs) the name is the DVC
    experiment's (DVC_EXP_NAME), ``git_commit`` is the experiment's baseline commit (DVC_EXP_BASELINE_REV)
    rather than the workspace's HEAD-dirty, and ``params_diff`` lists the params (``params``: flat, as logged)
    that differ from that commit's params.yaml. Outside an experiment: MLflow's generated name, HEAD(-dirty)."""
    import json as _json
    import os

    name = os.environ.get("DVC_EXP_NAME") or None
    baseline = os.environ.get("DVC_EXP_BASELINE_REV")
    tags = {"git_commit": baseline or git_commit()}
    if name:
        tags["dvc_exp_name"] = name
    if baseline:
        tags["dvc_exp_baseline"] = baseline
        from inspection.config import committed_flat_params

        base = {mlflow_key(k): str(v) for k, v in committed_flat_params(baseline).items()}
        if base:   # else not a git checkout of that commit, or an older schema: the params are logged in full anyway
            diff = {k: str(v) for k, v in params.items() if k in base and base[k] != str(v)}
            tags[PARAMS_DIFF_TAG] = _json.dumps(diff, sort_keys=True)[:5000]
    return name, tags


def start_run(experiment: str, params: dict, tags: dict):
    """Open a new run (used by the train stage); returns (Tracker, run). The run's name and identity tags come
    from ``run_identity`` (the DVC experiment). If the store cannot create the run, the stage stops with one line
    before the expensive work."""
    uri = tracking_uri()
    mlflow_api()
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
        name, identity = run_identity(params)
        run = client.create_run(exp_id, run_name=name, tags=resolve_tags({**tags, **identity}))
    except Exception as exc:
        raise UserError(f"cannot open an MLflow run in {uri} ({short_reason(exc)}); {store_fixes(uri)}") from None
    tracker = Tracker(uri, run.info.run_id, experiment)
    # MLflow caps a param value at 6000 chars; ours are short
    tracker.log_params({mlflow_key(k): str(v) for k, v in params.items()})
    return tracker, run


@contextlib.contextmanager
def resume_run(run_file: Path = RUN_FILE) -> Iterator["Tracker"]:
    """Log into the run the train stage opened (marked FINISHED again at the end, like MLflow's own
    ``start_run(run_id=...)`` block)."""
    info = read_json(run_file)
    tracker = Tracker(tracking_uri(), info["run_id"], info.get("experiment"))  # the store is always the current one
    try:
        yield tracker
    except BaseException as exc:
        tracker.end_run("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    tracker.end_run("FINISHED")


PARAMS_DIFF_TAG = "params_diff"   # run_identity: the params that differ from the DVC experiment's baseline (JSON)
CHILD_KEY_TAG = "child_key"       # on a child run: which changed params (and DVC experiment) it is the run of


def params_changed_from(params, logged: dict) -> dict[str, str]:
    """The params (MLflow keys -> str values) whose value differs from ``logged`` (a run's params)."""
    from inspection.config import flat_params

    current = {mlflow_key(k): str(v) for k, v in flat_params(params).items()}
    return {k: v for k, v in current.items() if logged.get(k) != v}


def experiment_run_id(stage: str, params, used: tuple[str, ...] = (), run_file: Path = RUN_FILE) -> str:
    """The run that ``stage`` logs into: the train stage's run (``run_file``) when every param equals what train
    logged there; otherwise a child run of it (tags ``mlflow.parentRunId`` and ``child_key``) for exactly this
    set of changed params and this DVC experiment, created by the first stage that needs it and found again by the
    later ones, so a ``dvc exp run -S evaluate.min_recall=...`` that reuses the trained model gets its own run, with
    the params it used, instead of writing into the baseline's run. Under ``dvc exp run -n NAME`` the child is
    named NAME and carries ``run_identity``'s tags (dvc_exp_name, dvc_exp_baseline, git_commit, params_diff), like
    a run train opens. The child holds the changed params and the params of each stage that logged into it
    (``used``: dotted prefixes, default the stage's own section)."""
    import hashlib
    import json as _json

    info = read_json(run_file)
    parent_id = info["run_id"]
    try:
        mlflow_api()
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri())
        parent = run_here(client, info, params)
        parent_id = parent.info.run_id
        diff = params_changed_from(params, parent.data.params)
        if not diff:
            return parent_id
        import os

        from inspection.config import flat_params
        from mlflow.entities import Param, RunTag

        experiment = os.environ.get("DVC_EXP_NAME") or None
        key = hashlib.sha256(_json.dumps(sorted(diff.items()) + ([["dvc_exp_name", experiment]] if experiment else []))
                             .encode()).hexdigest()[:16]
        found = client.search_runs([parent.info.experiment_id], max_results=1,
                                   filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}' and "
                                                 f"tags.{CHILD_KEY_TAG} = '{key}'")
        if found:
            child = found[0]
        else:
            name, identity = run_identity({mlflow_key(k): str(v) for k, v in flat_params(params).items()})
            if not name:
                changes = ", ".join(f"{k}={v}" for k, v in sorted(diff.items()))
                name = f"{parent.data.tags.get('mlflow.runName', parent_id[:8])} + {changes}"
            child = client.create_run(parent.info.experiment_id, run_name=name[:250],
                                      tags={**identity, "mlflow.parentRunId": parent_id, CHILD_KEY_TAG: key,
                                            "changed_params": _json.dumps(diff)[:5000]})

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


ORIGIN_TAG = "origin_run_id"


def run_here(client, info: dict, params):
    """train's run (``info``: models/mlflow_run.json) in the current store. When that store does not know the
    run (outputs pulled from a teammate's remote, a move to a team server), a run is started here for it, tagged
    ``origin_run_id`` with the original id and holding the params, and found again by the later stages: logs
    never go to another machine's store, and never fail for a missing run."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(info["run_id"])
    except MlflowException as exc:
        if getattr(exc, "error_code", "") != "RESOURCE_DOES_NOT_EXIST":
            raise
    from inspection.config import flat_params

    experiment = info.get("experiment") or "casting-inspection"
    exp = client.get_experiment_by_name(experiment)
    exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    found = client.search_runs([exp_id], max_results=1, filter_string=f"tags.{ORIGIN_TAG} = '{info['run_id']}'")
    if found:
        return found[0]
    from mlflow.entities import Param

    name, identity = run_identity({mlflow_key(k): str(v) for k, v in flat_params(params).items()})
    run = client.create_run(exp_id, run_name=name, tags={
        ORIGIN_TAG: info["run_id"], **identity,
        "mlflow.note.content": f"Started in this store for run {info['run_id']} of models/mlflow_run.json, "
                               "which this store does not hold (outputs pulled from another clone, or a new "
                               "tracking server); training's per-epoch metrics are in that run."})
    todo = [Param(mlflow_key(k), str(v)) for k, v in flat_params(params).items()]
    for i in range(0, len(todo), 100):
        client.log_batch(run.info.run_id, params=todo[i:i + 100])
    print(f"tracking: run {info['run_id']} is not in {tracking_uri()} (pulled outputs or a new server); "
          f"logging into run {run.info.run_id} (tag {ORIGIN_TAG})")
    return client.get_run(run.info.run_id)


@contextlib.contextmanager
def stage_run(stage: str, params, used: tuple[str, ...] = (), run_file: Path = RUN_FILE):
    """``resume_run`` for this experiment's run (see ``experiment_run_id``): train's run or its child run."""
    import tempfile as _tempfile

    from inspection.fsutil import write_json

    info = read_json(run_file)
    info["run_id"] = experiment_run_id(stage, params, used, run_file)
    with _tempfile.TemporaryDirectory(prefix="stage-run-") as tmp:
        resolved = Path(tmp) / "mlflow_run.json"
        write_json(resolved, info)
        with resume_run(resolved) as mlflow:
            yield mlflow
