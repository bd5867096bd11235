"""Stage sources: fingerprint the image sources that live outside the repository.

The main source (data.local.path, a folder or zip; or the Kaggle version's state in kagglehub's cache),
data.extra (folders or zips) and promote.golden may be absent on another machine, so DVC cannot hash them as
deps. This stage (always run) writes their content fingerprints (inspection/data/fingerprint.py) to
data/source.json, data/extra.json and data/golden.json, deps of download and promote, so those re-run exactly
when a photo is added, removed or replaced, and a second `dvc repro` stays a no-op. Per-file hashes are cached
by size and mtime in data/sources.cache.json of the main workspace: an unchanged folder is not read again."""
from __future__ import annotations

from inspection.artifacts import EXTRA_HASHES, FINGERPRINT_CACHE, GOLDEN_HASH, SOURCE_HASH, main_root
from inspection.data.fingerprint import HashCache, fingerprint, main_source
from inspection.fsutil import staged_outputs, write_json
from inspection.runner.cli import cli


def main() -> None:
    from inspection.config import load_params

    params = load_params()
    cache = HashCache(main_root() / FINGERPRINT_CACHE)
    with staged_outputs(SOURCE_HASH, EXTRA_HASHES, GOLDEN_HASH) as out:
        source = main_source(params.data, cache)
        write_json(out.path(SOURCE_HASH), source)
        write_json(out.path(EXTRA_HASHES), {"extra": [fingerprint(s, cache) for s in params.data.extra]})
        write_json(out.path(GOLDEN_HASH), {"golden": fingerprint(params.promote.golden, cache)})
    cache.save()
    n = len(params.data.extra)
    print(f"sources: main source {source['source']}"
          + (f" ({source['files']} file(s), sha256 {source['sha256'][:12]})" if source.get("sha256") else "")
          + f", {n} extra source(s)" + (", golden set" if params.promote.golden else "")
          + f" fingerprinted ({cache.misses} file(s) hashed, {cache.hits} unchanged)")


if __name__ == "__main__":
    cli(main)()
