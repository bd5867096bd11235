"""Where the validation-loss swings come from: BatchNorm's moving statistics or the weights.

Usage (in a workspace whose data/shards exist, e.g. after `dvc repro shards`):
    python tools/bn_swing.py [--seed 0] [--epochs 14] [--out reports/bn_swing.json]

Trains the configured model exactly as the train stage's Keras fit does, but with precise BatchNorm switched
off (``train.bn_calibration_images: 0``) and without Keras' own validation, and after every epoch measures the
validation loss twice with the same weights: with the moving statistics as training left them, and after
re-estimating them on 1,024 clean training images (``inspection.model.training.recalibrate_batchnorm``). The
weights never change by the measurement; the moving statistics then go on from the re-estimated values, as
momentum updates overwrite them within a few dozen batches. README Results quotes the table for seed 0.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def val_loss(model, x, y) -> float:
    import numpy as np

    p = np.clip(model.predict(x, batch_size=128, verbose=0)[:, 0], 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: train.max_epochs")
    ap.add_argument("--out", default=str(ROOT / "reports/bn_swing.json"))
    args = ap.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf

    from inspection.config import load_params
    from inspection.data.dataset import open_shards
    from inspection.model.architectures import build
    from inspection.model.input_pipeline import stream
    from inspection.model.training import calibration_images, class_weights, learning_rate, recalibrate_batchnorm

    p = load_params().train
    p = p.model_copy(update={"seed": args.seed, "max_epochs": args.epochs or p.max_epochs})
    keras.utils.set_random_seed(p.seed)
    tf.config.experimental.enable_op_determinism()
    train, val = open_shards("train", p.image_size, "defect"), open_shards("val", p.image_size, "defect")
    xv, yv = val.load_all()[..., None].astype(np.float32), val.labels.astype(np.float32)
    calib = calibration_images(train, 1024)
    model = build(p.arch, p.image_size, p.normalize, p.pooling)
    lr, _ = learning_rate(p, int(np.ceil(len(train.labels) / p.batch_size)))
    model.compile(optimizer=keras.optimizers.Adam(lr), loss="binary_crossentropy")
    rows: list[dict] = []

    class Measure(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            raw = val_loss(model, xv, yv)
            recalibrate_batchnorm(model, calib)
            rows.append({"epoch": epoch + 1, "val_loss_moving_statistics": raw,
                         "val_loss_reestimated": val_loss(model, xv, yv), "train_loss": float(logs["loss"])})
            print(f"bn_swing: epoch {epoch + 1}: val loss {raw:.4f} as trained, "
                  f"{rows[-1]['val_loss_reestimated']:.4f} re-estimated", flush=True)

    model.fit(stream(train, p, True), epochs=p.max_epochs, verbose=0,
              class_weight=class_weights(train.labels, p.class_weight), callbacks=[Measure()])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"seed": p.seed, "image_size": p.image_size, "epochs": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
