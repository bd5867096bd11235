import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages import download
from inspection.errors import UserError
from inspection.fsutil import sha256_file
from inspection.data.synthetic import generate

from conftest import make_class_tree


def run(project, **params):
    project(**params)
    download.main()
    return json.loads(Path("data/raw/SOURCE.json").read_text())


def test_synthetic_is_deterministic_and_two_class(project):
    info = run(project, data__source="synthetic", data__synthetic__per_class=5, data__synthetic__size=64)
    assert info["counts"] == {"defect": 5, "ok": 5}
    first = Path("data/raw/defect/synthetic_defect_00000.jpeg").read_bytes()
    info2 = run(project, data__source="synthetic", data__synthetic__per_class=5, data__synthetic__size=64)
    assert Path("data/raw/defect/synthetic_defect_00000.jpeg").read_bytes() == first
    assert info2["dataset_sha256"] == info["dataset_sha256"]


def test_synthetic_defects_are_drawn_only_on_defect_class():
    items = list(generate(20, 96, seed=1))
    assert all(d for key, _, _, d in items if key == "defect")
    assert not any(d for key, _, _, d in items if key == "ok")
    # no global brightness give-away: class means overlap
    means = {k: [img.mean() for key, _, img, _ in items if key == k] for k in ("defect", "ok")}
    assert abs(np.mean(means["defect"]) - np.mean(means["ok"])) < 10


def test_local_folder_one_subfolder_per_class(project, tmp_path):
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "good": "ok"}, n=4)
    info = run(project, data__source="local", data__local__path=str(src))
    assert info["counts"] == {"defect": 4, "ok": 4}
    assert not info["has_test_folder"]
    assert sorted(p.name for p in Path("data/raw/ok").iterdir()) == [f"img_{i:03d}.jpeg" for i in range(4)]


def kaggle_zip(tmp_path: Path) -> Path:
    base = tmp_path / "kaggle" / "casting_data" / "casting_data"
    make_class_tree(base / "train", {"def_front": "defect", "ok_front": "ok"}, n=5)
    make_class_tree(base / "test", {"def_front": "defect", "ok_front": "ok"}, n=2, start=100)
    # the archive's extra 512px copy sits beside it and must be ignored
    make_class_tree(tmp_path / "kaggle" / "casting_512x512" / "casting_512x512", {"def_front": "defect", "ok_front": "ok"}, n=1)
    z = tmp_path / "archive.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for f in sorted((tmp_path / "kaggle").rglob("*")):
            zf.write(f, f.relative_to(tmp_path / "kaggle"))
    return z


def test_kaggle_layout_zip_with_test_folder(project, tmp_path):
    z = kaggle_zip(tmp_path)
    info = run(project, data__source="local", data__local__path=str(z), data__local__sha256=sha256_file(z))
    assert info["counts"] == {"defect": 7, "ok": 7}
    assert info["archive_sha256"] == sha256_file(z) == info["dataset_sha256"]
    assert info["has_test_folder"] and len(info["test_files"]) == 4
    assert all("/source-test/" in f for f in info["test_files"])
    img = cv2.imread("data/raw/defect/img_000.jpeg", cv2.IMREAD_UNCHANGED)
    assert img.ndim == 3  # bytes copied as-is; decoding happens once, in split


def test_zip_sha256_mismatch(project, tmp_path):
    z = kaggle_zip(tmp_path)
    with pytest.raises(UserError, match="does not match data.local.sha256"):
        run(project, data__source="local", data__local__path=str(z), data__local__sha256="0" * 64)
    assert not Path("data/raw").exists()


def test_missing_path(project, tmp_path):
    with pytest.raises(UserError, match="does not exist; set it to a .zip or a folder"):
        run(project, data__source="local", data__local__path=str(tmp_path / "nowhere"))


def test_empty_class_folder(project, tmp_path):
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect"}, n=3)
    (src / "ok").mkdir()
    with pytest.raises(UserError, match="is empty"):
        run(project, data__source="local", data__local__path=str(src))


def test_unmapped_class_folder(project, tmp_path):
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "ok": "ok", "scratches": "defect"}, n=2)
    with pytest.raises(UserError, match="'scratches' to data.classes"):
        run(project, data__source="local", data__local__path=str(src))
    assert not Path("data/raw").exists()


def test_kaggle_offline_without_cache_names_alternatives(project, tmp_path, monkeypatch):
    import kagglehub

    def offline(handle, *a, **k):
        raise ConnectionError("Failed to resolve www.kaggle.com")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError, match="data.source=local .* or data.source=synthetic"):
        run(project, data__source="kaggle")


def test_kaggle_uses_pinned_cached_version_offline(project, tmp_path, monkeypatch):
    """A complete cached copy of the pinned version is used without any network access."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KAGGLE_API_ENDPOINT", "http://127.0.0.1:9")  # any network use would fail
    handle = parse_dataset_handle("ravirajsinh45/real-life-industrial-dataset-of-casting-product/versions/2")
    cached = Path(Cache().get_path(handle))
    make_class_tree(cached / "casting_data" / "casting_data" / "train", {"def_front": "defect", "ok_front": "ok"}, n=3)
    Cache().mark_as_complete(handle)
    info = run(project, data__source="kaggle")
    assert info["counts"] == {"defect": 3, "ok": 3} and info["version"] == 2


def _fake_kaggle_cache(tmp_path, monkeypatch, n=3):
    """A complete kagglehub cache of the pinned version (the layout kagglehub itself writes), network off."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("KAGGLE_API_ENDPOINT", "http://127.0.0.1:9")  # any network use would fail
    handle = parse_dataset_handle("ravirajsinh45/real-life-industrial-dataset-of-casting-product/versions/2")
    cached = Path(Cache().get_path(handle))
    make_class_tree(cached / "casting_data" / "casting_data" / "train", {"def_front": "defect", "ok_front": "ok"}, n=n)
    Cache().mark_as_complete(handle)


def test_auto_uses_the_local_copy_when_it_exists(project, tmp_path, monkeypatch, capsys):
    src = tmp_path / "mirror"
    make_class_tree(src, {"def_front": "defect", "ok_front": "ok"}, n=2)
    _fake_kaggle_cache(tmp_path, monkeypatch, n=3)
    info = run(project, data__source="auto", data__local__path=str(src))
    assert info["source"] == "local" and info["counts"] == {"defect": 2, "ok": 2}
    assert "data.source auto: using local" in capsys.readouterr().out


def test_auto_falls_back_to_a_cached_kaggle_copy(project, tmp_path, monkeypatch):
    _fake_kaggle_cache(tmp_path, monkeypatch, n=3)
    info = run(project, data__source="auto", data__local__path=str(tmp_path / "no-mirror.zip"))
    assert info["source"] == "kaggle" and info["counts"] == {"defect": 3, "ok": 3} and info["version"] == 2


def test_auto_without_mirror_or_kaggle_names_both_fixes_and_the_demo(project, tmp_path, monkeypatch):
    import kagglehub

    def offline(handle, *a, **k):
        raise ConnectionError("Failed to resolve api.kaggle.com")

    monkeypatch.setattr(kagglehub, "dataset_download", offline)
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UserError) as err:
        run(project, data__source="auto", data__local__path=str(tmp_path / "no-mirror.zip"))
    msg = str(err.value)
    assert "no-mirror.zip does not exist" in msg and "ConnectionError" in msg
    assert "data.local.path=<zip or folder>" in msg and "-S data.source=synthetic" in msg
