"""TODO docstring."""
from __future__ import annotations

from inspection.config import load_params
from inspection.artifacts import SHARDS
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs
from inspection.data.shards import write_shards


def main() -> None:
    params = load_params()
    t = params.train
    with staged_outputs(SHARDS) as out:
        index = write_shards(out.path(SHARDS), t.image_size, t.shard_images)
    sizes = {s: v["images"] for s, v in index["splits"].items()}
    total = sum(sizes.values()) * t.image_size ** 2
    print(f"shards: {sizes} images at {t.image_size} px in {sum(len(v['shards']) for v in index['splits'].values())} "
          f"files, {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    cli(main)()
