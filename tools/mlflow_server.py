"""An MLflow tracking server for a team: PostgreSQL backend store, proxied artifact store, on 127.0.0.1.

Usage: python tools/mlflow_server.py [--port 5000] [--dir DIR [--keep]] [--workers 1]     (make mlflow-server)

1. A PostgreSQL cluster of its own under DIR/pg (`initdb`, `pg_ctl`; Debian's `postgresql` package, found in
   /usr/lib/postgresql/<version>/bin, 15 first, or on PATH). It listens on 127.0.0.1 on a free port with a
   generated password, and its socket lives in DIR/pg/run, so no system service is needed. PostgreSQL refuses
   to run as root: as root, the cluster runs as the unprivileged user `postgres` (created by the Debian
   package) or, if that user does not exist, a system user `mlflow-pg` created for it.
2. `mlflow server --backend-store-uri postgresql://... --serve-artifacts --artifacts-destination DIR/artifacts`
   on 127.0.0.1:PORT: clients log artifacts through the server (no shared folder needed).
3. Prints the line to run in the pipeline's shell:  export MLFLOW_TRACKING_URI=http://127.0.0.1:PORT
4. Ctrl-C (or SIGTERM) stops the server and the cluster; DIR is deleted unless it was given with --dir or
   --keep was passed. A DIR that already holds a cluster is reused (the runs persist between starts).
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PG_USER = "postgres"
FALLBACK_USER = "mlflow-pg"
DB_USER = "mlflow"
DB_NAME = "mlflow"


class Failure(Exception):
    """A one-line reason the server could not start, with what to do."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def pg_bin(given: str | None = None) -> Path:
    """The folder holding initdb and pg_ctl: --pg-bin, PostgreSQL 15, another installed version, or PATH."""
    candidates = [given] if given else []
    candidates += ["/usr/lib/postgresql/15/bin"]
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: -int(Path(p).parent.name)
                         if Path(p).parent.name.isdigit() else 0)
    for c in candidates:
        if c and (Path(c) / "initdb").exists() and (Path(c) / "pg_ctl").exists():
            return Path(c)
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    raise Failure("PostgreSQL's initdb/pg_ctl not found; install it (Debian: apt-get install postgresql) "
                  "or pass --pg-bin /usr/lib/postgresql/<version>/bin")


class Runner:
    """Runs the PostgreSQL programs, as an unprivileged user when we are root."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.user: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            self.user = self._unprivileged_user()

    @staticmethod
    def _unprivileged_user() -> pwd.struct_passwd:
        for name in (PG_USER, FALLBACK_USER):
            with contextlib.suppress(KeyError):
                return pwd.getpwnam(name)
        nologin = shutil.which("nologin") or "/usr/sbin/nologin"
        res = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", nologin, FALLBACK_USER],
                             capture_output=True, text=True)
        if res.returncode != 0:
            raise Failure(f"PostgreSQL cannot run as root and creating the user {FALLBACK_USER} failed "
                          f"({res.stderr.strip() or res.returncode}); run this as an ordinary user")
        print(f"mlflow-server: created the system user {FALLBACK_USER} to run PostgreSQL (it refuses root)")
        return pwd.getpwnam(FALLBACK_USER)

    def own(self, path: Path) -> None:
        if self.user is not None:
            for p in [path, *path.rglob("*")]:
                os.chown(p, self.user.pw_uid, self.user.pw_gid)

    def run(self, program: str, *args: str, cwd: Path, log: Path | None = None, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        kw: dict = {}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        if self.user is not None:
            kw = dict(user=self.user.pw_uid, group=self.user.pw_gid, extra_groups=[])
            env["HOME"] = str(cwd)
        res = subprocess.run([str(self.bin / program), *args], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=timeout, **kw)
        if check and res.returncode != 0:
            lines = [ln.strip() for ln in (res.stderr + "\n" + res.stdout).splitlines() if ln.strip()]
            telling = [ln for ln in lines if any(w in ln.lower() for w in ("error", "fatal", "denied", "cannot"))]
            tail = (telling or lines or [f"exit code {res.returncode}"])[0]
            if log is not None and log.exists():
                tail += f" (log: {log})"
            raise Failure(f"{program} failed: {tail}")
        return res


class Cluster:
    """A PostgreSQL cluster under ``root`` (data/, run/ for the socket, postgres.log, password)."""

    def __init__(self, root: Path, runner: Runner):
        self.root, self.runner = root, runner
        self.data, self.sock, self.log = root / "data", root / "run", root / "postgres.log"
        self.password_file = root / "password"
        self.port = 0
        self.started = False

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if (self.data / "PG_VERSION").exists():
            return
        self.sock.mkdir(exist_ok=True)
        self.password_file.write_text(secrets.token_urlsafe(24) + "\n")
        self.password_file.chmod(0o600)
        self.runner.own(self.root)
        if self.runner.user is not None:
            probe = subprocess.run(["test", "-w", str(self.root)], user=self.runner.user.pw_uid,
                                   group=self.runner.user.pw_gid, extra_groups=[], cwd="/")
            if probe.returncode != 0:
                raise Failure(f"the user {self.runner.user.pw_name} cannot reach {self.root}; choose a --dir "
                              "whose parent folders others may enter (chmod o+x), e.g. under /tmp")
        self.runner.run("initdb", "-D", str(self.data), "-U", DB_USER, f"--pwfile={self.password_file}",
                        "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", cwd=self.root)

    @property
    def password(self) -> str:
        return self.password_file.read_text().strip()

    def start(self) -> None:
        self.port = free_port()
        self.sock.mkdir(exist_ok=True)
        self.runner.own(self.sock)
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sock} -c max_connections=40"
        self.runner.run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options,
                        "start", cwd=self.root, log=self.log)
        self.started = True

    def stop(self) -> None:
        if self.started:
            self.runner.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop",
                            cwd=self.root, check=False)
            self.started = False

    def ensure_database(self) -> None:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=self.port, user=DB_USER, password=self.password,
                               dbname="postgres", connect_timeout=10)
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,))
                if cur.fetchone() is None:
                    cur.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            con.close()

    def uri(self) -> str:
        # psycopg2 explicitly: SQLAlchemy 2.1's plain postgresql:// means psycopg 3, which is not installed
        return f"postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DB_NAME}"


def mlflow_command(backend: str, artifacts: Path, port: int, workers: int) -> list[str]:
    exe = Path(sys.executable).with_name("mlflow")
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
    return base + ["server", "--backend-store-uri", backend, "--serve-artifacts",
                   "--artifacts-destination", str(artifacts), "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(workers)]


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
            raise Failure(f"mlflow server exited with code {proc.returncode} ({' '.join(tail) or 'no output'}; "
                          f"log: {log})")
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/health", timeout=3) as res:
                if res.status == 200:
                    return
        time.sleep(0.5)
    raise Failure(f"mlflow server did not answer on {url} within {timeout:.0f} s (log: {log})")


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


class Stop(Exception):
    pass


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=5000, help="the server's port on 127.0.0.1 (0: any free port)")
    ap.add_argument("--dir", type=Path, help="work folder (cluster, artifacts, logs); default: a new temporary "
                                             "folder, deleted at exit")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder at exit")
    ap.add_argument("--workers", type=int, default=1, help="mlflow server worker processes")
    ap.add_argument("--pg-bin", help="folder with initdb and pg_ctl")
    ap.add_argument("--timeout", type=float, default=180, help="seconds to wait for the server to answer")
    return ap.parse_args()


def stop_on_signals() -> None:
    """SIGTERM and SIGINT (Ctrl-C) raise Stop, so the clean-up in main runs."""
    def on_signal(signum, frame):  # noqa: ARG001
        raise Stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)


def prepare(work: Path, temporary: bool, wanted_port: int) -> int:
    """Create the work folder and choose the server's port (``wanted_port``, or any free one for 0)."""
    work.mkdir(parents=True, exist_ok=True)
    if temporary:
        work.chmod(0o711)  # the PostgreSQL user must be able to enter it
    port = wanted_port or free_port()
    if port_in_use(port):
        raise Failure(f"port {port} on 127.0.0.1 is in use; pass --port with another one (make mlflow-server "
                      "MLFLOW_PORT=...)")
    return port


def start_cluster(cluster: Cluster) -> None:
    cluster.init()
    cluster.start()
    cluster.ensure_database()


def launch_server(cluster: Cluster, work: Path, port: int, workers: int) -> subprocess.Popen:
    """Start `mlflow server` in its own session, output to DIR/mlflow-server.log; returns without waiting."""
    artifacts = work / "artifacts"
    artifacts.mkdir(exist_ok=True)
    # no background job runners (MLflow 3 starts ~7 Huey consumer processes for GenAI jobs we do not use)
    env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ}
    with open(work / "mlflow-server.log", "ab") as out:
        return subprocess.Popen(mlflow_command(cluster.uri(), artifacts, port, workers), stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True, env=env)


def announce(work: Path, cluster: Cluster, server: subprocess.Popen, url: str, deleted: bool) -> None:
    """Write DIR/server.json and print where everything is and the line to run in the pipeline's shell."""
    (work / "server.json").write_text(json.dumps({"tracking_uri": url, "postgres_port": cluster.port,
                                                  "server_pid": server.pid, "dir": str(work)}) + "\n")
    version = (cluster.data / "PG_VERSION").read_text().strip()
    print(f"mlflow-server: PostgreSQL {version} on 127.0.0.1:{cluster.port} (cluster {cluster.data}), "
          f"artifacts proxied to {work / 'artifacts'}, work folder {work}")
    print(f"mlflow-server: UI and API on {url}; in the pipeline's shell run:")
    print(f"export MLFLOW_TRACKING_URI={url}")
    print("mlflow-server: Ctrl-C stops the server and the cluster"
          + (" and deletes the work folder" if deleted else ""), flush=True)


def clean_up(server: subprocess.Popen | None, cluster: Cluster | None, work: Path, delete: bool, ok: bool) -> None:
    """Stop the server and the cluster, then delete the work folder (``delete``) or say how to reuse it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # finish the clean-up even on a second Ctrl-C
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_process(server)
    if cluster is not None:
        cluster.stop()
    if delete:
        shutil.rmtree(work, ignore_errors=True)
    elif ok:
        print(f"mlflow-server: kept {work}; start it again with --dir {work}", flush=True)


def main() -> int:
    args = parse_args()
    stop_on_signals()
    temporary = args.dir is None
    work = Path(tempfile.mkdtemp(prefix="mlflow-server-")) if temporary else args.dir.resolve()
    delete = temporary and not args.keep
    cluster: Cluster | None = None
    server: subprocess.Popen | None = None
    code = 0
    try:
        port = prepare(work, temporary, args.port)
        cluster = Cluster(work / "pg", Runner(pg_bin(args.pg_bin)))
        start_cluster(cluster)
        server = launch_server(cluster, work, port, args.workers)
        url, log = f"http://127.0.0.1:{port}", work / "mlflow-server.log"
        wait_healthy(server, url, log, args.timeout)
        announce(work, cluster, server, url, delete)
        server.wait()
        raise Failure(f"mlflow server exited with code {server.returncode} (log: {log})")
    except Stop:
        print("mlflow-server: stopping", flush=True)
    except Failure as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        clean_up(server, cluster, work, delete, code == 0)
    return code


if __name__ == "__main__":
    sys.exit(main())
