"""The fault battery (issue 15): what a hostile but fair user can do to the pipeline, one fault per test.

Each fault is run as the user would (``python -m stages.<stage>``, ``dvc repro``, signals, a dead or dying
tracking server) on tiny data, and checked for: the one-line message, the exit status, no traceback, and
that nothing was lost or left inconsistent (no partial outputs, previous outputs intact, tracked work
re-loggable). The message and the time each fault took to fail are written to a table
(``$FAULT_TABLE``, default /tmp/fault_battery.md) and printed at the end of the module. No time assertions.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from conftest import REPO, copy_repo, make_class_tree, sh
from inspection.config import set_dotted

TABLE = Path(os.environ.get("FAULT_TABLE", Path(tempfile.gettempdir()) / "fault_battery.md"))
RESULTS: list[tuple[str, int | str, float, str]] = []
WAIT = 600  # seconds: generous limits so a hang fails the test instead of blocking CI forever


# ---- helpers ---------------------------------------------------------------------------------------------

def env(**extra) -> dict:
    e = dict(os.environ, PYTHONPATH=str(REPO), TF_CPP_MIN_LOG_LEVEL="2",
             PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for k in ("MLFLOW_TRACKING_URI", "DVC_STAGE", "DVC_ROOT"):
        e.pop(k, None)
    e.update({k: v for k, v in extra.items() if v is not None})
    return e


class Run:
    def __init__(self, rc, out, err, seconds):
        self.rc, self.out, self.err, self.seconds = rc, out, err, seconds

    @property
    def last(self) -> str:
        lines = [ln for ln in self.err.splitlines() if ln.strip()]
        return lines[-1] if lines else ""


COMMANDS = {"relog", "predict", "serve"}   # commands/: not dvc.yaml stages


def stage(cwd: Path, module: str, *args: str, **extra) -> Run:
    t0 = time.perf_counter()
    package = "commands" if module in COMMANDS else "stages"
    res = subprocess.run([sys.executable, "-m", f"{package}.{module}", *args], cwd=cwd, env=env(**extra),
                         capture_output=True, text=True, timeout=WAIT)
    return Run(res.returncode, res.stdout, res.stderr, time.perf_counter() - t0)


def record(fault: str, run: Run, rc: int, contains: str | tuple[str, ...], line: str | None = None) -> str:
    """Assert the fault gave exit status ``rc``, no traceback, and a one-line message containing ``contains``
    (the last stderr line for errors, or ``line``); record it for the table."""
    message = line if line is not None else run.last
    assert "Traceback" not in run.err, run.err[-3000:]
    assert run.rc == rc, f"exit {run.rc}, expected {rc}\n{run.out[-2000:]}\n{run.err[-3000:]}"
    for part in (contains,) if isinstance(contains, str) else contains:
        assert part in message, f"{part!r} not in {message!r}\n{run.err[-2000:]}"
    if rc == 2:
        assert message.startswith("error: "), message
    RESULTS.append((fault, run.rc, run.seconds, message))
    return message


def tiny_params(root: Path, **changes) -> dict:
    """The repo's params.yaml with tiny data and a tiny model, plus ``changes`` (dotted keys)."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"].update(source="synthetic", synthetic={"per_class": 30, "size": 64, "seed": 1})
    params["split"].update(max_quarantined_fraction=0.1)
    params["split"]["near_duplicates"]["method"] = "none"
    params["train"].update(image_size=32, max_epochs=3, patience=3, batch_size=8, shard_images=64)
    set_dotted(params, changes)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return params


def project(tmp_path: Path, name: str = "p", **changes) -> Path:
    root = tmp_path / name
    root.mkdir(parents=True, exist_ok=True)
    tiny_params(root, **changes)
    return root


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def partials(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob(".partial-*")]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def dead_port() -> int:
    """A local port nobody listens on (bound and released: connection refused at once)."""
    return free_port()


def wait_for(predicate, timeout: float = WAIT, period: float = 0.2) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(period)
    return False


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def signal_at(cwd: Path, pattern: str, sig: int, delay: float = 0.0, **extra) -> tuple[Run, float]:
    """Run `python -m stages.train`, send ``sig`` ``delay`` s after a stdout line containing ``pattern``;
    return the run and how long the stage took to exit after the signal."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=cwd, env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    sent = None
    for line in proc.stdout:
        out.append(line)
        if pattern in line:
            time.sleep(delay)
            proc.send_signal(sig)
            sent = time.perf_counter()
            break
    rest_out, err = proc.communicate(timeout=WAIT)
    stopped = time.perf_counter() - (sent or t0)
    assert sent is not None, f"never saw {pattern!r}:\n{''.join(out)[-2000:]}\n{err[-3000:]}"
    return Run(proc.returncode, "".join(out) + rest_out, err, stopped), stopped


def png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims width x height (a few hundred bytes; decoding it would need width*height bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


@pytest.fixture(scope="module", autouse=True)
def fault_table():
    yield
    rows = ["| fault | exit | seconds to fail | message |", "|---|---|---|---|"]
    rows += [f"| {f} | {rc} | {s:.1f} | {m.replace('|', '/')} |" for f, rc, s, m in RESULTS]
    TABLE.write_text("\n".join(rows) + "\n")
    print(f"\nfault battery ({len(RESULTS)} faults) -> {TABLE}\n" + "\n".join(rows))


# ---- params ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fault,change,expect", [
    ("invalid value train.batch_size: 0", {"train.batch_size": 0}, "train.batch_size"),
    ("unknown key train.epochs", {"train.epochs": 3}, ("train.epochs", "unknown key")),
    ("val_fraction 0.45 + test_fraction 0.45", {"split.val_fraction": 0.45, "split.test_fraction": 0.45},
     ("split", "val_fraction + test_fraction = 0.9")),
    ("unknown perturbation kind", {"evaluate.robustness.perturbations": {"x": {"kind": "zoom", "value": 1.0,
                                                                                "gated": True}}}, "kind"),
])
def test_bad_params_fail_at_the_first_stage(tmp_path, fault, change, expect):
    root = project(tmp_path, **change)
    run = stage(root, "download")
    record(fault, run, 2, expect)
    assert not (root / "data").exists()


def test_params_not_yaml_and_missing(tmp_path):
    root = project(tmp_path)
    (root / "params.yaml").write_text("train: [unclosed\n")
    record("params.yaml is not YAML", stage(root, "split"), 2, "not valid YAML")
    (root / "params.yaml").unlink()
    record("params.yaml missing (wrong folder)", stage(root, "train"), 2, "params.yaml not found")


def test_duplicate_key_in_params(tmp_path):
    """A second `train:` block appended: YAML's last-key-wins would hide it; one line names the key and lines."""
    root = project(tmp_path)
    text = (root / "params.yaml").read_text()
    (root / "params.yaml").write_text(text + "train:\n  seed: 3\n")
    first = next(i for i, line in enumerate(text.splitlines()) if line.startswith("train:")) + 1
    run = stage(root, "download")
    record("params.yaml with a duplicate key", run, 2,
           ("duplicate key 'train'", f"lines {first} and {len(text.splitlines()) + 1}"))
    assert not (root / "data").exists()


# ---- sources and archives ----------------------------------------------------------------------------------

def _zip_with_corrupt_member(src: Path, dest: Path) -> str:
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=30)
    with zipfile.ZipFile(dest, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in sorted(src.rglob("*.jpeg")):
            zf.write(f, f.relative_to(src).as_posix())
        zf.writestr("defect/zz_corrupt.bmp", bytes(range(256)) * 64)  # compressible: deflated
    with zipfile.ZipFile(dest) as zf:
        info = zf.getinfo("defect/zz_corrupt.bmp")
    data = bytearray(dest.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + 5, start + 25):  # damage the deflate stream of that one member
        data[i] ^= 0xA5
    dest.write_bytes(bytes(data))
    return "defect/zz_corrupt.bmp"


def test_corrupt_zip_member_is_quarantined(tmp_path):
    member = _zip_with_corrupt_member(tmp_path / "src", tmp_path / "parts.zip")
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(tmp_path / "parts.zip")})
    run = stage(root, "download")
    line = next((ln for ln in run.out.splitlines() if "quarantined" in ln), "")
    record("zip with one corrupt member", run, 0, (member, "corrupt archive member"), line)
    assert not (root / "data/raw" / member).exists()
    run = stage(root, "split")
    assert run.rc == 0, run.err
    data = json.loads((root / "reports/data.json").read_text())
    assert any(q["path"] == member and "corrupt" in q["reason"] for q in data["quarantined"])


def test_not_a_zip_and_checksum(tmp_path):
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip at all" * 100)
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(bad)})
    record("data.local.path is not a zip", stage(root, "download"), 2, "is not a valid zip archive")
    root = project(tmp_path, "q", **{"data.source": "local", "data.local.path": str(bad), "data.local.sha256": "0" * 64})
    record("zip sha256 does not match", stage(root, "download"), 2, "does not match data.local.sha256")
    root = project(tmp_path, "r", **{"data.source": "local", "data.local.path": str(tmp_path / "nowhere")})
    record("data.local.path does not exist", stage(root, "download"), 2, "does not exist")


def test_nested_zip_names_the_archives_not_a_temporary_folder(tmp_path):
    """A zip inside the source zip: one line naming inner.zip inside outer.zip, never the temporary folder it
    would be extracted to; nothing published."""
    make_class_tree(tmp_path / "src", {"defect": "defect", "ok": "ok"}, n=3)
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        for f in sorted((tmp_path / "src").rglob("*.jpeg")):
            zf.write(f, f.relative_to(tmp_path / "src").as_posix())
    outer = tmp_path / "outer.zip"
    with zipfile.ZipFile(outer, "w") as zf:
        zf.write(inner, "inner.zip")
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(outer)})
    run = stage(root, "download")
    record("a zip inside the source zip", run, 2,
           "inner.zip inside outer.zip: nested archives are not read; extract it or list it in data.extra")
    assert "download-" not in run.last and not (root / "data/raw").exists() and not partials(root)


def test_unmapped_folder_in_a_zip_names_the_zip(tmp_path):
    make_class_tree(tmp_path / "src", {"defect": "defect", "ok": "ok", "misc": "misc"}, n=2)
    archive = tmp_path / "parts.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for f in sorted((tmp_path / "src").rglob("*.jpeg")):
            zf.write(f, f.relative_to(tmp_path / "src").as_posix())
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(archive)})
    run = stage(root, "download")
    record("a folder in the zip that is no class", run, 2, (f"folder {archive}/misc does not map to a class",))
    assert "/tmp/download-" not in run.last


def test_non_utf8_file_name_is_quarantined(tmp_path):
    src = tmp_path / "src"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=30)
    odd = os.path.join(os.fsencode(src / "defect"), b"caf\xe9.jpeg")
    shutil.copyfile(src / "defect" / "img_000.jpeg", odd)
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src)})
    run = stage(root, "download")
    line = next((ln for ln in run.out.splitlines() if "quarantined" in ln), "")
    record("file name that is not UTF-8", run, 0, ("caf\\xe9.jpeg", "not valid UTF-8"), line)
    run = stage(root, "split")
    assert run.rc == 0 and "Traceback" not in run.err, run.err


@pytest.mark.parametrize("fault,layout,expect", [
    ("folder that maps to no class", {"defect": "defect", "ok": "ok", "scratches": "defect"}, "does not map to a class"),
    ("a class has no folder", {"defect": "defect"}, "no folder for class"),
])
def test_class_folder_problems(tmp_path, fault, layout, expect):
    src = tmp_path / "src"
    make_class_tree(src, layout, n=3)
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src)})
    record(fault, stage(root, "download"), 2, expect)


def test_empty_class_folder(tmp_path):
    src = tmp_path / "src"
    make_class_tree(src, {"defect": "defect"}, n=3)
    (src / "ok").mkdir()
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src)})
    record("empty class folder", stage(root, "download"), 2, "is empty")


# ---- images ---------------------------------------------------------------------------------------------------

def test_bad_and_huge_images_are_quarantined_from_the_header(tmp_path):
    src = tmp_path / "src"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=30)
    png_header_only(src / "defect" / "huge_40000.png", 40000, 40000)
    png_header_only(src / "ok" / "big_6000.png", 6000, 6000)
    (src / "ok" / "garbage.jpeg").write_bytes(os.urandom(3000))
    (src / "defect" / "empty.jpeg").write_bytes(b"")
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src)})
    assert stage(root, "download").rc == 0
    run = stage(root, "split")
    lines = {ln.split(": ", 2)[1].removeprefix("quarantined "): ln for ln in run.out.splitlines()
             if ln.startswith("split: quarantined")}
    record("40000x40000 PNG (header only, no decode)", run, 0, ("too large", "40000x40000"), lines.get("defect/huge_40000.png", ""))
    RESULTS.append(("6000x6000 PNG (36 MP > data.max_image_pixels)", 0, run.seconds, lines.get("ok/big_6000.png", "")))
    RESULTS.append(("random bytes named .jpeg", 0, run.seconds, lines.get("ok/garbage.jpeg", "")))
    RESULTS.append(("empty file", 0, run.seconds, lines.get("defect/empty.jpeg", "")))
    assert "too large" in lines["ok/big_6000.png"] and "not a decodable image" in lines["ok/garbage.jpeg"]
    assert "empty file" in lines["defect/empty.jpeg"]
    data = json.loads((root / "reports/data.json").read_text())
    assert data["quarantined_count"] == 4


def test_too_many_unreadable_files(tmp_path):
    src = tmp_path / "src"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=30)
    for i in range(8):
        (src / "ok" / f"bad_{i}.jpeg").write_bytes(b"\xff\xd8 not really")
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src)})
    assert stage(root, "download").rc == 0
    record("8 of 68 files unreadable", stage(root, "split"), 2, "split.max_quarantined_fraction")
    assert not (root / "data/split").exists()


def test_too_few_images_per_class(tmp_path):
    root = project(tmp_path, **{"data.synthetic.per_class": 4})
    assert stage(root, "download").rc == 0
    record("4 images per class", stage(root, "split"), 2, "split.min_images_per_class")
    assert not (root / "data/split/manifest.csv").exists()


# ---- missing inputs, tools ------------------------------------------------------------------------------------

@pytest.mark.parametrize("module,missing,producer", [
    ("split", "data/raw", "download"), ("shards", "data/raw", "download"), ("train", "data/shards", "shards"),
    ("evaluate", "data/shards", "shards"), ("export", "data/raw", "download"), ("report", "data/raw", "download"),
])
def test_stage_before_its_inputs(tmp_path, module, missing, producer):
    root = project(tmp_path)
    record(f"python -m stages.{module} before its inputs", stage(root, module), 2,
           (f"{missing} is missing", f"run the {producer} stage first"))


def test_evaluate_without_a_model(tmp_path):
    root = project(tmp_path)
    assert stage(root, "download").rc == 0 and stage(root, "split").rc == 0 and stage(root, "shards").rc == 0
    record("python -m stages.evaluate before train", stage(root, "evaluate"), 2,
           "models/model.keras is missing; run the train stage first")


@pytest.mark.skipif(shutil.which("node") is None or shutil.which("npm") is None, reason="Node.js is not installed")
def test_web_before_its_inputs(tmp_path):
    root = project(tmp_path, **{"web.chromium": sys.executable})  # any executable passes the tool check
    record("python -m stages.web before its inputs", stage(root, "web"), 2,
           ("data/raw is missing", "run the download stage first"))


def test_web_without_chromium_fails_before_any_work(tmp_path):
    root = project(tmp_path, **{"web.chromium": str(tmp_path / "no-chromium")})
    run = stage(root, "web")
    record("web.chromium missing (web.require_browser true)", run, 2,
           ("Chromium not found at", "make install", "web.require_browser: false"))
    assert "parity" not in run.out


def test_damaged_model_folder_for_the_batch_cli(tmp_path):
    """python -m commands.predict --model <folder> whose metadata.json is garbled, cut short, or does not match its
    SavedModel (inspection/deploy/model_folder.py): one line naming the file and the key, exit 2."""
    pytest.importorskip("keras")
    from inspection.deploy.saved_model import export_saved_model, graph_output_names
    from test_model_folder import changed, good_metadata
    from test_page import SIZE, tiny_serving_model

    root = project(tmp_path)
    folder = root / "model"
    export_saved_model(tiny_serving_model()[1], SIZE, folder / "saved_model")
    meta = good_metadata(SIZE, graph_output_names(folder / "saved_model"))
    cv2.imwrite(str(root / "part.png"), np.full((64, 64), 120, np.uint8))
    for fault, text, expect in (
            ("metadata.json: route.threshold \"abc\"", json.dumps(changed(meta, "route.threshold", "abc")),
             "model/metadata.json: route.threshold: Input should be a valid number"),
            ("metadata.json cut short", json.dumps(meta)[:120], "model/metadata.json: is not valid JSON"),
            ("metadata.json: input 48x48, SavedModel 32x32",
             json.dumps(changed(changed(meta, "input.height", 48), "input.width", 48)),
             "model/metadata.json: input.height: 48 but the SavedModel's signature 'serving_default' takes 32x32x1")):
        (folder / "metadata.json").write_text(text)
        record(fault, stage(root, "predict", "part.png", "--model", "model"), 2,
               (expect, "the model folder is damaged: re-export it"))


# ---- disk --------------------------------------------------------------------------------------------------

WRAP = """
import builtins, errno, os, runpy, sys
code, marker, module = int(sys.argv[1]), sys.argv[2], sys.argv[3]
real_open, real_os_open = builtins.open, os.open
def fail(path):
    raise OSError(code, os.strerror(code), str(path))
def fake_os_open(path, flags, *a, **k):
    if marker in str(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
        fail(path)
    return real_os_open(path, flags, *a, **k)
def fake_open(file, mode="r", *a, **k):
    if marker in str(file) and any(c in mode for c in "wax+"):
        fail(file)
    return real_open(file, mode, *a, **k)
os.open, builtins.open = fake_os_open, fake_open
sys.argv = [module]
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _wrapped(root: Path, code: int, marker: str, module: str) -> Run:
    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", WRAP, str(code), marker, module], cwd=root, env=env(),
                         capture_output=True, text=True, timeout=WAIT)
    return Run(res.returncode, res.stdout, res.stderr, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def split_project(tmp_path_factory):
    """download, split and shards done: train's inputs exist."""
    root = project(tmp_path_factory.mktemp("disk"))
    for module in ("download", "split", "shards"):
        run = stage(root, module)
        assert run.rc == 0, run.err
    return root


def test_read_only_output_folder(split_project):
    before = md5(split_project / "data/split/manifest.csv")
    run = _wrapped(split_project, errno.EROFS, "data/split/", "stages.split")
    record("read-only output folder (EROFS)", run, 2, ("cannot write data/split", "read-only file system"))
    assert md5(split_project / "data/split/manifest.csv") == before and not partials(split_project)


def test_disk_full_while_writing(split_project):
    before = md5(split_project / "data/split/manifest.csv")
    run = _wrapped(split_project, errno.ENOSPC, ".partial-", "stages.split")
    record("disk full while writing outputs (ENOSPC)", run, 2,
           ("cannot write data/split/manifest.csv", "no space left on device"))
    assert md5(split_project / "data/split/manifest.csv") == before and not partials(split_project)


# ---- tracking store down or odd -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny project trained once against a real `mlflow server` that is killed during epoch 2: the run
    must finish and publish, keep what it could not log, and `python -m commands.relog` must bring it back.
    Later tests interrupt re-runs of train in this project and check these outputs stay as they are."""
    base = tmp_path_factory.mktemp("trained")
    root = project(base)
    srv = base / "server"
    srv.mkdir()
    port = free_port()
    t0 = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{srv}/mlflow.db",
         "--default-artifact-root", str(srv / "artifacts"), "--no-serve-artifacts", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=srv, stdout=open(srv / "log", "w"), stderr=subprocess.STDOUT, start_new_session=True, env=env())
    try:
        for module in ("download", "split", "shards"):  # while the server starts
            run = stage(root, module)
            assert run.rc == 0, run.err
        import urllib.request

        def up() -> bool:
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200
            except OSError:
                return False
        wait_for(lambda: up() or server.poll() is not None, timeout=900, period=1.0)
        assert up(), (srv / "log").read_text()[-3000:]
        server_start = time.perf_counter() - t0
        uri = f"http://127.0.0.1:{port}"
        killed_at = None
        t1 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "stages.train"], cwd=root, env=env(MLFLOW_TRACKING_URI=uri),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out = []
        for line in proc.stdout:
            out.append(line)
            if killed_at is None and "Epoch 2/" in line:
                os.killpg(server.pid, signal.SIGKILL)  # the server dies mid-run
                server.wait()
                killed_at = time.perf_counter()
        rest, err = proc.communicate(timeout=WAIT)
        run = Run(proc.returncode, "".join(out) + rest, err, time.perf_counter() - t1)
        return {"root": root, "run": run, "uri": uri, "db": srv / "mlflow.db", "server_start": server_start,
                "killed": killed_at is not None}
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_tracking_server_dies_mid_run_nothing_is_lost(trained):
    root, run = trained["root"], trained["run"]
    assert trained["killed"], run.out[-2000:]
    line = next((ln for ln in run.out.splitlines() if ln.startswith("tracking: cannot log")), "")
    record("MLflow server killed during epoch 2 (train)", run, 0, (trained["uri"], "python -m commands.relog"), line)
    info = json.loads((root / "models/mlflow_run.json").read_text())
    assert (root / "models/model.keras").exists() and (root / "reports/train/history.csv").exists()
    assert not partials(root)
    journals = list((root / ".mlflow-pending").glob("*/journal.jsonl"))
    assert len(journals) == 1
    # the server's database holds the run, minus what was logged after the kill; re-log it there
    db_uri = f"sqlite:///{trained['db']}"
    relog = stage(root, "relog", "--uri", db_uri)
    assert relog.rc == 0 and "Traceback" not in relog.err, relog.err
    RESULTS.append(("... then python -m commands.relog", relog.rc, relog.seconds, relog.out.strip().splitlines()[-1]))
    assert not list((root / ".mlflow-pending").glob("*/journal.jsonl"))
    from mlflow.tracking import MlflowClient

    client = MlflowClient(db_uri)
    history = client.get_metric_history(info["run_id"], "loss")
    epochs = len((root / "reports/train/history.csv").read_text().strip().splitlines()) - 1
    assert sorted(m.step for m in history) == list(range(epochs))
    got = client.get_run(info["run_id"])
    assert got.info.status == "FINISHED" and "best_val_loss" in got.data.metrics
    assert [a.path for a in client.list_artifacts(info["run_id"], "reports/train")] == ["reports/train/history.csv"]


def test_tracking_server_down(split_project):
    root = split_project
    uri = f"http://127.0.0.1:{dead_port()}"
    run = stage(root, "train", MLFLOW_TRACKING_URI=uri)
    record("MLFLOW_TRACKING_URI=http://127.0.0.1:<dead port>", run, 2,
           (uri, "connection refused", "start the server", "unset MLFLOW_TRACKING_URI"))


def test_tracking_server_that_never_answers(split_project):
    with socket.socket() as hung:  # accepts connections (kernel backlog) but never answers
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)
        uri = f"http://127.0.0.1:{hung.getsockname()[1]}"
        run = stage(split_project, "train", MLFLOW_TRACKING_URI=uri)
    record("tracking server that accepts but never answers", run, 2, (uri, "no answer within 3 s"))


@pytest.mark.parametrize("fault,uri,expect", [
    ("sqlite store in /proc", "sqlite:////proc/forbidden.db", "cannot write in /proc"),
    ("sqlite store under a regular file", "sqlite:///{root}/params.yaml/mlflow.db", "is a file, not a folder"),
    ("sqlite store that is not a database", "sqlite:///{root}/corrupt.db", "cannot open"),
])
def test_tracking_store_unusable(split_project, fault, uri, expect):
    root = split_project
    (root / "corrupt.db").write_bytes(b"this is not sqlite " * 200)
    uri = uri.format(root=root)
    record(fault, stage(root, "train", MLFLOW_TRACKING_URI=uri), 2, (uri, expect, "MLFLOW_TRACKING_URI"))


NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="needs root and setpriv (root writes any file: the check runs as a normal user)")
def test_read_only_sqlite_store(split_project):
    """A store the user may read but not write (another user's mlflow.db, or a file copied read-only): the stage
    says so before any work, as a normal user would meet it."""
    import sqlite3

    probe = subprocess.run([*NOBODY, sys.executable, "-c", "import mlflow, inspection"], env=env(),
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"the venv or the repo is not readable by an unprivileged user: {probe.stderr.strip()[-200:]}")
    with tempfile.TemporaryDirectory() as tmp:   # pytest's tmp_path is root's (0700)
        root = Path(tmp) / "p"
        shutil.copytree(split_project, root, ignore=shutil.ignore_patterns("mlflow.db*", "mlruns"))
        store = root / "theirs.db"
        with sqlite3.connect(store) as con:
            con.execute("create table t (x)")
        subprocess.run(["chown", "-R", "65534:65534", str(root)], check=True)
        os.chown(store, 0, 0)
        store.chmod(0o644)                       # readable, not writable, by the user
        Path(tmp).chmod(0o755)
        uri = f"sqlite:///{store}"
        t0 = time.perf_counter()
        res = subprocess.run([*NOBODY, sys.executable, "-m", "stages.train"], cwd=root, capture_output=True,
                             text=True, timeout=WAIT, env=env(MLFLOW_TRACKING_URI=uri, HOME=tmp))
        run = Run(res.returncode, res.stdout, res.stderr, time.perf_counter() - t0)
        record("sqlite store the user cannot write (read-only mlflow.db)", run, 2,
               (uri, f"{store} is read-only", f"chmod u+w {store}", "MLFLOW_TRACKING_URI"))
        assert not (root / "models/model.keras").exists() and not partials(root)


FAKE_STAGE = """
import os, sys
from pathlib import Path
from inspection.tracking import runs as tracking
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs, write_json

OUT = Path(sys.argv[1])
def main():
    with staged_outputs(OUT) as out:
        tracker, run = tracking.start_run("faults", {"p": 1}, {"t": "x"})
        for step in range(int(sys.argv[2])):
            tracker.log_metrics({"m": float(step)}, step=step)
            if step == 2 and os.environ.get("BREAK_DB"):
                Path(os.environ["BREAK_DB"]).unlink()  # the store goes away mid-run
        write_json(out.path(OUT), {"run_id": run.info.run_id})
    tracker.log_artifact(str(OUT), "out")   # after publishing, like evaluate/report/web
    tracker.end_run()
cli(main)()
"""


def _fake_stage(cwd: Path, out: str, steps: int, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", FAKE_STAGE, out, str(steps)], cwd=cwd, env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_sqlite_store_deleted_mid_run(tmp_path):
    db = tmp_path / "mlflow.db"
    t0 = time.perf_counter()
    proc = _fake_stage(tmp_path, "out.json", 6, BREAK_DB=str(db))
    out, err = proc.communicate(timeout=WAIT)
    run = Run(proc.returncode, out, err, time.perf_counter() - t0)
    line = next((ln for ln in out.splitlines() if ln.startswith("tracking: cannot log")), "")
    record("mlflow.db deleted mid-run", run, 0, ("deleted or replaced", "python -m commands.relog"), line)
    assert (tmp_path / "out.json").exists()
    relog = stage(tmp_path, "relog")
    record("... relog into a store without that run", relog, 2, "--new-run")
    relog = stage(tmp_path, "relog", "--new-run")
    assert relog.rc == 0, relog.err
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    [new] = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert sorted(m.step for m in client.get_metric_history(new.info.run_id, "m")) == [3, 4, 5]
    assert new.data.tags["relogged_from_run_id"] == json.loads((tmp_path / "out.json").read_text())["run_id"]


def test_nowhere_to_buffer_still_publishes(tmp_path):
    """Tracking fails after the outputs were published and the journal cannot be written either (disk
    full): the stage still succeeds, so its outputs match what DVC records; one line says what was lost."""
    db = tmp_path / "mlflow.db"
    (tmp_path / ".mlflow-pending").write_text("a file where the journal folder should be")
    t0 = time.perf_counter()
    proc = _fake_stage(tmp_path, "out.json", 4, BREAK_DB=str(db))
    out, err = proc.communicate(timeout=WAIT)
    run = Run(proc.returncode, out, err, time.perf_counter() - t0)
    line = next((ln for ln in out.splitlines() if "nor keep the log" in ln), "")
    record("tracking and its journal both unwritable", run, 0, ("entries are lost", "outputs are complete"), line)
    assert (tmp_path / "out.json").exists()


def test_two_runs_write_one_sqlite_store_at_once(tmp_path):
    procs = [_fake_stage(tmp_path, f"out{i}.json", 40) for i in range(2)]
    t0 = time.perf_counter()
    results = [p.communicate(timeout=WAIT) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0 and "Traceback" not in err, err[-3000:]
        assert "tracking: cannot log" not in out, out  # both wrote to the store, nothing was buffered
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("faults").experiment_id])
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    assert all(len(client.get_metric_history(r.info.run_id, "m")) == 40 for r in runs)
    RESULTS.append(("two processes logging into one new sqlite store at once", 0, time.perf_counter() - t0,
                    "both runs FINISHED with all 40 metric steps"))


# ---- interrupts ------------------------------------------------------------------------------------------------

def _outputs(root: Path) -> dict[str, str]:
    return {p: md5(root / p) for p in ("models/model.keras", "models/mlflow_run.json", "reports/train/history.csv")}


@pytest.mark.parametrize("fault,pattern,sig,delay", [
    ("Ctrl-C 0.5 s after 'train: compact model'", "train: ", signal.SIGINT, 0.5),
    ("SIGTERM 1 s into epoch 1", "Epoch 1/", signal.SIGTERM, 1.0),
    ("Ctrl-C as epoch 2 starts (epoch 1 being logged)", "Epoch 2/", signal.SIGINT, 0.0),
])
def test_interrupt_train(trained, fault, pattern, sig, delay):
    root = trained["root"]
    before = _outputs(root)
    run, stopped = signal_at(root, pattern, sig, delay)
    run.seconds = stopped
    name = signal.Signals(sig).name
    record(fault, run, 130 if sig == signal.SIGINT else 143,
           (f"interrupted ({name})", "nothing was published", "previous outputs are unchanged"))
    assert "Epoch 3/" not in run.out  # it stopped, it did not train on
    assert _outputs(root) == before and not partials(root)


GC_STAGE = """
import gc, sys, time
from pathlib import Path
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs

def busy(phase, info):  # like jax's _xla_gc_callback: Python code that runs inside the garbage collector
    t = time.perf_counter()
    while time.perf_counter() - t < 0.02:
        pass

def main():
    gc.callbacks.append(busy)
    with staged_outputs(Path("out.txt")) as out:
        out.path(Path("out.txt")).write_text("new")
        print("ready", flush=True)
        end = time.time() + 8
        while time.time() < end:
            gc.collect()
cli(main)()
"""


def test_interrupt_inside_a_gc_callback_is_not_lost(tmp_path):
    (tmp_path / "out.txt").write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", GC_STAGE], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    t0 = time.perf_counter()
    out, err = proc.communicate(timeout=WAIT)
    run = Run(proc.returncode, out, err, time.perf_counter() - t0)
    record("Ctrl-C landing in a gc callback (the _xla_gc_callback case)", run, 130, "interrupted (SIGINT)")
    assert "Exception ignored" not in err
    assert (tmp_path / "out.txt").read_text() == "old" and not partials(tmp_path)


STUCK_STAGE = """
import ctypes, signal, sys, threading, time
from pathlib import Path
import inspection.interrupts as errors
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs

errors.GRACE_SECONDS = 2.0
MAIN = threading.get_native_id()

def say_ready_once_main_sleeps():
    # "ready" only once the main thread sleeps in native code: said by the main thread just before the call, a
    # signal could land while it still ran Python (the ctypes lookup) and be handled at once (measured: 1 run in 6)
    deadline = time.monotonic() + 10   # never hang the test: after 10 s "ready" is said anyway
    while open(f"/proc/self/task/{MAIN}/stat").read().rsplit(")", 1)[1].split()[0] != "S" and time.monotonic() < deadline:
        time.sleep(0.01)
    print("ready", flush=True)

def main():
    with staged_outputs(Path("out.txt")) as out:
        out.path(Path("out.txt")).write_text("new")
        # native code that does not return for a minute (like a long TensorFlow op): Python cannot run its
        # signal handler in this thread until it returns
        libc_sleep = ctypes.CDLL(None).sleep
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        threading.Thread(target=say_ready_once_main_sleeps, daemon=True).start()
        libc_sleep(60)
cli(main)()
"""


def test_stage_stuck_in_native_code_is_ended(tmp_path):
    (tmp_path / "out.txt").write_text("old")
    proc = subprocess.Popen([sys.executable, "-c", STUCK_STAGE], cwd=tmp_path, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    t0 = time.perf_counter()
    out, err = proc.communicate(timeout=WAIT)
    run = Run(proc.returncode, out, err, time.perf_counter() - t0)
    record("SIGTERM while stuck in native code (grace 2 s here, 15 s in stages)", run, 143,
           ("still running", "stopping now", "nothing was published"))
    assert (tmp_path / "out.txt").read_text() == "old"


# ---- under DVC: the parent dies, a way back ------------------------------------------------------------------

@pytest.fixture(scope="module")
def dvc_repo(tmp_path_factory):
    root = copy_repo(tmp_path_factory.mktemp("dvcfaults") / "repo")
    tiny_params(root)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "faults"]):
        sh(cmd, root)
    sh(["dvc", "repro", "shards"], root)
    return root


def _tree_md5(root: Path, outs: list[str]) -> dict[str, str]:
    files = {}
    for out in outs:
        p = root / out
        for f in ([p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file()) if p.is_dir() else []):
            files[str(f.relative_to(root))] = md5(f)
    return files


def test_way_back_when_a_stage_fails_under_dvc(dvc_repo):
    """The first stage that runs checks every param (here one that only train uses); DVC has already removed
    that stage's outputs, and the message says how to restore them."""
    import re

    from inspection.runner.preflight import outputs, stage_spec

    root = dvc_repo
    dvc_yaml = yaml.safe_load((root / "dvc.yaml").read_text())
    params = (root / "params.yaml").read_text()
    before = {name: _tree_md5(root, outputs(spec)) for name, spec in dvc_yaml["stages"].items()}
    try:
        tiny_params(root, **{"data.synthetic.seed": 2, "train.max_epochs": 0})
        t0 = time.perf_counter()
        res = sh(["dvc", "repro"], root, check=False)
        seconds = time.perf_counter() - t0
    finally:
        (root / "params.yaml").write_text(params)
    assert "Traceback" not in res.stderr and res.returncode != 0, res.stderr
    ran = re.findall(r"Running stage '([^']+)'", res.stdout)
    assert len(ran) == 1, res.stdout  # the first stage failed; nothing else ran
    first = ran[0]
    line = next((ln for ln in res.stderr.splitlines() if ln.startswith("error: ")), "")
    for part in ("train.max_epochs", f"DVC removed the previous outputs of stage '{first}'", f"`dvc checkout {first}`"):
        assert part in line, line
    RESULTS.append((f"dvc repro with train.max_epochs 0 (fails at the first stage, {first})", res.returncode,
                    seconds, line))
    outs = outputs(stage_spec(first, dvc_yaml))
    assert before[first] and _tree_md5(root, outs) != before[first]  # DVC removed them before the stage ran ...
    sh(["dvc", "checkout", first], root)
    assert _tree_md5(root, outs) == before[first]  # ... and the command in the message brings them back


SMALL_DISK = """
import os
if os.environ.get("DVC_STAGE") == "shards":   # the stage's process only, not dvc's own (its state database)
    import resource, signal
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (32 * 1024, 32 * 1024))   # a 64-image shard is 64 KiB
"""


def test_disk_full_during_shards_under_dvc_is_one_line(dvc_repo, tmp_path):
    """A disk that fills while shards writes its arrays: numpy's short write ("N requested and M written", no
    errno) under `dvc repro`. A file-size limit on the stage's process (RLIMIT_FSIZE, SIGXFSZ ignored, set by a
    sitecustomize) makes the kernel cut the write short exactly as a full disk does, without root."""
    root = dvc_repo
    (tmp_path / "sitecustomize.py").write_text(SMALL_DISK)
    t0 = time.perf_counter()
    res = subprocess.run(["dvc", "repro", "-f", "shards"], cwd=root, capture_output=True, text=True, timeout=WAIT,
                         env=env(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}"))
    run = Run(res.returncode, res.stdout, res.stderr, time.perf_counter() - t0)
    line = next((ln for ln in res.stderr.splitlines() if ln.startswith("error: ")), "")
    assert "Traceback" not in res.stderr and res.returncode != 0, res.stderr[-3000:]
    for part in ("cannot write", "data/shards", "no space left on device (a short write)", "free some space"):
        assert part in line, (line, res.stderr[-2000:])
    assert ".partial-" not in line   # the output's own name, not the staging file's
    RESULTS.append(("disk full while shards writes, under dvc repro (short write)", run.rc, run.seconds, line))
    assert not partials(root)
    sh(["dvc", "checkout", "shards"], root)   # the way back the message names
    assert "up to date" in sh(["dvc", "status", "shards"], root).stdout


def test_sigterm_to_dvc_stops_the_stage(dvc_repo):
    """A CI runner or a closing terminal kills `dvc` only: the orphaned stage must stop and publish nothing."""
    root = dvc_repo
    e = env()
    dvc = subprocess.Popen(["dvc", "repro", "train"], cwd=root, env=e, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, start_new_session=True)
    child = None
    lines = []
    for line in dvc.stdout:
        lines.append(line)
        if "Epoch 1/" in line:
            kids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and
                    (Path(p, "stat").exists() and _ppid(int(p.name)) == dvc.pid)]
            assert kids, "no stage process under dvc"
            child = kids[0]
            dvc.send_signal(signal.SIGTERM)  # to dvc only, not its process group
            t0 = time.perf_counter()
            break
    assert child is not None, "".join(lines)[-3000:]
    assert wait_for(lambda: not alive(child), timeout=WAIT), "the stage kept running after dvc died"
    stopped = time.perf_counter() - t0
    rest = dvc.stdout.read()
    dvc.wait()
    text = "".join(lines) + rest
    line = next((ln for ln in text.splitlines() if ln.startswith("interrupted")), "")
    assert "Traceback" not in text, text[-3000:]
    assert "interrupted (SIGTERM)" in line and "nothing was published" in line, text[-3000:]
    RESULTS.append(("SIGTERM to the dvc process during train", "stage 143", stopped, line))
    time.sleep(1)
    assert not (root / "models/model.keras").exists() and not partials(root)


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_a_store_from_a_newer_mlflow_is_named_in_preflight(tmp_path):
    """A sqlite store whose schema revision this MLflow does not know: one line in preflight, before any work,
    that does not advise `mlflow db upgrade` (wrong for a newer store); an older one gets exactly that advice."""
    import sqlite3

    from inspection.tracking.store import store_problem

    db = tmp_path / "mlflow.db"
    with sqlite3.connect(db) as con:
        con.execute("create table alembic_version (version_num varchar(32) not null)")
        con.execute("insert into alembic_version values ('ffffffffffff')")
    problem = store_problem(f"sqlite:///{db}")
    assert problem and "written by a newer MLflow" in problem and "db upgrade" not in problem
    with sqlite3.connect(db) as con:
        con.execute("update alembic_version set version_num = '451aebb31d03'")   # MLflow 1.x's first revision
    problem = store_problem(f"sqlite:///{db}")
    assert problem and "older MLflow schema" in problem and f"mlflow db upgrade sqlite:///{db}" in problem
    root = project(tmp_path, name="p2")
    with sqlite3.connect(db) as con:
        con.execute("update alembic_version set version_num = 'ffffffffffff'")
    res = subprocess.run([sys.executable, "-m", "stages.download"], cwd=root, capture_output=True, text=True,
                         env=dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{db}",
                                  PYTHONPATH=str(REPO)))
    run = Run(res.returncode, res.stdout, res.stderr, 0.0)
    record("a sqlite store written by a newer MLflow", run, 2, "written by a newer MLflow")
    assert not (root / "data/raw").exists()   # nothing was done


# ---- labels and the last tracebacks (one line each, nothing published) --------------------------------------

def test_params_a_user_can_get_wrong_in_one_line(tmp_path):
    for fault, change, expect in (
            ("train.max_epochs: 2e1", {"train.max_epochs": "2e1"}, "train.max_epochs: must be a whole number, got '2e1'; write 20"),
            ("data.positive_class: ok", {"data.positive_class": "ok"}, "positive_class: must be 'defect'")):
        root = project(tmp_path, fault.split(":")[0].replace(".", "_"), **change)
        record(fault, stage(root, "download"), 2, expect)
        assert not (root / "data/raw").exists()   # nothing published


def test_folder_names_typed_on_another_system_match_their_class(tmp_path):
    """'défaut' typed on macOS (decomposed, NFD) is the 'défaut' of data.classes (composed, NFC): the photos are
    labelled, not skipped as an unknown folder; upper case matches too."""
    import unicodedata

    src = tmp_path / "plant"
    nfd = unicodedata.normalize("NFD", "défaut")
    assert nfd != "défaut"
    make_class_tree(src, {nfd: "defect", "OK": "ok"}, n=6)
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src),
                                "data.classes": {"defect": ["défaut"], "ok": ["ok"]}})
    run = stage(root, "download")
    assert run.rc == 0 and "Traceback" not in run.err, run.err[-2000:]
    assert json.loads((root / "data/raw/SOURCE.json").read_text())["counts"] == {"defect": 6, "ok": 6}
    RESULTS.append(("class folder 'défaut' in NFD (macOS) against NFC in data.classes", run.rc, run.seconds,
                    run.out.strip().splitlines()[-1]))


def test_tensorflow_start_up_lines_are_off_unless_asked(tmp_path):
    """TensorFlow's C++ start-up lines (cuDNN/cuBLAS registration, absl, "computation placer") bypass its log
    level: a stage imports it with stderr pointed away; INSPECTION_TF_LOGS=1 shows them again."""
    code = "from inspection.runner.cli import quiet_tensorflow; quiet_tensorflow(); import tensorflow as tf; tf.constant(1)"

    def run(**extra) -> subprocess.CompletedProcess:
        e = env(**extra)
        e.pop("TF_CPP_MIN_LOG_LEVEL")   # as a user's shell has it: unset
        return subprocess.run([sys.executable, "-c", code], env=e, capture_output=True, text=True, timeout=WAIT)
    quiet, loud = run(), run(INSPECTION_TF_LOGS="1")
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stderr.strip() == "", quiet.stderr
    assert loud.stderr.strip(), "INSPECTION_TF_LOGS=1 showed nothing"


def test_identical_pixels_under_both_classes_stop_split(tmp_path):
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=12)
    (src / "defect" / "twin.png").write_bytes(next((src / "ok").iterdir()).read_bytes())
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src)})
    assert stage(root, "download").rc == 0
    record("identical pixels in defect/ and ok/ (one source)", stage(root, "split"), 2,
           ("identical pixels labelled both defect and ok", "defect/twin.png (defect)", "remove the wrong copy"))
    assert not (root / "data/split").exists()


def test_16_bit_photo_is_quarantined_with_the_predict_reason(tmp_path):
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=40)
    cv2.imwrite(str(src / "ok" / "sensor.png"), (np.random.default_rng(0).integers(0, 4096, (64, 64))).astype(np.uint16))
    root = project(tmp_path, **{"data.source": "local", "data.local.path": str(src)})
    assert stage(root, "download").rc == 0
    run = stage(root, "split")
    assert run.rc == 0, run.err
    quarantined = json.loads((root / "reports/data.json").read_text())["quarantined"]
    assert [q["reason"] for q in quarantined if q["path"].endswith("sensor.png")] == [
        "16-bit image; save it as an 8-bit JPEG or PNG"]
    RESULTS.append(("a 16-bit PNG among the photos (quarantined by split)", run.rc, run.seconds,
                    "split: quarantined ok/sensor.png: 16-bit image; save it as an 8-bit JPEG or PNG"))


def test_damaged_model_files_are_one_line(tmp_path):
    """A truncated models/model.keras (Keras says "File not found") and truncated SavedModel variables
    ("Read less bytes than requested"): one line naming the file and the way back, exit 2."""
    pytest.importorskip("keras")
    from inspection.deploy.saved_model import export_saved_model, graph_output_names
    from inspection.model.architectures import build
    from test_model_folder import good_metadata
    from test_page import SIZE, tiny_serving_model

    root = project(tmp_path)
    for module in ("download", "split", "shards"):
        assert stage(root, module).rc == 0
    (root / "models").mkdir()
    build("compact", 32).save(root / "models/model.keras")
    data = (root / "models/model.keras").read_bytes()
    (root / "models/model.keras").write_bytes(data[: len(data) // 2])
    (root / "models/mlflow_run.json").write_text(json.dumps({"run_id": "0" * 32, "experiment": "x"}))
    record("truncated models/model.keras", stage(root, "evaluate"), 2,
           ("models/model.keras cannot be loaded", "damaged or cut short", "dvc checkout models/model.keras"))
    assert not (root / "reports/metrics.json").exists()
    folder = root / "model"
    export_saved_model(tiny_serving_model()[1], SIZE, folder / "saved_model")
    (folder / "metadata.json").write_text(json.dumps(good_metadata(SIZE, graph_output_names(folder / "saved_model"))))
    variables = next((folder / "saved_model/variables").glob("variables.data-*"))
    variables.write_bytes(variables.read_bytes()[:100])
    cv2.imwrite(str(root / "part.png"), np.full((64, 64), 120, np.uint8))
    record("truncated SavedModel variables (batch CLI)", stage(root, "predict", "part.png", "--model", "model"), 2,
           ("saved_model cannot be loaded", "damaged or cut short"))
