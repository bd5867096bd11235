"""The model's life in the plant, on tiny synthetic data: model 1 becomes champion; photos from the line that it
routes wrongly are corrected into a zip (the inspector page's corrections format); model 2 trains with them
(data.extra) and is compared with the champion on held-out photos; promotion.json and the registry's aliases hold
the decision. Also: data.extra content hashing and the origin column."""
from __future__ import annotations

import csv
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from conftest import copy_repo, section, sh, write_part

NAME = "casting-inspector"


def tiny_params(root: Path, **promote) -> None:
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["data"].update(source="synthetic", synthetic={"per_class": 30, "size": 64, "seed": 3})
    p["train"].update(image_size=32, max_epochs=2, patience=1, batch_size=16)
    p["export"].update(parity_images=8)
    p["evaluate"]["robustness"]["perturbations"] = {"blur 1.5px": {"kind": "blur", "value": 1.5, "gated": True}}
    p["evaluate"]["retake"]["ood_battery_per_kind"] = 2
    p["evaluate"]["bootstrap"]["resamples"] = 100
    p["promote"].update(allow_not_ready=True)   # 60 synthetic photos cannot prove the line's targets
    p["promote"].update(promote)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def line_photos(folder: Path, n: int = 8) -> list[tuple[Path, str]]:
    """New photos 'from the line' (seeds the synthetic source never used)."""
    out = []
    for cls, defects in (("defect", 1), ("ok", 0)):
        for i in range(n):
            path = folder / f"line_{cls}_{i:02d}.png"
            write_part(path, seed=900_000 + 31 * i + defects, defects=defects, size=64)
            out.append((path, cls))
    return out


def corrections_zip(path: Path, parts: list[tuple[Path, str, dict]], model_version: str) -> None:
    """The page's download: <class>/<original file name> + corrections.json."""
    with zipfile.ZipFile(path, "w") as zf:
        for src, cls, _ in parts:
            zf.write(src, f"{cls}/{src.name}")
        zf.writestr("corrections.json", json.dumps({
            "who": "test operator", "when": "2026-01-01T00:00:00Z", "model_version": model_version,
            "parts": [{"file": src.name, "route": row["route"], "defect_probability": float(row["defect_probability"] or 0),
                       "corrected_label": cls} for src, cls, row in parts]}))


def registry_state(root: Path) -> tuple[dict, dict]:
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    versions = {int(v.version): v for v in client.search_model_versions(f"name='{NAME}'")}
    aliases = client.get_registered_model(NAME).aliases
    return versions, {a: int(v) for a, v in aliases.items()}


def test_retrain_loop(tmp_path):
    root = copy_repo(tmp_path / "repo")
    golden = tmp_path / "golden"
    for cls, defects in (("defect", 1), ("ok", 0)):
        for i in range(6):
            write_part(golden / cls / f"golden_{i}.png", seed=700_000 + 17 * i + defects, defects=defects, size=64)
    tiny_params(root, min_images=5, golden=str(golden))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "tiny"]):
        sh(cmd, root)

    # 1. the first model in an empty registry becomes champion
    sh(["dvc", "repro", "promote"], root)
    first = json.loads((root / "reports/promotion.json").read_text())
    assert first["decision"] == "first model" and first["alias"] == "champion"
    assert first["challenger"]["version"] == 1 and first["champion"] is None
    assert first["image_sources"]["golden"] == 12
    versions, aliases = registry_state(root)
    assert set(versions) == {1} and aliases == {"champion": 1}
    for key in ("content_hash", "threshold", "dataset_sha256", "split_manifest_sha256", "split_manifest", "model_version"):
        assert versions[1].tags.get(key), key
    sh(["git", "add", "-A"], root)
    sh(["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "model 1"], root)

    # nothing changed: DVC runs nothing but the always-run sources fingerprint
    again = sh(["dvc", "repro", "promote"], root)
    assert "Running stage 'promote'" not in again.stdout and "Running stage 'download'" not in again.stdout

    # 2. photos from the line through the batch CLI with the champion from the registry
    line = line_photos(tmp_path / "line")
    verdicts = tmp_path / "verdicts.csv"
    sh(["python", "-m", "commands.predict", str(tmp_path / "line"), "--model", f"models:/{NAME}@champion",
        "--out", str(verdicts)], root)
    rows = {Path(r["file"]).name: r for r in csv.DictReader(open(verdicts))}
    assert len(rows) == len(line)
    # the operator corrects what the champion got wrong (a good part not passed, a defect passed) plus what went
    # to review; at least one photo of each class so the zip has both folders
    wrong = [(p, cls, rows[p.name]) for p, cls in line
             if rows[p.name]["route"] in ("REVIEW", "RETAKE") or (rows[p.name]["route"] == "PASS") == (cls == "defect")]
    for cls in ("defect", "ok"):
        if not any(c == cls for _, c, _ in wrong):
            p = next(p for p, c in line if c == cls)
            wrong.append((p, cls, rows[p.name]))
    zip_path = tmp_path / "corrections-20260101-000000.zip"
    corrections_zip(zip_path, wrong, rows[line[0][0].name]["model_version"])

    # 3. model 2 trains with the corrected photos (an experiment with data.extra) and meets the gate
    sh(["dvc", "exp", "run", "-S", f"data.extra=['{zip_path}']", "promote"], root)
    manifest = list(csv.DictReader(open(root / "data/split/manifest.csv")))
    extra_rows = [r for r in manifest if r["origin"] == str(zip_path)]
    assert len(extra_rows) == len(wrong)
    assert {r["origin"] for r in manifest} == {"synthetic", str(zip_path)}
    source = json.loads((root / "data/raw/SOURCE.json").read_text())
    assert source["extra"][0]["counts"] == {c: sum(1 for _, k, _ in wrong if k == c) for c in ("defect", "ok")}

    second = json.loads((root / "reports/promotion.json").read_text())
    assert second["challenger"]["version"] == 2 and second["champion"]["version"] == 1
    assert second["decision"] in ("promoted", "kept champion")
    assert second["mcnemar"] is not None and second["images"] >= 5
    assert second["image_sources"]["golden"] == 12
    for change in second["changed"]:
        assert change["champion_route"] != change["challenger_route"]
        assert set(change) >= {"path", "label", "champion_probability", "challenger_probability"}
    assert second["registry_state"]["champion_compared"]["version"] == 1
    # the compared test photos: the challenger's test photos that the champion neither trained nor validated on
    import mlflow

    v1_manifest = mlflow.artifacts.download_artifacts(versions[1].tags["split_manifest"], dst_path=str(tmp_path / "v1"),
                                                      tracking_uri=f"sqlite:///{root / 'mlflow.db'}")
    v1_seen = {r["sha256"] for r in csv.DictReader(open(v1_manifest)) if r["split"] in ("train", "val")}
    held_out = [r for r in manifest if r["split"] == "test" and r["sha256"] not in v1_seen]
    assert second["image_sources"]["test"] == len(held_out) > 0
    assert second["image_sources"]["test_excluded_seen_by_champion"] == \
        sum(r["split"] == "test" for r in manifest) - len(held_out)
    versions, aliases = registry_state(root)
    assert set(versions) == {1, 2}
    if second["decision"] == "promoted":
        assert aliases == {"champion": 2}
    else:
        assert aliases == {"champion": 1, "challenger": 2}
    assert versions[2].tags["promotion.baseline"] == "1"
    assert versions[2].tags["promotion.decision"] == second["decision"]

    # 4. purity: promote again on the same inputs -> the same comparison, the same file, no new version
    sh(["python", "-m", "stages.promote"], root)
    assert json.loads((root / "reports/promotion.json").read_text()) == second
    versions2, aliases2 = registry_state(root)
    assert set(versions2) == {1, 2} and aliases2 == aliases


def test_extra_sources_are_fingerprinted_by_content(tmp_path):
    from inspection.data.extras import class_folders
    from inspection.data.fingerprint import fingerprint

    folder = tmp_path / "corrections"
    write_part(folder / "defect" / "a.png", seed=1, defects=1)
    (folder / "corrections.json").write_text("{}")
    first = fingerprint(str(folder))
    assert first["kind"] == "folder" and first["files"] == 2
    write_part(folder / "defect" / "a.png", seed=2, defects=1)  # same name, new content
    assert fingerprint(str(folder))["sha256"] != first["sha256"]
    assert fingerprint(str(tmp_path / "absent"))["kind"] == "missing"
    data = section("data")
    assert class_folders(folder, data) == {"defect": [folder / "defect"]}   # one class is enough; json ignored


def test_extra_sources_use_the_main_sources_finder(tmp_path):
    """One class-folder finder for every source: a wrapping folder and a corrections.json are looked past; a
    source with its own test folder is refused (its test photos would become training photos)."""
    from inspection.errors import UserError
    from inspection.data.extras import class_folders

    wrapped = tmp_path / "zip" / "corrections-20261207"
    write_part(wrapped / "ok" / "a.png", seed=1, defects=0)
    (wrapped / "corrections.json").write_text("{}")
    assert class_folders(tmp_path / "zip", section("data")) == {"ok": [wrapped / "ok"]}
    kaggle = tmp_path / "kaggle" / "casting_data"
    for role in ("train", "test"):
        write_part(kaggle / role / "def_front" / "a.png", seed=2, defects=1)
        write_part(kaggle / role / "ok_front" / "b.png", seed=3, defects=0)
    with pytest.raises(UserError, match="has its own test folder"):
        class_folders(tmp_path / "kaggle", section("data"))
    write_part(tmp_path / "loose" / "photos" / "c.png", seed=4, defects=0)
    with pytest.raises(UserError, match="no class folders"):
        class_folders(tmp_path / "loose", section("data"))


def test_extra_folder_with_an_unknown_class_is_one_line(tmp_path):
    from inspection.errors import UserError
    from inspection.data.extras import class_folders

    write_part(tmp_path / "defect" / "a.png", seed=1, defects=1)
    write_part(tmp_path / "scratched" / "b.png", seed=2, defects=1)
    with pytest.raises(UserError, match="scratched"):
        class_folders(tmp_path, section("data"))

