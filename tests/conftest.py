"""Shared fixtures: small generated images, a scratch project directory, one end-to-end pipeline run."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


def sh(cmd, cwd, check=True):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="session")
def e2e_repo(tmp_path_factory):
    """One `dvc repro` of the whole pipeline on a small synthetic source, in a git copy of the repo; shared by
    every test module (session scope). Treat it as read-only; copy it to change it."""
    root = copy_repo(tmp_path_factory.mktemp("e2e") / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["data"].update(source="synthetic", synthetic={"per_class": 70, "size": 96, "seed": 3})
    params["train"].update(image_size=64, max_epochs=3, patience=2, batch_size=16)
    params["export"].update(parity_images=16)
    params["promote"]["allow_not_ready"] = True   # 140 synthetic photos cannot prove the line's targets
    params["evaluate"]["retake"]["ood_battery_per_kind"] = 4
    params["web"].update(parity_images=8, benchmark_repeats=5, benchmark_backends=["wasm", "cpu"])
    params["evaluate"]["robustness"]["perturbations"] = {
        "exposure x1.25": {"kind": "gain", "value": 1.25, "gated": True},
        "blur 1.5px": {"kind": "blur", "value": 1.5, "gated": True},
        "rotate any": {"kind": "rotate", "value": None, "gated": True},
        "jpeg q40": {"kind": "jpeg", "value": 40, "gated": False}}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "e2e"]):
        sh(cmd, root)
    if (REPO / "web/node_modules").is_dir():  # the locked npm packages, installed by `make install`
        (root / "web/node_modules").symlink_to(REPO / "web/node_modules")
    # the web stage needs Chromium; without it (and without REQUIRE_BROWSER) run every other stage
    sh(["dvc", "repro"] if HAS_BROWSER else ["dvc", "repro", "promote"], root)  # report and web need Chromium
    return root


