"""The README's two commands on a fresh machine: a copy of the repo in an empty folder (no team mirror beside it).

`make run` with Kaggle unreachable stops with one line before any stage; the team mirror is used when it is
there; `make install` installs a missing Chromium as root and prints the exact apt line otherwise; the console
entry point `inspect-castings` works from any directory after `pip install .`. The Kaggle-cache branch is the
end-to-end run itself (conftest.e2e_repo)."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import HAS_BROWSER, REPO, copy_repo, make_class_tree, make_cmd, share_node_modules, sh


def fresh_copy(parent: Path, **web) -> Path:
    root = copy_repo(parent / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["web"].update(web)
    if not HAS_BROWSER:
        params["web"]["require_browser"] = False
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    share_node_modules(root)
    return root


def run(cmd, cwd, **env):
    full = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env)
    full.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True)


def test_make_run_offline_without_mirror_stops_with_one_line(tmp_path):
    root = fresh_copy(tmp_path)
    res = run(make_cmd("run"), root, KAGGLEHUB_CACHE=str(tmp_path / "empty-cache"),
              KAGGLE_API_ENDPOINT="http://127.0.0.1:9")  # Kaggle unreachable, nothing cached
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    ours = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(ours) == 1 and "Traceback" not in res.stderr, res.stderr
    line = ours[0]
    for part in ("data.local.path ../shared/datasets/casting-product-train.zip does not exist",
                 "could not be downloaded", "-S data.local.path=<zip or folder>", "-S data.source=synthetic"):
        assert part in line, line
    assert "Running stage" not in res.stdout and not (root / "data/raw").exists()  # stopped before any stage


def test_the_team_mirror_beside_the_clone_is_used(tmp_path):
    root = fresh_copy(tmp_path)
    tree = tmp_path / "tree"
    make_class_tree(tree / "casting_data/casting_data/train", {"def_front": "defect", "ok_front": "ok"}, n=3)
    mirror = tmp_path / "shared/datasets/casting-product-train.zip"
    mirror.parent.mkdir(parents=True)
    with zipfile.ZipFile(mirror, "w") as z:
        for f in sorted(p for p in tree.rglob("*") if p.is_file()):
            z.write(f, f.relative_to(tree).as_posix())
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "fresh"]):
        sh(cmd, root)
    env = dict(KAGGLEHUB_CACHE=str(tmp_path / "empty-cache"), KAGGLE_API_ENDPOINT="http://127.0.0.1:9")
    res = run([sys.executable, "-m", "commands.source"], root, **env)
    assert res.returncode == 0 and "local copy ../shared/datasets/casting-product-train.zip" in res.stdout, res.stderr
    res = run(["dvc", "repro", "download"], root, **env)
    assert res.returncode == 0, res.stderr[-2000:]
    source = yaml.safe_load((root / "data/raw/SOURCE.json").read_text())
    assert source["source"] == "local" and source["counts"] == {"defect": 3, "ok": 3}
    assert source["path"] == "../shared/datasets/casting-product-train.zip"  # as written, no machine path


def _fake_apt_get(folder: Path, chromium: Path) -> tuple[Path, Path]:
    """An apt-get that records its arguments and "installs" chromium as an executable at ``chromium``."""
    log = folder / "apt.log"
    apt = folder / "apt-get"
    apt.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n"
                   f"case \"$*\" in *install*chromium*) printf '#!/bin/sh\\n' > {chromium}; chmod +x {chromium};; esac\n")
    apt.chmod(0o755)
    return apt, log


def test_make_install_without_chromium_installs_it_or_prints_the_apt_line(tmp_path):
    chromium = tmp_path / "bin" / "chromium"   # nothing there yet
    chromium.parent.mkdir()
    root = fresh_copy(tmp_path, chromium=str(chromium), require_browser=True)
    apt, log = _fake_apt_get(tmp_path, chromium)
    res = run(make_cmd("install"), root, APT_GET=str(apt))
    if os.geteuid() == 0:   # root on Debian: it installs, then checks again
        assert res.returncode == 0, res.stdout + res.stderr
        assert "system packages: installing chromium" in res.stdout and "system packages: installed" in res.stdout
        assert "install -y -qq chromium" in log.read_text() and os.access(chromium, os.X_OK)
    else:                   # a normal user: the exact command, and make stops
        assert res.returncode == 2 and "run: sudo apt-get install -y chromium" in res.stderr, res.stderr
        assert not log.exists()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv to run the check as a normal user")
def test_system_deps_as_a_normal_user_prints_the_sudo_line():
    with tempfile.TemporaryDirectory() as tmp:  # readable by the unprivileged user (pytest's tmp_path is not)
        folder = Path(tmp)
        folder.chmod(0o755)
        params = folder / "params.yaml"
        params.write_text(yaml.safe_dump({"web": {"chromium": str(folder / "no-chromium"), "require_browser": True}}))
        params.chmod(0o644)
        probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                "-c", "import yaml"], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"the venv is not readable by an unprivileged user: {probe.stderr.strip()[-200:]}")
        res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                              str(REPO / "tools/system_deps.py"), "--params", str(params)],
                             capture_output=True, text=True, cwd=folder)
    assert res.returncode == 2, res.stdout + res.stderr
    line = res.stderr.strip()
    assert line.count("\n") == 0 and "run: sudo apt-get install -y chromium" in line
    assert "web.require_browser: false" in line


def test_require_browser_false_skips_without_chromium(tmp_path):
    params = {"web": {"chromium": str(tmp_path / "none"), "require_browser": False}}
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    res = subprocess.run([sys.executable, str(REPO / "tools/system_deps.py"), "--params", str(p)],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "all present" in res.stdout, res.stderr  # Node.js is there in the test env


def test_console_entry_point_after_pip_install(e2e_repo, tmp_path):
    """`pip install .` gives `inspect-castings`: same help as the module, runs from any directory, and its CSV
    equals `python -m commands.predict`'s for the same folder; `inspect-castings serve --help` is the server's."""
    target = tmp_path / "site"
    src = copy_repo(tmp_path / "src")   # setuptools builds in the source tree (build/, *.egg-info): not in ours
    sh([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target", str(target),
        str(src)], tmp_path)
    exe = target / "bin" / "inspect-castings"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(target)}   # the installed copy, not the checkout
    helped = run([str(exe), "--help"], elsewhere, **env)
    module = run([sys.executable, "-m", "commands.predict", "--help"], REPO)
    assert helped.returncode == 0 and helped.stdout.startswith("usage: inspect-castings")
    assert helped.stdout.replace("inspect-castings", "X").split("\n", 3)[3] == \
        module.stdout.replace("python -m commands.predict", "X").split("\n", 3)[3]  # same flags and text
    served = run([str(exe), "serve", "--help"], elsewhere, **env)
    assert served.returncode == 0 and served.stdout.startswith("usage: inspect-castings serve")
    photos = e2e_repo / "data/raw/defect"
    ours = run([str(exe), str(photos), "--model", str(e2e_repo / "models")], elsewhere, **env)
    theirs = run([sys.executable, "-m", "commands.predict", str(photos), "--model", str(e2e_repo / "models")], REPO)
    assert ours.returncode == theirs.returncode == 0, ours.stderr[-1500:] + theirs.stderr[-1500:]
    rows = [{k: v for k, v in r.items() if k != "timestamp"} for r in csv.DictReader(io.StringIO(ours.stdout))]
    same = [{k: v for k, v in r.items() if k != "timestamp"} for r in csv.DictReader(io.StringIO(theirs.stdout))]
    assert len(rows) == 70 and rows == same  # the same CSV but for the time each row was written
    bad = run([str(exe), str(elsewhere / "nothing-here")], elsewhere, **env)
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error:")  # same exit codes
