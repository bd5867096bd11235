"""Shared fixtures: small generated images, a scratch project directory, one end-to-end pipeline run."""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MIRROR = REPO.parent / "shared" / "datasets" / "casting-product-train.zip"
sys.path.insert(0, str(REPO))

from inspection.config import set_dotted
from inspection.data.synthetic import render_part


# The slowest test files first (their seconds in a `--durations` run: team ~550, faults ~360, make targets ~340,
# retrain loop ~180, page ~145, predict ~110, e2e ~90): `make test` runs pytest-xdist with --dist loadfile
# --no-loadscope-reorder, so the two workers take whole files in this order and no long file starts last.
SLOWEST_FIRST = ["test_team.py", "test_faults.py", "test_make_targets.py", "test_retrain_loop.py", "test_page.py",
                 "test_predict.py", "test_pipeline_e2e.py"]


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))   # stable: every file keeps its own order


def write_part(path: Path, seed: int, defects: int = 0, size: int = 64, channels: int = 3) -> np.ndarray:
    img, _ = render_part(np.random.default_rng(seed), size, defects)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR) if channels == 3 else img)
    return img


def make_class_tree(root: Path, folders: dict[str, str], n: int = 12, size: int = 64, start: int = 0) -> None:
    """root/<folder>/img_i.jpeg, with defects in folders whose class is 'defect'."""
    for folder, cls in folders.items():
        for i in range(n):
            write_part(root / folder / f"img_{start + i:03d}.jpeg", seed=hash((folder, start + i)) % 2**31,
                       defects=1 if cls == "defect" else 0, size=size)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A scratch working directory holding a params.yaml copied from the repo; returns a params editor."""
    monkeypatch.chdir(tmp_path)
    params = yaml.safe_load((REPO / "params.yaml").read_text())

    def set_params(**changes):
        set_dotted(params, changes, sep="__")
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
        return tmp_path

    set_params()
    return set_params


CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))


@pytest.fixture(scope="session")
def browser():
    """Headless Debian Chromium driven by Playwright. Skipped where Chromium is not installed,
    unless REQUIRE_BROWSER=1 (set by .ci/run, which installs it): then its absence fails."""
    if not CHROMIUM.exists():
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(f"REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install chromium")
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    from inspection.deploy.server import chromium

    with chromium(CHROMIUM) as b:
        yield b


@pytest.fixture(scope="session")
def mirror():
    if not MIRROR.exists():
        pytest.skip(f"shared mirror not present at {MIRROR}")
    return MIRROR


def copy_repo(dest: Path) -> Path:
    """Copy the project's source files (what git tracks or would track; no data, models, venv) to dest."""
    import subprocess

    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = REPO / rel
        if src.is_file() and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def section(dotted: str, **changes):
    """A validated params section from the repo's params.yaml (the one source of defaults) with ``changes``,
    e.g. section("train.augment", probability=1.0)."""
    from inspection.config import load_params

    obj = load_params(REPO / "params.yaml")
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return type(obj).model_validate({**obj.model_dump(), **changes})


HAS_BROWSER = CHROMIUM.exists() or os.environ.get("REQUIRE_BROWSER") == "1"


def command_env(**extra: str) -> dict[str, str]:
    """The environment of a command a test runs: this venv's tools first on PATH, the repository's default
    tracking store (no MLFLOW_TRACKING_URI from the caller), plus ``extra``."""
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **extra)
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def sh(cmd, cwd, check=True):
    res = subprocess.run(cmd, cwd=cwd, env=command_env(), capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


VENV = Path(sys.prefix)   # the venv running the tests: `make VENV=...` in a copy shares it (no reinstall)
KAGGLE_DATASET = "ravirajsinh45/real-life-industrial-dataset-of-casting-product/versions/2"


def fake_kaggle_cache(cache: Path, fill) -> Path:
    """A complete kagglehub cache of the pinned Kaggle version in ``cache`` (the layout kagglehub itself writes):
    ``fill(train_folder)`` writes the class folders. Returns the dataset's cached folder."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    previous = os.environ.get("KAGGLEHUB_CACHE")
    os.environ["KAGGLEHUB_CACHE"] = str(cache)
    try:
        handle = parse_dataset_handle(KAGGLE_DATASET)
        cached = Path(Cache().get_path(handle))
        fill(cached / "casting_data" / "casting_data" / "train")
        Cache().mark_as_complete(handle)
    finally:
        if previous is None:
            os.environ.pop("KAGGLEHUB_CACHE")
        else:
            os.environ["KAGGLEHUB_CACHE"] = previous
    return cached


def share_node_modules(root: Path) -> None:
    """The locked npm packages `make install` put in this checkout, linked into a copy when their stamp matches
    (else the copy's `make install` runs npm ci itself)."""
    stamp = REPO / "web/node_modules/.installed"
    if stamp.is_file() and stamp.read_bytes() == (REPO / "web/package-lock.json").read_bytes():
        (root / "web/node_modules").symlink_to(REPO / "web/node_modules")


def make_cmd(*targets: str) -> list[str]:
    return ["make", f"VENV={VENV}", *targets]


def _e2e_shared(tmp_path_factory) -> Path:
    """One folder for the whole test session, shared by the pytest-xdist workers (their base temp's parent)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    (root / "e2e-shared").mkdir(exist_ok=True)
    return root / "e2e-shared"


def _e2e_env(shared: Path) -> dict[str, str]:
    """The e2e run's environment: Kaggle served from the generated cache, any network use of the API fails."""
    return {"KAGGLEHUB_CACHE": str(shared / "kagglehub"), "KAGGLE_API_ENDPOINT": "http://127.0.0.1:9"}


def _start_e2e(shared: Path) -> subprocess.Popen | None:
    """Prepare the e2e copy and start `make run` in the background, once per session: the first caller claims it
    (an exclusive create), the others find it claimed. `rc` appears when the run has ended."""
    try:
        os.close(os.open(shared / "claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return None
    from inspection.config import load_params
    from inspection.data.acquire import write_synthetic

    root = copy_repo(shared / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"].update(image_size=64, max_epochs=3, patience=2, batch_size=16)
    params["export"].update(parity_images=16)
    params["promote"]["allow_not_ready"] = True   # 140 small photos cannot prove the line's targets
    params["evaluate"]["retake"]["ood_battery_per_kind"] = 4
    params["web"].update(parity_images=8, benchmark_repeats=5, benchmark_backends=["wasm", "cpu"])
    if not HAS_BROWSER:
        params["web"]["require_browser"] = False
    params["evaluate"]["robustness"]["perturbations"] = {
        "exposure x1.25": {"kind": "gain", "value": 1.25, "gated": True},
        "blur 1.5px": {"kind": "blur", "value": 1.5, "gated": True},
        "rotate any": {"kind": "rotate", "value": None, "gated": True},
        "jpeg q40": {"kind": "jpeg", "value": 40, "gated": False}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "e2e"]):
        sh(cmd, root)
    share_node_modules(root)
    data = load_params(REPO / "params.yaml").data
    data = type(data).model_validate({**data.model_dump(), "synthetic": {"per_class": 70, "size": 96, "seed": 3}})

    def fill(train: Path) -> None:
        write_synthetic(data, train)
        (train / "defect").rename(train / "def_front")
        (train / "ok").rename(train / "ok_front")

    fake_kaggle_cache(shared / "kagglehub", fill)
    env = command_env(**_e2e_env(shared))
    cmd = " ".join(map(shlex.quote, make_cmd("run")))
    proc = subprocess.Popen(["sh", "-c", f"{cmd} >../stdout 2>../stderr; echo $? >../rc.tmp && mv ../rc.tmp ../rc"],
                            cwd=root, env=env, stdin=subprocess.DEVNULL, start_new_session=True)
    (shared / "pid").write_text(str(proc.pid))
    return proc


def _wait_for_e2e(shared: Path) -> int:
    """The run's exit code, once `rc` appears; a run that died without writing one (killed) fails, not hangs."""
    while not (shared / "rc").exists():
        pid = int((shared / "pid").read_text()) if (shared / "pid").exists() else None
        if pid is not None and not Path(f"/proc/{pid}").exists() and not (shared / "rc").exists():
            raise AssertionError(f"the end-to-end run (pid {pid}) ended without an exit code: {shared / 'stdout'}")
        time.sleep(1)
    return int((shared / "rc").read_text())


@pytest.fixture(scope="session", autouse=True)
def _e2e_in_background(request, tmp_path_factory):
    """The end-to-end run starts with the session, on the first worker, when any collected test needs it: the
    workers run the other tests meanwhile, and the run is made once, not once per worker."""
    proc = None
    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") == "gw0" and any(
            "e2e_repo" in getattr(item, "fixturenames", ()) for item in request.session.items):
        proc = _start_e2e(_e2e_shared(tmp_path_factory))
    yield
    if proc is not None:   # the other workers may still wait for it: let it end; an interrupt stops it
        try:
            proc.wait()
        except KeyboardInterrupt:
            os.killpg(proc.pid, signal.SIGTERM)
            raise


@pytest.fixture(scope="session")
def e2e_repo(tmp_path_factory):
    """The README's run command on a fresh copy of the repo with nothing beside it (no team mirror): `make run`
    takes the default data.source auto to Kaggle, served here from a complete kagglehub cache holding small
    generated parts (no network: the Kaggle API points at a closed port). Run once per session in the background
    (_e2e_in_background); each worker gets its own copy of the finished repo, shared by its test modules with that
    environment kept: treat it as read-only, copy it to change it. Without Chromium (and without
    REQUIRE_BROWSER) it runs with web.require_browser false."""
    shared = _e2e_shared(tmp_path_factory)
    proc = _start_e2e(shared)   # None when the session already started it
    if proc is not None:
        proc.wait()
    rc = _wait_for_e2e(shared)
    out, err = (shared / "stdout").read_text(), (shared / "stderr").read_text()
    if rc != 0:
        raise AssertionError(f"make run failed ({rc}):\n{out[-3000:]}\n{err[-3000:]}")
    assert "source: data.source auto: Kaggle" in out, out[-2000:]
    for noise in ("Unable to register cuDNN factory", "absl::InitializeLog", "computation placer already registered"):
        assert noise not in out + err, noise   # TF's C++ start-up lines: INSPECTION_TF_LOGS=1 shows them
    root = tmp_path_factory.mktemp("e2e") / "repo"
    shutil.copytree(shared / "repo", root, symlinks=True)
    mp = pytest.MonkeyPatch()  # the rest of the session's dvc commands in this repo see the same Kaggle cache
    for key, value in _e2e_env(shared).items():
        mp.setenv(key, value)
    yield root
    mp.undo()
