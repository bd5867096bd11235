import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from stages import download
from stages import split
from inspection.data.dedup import d4_variants, group_ids, near_duplicate_pairs, thumbnails
from inspection.errors import UserError

from conftest import make_class_tree
from inspection.data.synthetic import render_part


def manifest():
    with open("data/split/manifest.csv") as f:
        return list(csv.DictReader(f))


def prepare(project, tmp_path, n=30, **params):
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=n)
    project(data__source="local", data__local__path=str(src), **params)
    return src


def test_split_is_stratified_deterministic_and_complete(project, tmp_path):
    prepare(project, tmp_path, n=40)
    download.main()
    split.main()
    rows = manifest()
    assert len(rows) == 80
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    report = json.loads(Path("reports/data.json").read_text())
    for s in ("val", "test"):
        for c in ("defect", "ok"):
            assert 4 <= report["counts"][s][c] <= 8  # ~15 % of 40 per class
    first = Path("data/split/manifest.csv").read_bytes()
    split.main()
    assert Path("data/split/manifest.csv").read_bytes() == first


def test_duplicates_never_straddle_splits(project, tmp_path):
    src = prepare(project, tmp_path, n=30)
    base = cv2.imread(str(src / "defect" / "img_000.jpeg"), cv2.IMREAD_GRAYSCALE)
    for k in range(6):  # exact copies and flipped / rotated copies of one casting
        cv2.imwrite(str(src / "defect" / f"copy_{k}.png"), base)
        cv2.imwrite(str(src / "defect" / f"rot_{k}.png"), np.rot90(base, k % 4) if k % 2 else cv2.flip(base, 1))
    download.main()
    split.main()
    rows = manifest()
    family = [r for r in rows if "copy_" in r["path"] or "rot_" in r["path"] or r["path"].endswith("defect/img_000.jpeg")]
    assert len(family) == 13
    assert len({r["group"] for r in family}) == 1 and len({r["split"] for r in family}) == 1
    report = json.loads(Path("reports/data.json").read_text())
    assert report["duplicates"]["exact_duplicate_groups"] >= 1
    assert report["duplicates"]["largest_group"] >= 13


def test_distinct_parts_are_not_grouped():
    imgs = [render_part(np.random.default_rng(s), 96, s % 2)[0] for s in range(40)]
    rows, cols = near_duplicate_pairs(thumbnails(imgs), 0.06)
    assert len(set(group_ids(40, rows, cols))) == 40


def test_d4_variants_are_the_eight_symmetries():
    t = np.arange(16, dtype=np.float32).reshape(1, 4, 4)
    assert len({v.tobytes() for v in d4_variants(t)}) == 8


def test_unreadable_files_are_quarantined(project, tmp_path):
    src = prepare(project, tmp_path, n=30, split__max_quarantined_fraction=0.1)
    (src / "ok" / "broken.jpeg").write_bytes(b"\xff\xd8 not really a jpeg")
    (src / "ok" / "notes.txt").write_text("camera 2")
    download.main()
    split.main()
    report = json.loads(Path("reports/data.json").read_text())
    reasons = {q["path"]: q["reason"] for q in report["quarantined"]}
    assert reasons == {"ok/broken.jpeg": "not a decodable image", "ok/notes.txt": "not an image file extension (.txt)"}
    assert all("broken" not in r["path"] for r in manifest())


def test_too_many_unreadable_files_fail(project, tmp_path):
    src = prepare(project, tmp_path, n=10, split__max_quarantined_fraction=0.01)
    (src / "ok" / "broken.jpeg").write_bytes(b"garbage")
    download.main()
    with pytest.raises(UserError, match="unreadable"):
        split.main()
    assert not Path("data/split/manifest.csv").exists()


def test_source_test_folder_kept_as_test(project, tmp_path):
    base = tmp_path / "k" / "train"
    make_class_tree(base, {"def_front": "defect", "ok_front": "ok"}, n=20)
    make_class_tree(tmp_path / "k" / "test", {"def_front": "defect", "ok_front": "ok"}, n=4, start=500)
    project(data__source="local", data__local__path=str(tmp_path / "k"), split__use_source_test=True)
    download.main()
    split.main()
    test = [r for r in manifest() if r["split"] == "test"]
    assert test and all("/source-test/" in r["path"] for r in test) and len(test) == 8


def test_a_correction_in_data_extra_overrides_the_main_sources_label(project, tmp_path):
    """The corrections loop: a part shipped in ok/ was a defect; the page's corrections zip puts the same photo
    under defect/. The extra's label wins, the main copy is dropped, and reports/data.json lists it."""
    src = tmp_path / "plant"
    make_class_tree(src, {"defect": "defect", "ok": "ok"}, n=30)
    fixes = tmp_path / "corrections" / "defect"
    fixes.mkdir(parents=True)
    (fixes / "img_003.jpeg").write_bytes((src / "ok" / "img_003.jpeg").read_bytes())
    project(data__source="local", data__local__path=str(src), data__extra=[str(tmp_path / "corrections")])
    download.main()
    split.main()
    rows = manifest()
    assert len(rows) == 60 and not [r for r in rows if r["path"].endswith("ok/img_003.jpeg")]
    fixed = [r for r in rows if "/extra/" in r["path"]]
    assert len(fixed) == 1 and fixed[0]["label"] == "defect"
    report = json.loads(Path("reports/data.json").read_text())
    (c,) = report["label_corrections"]
    assert c["label"] == "defect" and c["replaces"] == ["ok/img_003.jpeg (ok)"] and "extra" in c["by"][0]


def test_identical_pixels_under_both_classes_of_one_source_stop_the_split(project, tmp_path):
    src = prepare(project, tmp_path, n=30)
    (src / "defect" / "twin.jpeg").write_bytes((src / "ok" / "img_005.jpeg").read_bytes())
    download.main()
    with pytest.raises(UserError, match=r"identical pixels labelled both defect and ok: defect/twin.jpeg \(defect\), "
                                        r"ok/img_005.jpeg \(ok\); remove the wrong copy"):
        split.main()
