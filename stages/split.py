"""Stage split: decode every image once, quarantine bad files, group duplicates, split by group.

Reads data/raw and params ``split``. Writes data/split/manifest.csv (path, label, split, group, sha256,
origin) and reports/data.json (counts per split and class, duplicate groups, quarantined files, and the
confound check: how well global image statistics alone separate the classes)."""
from __future__ import annotations

from inspection.config import load_params
from inspection.artifacts import RAW, SOURCE_INFO
from inspection.errors import UserError
from inspection.runner.cli import cli
from inspection.data.extras import add_origins
from inspection.fsutil import staged_outputs, write_csv, write_json
from inspection.artifacts import DATA_REPORT, MANIFEST, SPLITS
from inspection.data.splitting import assign_groups, assign_splits, confound, resolve_label_conflicts, scan


def main() -> None:
    params = load_params()
    cfg = params.split
    if not (RAW / SOURCE_INFO).exists():
        raise UserError(f"{RAW}/SOURCE.json is missing; run the download stage first (dvc repro download)")
    records, thumbs, quarantined = scan(RAW, params.data.max_image_pixels)
    total = len(records) + len(quarantined)
    for q in quarantined:
        print(f"split: quarantined {q['path']}: {q['reason']}")
    if len(quarantined) > cfg.max_quarantined_fraction * total:
        raise UserError(
            f"{len(quarantined)} of {total} files are unreadable (limit split.max_quarantined_fraction="
            f"{cfg.max_quarantined_fraction}); fix or remove them (first: {quarantined[0]['path']}: {quarantined[0]['reason']})"
        )
    keep = {id(r): i for i, r in enumerate(records)}
    corrections = resolve_label_conflicts(records)   # data.extra's label wins over the main source's
    if corrections:
        thumbs = thumbs[[keep[id(r)] for r in records]]
        for c in corrections:
            print(f"split: label corrected to {c['label']!r} by {', '.join(c['by'])}: dropped {', '.join(c['replaces'])}")
    dup = assign_groups(records, thumbs, cfg)
    assign_splits(records, cfg)
    labels = sorted({r["label"] for r in records})
    counts = {s: {c: sum(1 for r in records if r["split"] == s and r["label"] == c) for c in labels} for s in SPLITS}
    for s in SPLITS:
        for c in labels:
            if counts[s][c] < cfg.min_images_per_class:
                raise UserError(f"split {s} has {counts[s][c]} {c!r} images, fewer than split.min_images_per_class="
                                f"{cfg.min_images_per_class} ({len(records)} usable images); add images, or change "
                                "the split fractions or split.min_images_per_class")
    conf = confound(records, params.data.positive_class, cfg.confound_warn_auc)
    report = {"images": len(records), "counts": counts, "duplicates": dup, "confound": conf,
              "label_corrections": corrections,
              "quarantined": quarantined, "quarantined_count": len(quarantined),
              "use_source_test": cfg.use_source_test, "seed": cfg.seed}
    with staged_outputs(MANIFEST, DATA_REPORT) as out:
        rows = [{"path": (RAW / r["path"]).as_posix(), "label": r["label"], "split": r["split"],
                 "group": r["group"], "sha256": r["sha256"]} for r in records]
        add_origins(rows, RAW)  # where each image came from: data.source or a data.extra source
        write_csv(out.path(MANIFEST), rows, ["path", "label", "split", "group", "sha256", "origin"])
        write_json(out.path(DATA_REPORT), report)
    print(f"split: {counts}; {dup['groups']} groups ({dup['groups_with_several_images']} with several images, "
          f"{dup['exact_duplicate_groups']} exact-duplicate sets); {len(quarantined)} quarantined")
    print(f"split: confound check: {'WARNING ' if conf['flagged'] else ''}{conf['message']}")


if __name__ == "__main__":
    cli(main)()
