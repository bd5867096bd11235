"""TODO docstring."""
from __future__ import annotations

import numpy as np


def learning_rate(p, steps_per_epoch: int):
    """cosine: one epoch of linear warm-up to train.learning_rate, then cosine decay to 0 at
    train.max_epochs; plateau: constant, divided by 3 when val_loss stalls."""
    import keras

    if p.lr_schedule == "plateau":
        return p.learning_rate, [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.3,
                                                                   patience=max(1, p.patience // 2), verbose=1)]
    warmup = steps_per_epoch if p.max_epochs > 1 else 0
    decay = max(1, steps_per_epoch * p.max_epochs - warmup)
    return keras.optimizers.schedules.CosineDecay(0.0 if warmup else p.learning_rate, decay, alpha=0.0,
                                                  warmup_target=p.learning_rate if warmup else None,
                                                  warmup_steps=warmup), []


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    if mode == "none":
        return None
    from sklearn.utils.class_weight import compute_class_weight

    w = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    return {0: float(w[0]), 1: float(w[1])}
