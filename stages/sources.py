"""Stage sources: fingerprint the image sources that live outside the repository.

The main source (data.local.path, a folder or zip; or the Kaggle version's state in kagglehub's cache),
data.extra (folders or zips) and promote.golden may be absent on another machine, so DVC cannot hash them as
deps. This stage (always run) writes their content fingerprints (inspection/data/fingerprint.py) to
data/source.json, data/extra.json and data/golden.json, deps of download and promote, so those re-run exactly
when a photo is added, removed or replaced, and a second `dvc repro` stays a no-op. Per-file hashes are cached
by size and mtime in data/sources.cache.json of the main workspace: an unchanged folder is not read again.
Being always run, it is always listed by `dvc status`: `python -m commands.status` (make status) is the
up-to-date check that compares its fingerprints instead."""
from __future__ import annotations

from inspection.artifacts import FINGERPRINT_CACHE, SOURCE_HASH, main_root
from inspection.data.fingerprint import HashCache, source_fingerprints
from inspection.fsutil import staged_outputs, write_json
from inspection.runner.cli import cli


def main() -> None:
    from inspection.config import load_params

    params = load_params()
    cache = HashCache(main_root() / FINGERPRINT_CACHE)
    docs = source_fingerprints(params, cache)
    with staged_outputs(*docs) as out:
        for path, doc in docs.items():
            write_json(out.path(path), doc)
    cache.save()
    source = docs[SOURCE_HASH]
    n = len(params.data.extra)
    print(f"sources: main source {source['source']}"
          + (f" ({source['files']} file(s), sha256 {source['sha256'][:12]})" if source.get("sha256") else "")
          + f", {n} extra source(s)" + (", golden set" if params.promote.golden else "")
          + f" fingerprinted ({cache.misses} file(s) hashed, {cache.hits} unchanged)")


if __name__ == "__main__":
    cli(main)()
