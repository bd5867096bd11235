"""Stage shards: every manifest image decoded and resized once to train.image_size, in on-disk shards.

Reads data/raw and data/split/manifest.csv; writes data/shards/ (see inspection.data.shards)."""
from __future__ import annotations

from inspection.config import load_params
from inspection.artifacts import SHARDS
from inspection.runner.cli import cli
from inspection.fsutil import staged_outputs
from inspection.data.shards import write_shards


def main() -> None:
    params = load_params()
    train = params.train
    with staged_outputs(SHARDS) as out:
        index = write_shards(out.path(SHARDS), train.image_size, train.shard_images)
    sizes = {s: v["images"] for s, v in index["splits"].items()}
    total = sum(sizes.values()) * train.image_size ** 2
    print(f"shards: {sizes} images at {train.image_size} px in {sum(len(v['shards']) for v in index['splits'].values())} "
          f"files, {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    cli(main)()
