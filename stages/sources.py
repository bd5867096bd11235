"""Stage sources: fingerprint the image sources that live outside the repository.

data.extra (folders or zips) and promote.golden may be absent on another machine, so DVC cannot hash them as
deps. This stage (always run) writes their content hashes to data/extra.json and data/golden.json, deps of
download and promote, so those re-run exactly when the content changes."""
from __future__ import annotations

from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs, write_json
from inspection.artifacts import EXTRA_HASHES, GOLDEN_HASH
from inspection.data.extras import fingerprint


def main() -> None:
    from inspection.config import load_params

    params = load_params()
    with staged_outputs(EXTRA_HASHES, GOLDEN_HASH) as out:
        write_json(out.path(EXTRA_HASHES), {"extra": [fingerprint(s) for s in params.data.extra]})
        write_json(out.path(GOLDEN_HASH), {"golden": fingerprint(params.promote.golden)})
    n = len(params.data.extra)
    print(f"sources: {n} extra source(s) fingerprinted" + (", golden set too" if params.promote.golden else ""))


if __name__ == "__main__":
    cli(main)()
