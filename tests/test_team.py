"""Working as a team: DVC experiments in a queue and in temporary workspaces logging into one MLflow store,
a DVC remote round trip (push from one clone, pull in a fresh one, nothing re-runs), and the team MLflow
server on PostgreSQL (tools/mlflow_server.py)."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import REPO, copy_repo, make_class_tree, sh
from inspection.config import set_dotted

GIT_ID = ["-c", "user.email=ci@example.com", "-c", "user.name=ci"]
HANG_GUARD = 1200  # seconds: only so that a broken queue fails the test instead of hanging CI


def tiny_repo(root: Path, **changes) -> Path:
    """A git copy of the project with params for a few seconds per stage; ``changes``: dotted key -> value."""
    copy_repo(root)
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(source="synthetic", synthetic={"per_class": 32, "size": 64, "seed": 5})
    params["train"].update(image_size=32, max_epochs=1, patience=1, batch_size=16)
    params["evaluate"]["bootstrap"]["resamples"] = 200
    params["evaluate"]["retake"]["ood_battery_per_kind"] = 4
    params["evaluate"]["robustness"]["perturbations"] = {
        "exposure x1.25": {"kind": "gain", "value": 1.25, "gated": True}}
    params["export"]["parity_images"] = 8
    set_dotted(params, changes)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", *GIT_ID, "commit", "-qm", "tiny"]):
        sh(cmd, root)
    return root


def experiments(show: list) -> dict[str, dict]:
    """name -> data ({params, metrics, ...}) of every experiment in `dvc exp show --json` output."""
    found: dict[str, dict] = {}

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("name") and isinstance(node.get("data"), dict) and "params" in node["data"]:
                found[node["name"]] = node["data"]
            for key in ("experiments", "revs"):
                walk(node.get(key))

    walk(show)
    return found


def wait_for_queue(repo: Path) -> str:
    deadline = time.monotonic() + HANG_GUARD
    while time.monotonic() < deadline:
        status = sh(["dvc", "queue", "status"], repo).stdout
        if not any(word in status for word in ("Queued", "Running")):
            return status
        time.sleep(3)
    sh(["dvc", "queue", "kill", "epochs1", "epochs2"], repo, check=False)
    pytest.fail(f"the queue did not finish:\n{status}")


def mlflow_runs(db: Path) -> list:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{db}")
    exp = client.get_experiment_by_name("casting-inspection")
    return client.search_runs([exp.experiment_id]) if exp else []


# ---- experiments -------------------------------------------------------------------------------------------

def test_queue_and_temp_experiments_log_into_the_main_workspace(tmp_path):
    """Two queued experiments run side by side (`dvc queue start -j 2`) in DVC's temporary workspaces, read the
    data through a path relative to the main workspace (../parts.zip) and log into the main workspace's
    mlflow.db; `dvc exp run --temp` reads the same relative path. The workspace's params.yaml is never touched."""
    parts = tmp_path / "parts"
    make_class_tree(parts, {"defect": "defect", "ok": "ok"}, n=32, size=64)
    with zipfile.ZipFile(tmp_path / "parts.zip", "w") as z:
        for f in sorted(parts.rglob("*.jpeg")):
            z.write(f, f.relative_to(parts).as_posix())
    repo = tiny_repo(tmp_path / "repo", **{"data.source": "local", "data.local.path": "../parts.zip"})
    params_before = (repo / "params.yaml").read_bytes()

    for name, epochs in (("epochs1", 1), ("epochs2", 2)):
        sh(["dvc", "exp", "run", "--queue", "--name", name, "--set-param", f"train.max_epochs={epochs}", "export"],
           repo)
    sh(["dvc", "queue", "start", "--jobs", "2"], repo)
    status = wait_for_queue(repo)
    logs = {n: sh(["dvc", "queue", "logs", n], repo, check=False).stdout for n in ("epochs1", "epochs2")}
    assert status.count("Success") == 2, f"{status}\n" + "\n".join(f"--- {n}\n{t[-3000:]}" for n, t in logs.items())
    # the two trainings really ran (no run-cache hit) and in parallel temporary workspaces
    assert all("Running stage 'train'" in t for t in logs.values())

    import hashlib

    sha = hashlib.sha256((tmp_path / "parts.zip").read_bytes()).hexdigest()  # a new download param, same data
    sh(["dvc", "exp", "run", "--temp", "--name", "temp-sha", "--set-param", f"data.local.sha256={sha}", "download"],
       repo)

    exps = experiments(json.loads(sh(["dvc", "exp", "show", "--json"], repo).stdout))
    assert {"epochs1", "epochs2", "temp-sha"} <= set(exps)
    for name, epochs in (("epochs1", 1), ("epochs2", 2), ("temp-sha", 1)):
        params = exps[name]["params"]["params.yaml"]["data"]
        assert params["train"]["max_epochs"] == epochs
        assert params["data"]["local"]["path"] == "../parts.zip"
    assert exps["temp-sha"]["params"]["params.yaml"]["data"]["data"]["local"]["sha256"] == sha
    for name in ("epochs1", "epochs2"):
        headline = exps[name]["metrics"]["reports/headline.json"]["data"]
        assert 0 <= headline["threshold"] <= 1 and len(headline) <= 15

    runs = mlflow_runs(repo / "mlflow.db")  # the main workspace's store
    by_epochs = {r.data.params["train.max_epochs"]: r for r in runs}
    assert set(by_epochs) == {"1", "2"}, [r.data.params.get("train.max_epochs") for r in runs]
    head = sh(["git", "rev-parse", "HEAD"], repo).stdout.strip()
    for epochs in ("1", "2"):  # train opened the run, evaluate and export logged into it
        run = by_epochs[epochs]
        assert run.info.status == "FINISHED"
        name = f"epochs{epochs}"   # named after the DVC experiment; its commit is the queued baseline, not HEAD-dirty
        assert run.info.run_name == name and run.data.tags["dvc_exp_name"] == name
        assert run.data.tags["git_commit"] == head == run.data.tags["dvc_exp_baseline"]
        assert "val_loss" in run.data.metrics and "test_recall" in run.data.metrics
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    assert len(client.get_metric_history(by_epochs["2"].info.run_id, "loss")) == 2
    assert len(client.get_metric_history(by_epochs["1"].info.run_id, "loss")) == 1
    # nothing was written into the temporary workspaces' own folders, and params.yaml is as committed
    assert not list((repo / ".dvc/tmp/exps").rglob("mlflow.db"))
    assert (repo / "params.yaml").read_bytes() == params_before
    for name in ("epochs1", "temp-sha"):
        lock = sh(["git", "show", f"{experiment_rev(repo, name)}:dvc.lock"], repo).stdout
        assert "path: ../parts.zip" in lock and str(tmp_path) not in lock


def experiment_rev(repo: Path, name: str) -> str:
    found: dict[str, str] = {}

    def walk(node):
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            if node.get("name") == name and node.get("rev"):
                found[name] = node["rev"]
            for key in ("experiments", "revs"):
                walk(node.get(key))

    walk(json.loads(sh(["dvc", "exp", "show", "--json"], repo).stdout))
    return found[name]


FAKE_DVC = """#!{python}
import pathlib, subprocess, sys
pathlib.Path({args!r}).write_text("\\n".join(sys.argv[1:]))
print("Running stage 'a':", flush=True)
subprocess.run([sys.executable, "-c", "x = bytearray(60 * 2**20); import time; time.sleep(0.5)"])
print("Stage 'b' didn't change, skipping", flush=True)
print("Running stage 'c':", flush=True)
print("> python -m stages.c", flush=True)
"""


def test_timed_repro_times_the_stages_of_one_dvc_exp_run(tmp_path, monkeypatch):
    """tools/timed_repro.py runs `dvc exp run` (here a stand-in `dvc` that prints what DVC prints), times the
    stages from its output and never writes params.yaml (a no-op override is not passed on)."""
    sys.path.insert(0, str(REPO / "tools"))
    import timed_repro

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC.format(python=sys.executable, args=str(tmp_path / "args.txt")))
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    params = tmp_path / "params.yaml"
    params.write_text("# comment\ntrain:\n  max_epochs: 14   # kept\n  augment: {gain: [0.6, 1.5]}\n")
    overrides = timed_repro.without_noops(["train.max_epochs=14", "train.max_epochs=2", "train.seed=0"], params)
    assert overrides == ["train.max_epochs=2", "train.seed=0"]
    assert timed_repro.absolute_path_overrides(["data.local.path=/abs/x.zip", "data.local.path=../x.zip"]) == \
        ["data.local.path=/abs/x.zip"]
    before = params.read_bytes()
    t = timed_repro.run(overrides, "n1", True, tmp_path / "timings.json", ["c"])
    assert (tmp_path / "args.txt").read_text().split("\n") == [
        "exp", "run", "--force", "--name", "n1", "--set-param", "train.max_epochs=2", "--set-param", "train.seed=0", "c"]
    assert t["ran"] == {"a": True, "b": False, "c": True} and t["exit_code"] == 0
    assert {"a", "c", "total"} <= set(t) and "b" not in t
    assert set(t["peak_rss_mib_by_stage"]) == {"a", "c"}
    assert json.loads((tmp_path / "timings.json").read_text()) == t
    assert params.read_bytes() == before


# ---- a DVC remote ------------------------------------------------------------------------------------------

def always_changed(repo: Path) -> set[str]:
    stages = yaml.safe_load((repo / "dvc.yaml").read_text())["stages"]
    return {name for name, s in stages.items() if s.get("always_changed")}


def test_remote_round_trip_needs_no_rerun(e2e_repo, tmp_path):
    """Push outputs and run-cache from one clone to a local-directory remote; a fresh `git clone` + `dvc pull`
    is up to date and `dvc repro` re-runs nothing."""
    src = tmp_path / "src"
    shutil.copytree(e2e_repo, src, symlinks=True)
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "--default", "team", str(remote)], src)
    sh(["git", "add", ".dvc/config", "dvc.lock", "reports/headline.json"], src)  # the metrics live in git
    sh(["git", *GIT_ID, "commit", "-qm", "lock and remote"], src)
    sh(["dvc", "push", "--run-cache"], src)
    assert any(remote.rglob("*")), "nothing was pushed"

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(src), str(clone)], tmp_path)
    assert not (clone / "models/model.keras").exists()
    # before any pull (nothing from the remote): the metrics are in git, so diff and exp show read them
    branch = sh(["git", "rev-parse", "--abbrev-ref", "HEAD"], clone).stdout.strip()
    diff = sh(["dvc", "metrics", "diff", branch, "--all", "--json"], clone)
    assert "route_missed" in diff.stdout and "failed to load" not in diff.stderr, diff.stdout + diff.stderr
    shown = sh(["dvc", "exp", "show", "--json"], clone)
    assert "route_missed" in shown.stdout and "review_share_line" in shown.stdout, shown.stdout[-2000:]
    pulled = sh(["dvc", "pull"], clone)
    assert (clone / "models/model.keras").exists() and (clone / "reports/headline.json").exists(), pulled.stdout
    checkout = sh(["dvc", "checkout"], clone).stdout   # quiet: the bundle's files keep normal modes
    assert not [ln for ln in checkout.splitlines() if ln.startswith("M")], checkout
    metrics = sh(["dvc", "metrics", "show", "--json"], clone)  # from git, no remote needed
    assert "route_missed" in metrics.stdout, metrics.stdout + metrics.stderr

    # up to date: only a stage declared always_changed may be listed
    status = json.loads(sh(["dvc", "status", "--json"], clone).stdout)
    print(f"dvc status after pull: {status}")
    assert set(status) <= always_changed(clone), status
    lock_before = (clone / "dvc.lock").read_text()
    repro = sh(["dvc", "repro"], clone)
    ran = {line.split("'")[1] for line in repro.stdout.splitlines() if line.startswith("Running stage")}
    print(f"dvc repro ran: {sorted(ran)}")
    assert ran <= always_changed(clone), repro.stdout[-3000:]
    assert "Running stage 'train'" not in repro.stdout
    assert (clone / "dvc.lock").read_text() == lock_before
    status = json.loads(sh(["dvc", "status", "--json"], clone).stdout)
    assert set(status) <= always_changed(clone), status


def _runs(db: Path) -> set[str]:
    import sqlite3

    if not db.exists():
        return set()
    with sqlite3.connect(db) as con:
        return {r[0] for r in con.execute("select run_uuid from runs")}


def test_a_teammate_clone_logs_registers_and_promotes_in_its_own_store(e2e_repo, tmp_path):
    """push -> second clone -> pull -> `dvc exp run` there: the runs, the registered version and the champion
    alias land in the second clone's store; the first clone's store gets nothing, and nothing crashes on the run
    id that only the first store knows."""
    import mlflow

    src = tmp_path / "src"
    shutil.copytree(e2e_repo, src, symlinks=True)
    sh(["dvc", "remote", "add", "--default", "team", str(tmp_path / "remote")], src)
    sh(["git", "add", ".dvc/config", "dvc.lock", "reports/headline.json"], src)
    sh(["git", *GIT_ID, "commit", "-qm", "lock and remote"], src)
    sh(["dvc", "push"], src)
    first_store = _runs(src / "mlflow.db")
    original = json.loads((src / "models/mlflow_run.json").read_text())["run_id"]

    clone = tmp_path / "mate"
    sh(["git", "clone", "-q", str(src), str(clone)], tmp_path)
    if (src / "web/node_modules").exists():
        (clone / "web/node_modules").symlink_to((src / "web/node_modules").resolve())
    sh(["dvc", "pull"], clone)
    res = sh(["dvc", "exp", "run", "-n", "mate", "-S", "export.parity_images=12", "promote"], clone)   # report/web: e2e
    assert "Running stage 'export'" in res.stdout and "Running stage 'promote'" in res.stdout, res.stdout[-3000:]
    assert "Traceback" not in res.stdout + res.stderr
    assert _runs(src / "mlflow.db") == first_store   # nothing written into the first clone's store

    uri = f"sqlite:///{clone / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    here = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string=f"tags.origin_run_id = '{original}'")
    assert len(here) == 1 and here[0].info.run_name == "mate" and here[0].data.tags["dvc_exp_name"] == "mate"
    assert json.loads(here[0].data.tags["params_diff"]) == {"export.parity_images": "12"}   # against the baseline
    name = yaml.safe_load((clone / "params.yaml").read_text())["registry"]["model_name"]
    versions = client.search_model_versions(f"name='{name}'")
    assert versions and {v.run_id for v in versions} <= {r.info.run_id for r in client.search_runs(
        [here[0].info.experiment_id])}
    promotion = json.loads((clone / "reports/promotion.json").read_text())
    assert promotion["decision"] == "first model" and promotion["alias"] == "champion", promotion  # in this store
    assert client.get_model_version_by_alias(name, "champion").version == promotion["challenger"]["version"]
    assert_no_store_or_machine_path(clone, str(src), str(clone), str(tmp_path), str(e2e_repo))


# ---- the team MLflow server on PostgreSQL ------------------------------------------------------------------

def postgres_available() -> bool:
    sys.path.insert(0, str(REPO / "tools"))
    import mlflow_server

    try:
        mlflow_server.pg_bin()
        import psycopg2  # noqa: F401
        return True
    except (mlflow_server.Failure, ImportError):
        return False


def require_postgres() -> None:
    """Skip without PostgreSQL (or psycopg2), unless REQUIRE_POSTGRES=1: then its absence fails."""
    if not postgres_available():
        if os.environ.get("REQUIRE_POSTGRES") == "1":
            pytest.fail("REQUIRE_POSTGRES=1 but PostgreSQL or psycopg2 is missing: apt-get install postgresql")
        pytest.skip("PostgreSQL not installed (apt-get install postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclasses.dataclass
class TeamServer:
    uri: str            # what `make mlflow-server` says to export as MLFLOW_TRACKING_URI
    work: Path          # its work folder (the cluster and the artifacts), deleted when it stops
    lines: list[str]    # everything it printed


@contextlib.contextmanager
def team_server():
    """The README's `make mlflow-server` (tools/mlflow_server.py: a throw-away PostgreSQL cluster and an MLflow
    server on 127.0.0.1, a free port) in its own process group; yields a TeamServer once it printed the export
    line, and stops it on the way out with Ctrl-C (SIGINT to the group: make and the tool both get it)."""
    require_postgres()
    from conftest import make_cmd

    server = subprocess.Popen(make_cmd("mlflow-server", f"MLFLOW_PORT={free_port()}"), cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    ready = threading.Event()

    def read():
        for line in server.stdout:
            lines.append(line)
            if line.startswith("export MLFLOW_TRACKING_URI="):
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(HANG_GUARD)
        uri = next((ln.split("=", 1)[1].strip() for ln in lines if ln.startswith("export MLFLOW_TRACKING_URI=")), None)
        work = next((ln.rsplit("work folder ", 1)[1].strip() for ln in lines if "work folder " in ln), None)
        assert uri and work, "".join(lines)
        yield TeamServer(uri, Path(work), lines)
    finally:
        os.killpg(server.pid, signal.SIGINT)
        try:
            server.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            raise
        reader.join(30)


def assert_stopped(server: TeamServer) -> None:
    """Ctrl-C stopped it cleanly: the server, the cluster and the work folder are gone."""
    lines = server.lines
    assert "mlflow-server: stopping\n" in lines and not any(ln.startswith("error:") for ln in lines), "".join(lines)
    assert not server.work.exists()
    port = int(server.uri.rsplit(":", 1)[1])
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


def with_store(cmd: list[str], cwd: Path, uri: str) -> subprocess.CompletedProcess:
    """``cmd`` in ``cwd`` with MLFLOW_TRACKING_URI=uri (the shell of someone who exported the server's line)."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_mlflow_server_on_postgresql(e2e_repo, tmp_path):
    """`make mlflow-server`: start it, train against it (dvc repro), read the run back through the REST API,
    stop it with Ctrl-C: the server, the cluster and the work folder are gone."""
    require_postgres()
    repo = tmp_path / "repo"
    shutil.copytree(e2e_repo, repo, symlinks=True)
    with team_server() as server:
        with_store(["dvc", "repro", "--force", "--single-item", "train"], repo, server.uri)

        import mlflow

        info = json.loads((repo / "models/mlflow_run.json").read_text())
        assert "tracking_uri" not in info  # no store in a DVC output: the run is in the store the stage was given
        client = mlflow.MlflowClient(tracking_uri=server.uri)
        run = client.get_run(info["run_id"])
        assert run.data.params["train.image_size"] == "64" and run.info.status == "FINISHED"
        assert "val_loss" in run.data.metrics
        assert len(client.get_metric_history(run.info.run_id, "loss")) >= 1
        assert run.info.artifact_uri.startswith("mlflow-artifacts:")  # proxied through the server
        assert [a.path for a in client.list_artifacts(run.info.run_id, "reports/train")] == ["reports/train/history.csv"]
        assert list((server.work / "artifacts").rglob("history.csv"))
    assert_stopped(server)


ABSOLUTE_PATH = re.compile(r"(?<![\w.~])/(?:tmp|root|home|work|srv|var|mnt|opt|usr|check)/[^\s\"',]*")


def assert_no_store_or_machine_path(repo: Path, *forbidden: str) -> None:
    """No DVC output of ``repo`` (every text file of every stage's outs, and dvc.lock) names a tracking store or an
    absolute path: they travel through the remote to other machines. (An absolute path written in params.yaml,
    such as web.chromium, is a setting that dvc.lock records as given, not a machine's path.)"""
    from inspection.runner.preflight import outputs, stage_spec

    configured = set(ABSOLUTE_PATH.findall((repo / "params.yaml").read_text()))
    dvc_yaml = yaml.safe_load((repo / "dvc.yaml").read_text())
    files = [repo / "dvc.lock"]
    for stage_name in dvc_yaml["stages"]:
        for out in outputs(stage_spec(stage_name, dvc_yaml)):
            p = repo / out
            files += [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else []
    files = [f for f in files if f.suffix in {".json", ".csv", ".html", ".md", ".txt", ".yaml", ".lock"}]
    assert len(files) > 20 and repo / "models/mlflow_run.json" in files
    for f in files:
        text = f.read_text()
        for word in (*forbidden, "sqlite:", "postgresql", "mlflow-artifacts:", "127.0.0.1", "file://"):
            assert word not in text, f"{f.relative_to(repo)} contains {word!r}"
        paths = set(ABSOLUTE_PATH.findall(text)) - configured
        assert not paths, f"{f.relative_to(repo)} names {sorted(paths)}"


def test_a_teammate_clone_logs_registers_and_promotes_on_the_team_server(e2e_repo, tmp_path):
    """The teammate flow against the team server (`make mlflow-server`, PostgreSQL): the first clone trains,
    evaluates, exports and promotes with MLFLOW_TRACKING_URI pointing to it and pushes to a DVC remote; a second
    clone pulls and runs `dvc exp run -n mate` with the same URI. The second clone's run is on the server (a child
    of the first clone's run, which the server knows: no stand-in run), export finds the version the first clone
    registered and promote names the server's champion; neither clone's mlflow.db gets anything, and no DVC output
    holds the server's URI or an absolute path."""
    import mlflow

    require_postgres()
    src = tmp_path / "src"
    shutil.copytree(e2e_repo, src, symlinks=True)
    local_runs = _runs(src / "mlflow.db")
    with team_server() as server:
        first = with_store(["dvc", "repro", "--force", "--single-item", "train", "evaluate", "export", "promote"],
                           src, server.uri)
        for stage in ("train", "evaluate", "export", "promote"):
            assert f"Running stage '{stage}'" in first.stdout, first.stdout[-3000:]
        sh(["dvc", "remote", "add", "--default", "team", str(tmp_path / "remote")], src)
        sh(["git", "add", ".dvc/config", "dvc.lock", "reports/headline.json"], src)
        sh(["git", *GIT_ID, "commit", "-qm", "trained against the team server"], src)
        sh(["dvc", "push"], src)

        client = mlflow.MlflowClient(tracking_uri=server.uri)
        original = json.loads((src / "models/mlflow_run.json").read_text())["run_id"]
        trained = client.get_run(original)                        # the first clone's run is on the server
        name = yaml.safe_load((src / "params.yaml").read_text())["registry"]["model_name"]
        promoted = json.loads((src / "reports/promotion.json").read_text())
        assert promoted["decision"] == "first model" and promoted["alias"] == "champion", promoted
        v1 = client.get_model_version_by_alias(name, "champion")
        assert v1.version == str(promoted["challenger"]["version"]) and v1.run_id == original

        clone = tmp_path / "mate"
        sh(["git", "clone", "-q", str(src), str(clone)], tmp_path)
        if (src / "web/node_modules").exists():
            (clone / "web/node_modules").symlink_to((src / "web/node_modules").resolve())
        sh(["dvc", "pull"], clone)
        res = with_store(["dvc", "exp", "run", "-n", "mate", "-S", "export.parity_images=12", "promote"], clone,
                         server.uri)
        assert "Running stage 'export'" in res.stdout and "Running stage 'promote'" in res.stdout, res.stdout[-3000:]
        for out in (first, res):
            assert "Traceback" not in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]

        exp_id = trained.info.experiment_id
        mate = client.search_runs([exp_id], filter_string="tags.dvc_exp_name = 'mate'")
        assert len(mate) == 1, [r.info.run_name for r in mate]
        mate = mate[0]
        assert mate.info.run_name == "mate" and mate.info.status == "FINISHED"
        assert mate.data.tags["mlflow.parentRunId"] == original                  # the run train logged, found
        assert not client.search_runs([exp_id], filter_string=f"tags.origin_run_id = '{original}'")
        assert json.loads(mate.data.tags["params_diff"]) == {"export.parity_images": "12"}   # against the baseline
        assert mate.data.tags["dvc_exp_baseline"] == sh(["git", "rev-parse", "HEAD"], clone).stdout.strip()
        assert mate.data.tags["git_commit"] == mate.data.tags["dvc_exp_baseline"]     # not the clone's HEAD-dirty
        assert mate.data.params["export.parity_images"] == "12" and "promote_images" in mate.data.metrics

        # the registry is the server's: the same model, registered once (by the first clone), and its champion
        versions = client.search_model_versions(f"name='{name}'")
        assert [v.version for v in versions] == [v1.version], [(v.version, v.run_id) for v in versions]
        assert "already holds this model" in res.stdout
        promotion = json.loads((clone / "reports/promotion.json").read_text())
        champion = client.get_model_version_by_alias(name, "champion")
        assert promotion["challenger"]["version"] == int(champion.version) == int(v1.version), promotion
        assert promotion["decision"] == "first model" and promotion["alias"] == "champion", promotion
        assert promotion["challenger"]["content_hash"] == champion.tags["content_hash"]
        assert f"aliases now: champion -> version {champion.version} (this model)" in res.stdout, res.stdout[-3000:]

        # nothing went into a local store, and no DVC output names the server or a machine's path
        assert _runs(src / "mlflow.db") == local_runs and _runs(clone / "mlflow.db") == set()
        for repo in (src, clone):
            assert_no_store_or_machine_path(repo, server.uri, str(server.work), str(tmp_path), str(e2e_repo))
    assert_stopped(server)


# ---- temporary workspaces find the champion ----------------------------------------------------------------

def copy_with_store(src: Path, dest: Path) -> Path:
    """A copy of the repository ``src`` whose mlflow.db points at the copy's own artifact folders (the store records
    absolute artifact locations): runs logged in the copy never write into ``src``."""
    import sqlite3

    shutil.copytree(src, dest, symlinks=True)
    old, new = str(src.resolve()), str(dest.resolve())
    with sqlite3.connect(dest / "mlflow.db") as con:
        tables = [r[0] for r in con.execute("select name from sqlite_master where type = 'table'")]
        for table in tables:
            for col in [r[1] for r in con.execute(f"pragma table_info('{table}')") if "CHAR" in r[2].upper()
                        or "TEXT" in r[2].upper()]:
                con.execute(f"update \"{table}\" set \"{col}\" = replace(\"{col}\", ?, ?) where \"{col}\" like ?",
                            (old, new, f"%{old}%"))
    return dest


def experiment_output(repo: Path, exp: str, stage: str, path: str) -> dict:
    """A JSON output of ``stage`` as experiment ``exp`` left it: its md5 in the experiment's dvc.lock, read from
    the cache (a --temp run leaves the workspace alone)."""
    lock = yaml.safe_load(sh(["git", "show", f"{experiment_rev(repo, exp)}:dvc.lock"], repo).stdout)
    md5 = next(o["md5"] for o in lock["stages"][stage]["outs"] if o["path"] == path)
    return json.loads((repo / ".dvc/cache/files/md5" / md5[:2] / md5[2:]).read_text())


def test_temp_experiments_find_the_main_workspace_champion(e2e_repo, tmp_path):
    """`dvc exp run --temp` runs in a copy under .dvc/tmp/exps/ and logs into the main workspace's mlflow.db, where
    the end-to-end run made version 1 champion. The same model re-exported (export.parity_images) is version 1
    again and promote names it as the champion, not "no champion"; a different one (export.quantize float16: new
    TF.js weights) becomes version 2 and is compared with champion version 1. Only export and promote re-run."""
    import mlflow

    repo = copy_with_store(e2e_repo, tmp_path / "repo")
    sh(["git", "add", "dvc.lock", "reports/headline.json"], repo)
    sh(["git", *GIT_ID, "commit", "-qm", "lock"], repo)
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    name = yaml.safe_load((repo / "params.yaml").read_text())["registry"]["model_name"]
    assert client.get_registered_model(name).aliases == {"champion": 1}

    def temp_run(exp: str, change: str) -> str:
        res = sh(["dvc", "exp", "run", "--temp", "-n", exp, "-S", change, "promote"], repo)
        out = res.stdout + res.stderr
        ran = {ln.split("'")[1] for ln in res.stdout.splitlines() if ln.startswith("Running stage")}
        assert {"export", "promote"} <= ran <= {"sources", "export", "promote"}, res.stdout[-3000:]
        assert "Traceback" not in out and "no champion" not in out, out[-3000:]
        return res.stdout

    same = temp_run("same-model", "export.parity_images=12")
    assert f"{name} version 1 already holds this model" in same, same[-3000:]
    assert "aliases now: champion -> version 1 (this model)" in same, same[-3000:]
    promotion = experiment_output(repo, "same-model", "promote", "reports/promotion.json")
    assert promotion["challenger"]["version"] == 1 and promotion["alias"] == "champion", promotion
    assert "no champion" not in promotion["reason"]
    assert client.get_registered_model(name).aliases == {"champion": 1}

    other = temp_run("float16", "export.quantize=float16")
    assert "promote: scoring the same photos with the champion (version 1)" in other, other[-3000:]
    promotion = experiment_output(repo, "float16", "promote", "reports/promotion.json")
    assert promotion["challenger"]["version"] == 2 and promotion["champion"]["version"] == 1, promotion
    assert promotion["registry_state"]["champion_compared"]["version"] == 1
    assert client.get_model_version(name, "2").tags["promotion.baseline"] == "1"
    expected = {"champion": 2} if promotion["decision"] == "promoted" else {"champion": 1, "challenger": 2}
    assert client.get_registered_model(name).aliases == expected, promotion["decision"]
    assert client.search_runs([e.experiment_id for e in client.search_experiments()],
                              filter_string="tags.dvc_exp_name = 'float16'")   # its run: in the main store
    assert not list((repo / ".dvc/tmp/exps").rglob("mlflow.db"))


# ---- licences ----------------------------------------------------------------------------------------------

def test_one_licence_everywhere_and_the_vendored_notices_ship_with_the_bundle(tmp_path):
    import tomllib

    from inspection.deploy.bundle import VENDOR_LICENSES, build_bundle, node_modules_dir

    licence = (REPO / "LICENSE").read_text()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence
    declared = {
        "pyproject.toml": tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["license"]["text"],
        "web/package.json": json.loads((REPO / "web/package.json").read_text())["license"],
        "web/package-lock.json": json.loads((REPO / "web/package-lock.json").read_text())["packages"][""]["license"],
    }
    assert set(declared.values()) == {"Apache-2.0"}, declared
    # the notices name the locked versions of what the bundle vendors
    locked = json.loads((REPO / "web/package-lock.json").read_text())["packages"]
    notices = (REPO / "web/THIRD_PARTY_NOTICES.txt").read_text()
    for pkg in ("@tensorflow/tfjs", "@tensorflow/tfjs-backend-wasm"):
        assert f"{pkg} {locked['node_modules/' + pkg]['version']} - {locked['node_modules/' + pkg]['license']}" in notices
    modules = node_modules_dir()
    if not (modules / "@tensorflow/tfjs/package.json").exists():
        pytest.skip("web/node_modules not installed (make install)")
    tfjs = tmp_path / "tfjs"
    tfjs.mkdir()
    (tfjs / "model.json").write_text("{}")
    build_bundle(tmp_path / "web", {}, tfjs=tfjs, modules=modules)
    for rel, src in VENDOR_LICENSES.items():
        assert (tmp_path / "web" / rel).read_bytes() == Path(src).read_bytes()
