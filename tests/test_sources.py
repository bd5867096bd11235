"""The sources stage sees every change of a source outside the repository, and nothing else: a photo added,
removed or replaced in a local folder, a local zip or an extra folder re-runs download; touching nothing (or
only a file's mtime) keeps `dvc repro` a no-op. Per-file hashes come from the cache when size and mtime agree."""
from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import yaml

from conftest import copy_repo, sh, write_part


def test_fingerprint_cache_reads_only_changed_files(tmp_path):
    from inspection.data.fingerprint import HashCache, fingerprint

    folder = tmp_path / "photos"
    for i in range(5):
        write_part(folder / "ok" / f"{i}.png", seed=i, defects=0, size=32)
    (folder / ".hidden").write_text("skipped")
    cache_file = tmp_path / "cache.json"
    cache = HashCache(cache_file)
    first = fingerprint(str(folder), cache)
    cache.save()
    assert first["files"] == 5 and (cache.misses, cache.hits) == (5, 0)
    again = HashCache(cache_file)
    assert fingerprint(str(folder), again) == first and (again.misses, again.hits) == (0, 5)
    os.utime(folder / "ok" / "0.png", ns=(1, 1))             # touched, same content: re-read, same fingerprint
    touched = HashCache(cache_file)
    assert fingerprint(str(folder), touched) == first and touched.misses == 1
    write_part(folder / "ok" / "0.png", seed=99, defects=0, size=32)   # replaced
    assert fingerprint(str(folder), HashCache(cache_file))["sha256"] != first["sha256"]
    cache_file.write_text("not json")                         # a damaged cache only costs a re-hash
    assert fingerprint(str(folder), HashCache(cache_file))["files"] == 5


def _repo(tmp_path: Path, source: Path, extra: Path) -> Path:
    root = copy_repo(tmp_path / "repo")
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["data"].update(source="local", extra=[str(extra)])
    p["data"]["local"]["path"] = str(source)
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", "commit", "-qm", "sources"]):
        sh(cmd, root)
    return root


def _classes(folder: Path, n: int, seed: int) -> None:
    for cls, defects in (("def_front", 1), ("ok_front", 0)):
        for i in range(n):
            write_part(folder / cls / f"{cls}_{i}.png", seed=seed + 10 * i + defects, defects=defects, size=48)


def _download_ran(root: Path) -> bool:
    """`dvc repro download` re-made data/raw: it ran, or DVC restored the outputs of an earlier run with these very
    inputs from its run cache (the sources went back to a state already seen)."""
    out = sh(["dvc", "repro", "download"], root).stdout
    return "Running stage 'download'" in out or "Stage 'download' is cached" in out


def _counts(root: Path) -> dict:
    return json.loads((root / "data/raw/SOURCE.json").read_text())["counts"]


def test_a_changed_photo_reruns_download_and_nothing_else_does(tmp_path):
    source, extra = tmp_path / "line", tmp_path / "extra"
    _classes(source, 4, 0)
    write_part(extra / "defect" / "x.png", seed=500, defects=1, size=48)
    root = _repo(tmp_path, source, extra)
    assert _download_ran(root) and _counts(root) == {"defect": 5, "ok": 4}   # + the extra photo
    assert not _download_ran(root)                                        # nothing changed: a no-op
    os.utime(source / "ok_front" / "ok_front_0.png")                      # touched only
    assert not _download_ran(root)
    write_part(source / "def_front" / "new.png", seed=77, defects=1, size=48)   # added
    assert _download_ran(root) and _counts(root) == {"defect": 6, "ok": 4}
    (source / "ok_front" / "ok_front_1.png").unlink()                     # removed
    assert _download_ran(root) and _counts(root) == {"defect": 6, "ok": 3}
    write_part(source / "ok_front" / "ok_front_2.png", seed=4242, defects=0, size=48)   # replaced in place
    assert _download_ran(root)
    write_part(extra / "ok" / "y.png", seed=501, defects=0, size=48)      # a photo added to an extra folder
    assert _download_ran(root) and _counts(root) == {"defect": 6, "ok": 4}
    assert not _download_ran(root)
    write_part(extra / "ok" / "y.png", seed=502, defects=0, size=48)      # replaced in the extra folder
    assert _download_ran(root) and _counts(root) == {"defect": 6, "ok": 4}
    (extra / "ok" / "y.png").unlink()                                     # removed from it
    assert _download_ran(root) and _counts(root) == {"defect": 6, "ok": 3}
    assert not _download_ran(root)
    # and everything after download follows: DVC sees data/raw changed, so split (and the rest) re-run
    write_part(source / "def_front" / "later.png", seed=78, defects=1, size=48)
    assert _download_ran(root)
    downstream = sh(["dvc", "status", "split", "train"], root).stdout
    assert "split" in downstream and "modified:           data/raw" in downstream, downstream


def _status(root: Path, *stages: str):
    return sh([sys.executable, "-m", "commands.status", *stages], root, check=False)


def test_the_status_gate_is_clean_when_synced_and_names_a_new_photo(tmp_path):
    """commands.status (make status): nothing printed and exit 0 after a run; a photo added to the source folder
    or an extra folder is named (exit 1), while `dvc status download` calls that "up to date" and `dvc status`
    always lists the sources stage as "always changed" (so `dvc status -q` never exits 0: why this gate exists)."""
    source, extra = tmp_path / "line", tmp_path / "extra"
    _classes(source, 4, 0)
    write_part(extra / "defect" / "x.png", seed=500, defects=1, size=48)
    root = _repo(tmp_path, source, extra)
    missing = _status(root, "download")
    assert missing.returncode == 1 and "data/source.json is missing" in missing.stdout
    assert _download_ran(root)
    clean = _status(root, "download")
    assert (clean.returncode, clean.stdout, clean.stderr) == (0, "", "")
    assert "always changed" in sh(["dvc", "status"], root).stdout                  # what dvc status alone says
    write_part(source / "def_front" / "new.png", seed=77, defects=1, size=48)
    assert "up to date" in sh(["dvc", "status", "download"], root).stdout          # and it cannot see a new photo
    added = _status(root, "download")
    assert added.returncode == 1 and added.stdout.strip() == (
        f"sources: data/source.json would change: {source} now has 9 file(s), 8 before"), added.stdout
    write_part(extra / "ok" / "y.png", seed=501, defects=0, size=48)
    both = _status(root, "download")
    assert both.returncode == 1 and f"data/extra.json would change: {extra} now has 2 file(s), 1 before" in both.stdout
    assert _download_ran(root)
    assert _status(root, "download").returncode == 0
    p = yaml.safe_load((root / "params.yaml").read_text())               # a params change DVC sees
    p["data"]["max_image_pixels"] = 1000000
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    changed = _status(root, "download")
    assert changed.returncode == 1 and changed.stdout.startswith("download: changed deps: params.yaml"), changed.stdout


def test_a_changed_zip_reruns_download(tmp_path):
    folder, extra = tmp_path / "photos", tmp_path / "extra"
    _classes(folder, 3, 100)
    write_part(extra / "defect" / "x.png", seed=600, defects=1, size=48)
    archive = tmp_path / "line.zip"

    def pack(files):
        with zipfile.ZipFile(archive, "w") as zf:
            for f in files:
                zf.write(f, f.relative_to(folder))
    files = sorted(folder.rglob("*.png"))
    pack(files)
    root = _repo(tmp_path, archive, extra)
    assert _download_ran(root) and _counts(root) == {"defect": 4, "ok": 3}   # + the extra photo
    assert not _download_ran(root)
    pack(files[1:])                                                       # a photo removed from the zip
    assert _download_ran(root) and sum(_counts(root).values()) == 6
    assert not _download_ran(root)
    pack(files)                                                           # added back
    assert _download_ran(root) and sum(_counts(root).values()) == 7
    write_part(files[0], seed=999, defects=1, size=48)                     # one photo replaced inside the zip
    pack(files)
    assert _download_ran(root) and sum(_counts(root).values()) == 7
    os.utime(archive, ns=(1, 1))                                          # the zip touched, same bytes
    assert not _download_ran(root)
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:               # an extra source given as a zip
        zf.write(files[0], "defect/zipped.png")
    p = yaml.safe_load((root / "params.yaml").read_text())
    p["data"]["extra"] = [str(extra), str(tmp_path / "more.zip")]
    (root / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    assert _download_ran(root) and sum(_counts(root).values()) == 8
    with zipfile.ZipFile(tmp_path / "more.zip", "w") as zf:               # a photo added to the extra zip
        zf.write(files[0], "defect/zipped.png")
        zf.write(files[-1], "ok/zipped.png")
    assert _download_ran(root) and sum(_counts(root).values()) == 9
    assert not _download_ran(root)


def test_fingerprint_benchmark_tool_runs_on_a_small_folder(tmp_path):
    """tools/bench_fingerprint.py (make bench) end to end on 60 files: cold reads all, warm reads none."""
    import subprocess
    import sys

    from conftest import REPO

    out = tmp_path / "bench.json"
    res = subprocess.run([sys.executable, str(REPO / "tools/bench_fingerprint.py"), "--files", "60", "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["cold"]["hashed"] == 60 and doc["warm"]["hashed"] == 0 and doc["warm"]["from_cache"] == 60
    assert doc["two_changed"]["hashed"] == 2 and doc["two_changed"]["files"] == 61


def test_kaggle_source_is_fingerprinted_by_its_cache_state(tmp_path, monkeypatch):
    """data.source kaggle: the fingerprint changes when the pinned version becomes complete in kagglehub's
    cache (kagglehub's own completion marker), so download re-runs then and only then."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    from conftest import section
    from inspection.data.fingerprint import HashCache, main_source

    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kaggle-cache"))
    data = section("data", source="kaggle")
    before = main_source(data, HashCache(None))
    assert before == {"source": "kaggle", "kind": "kaggle", "dataset": data.kaggle.dataset,
                      "version": data.kaggle.version, "cached_complete": False}
    handle = parse_dataset_handle(f"{data.kaggle.dataset}/versions/{data.kaggle.version}")
    cache = Cache()
    Path(cache.get_path(handle)).mkdir(parents=True)
    cache.mark_as_complete(handle)
    assert main_source(data, HashCache(None))["cached_complete"] is True
    assert main_source(section("data", source="synthetic"), HashCache(None)) == {"source": "synthetic"}
