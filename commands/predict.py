"""Batch prediction: one CSV row per image with its route (PASS / REVIEW / REJECT / RETAKE).

    python -m commands.predict PATH... [--model models | models:/casting-inspector@champion] [--out FILE.csv]
                               [--batch 64] [--workers 2]

PATH: image files, folders, zips or globs. The rows (columns inspection.decision.route.CSV_COLUMNS) go to
standard output, or to --out: a regular file is written as .partial-<name> beside it and renamed when complete.
The progress bar and a count per route go to stderr. Expanding the paths, loading the model and deciding each
image is inspection.deploy.predictor's work.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from pathlib import Path
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.decision.route import CSV_COLUMNS, ROUTES
from inspection.deploy.predictor import expand, load_predictor, predict_items


def main(prog: str = "python -m commands.predict") -> None:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                 epilog="Exit status: 0 every file has a row, 2 a usage or input error (one line on "
                                        "stderr). The inspector page's server: python -m commands.serve, or "
                                        "inspect-castings serve.")
    ap.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders, zips or globs")
    ap.add_argument("--model", default=None, help="model folder or models:/name@alias (default: the last model the "
                                                  "pipeline published, published/current, else models/)")
    ap.add_argument("--out", default="-", help="CSV file to write (default: standard output)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2, help="decoding threads")
    args = ap.parse_args()
    if args.batch < 1 or args.workers < 1:
        raise UserError("--batch and --workers must be at least 1")
    items = list(expand(args.paths))  # names and loaders only (no pixels): cheap even for 100,000 files
    if not items:
        raise UserError(f"no images found in {' '.join(args.paths)}; give image files, folders, zips or globs")
    from inspection.deploy.published import default_model

    predictor = load_predictor(args.model or default_model())
    from tqdm import tqdm

    counts = dict.fromkeys(ROUTES, 0)
    warned = 0
    out_path = None if args.out == "-" else Path(args.out)
    # a regular file is written beside and renamed when complete; a device or pipe (/dev/null, a FIFO) is
    # written as it is: renaming over it would replace the device with a file
    special = out_path is not None and out_path.exists() and not out_path.is_file()
    tmp = out_path.with_name(f".partial-{out_path.name}") if out_path and not special else None
    try:
        f = open(tmp or out_path, "w", newline="") if out_path else sys.stdout
    except OSError as exc:
        raise UserError(f"cannot write {out_path}: {exc.strerror}; choose another --out") from None
    try:
        writer = csv.DictWriter(f, fieldnames=list(CSV_COLUMNS), lineterminator="\n")
        writer.writeheader()
        with tqdm(total=len(items), desc="predict", unit="img", file=sys.stderr, mininterval=1) as bar:
            for row in predict_items(items, predictor, args.batch, args.workers, bar):
                writer.writerow(row)
                counts[row["route"]] += 1
                warned += "camera warning:" in row["reason"]
        if out_path:
            f.close()
        if tmp:
            os.replace(tmp, out_path)
    finally:
        if out_path and not f.closed:
            f.close()
        if tmp and tmp.exists():
            tmp.unlink()
    print(f"predict: {len(items)} files with model {predictor.metadata['version']}: "
          + ", ".join(f"{k} {v}" for k, v in counts.items()) + (f" -> {out_path}" if out_path else ""), file=sys.stderr)
    if warned:
        print(f"predict: camera warning on {warned} of {len(items)} photos: the lighting or focus has drifted from the "
              "training photos (the model still judges them); check the lamp and the focus", file=sys.stderr)


if __name__ == "__main__":
    cli(main, tensorflow=True)()
