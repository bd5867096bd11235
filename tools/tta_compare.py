"""One trained model with one view and with the 8 views of inspection.model.tta: the band and its cost.

Usage (after `dvc repro evaluate`): python tools/tta_compare.py [--model models/model.keras]
    [--out reports/tta_compare.json]

For each of ``none`` and ``d4`` it scores the validation and test shards, chooses the review band on
validation with evaluate.band_targets (clean photos only, inspection.decision.band.choose_band) and reports the
REVIEW share at report.line_defect_rate on validation and with the same band on test, the test misses and false
rejects, and the CNN's milliseconds per photo in Python (batch 64). README Results quotes it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def measure(model, views: str, val, test, params) -> dict:
    from inspection.decision.band import choose_band, review_share
    from inspection.model.tta import probability_model

    e, r = params.evaluate, params.report
    pm = probability_model(model, views)
    xv = val.load_all()[..., None].astype("float32")
    xt = test.load_all()[..., None].astype("float32")
    t0 = time.perf_counter()
    pv = pm.predict(xv, batch_size=64, verbose=0)[:, 0]
    ms = 1000 * (time.perf_counter() - t0) / len(xv)
    pt = pm.predict(xt, batch_size=64, verbose=0)[:, 0]
    band = choose_band(val.labels, pv, e.band_targets.max_missed_rate, e.band_targets.max_false_reject_rate,
                       e.bootstrap.confidence, r.line_defect_rate, more_data=())
    yt = test.labels
    return {"views": views, "ms_per_photo": round(ms, 2), "band": [band["low"], band["high"]],
            "val_review_share": band["validation"]["review_share_at_line_rate"],
            "test_review_share": review_share(yt, pt, band["low"], band["high"], r.line_defect_rate),
            "test_missed": int(((pt < band["low"]) & (yt == 1)).sum()),
            "test_false_rejects": int(((pt >= band["high"]) & (yt == 0)).sum())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(ROOT / "models/model.keras"))
    ap.add_argument("--out", default=str(ROOT / "reports/tta_compare.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from inspection.config import load_params
    from inspection.data.dataset import open_shards
    from inspection.model.architectures import load_model

    params = load_params()
    size, pos = params.train.image_size, params.data.positive_class
    val, test = open_shards("val", size, pos), open_shards("test", size, pos)
    model = load_model(args.model)
    rows = [measure(model, views, val, test, params) for views in ("none", "d4")]
    for row in rows:
        print(f"tta_compare: {row}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
