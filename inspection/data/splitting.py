"""The split rules: scan data/raw, group exact and near duplicates, assign whole groups to splits.

Images with identical decoded pixels, and near-duplicates (inspection.data.dedup), share a group; whole groups
go to one split, stratified by label, from a seed, so no casting is both trained on and tested on.
``confound`` measures how well global image statistics alone separate the classes."""
from __future__ import annotations

from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
import numpy as np
from tqdm import tqdm
from inspection.config import SplitParams
from inspection.data.dedup import THUMB, group_ids, near_duplicate_pairs, thumbnails
from inspection.artifacts import SOURCE_INFO, TEST_SUBFOLDER
from inspection.errors import UserError
from inspection.interrupts import check_interrupted
from inspection.fsutil import read_json
from inspection.data.images import (IMAGE_EXTENSIONS, decode_gray, iter_image_files, pixel_sha256, printable_name,
                                    undecodable_name)
from inspection.data.imagestats import FEATURES, confound_check, features


def scan(raw: Path, max_pixels: int | None = None) -> tuple[list[dict], np.ndarray, list[dict]]:
    """Decode every file under raw/<class>/ once. Returns (records, thumbnails, quarantined): each record
    carries the image's global statistics (inspection.data.imagestats); thumbnails are the near-duplicate search's
    32x32 thumbnails (inspection.data.dedup.thumbnails, kept as uint8: 1 KiB per image), not the decoded photos."""
    source = read_json(raw / SOURCE_INFO)
    classes = sorted(source["counts"])
    files = [(cls, f) for cls in classes if (raw / cls).is_dir() for f in iter_image_files(raw / cls)]
    if not files:
        raise UserError(f"no images in {raw}; run the download stage first (dvc repro download)")

    def decode(item):
        check_interrupted()  # Ctrl-C: the queued decodes end at once
        cls, f = item
        if undecodable_name(f):
            return cls, f, None, undecodable_name(f.relative_to(raw)), None
        if f.suffix.lower() not in IMAGE_EXTENSIONS:
            return cls, f, None, f"not an image file extension ({f.suffix or 'none'})", None
        img, reason = decode_gray(f.read_bytes(), max_pixels)  # above max_pixels: refused from the header
        if img is None:
            return cls, f, None, reason, None
        digest = pixel_sha256(img)
        return cls, f, (digest, thumbnails([img])[0].astype(np.uint8)), reason, features(img)  # exact: 0-255 values

    records, thumbs = [], []
    quarantined = list(source.get("quarantined", []))  # archive members the download stage could not extract
    with ThreadPoolExecutor(4) as pool:
        for cls, f, decoded, reason, stats in tqdm(pool.map(decode, files), total=len(files), desc="decode", unit="img",
                                                   mininterval=2):
            rel = printable_name(f.relative_to(raw).as_posix())
            if decoded is None:
                quarantined.append({"path": rel, "label": cls, "reason": reason})
                continue
            digest, thumb = decoded
            records.append({"path": rel, "label": cls, "sha256": digest,
                            "source_test": f.relative_to(raw).parts[1:2] == (TEST_SUBFOLDER,), "stats": stats})
            thumbs.append(thumb)
    return records, (np.stack(thumbs) if thumbs else np.empty((0, THUMB, THUMB), np.uint8)), quarantined


def resolve_label_conflicts(records: list[dict]) -> list[dict]:
    """Identical pixels under both classes. When the copies from data.extra (data/raw/<class>/extra/...: the
    inspector page's corrections) agree on one class, that label wins: the main source's copies with the other
    label are dropped from ``records`` (in place) and returned, one entry per corrected photo, for
    reports/data.json. Any other conflict (within one source, or extras that disagree) stops the split with the
    files named: a model must not be trained and scored on a photo that is both defect and ok."""
    from inspection.artifacts import EXTRA_SUBFOLDER

    by_hash: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_hash[r["sha256"]].append(r)
    corrections, drop = [], set()
    for members in by_hash.values():
        labels = {r["label"] for r in members}
        if len(labels) < 2:
            continue
        extra = [r for r in members if Path(r["path"]).parts[1:2] == (EXTRA_SUBFOLDER,)]
        extra_labels = {r["label"] for r in extra}
        if len(extra_labels) == 1:
            label = extra_labels.pop()
            dropped = [r for r in members if r["label"] != label]
            drop.update(id(r) for r in dropped)
            corrections.append({"label": label, "by": sorted(r["path"] for r in extra),
                                "replaces": sorted(f"{r['path']} ({r['label']})" for r in dropped)})
            continue
        shown = ", ".join(sorted(f"{r['path']} ({r['label']})" for r in members)[:6])
        raise UserError(f"identical pixels labelled both {' and '.join(sorted(labels))}: {shown}; remove the wrong "
                        "copy from the source (a correction belongs in data.extra, which overrides the main source)")
    records[:] = [r for r in records if id(r) not in drop]
    return corrections


def assign_groups(records: list[dict], thumbs: np.ndarray, cfg: SplitParams) -> dict:
    """Set record['group']; return duplicate statistics."""
    n = len(records)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        by_hash[r["sha256"]].append(i)
    rows, cols = [], []
    for members in by_hash.values():
        rows += [members[0]] * (len(members) - 1)
        cols += members[1:]
    exact_groups = sum(1 for m in by_hash.values() if len(m) > 1)
    if cfg.near_duplicates.method == "thumb_d4":
        print(f"split: near-duplicate search over {n} images (thumb_d4, max_distance {cfg.near_duplicates.max_distance})")
        r2, c2 = near_duplicate_pairs(thumbs.astype(np.float32), cfg.near_duplicates.max_distance)
        rows += r2.tolist()
        cols += c2.tolist()
    labels = group_ids(n, np.asarray(rows, int), np.asarray(cols, int))
    for r, g in zip(records, labels):
        r["group"] = int(g)
    sizes = Counter(labels.tolist())
    multi = [g for g, s in sizes.items() if s > 1]
    mixed = [g for g in multi if len({records[i]["label"] for i in np.flatnonzero(labels == g)}) > 1]
    return {
        "exact_duplicate_groups": exact_groups,
        "exact_duplicate_images": sum(len(m) for m in by_hash.values() if len(m) > 1),
        "groups": len(sizes),
        "groups_with_several_images": len(multi),
        "images_in_such_groups": sum(sizes[g] for g in multi),
        "largest_group": max(sizes.values()),
        "groups_with_both_labels": len(mixed),
        "method": cfg.near_duplicates.method,
        "max_distance": cfg.near_duplicates.max_distance,
    }


def assign_splits(records: list[dict], cfg: SplitParams) -> None:
    """Stratified, group-aware, deterministic split: whole groups go to one split."""
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        groups[r["group"]].append(r)
    rng = np.random.default_rng(cfg.seed)
    forced_test = set()
    if cfg.use_source_test:
        forced_test = {g for g, members in groups.items() if any(m["source_test"] for m in members)}
        if not forced_test:
            raise UserError("cfg.use_source_test is true but the source has no test folder; set it to false")
    by_label: dict[str, list[int]] = defaultdict(list)
    for g, members in sorted(groups.items()):
        label = Counter(m["label"] for m in members).most_common(1)[0][0]
        by_label[label].append(g)
    for label, gids in sorted(by_label.items()):
        order = [gids[i] for i in rng.permutation(len(gids))]
        total = sum(len(groups[g]) for g in gids)
        quota = {"val": round(total * cfg.val_fraction)}
        if not cfg.use_source_test:
            quota["test"] = round(total * cfg.test_fraction)
        filled = Counter()
        for g in order:
            if g in forced_test:
                split = "test"
            else:
                split = next((s for s in ("test", "val") if s in quota and filled[s] < quota[s]), "train")
            filled[split] += len(groups[g])
            for m in groups[g]:
                m["split"] = split


def confound(records: list[dict], positive_class: str, warn_auc: float) -> dict:
    table = {k: np.array([r["stats"][k] for r in records]) for k in FEATURES}
    labels = np.array([r["label"] == positive_class for r in records], int)
    split = np.array([r["split"] for r in records])
    return confound_check(table, labels, split == "train", split == "test", warn_auc)
