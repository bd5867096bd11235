"""The OOD score (inspection/model/ood.py), the OOD battery images and the batch CLI (commands/predict.py) on a tiny
exported two-output model built here (no pipeline run)."""
from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import os
import subprocess
import sys
import zipfile

import cv2
import numpy as np
import pytest

from conftest import REPO, write_part

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """models/-like folder: a two-output SavedModel (untrained compact CNN + a fitted OOD gate) and metadata.json."""
    from inspection.deploy.saved_model import export_saved_model, graph_output_names
    from inspection.model.architectures import build
    from inspection.model.ood import feature_extractor, fit, serving_model
    from inspection.decision.route import CSV_COLUMNS, make_rule

    keras.utils.set_random_seed(0)
    root = tmp_path_factory.mktemp("model")
    parts = np.stack([cv2.resize(write_part(root / f"p{i}.png", seed=i, size=96), (32, 32), interpolation=cv2.INTER_AREA)
                      for i in range(40)])
    cnn = build("compact", 32, "per_image")
    gate = fit(feature_extractor(cnn).predict(parts[..., None].astype(np.float32), verbose=0))
    gate["limit"] = 1e9  # no photo is out of distribution for this test model, unless a test lowers it
    export_saved_model(serving_model(cnn, gate), 32, root / "saved_model")
    camera = {"brightness": {"min": 20.0, "max": 200.0}, "contrast": {"min": 10.0, "max": 90.0},
              "sharpness": {"min": 0.0, "max": 1e6}}
    meta = {"version": "testversion1", "classes": ["ok", "defect"], "positive_class": "defect", "threshold": 0.5,
            "input": {"height": 32, "width": 32, "channels": 1, "name": "image", "signature": "serving_default"},
            "outputs": graph_output_names(root / "saved_model"),
            "route": make_rule(0.5, (0.2, 0.8), camera, gate["limit"]), "csv_columns": list(CSV_COLUMNS)}
    (root / "metadata.json").write_text(json.dumps(meta))
    return root


def test_mahalanobis_layer_equals_numpy_and_ranks_outliers():
    from inspection.model.ood import MahalanobisScore, distances, fit

    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (500, 6)) @ np.diag([1, 2, 3, 0.5, 1, 1])
    gate = fit(train)
    near, far = rng.normal(0, 1, (20, 6)), rng.normal(0, 1, (20, 6)) + 8
    d_near, d_far = distances(near, gate), distances(far, gate)
    assert d_far.min() > d_near.max()
    layer = MahalanobisScore(gate["mean"], gate["precision"])
    np.testing.assert_allclose(np.asarray(layer(far.astype(np.float32)))[:, 0], d_far, rtol=1e-4)


def test_ood_battery_images_are_valid_and_deterministic():
    from inspection.decision.perturb import OOD_KINDS, ood_image

    photo = write_part(__import__("pathlib").Path("/tmp") / "ood_src.png", seed=1, size=96)
    for kind in OOD_KINDS:
        a = ood_image(kind, photo, np.random.default_rng(1))
        b = ood_image(kind, photo, np.random.default_rng(1))
        assert a.shape == photo.shape and a.dtype == np.uint8 and np.array_equal(a, b), kind
    assert ood_image("blank grey 128", photo, np.random.default_rng(0)).std() < 5
    with pytest.raises(ValueError):
        ood_image("nonsense", photo, np.random.default_rng(0))


def _run(args, cwd):
    return subprocess.run([sys.executable, "-m", "commands.predict", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True)


def test_cli_writes_one_row_per_file_unreadable_ones_as_retake(model_dir, tmp_path):
    from inspection.decision.route import CSV_COLUMNS

    folder = tmp_path / "line"
    for i in range(5):
        write_part(folder / f"part{i}.jpg", seed=100 + i, size=96)
    (folder / "notes.txt").write_text("not an image: a RETAKE row too (one row per file, never skipped)")
    bad = tmp_path / "renamed.jpg"
    bad.write_text("a text file renamed .jpg")
    with zipfile.ZipFile(tmp_path / "batch.zip", "w") as zf:
        zf.write(folder / "part0.jpg", "ok/part0.jpg")
        zf.writestr("defect/empty.png", b"")
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((96, 96), 128, np.uint8))
    res = _run([folder, bad, tmp_path / "batch.zip", grey, "--model", model_dir, "--out", tmp_path / "v.csv"], REPO)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((tmp_path / "v.csv").open()))
    assert list(rows[0]) == list(CSV_COLUMNS)
    by = {r["file"].split("/")[-1]: r for r in rows}
    assert len(rows) == 5 + 1 + 1 + 2 + 1 and "unsupported format .txt" in by["notes.txt"]["reason"]
    assert by["renamed.jpg"]["route"] == "RETAKE" and by["renamed.jpg"]["reason"].startswith("unreadable:")
    assert by["empty.png"]["route"] == "RETAKE" and "empty file" in by["empty.png"]["reason"]
    assert by["grey.png"]["route"] == "RETAKE" and "contrast low" in by["grey.png"]["camera_check"]
    assert all(r["model_version"] == "testversion1" and r["route"] in ("PASS", "REVIEW", "REJECT", "RETAKE") for r in rows)
    assert "RETAKE 4" in res.stderr and "Traceback" not in res.stderr


def test_cli_one_row_per_distinct_file_through_symlink_loops_nested_zips_and_odd_formats(model_dir, tmp_path):
    """The promise "one row per file, never skipped": a `**` glob over a folder with a symlink loop gives one row
    per image; a zip inside the input zip, a .heic and a .jfif each get a row (the .jfif is read: it is a JPEG)."""
    folder = tmp_path / "line"
    for i in range(120):
        write_part(folder / f"b{i // 40}" / f"part{i:03d}.jpg", seed=300 + i, size=40)
    (folder / "b0" / "loop").symlink_to(folder, target_is_directory=True)   # line/b0/loop -> line
    (folder / "b1" / "again").symlink_to(folder / "b2", target_is_directory=True)
    res = _run([f"{folder}/**", "--model", model_dir, "--out", tmp_path / "v.csv"], REPO)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader((tmp_path / "v.csv").open()))
    assert len(rows) == 120 and len({r["file"] for r in rows}) == 120
    res = _run([folder, "--model", model_dir, "--out", tmp_path / "f.csv"], REPO)   # the folder itself: the same
    assert res.returncode == 0, res.stderr
    assert len(list(csv.DictReader((tmp_path / "f.csv").open()))) == 120

    nas = tmp_path / "nas"                    # a camera's share linked into the folder: its photos are rows too
    write_part(nas / "cam2.jpg", seed=7, size=40)
    (folder / "b2" / "cam2").symlink_to(nas, target_is_directory=True)
    for args in ([folder], [f"{folder}/**"]):
        res = _run([*args, "--model", model_dir, "--out", tmp_path / "n.csv"], REPO)
        assert res.returncode == 0, res.stderr
        files = [r["file"] for r in csv.DictReader((tmp_path / "n.csv").open())]
        assert len(files) == 121 and sum(f.endswith("cam2.jpg") for f in files) == 1, args

    odd = tmp_path / "odd"
    write_part(odd / "camera.jpg", seed=1, size=40)
    (odd / "camera.jpg").rename(odd / "camera.jfif")   # what some cameras and browsers save JPEGs as
    (odd / "phone.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    inner = tmp_path / "inner.zip"
    with zipfile.ZipFile(inner, "w") as zf:
        zf.write(odd / "camera.jfif", "x.jpg")
    with zipfile.ZipFile(odd / "outer.zip", "w") as zf:
        zf.write(inner, "nested/inner.zip")
        zf.write(odd / "camera.jfif", "ok/direct.jpg")
    res = _run([odd, "--model", model_dir, "--out", tmp_path / "o.csv"], REPO)
    assert res.returncode == 0, res.stderr
    by = {r["file"].split("/")[-1]: r for r in csv.DictReader((tmp_path / "o.csv").open())}
    assert set(by) == {"camera.jfif", "phone.heic", "inner.zip", "direct.jpg"}
    assert by["camera.jfif"]["route"] != "RETAKE" or not by["camera.jfif"]["reason"].startswith("unreadable")
    assert by["phone.heic"]["route"] == "RETAKE" and "unsupported format .heic" in by["phone.heic"]["reason"]
    assert by["inner.zip"]["route"] == "RETAKE" and "archive inside outer.zip" in by["inner.zip"]["reason"]


def test_cli_refuses_a_huge_photo_from_its_header(model_dir, tmp_path):
    """A 400 MP PNG (a few hundred KB compressed) is a RETAKE row read from its header: peak memory stays small."""
    meta = json.loads((model_dir / "metadata.json").read_text())
    model = tmp_path / "model"
    shutil.copytree(model_dir, model)
    meta["input"]["max_pixels"] = 25_000_000
    (model / "metadata.json").write_text(json.dumps(meta))
    huge = tmp_path / "huge.png"
    ok, buf = cv2.imencode(".png", np.zeros((20000, 20000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    huge.write_bytes(buf.tobytes())
    del buf
    code = ("import resource, subprocess, sys; r = subprocess.run([sys.executable, '-m', 'commands.predict', "
            "sys.argv[1], '--model', sys.argv[2], '--out', sys.argv[3]]); "
            "print(r.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    res = subprocess.run([sys.executable, "-c", code, str(huge), str(model), str(tmp_path / "h.csv")], cwd=REPO,
                         capture_output=True, text=True)
    rc, rss_kb = map(int, res.stdout.split())
    assert rc == 0, res.stderr
    row = next(csv.DictReader((tmp_path / "h.csv").open()))
    assert row["route"] == "RETAKE" and "too large (20000x20000 px = 400 MP" in row["reason"]
    print(f"400 MP PNG ({huge.stat().st_size:,} bytes): peak RSS {rss_kb / 2**10:.0f} MiB")
    assert rss_kb < 1.5 * 2**20, f"peak RSS {rss_kb / 2**20:.2f} GB"


def test_cli_out_to_a_pipe_or_device_writes_into_it(model_dir, tmp_path):
    """--out /dev/null or a named pipe: written as it is, never replaced by a file (a rename over /dev/null
    would turn the device into a regular file for the whole machine). A FIFO stands in for the device."""
    import stat
    import threading

    for i in range(3):
        write_part(tmp_path / "in" / f"p{i}.png", seed=300 + i, size=64)
    fifo = tmp_path / "verdicts.fifo"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    res = _run([tmp_path / "in", "--model", model_dir, "--out", fifo], REPO)
    reader.join(timeout=60)
    assert res.returncode == 0, res.stderr
    assert stat.S_ISFIFO(os.stat(fifo).st_mode), "the pipe was replaced by a regular file"
    rows = list(csv.DictReader(io.StringIO(got[0])))
    assert len(rows) == 3 and not list(tmp_path.glob(".partial-*"))


def test_cli_rows_follow_the_route_rule(model_dir, tmp_path):
    from inspection.deploy.predictor import expand, load_predictor, predict_items
    from inspection.decision.route import decide

    for i in range(6):
        write_part(tmp_path / f"p{i}.png", seed=200 + i, size=64)
    pred = load_predictor(str(model_dir))
    rows = list(predict_items(expand([str(tmp_path / "*.png")]), pred, batch=4))
    assert [r["file"] for r in rows] == sorted(str(p) for p in tmp_path.glob("*.png"))
    for r in rows:
        stats = {k: float(r[k]) for k in ("brightness", "contrast", "sharpness")}
        route, reason = decide(float(r["defect_probability"]), stats, float(r["ood_score"]), pred.metadata["route"])
        assert r["route"] == route


def test_predict_streams(model_dir, tmp_path):
    """Rows come out while the input is still being produced: an endless input gives its first rows."""
    from inspection.deploy.predictor import load_predictor, predict_items

    data = cv2.imencode(".png", write_part(tmp_path / "x.png", seed=3, size=64))[1].tobytes()
    endless = ((f"frame{i}.png", lambda: data) for i in itertools.count())
    first = list(itertools.islice(predict_items(endless, load_predictor(str(model_dir)), batch=8), 20))
    assert [r["file"] for r in first] == [f"frame{i}.png" for i in range(20)]


def test_cli_errors_are_one_line(model_dir, tmp_path):
    res = _run([tmp_path / "nothing*.jpg", "--model", model_dir], REPO)
    assert res.returncode == 2 and "matches no file" in res.stderr and "Traceback" not in res.stderr
    write_part(tmp_path / "a.png", seed=1, size=64)
    res = _run([tmp_path / "a.png", "--model", tmp_path], REPO)
    assert res.returncode == 2 and "is not a model folder" in res.stderr and "Traceback" not in res.stderr


def _damaged(meta: dict, fault: str) -> str:
    """metadata.json's text with one fault (see test_cli_refuses_a_damaged_model_folder_in_one_line)."""
    meta = json.loads(json.dumps(meta))
    if fault == "threshold garbled":
        meta["route"]["threshold"] = "abc"
    elif fault == "route missing":
        del meta["route"]
    elif fault == "band reversed":
        meta["route"]["review_band"] = {"low": 0.8, "high": 0.2}
    elif fault == "input size not the SavedModel's":
        meta["input"]["height"] = meta["input"]["width"] = 48
    elif fault == "output not in the SavedModel":
        meta["outputs"]["heatmap"] = "Identity_2:0"
    elif fault == "signature not in the SavedModel":
        meta["input"]["signature"] = "predict"
    return json.dumps(meta)[:150] if fault == "truncated JSON" else json.dumps(meta)


@pytest.mark.parametrize("fault,expect", [
    ("threshold garbled", "route.threshold: Input should be a valid number"),
    ("route missing", "route: missing"),
    ("band reversed", "route.review_band: low 0.8 is above high 0.2"),
    ("truncated JSON", "is not valid JSON"),
    ("input size not the SavedModel's", "input.height: 48 but the SavedModel's signature 'serving_default' takes 32x32x1"),
    ("output not in the SavedModel", "outputs: the SavedModel's signature 'serving_default' has no output heatmap"),
    ("signature not in the SavedModel", "input.signature: the SavedModel has no signature 'predict'"),
])
def test_cli_refuses_a_damaged_model_folder_in_one_line(model_dir, tmp_path, fault, expect):
    """A garbled or incomplete metadata.json, or one that does not match its SavedModel: exit 2, one line naming
    the file and the key, no traceback, no CSV."""
    import shutil

    from inspection.deploy.model_folder import DAMAGED

    bad = tmp_path / "model"
    shutil.copytree(model_dir, bad)
    (bad / "metadata.json").write_text(_damaged(json.loads((model_dir / "metadata.json").read_text()), fault))
    write_part(tmp_path / "a.png", seed=1, size=64)
    res = _run([tmp_path / "a.png", "--model", bad, "--out", tmp_path / "v.csv"], REPO)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and errors == [ln for ln in res.stderr.splitlines() if ln.strip()][-1:], res.stderr
    assert errors[0].startswith(f"error: {bad / 'metadata.json'}: ") and expect in errors[0], errors[0]
    assert errors[0].endswith(DAMAGED) and not (tmp_path / "v.csv").exists()


def test_cli_with_the_tracking_server_down_says_so(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    write_part(tmp_path / "p.jpg", seed=1, size=40)
    res = subprocess.run([sys.executable, "-m", "commands.predict", str(tmp_path / "p.jpg"), "--model",
                          "models:/casting-inspector@champion"], cwd=tmp_path, capture_output=True, text=True,
                         env=dict(os.environ, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}",
                                  PYTHONPATH=str(REPO)))
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "server unreachable (connection refused)" in res.stderr and "start the server" in res.stderr
    assert "No module named" not in res.stderr   # runs outside the repository root
