"""Content fingerprints of the image sources outside the repository, cheap enough to take on every run.

DVC cannot hash data.local.path, data.extra or promote.golden as deps: they live outside the repository and may
be absent on another machine. The `sources` stage (always run) writes their fingerprints to small files that
download and promote depend on, so those stages re-run exactly when a source's content changes, and a second
`dvc repro` stays a no-op.

A fingerprint is the sha256 over (relative path, content sha256) of every file of a folder (hidden files and
__MACOSX skipped), or the sha256 of a zip. Hashing 50,000 photos on every run would take minutes, so each
file's content hash is kept in a cache beside the outputs (``FINGERPRINT_CACHE``, keyed by absolute path, size
and mtime): an unchanged folder costs one directory walk and one stat per file, and only new or changed files
are read. A touched file whose content did not change keeps its fingerprint. A Kaggle source is fingerprinted by
its pinned version and whether kagglehub's cache holds it complete (it becomes complete by a download).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from inspection.data.images import not_a_photo_path
from inspection.fsutil import sha256_file

PROGRESS_FROM = 2000   # folders with more files than this show a progress bar


def _walk(folder: Path) -> list[tuple[str, os.stat_result]]:
    """(relative posix path, stat) of every visible file under ``folder``, sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not not_a_photo_path(d)]
        for name in filenames:
            if not name.startswith("."):
                full = os.path.join(dirpath, name)
                st = os.stat(full)
                found.append((os.path.relpath(full, folder).replace(os.sep, "/"), st))
    return sorted(found, key=lambda item: item[0])


class HashCache:
    """Content hashes by (absolute path, size, mtime_ns), loaded from and saved to one JSON file."""

    def __init__(self, path: Path | None):
        self.path = path
        self.entries: dict[str, list] = {}
        self.hits = self.misses = 0
        if path is not None and path.exists():
            try:
                self.entries = json.loads(path.read_text())
            except (OSError, ValueError):   # a damaged cache only costs a re-hash
                self.entries = {}
        self.used: dict[str, list] = {}

    def sha256(self, file: Path, st: os.stat_result) -> str:
        key = str(file)
        hit = self.entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            self.hits += 1
            digest = hit[2]
        else:
            self.misses += 1
            digest = sha256_file(file)
        self.used[key] = [st.st_size, st.st_mtime_ns, digest]
        return digest

    def save(self) -> None:
        """Keep only the entries of this run (a removed source's files drop out), written atomically."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(json.dumps(self.used))
        os.replace(tmp, self.path)


def folder_sha256(folder: Path, cache: HashCache) -> tuple[str, int]:
    files = _walk(folder)
    h = hashlib.sha256()
    bar = None
    if len(files) > PROGRESS_FROM:
        from tqdm import tqdm

        bar = tqdm(total=len(files), desc=f"sources: fingerprint {folder.name}", unit="file", mininterval=1)
    for rel, st in files:
        h.update(f"{rel}\0{cache.sha256(folder / rel, st)}\n".encode())
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return h.hexdigest(), len(files)


def fingerprint(spec: str | None, cache: HashCache | None = None) -> dict | None:
    """{"path" (as in params), "kind": zip | file | folder | missing, "sha256", "files"} of one source (None
    for None). Relative paths are relative to the main workspace (inspection.artifacts.resolve_user_path)."""
    if spec is None:
        return None
    from inspection.artifacts import resolve_user_path

    cache = cache or HashCache(None)
    path = resolve_user_path(spec)
    if path.is_file():
        return {"path": spec, "kind": "zip" if path.suffix.lower() == ".zip" else "file",
                "sha256": cache.sha256(path.resolve(), path.stat()), "files": 1}
    if path.is_dir():
        digest, n = folder_sha256(path.resolve(), cache)
        return {"path": spec, "kind": "folder", "sha256": digest, "files": n}
    return {"path": spec, "kind": "missing", "sha256": None, "files": 0}


def kaggle_state(dataset: str, version: int) -> dict:
    """Is the pinned Kaggle version complete in kagglehub's cache (KAGGLEHUB_CACHE)? kagglehub's own cache
    lookup (its completion marker), no network."""
    from kagglehub.cache import Cache
    from kagglehub.handle import parse_dataset_handle

    cached = Cache().load_from_cache(parse_dataset_handle(f"{dataset}/versions/{version}"))
    return {"kind": "kaggle", "dataset": dataset, "version": version, "cached_complete": cached is not None}


def main_source(data, cache: HashCache) -> dict:
    """The fingerprint of the source data.source resolves to (auto: local when data.local.path exists)."""
    from inspection.data.acquire import resolve_source

    source = resolve_source(data)
    if source == "local":
        return {"source": "local", **fingerprint(data.local.path, cache)}
    if source == "kaggle":
        return {"source": "kaggle", **kaggle_state(data.kaggle.dataset, data.kaggle.version)}
    return {"source": source}


def source_fingerprints(params, cache: HashCache) -> dict[Path, dict]:
    """What the sources stage writes, {output file: document}: the main source, each of data.extra and
    promote.golden (``commands.status`` compares them with the files of the last run)."""
    from inspection.artifacts import EXTRA_HASHES, GOLDEN_HASH, SOURCE_HASH

    return {SOURCE_HASH: main_source(params.data, cache),
            EXTRA_HASHES: {"extra": [fingerprint(s, cache) for s in params.data.extra]},
            GOLDEN_HASH: {"golden": fingerprint(params.promote.golden, cache)}}
