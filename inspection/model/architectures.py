"""Model architectures: grayscale CNNs on raw 0-255 pixels that return P(defect).

Every model takes raw 0-255 grayscale pixels [N, H, W, 1] (the first layer is Rescaling(1/255)) and returns one sigmoid: P(defect).

normalize="per_image" adds PerImageStandardization after the rescaling: each image is
shifted and scaled to zero mean and unit variance, so the model (and the SavedModel and
TF.js model exported from it) cannot use absolute exposure or contrast, which drift on a
line and which this dataset confounds with the label (see the split stage's confound check).
"""
from __future__ import annotations

from pathlib import Path

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="inspection")
class PerImageStandardization(layers.Layer):
    """(x - mean(x)) / max(std(x), epsilon) per image, over height, width and channels."""

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, x):
        mean = ops.mean(x, axis=(1, 2, 3), keepdims=True)
        std = ops.sqrt(ops.mean(ops.square(x - mean), axis=(1, 2, 3), keepdims=True))
        return (x - mean) / ops.maximum(std, self.epsilon)

    def get_config(self):
        return {**super().get_config(), "epsilon": self.epsilon}


def _input(size: int, normalize: str):
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    if normalize == "per_image":
        x = PerImageStandardization(name="per_image_standardization")(x)
    return inputs, x


def seed_article(size: int, normalize: str = "none") -> keras.Model:
    """The seed article's baseline: 3 x (Conv2D + MaxPool), Flatten, Dense(128)."""
    inputs, x = _input(size, normalize)
    for filters in (16, 32, 64):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="defect_probability")(x)
    return keras.Model(inputs, outputs, name="seed")


def _conv_bn(x, filters: int, kernel: int, stride: int):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(momentum=0.9)(x)  # short memory: moving stats keep up with fast early training
    return layers.ReLU()(x)


def compact(size: int, normalize: str = "none", pooling: str = "avg") -> keras.Model:
    """A small strided CNN: BatchNorm, global pooling instead of Flatten->Dense.

    Two full-resolution-ish blocks keep small defects (pin holes, burrs) visible;
    the rest downsample quickly, so a 150 px image costs ~40 M multiply-adds.
    ``pooling``: avg (global average of the last feature map), or avg+max (average and maximum side by side: a
    defect is one place on the part, and an average over the whole part dilutes a small one; the maximum keeps it).
    """
    inputs, x = _input(size, normalize)
    x = _conv_bn(x, 16, 3, 2)
    x = _conv_bn(x, 32, 3, 1)
    x = layers.MaxPooling2D()(x)
    for filters in (48, 64, 96):
        x = _conv_bn(x, filters, 3, 1)
        x = layers.MaxPooling2D()(x)
    x = _conv_bn(x, 128, 3, 1)
    if pooling == "avg+max":
        x = layers.Concatenate(name="pooled")([layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x)])
    else:
        x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="defect_probability")(x)
    return keras.Model(inputs, outputs, name="compact")


ARCHITECTURES = {"seed": seed_article, "compact": compact}


def build(arch: str, size: int, normalize: str = "none", pooling: str = "avg") -> keras.Model:
    """``pooling`` applies to compact (the seed article's model flattens)."""
    if arch == "compact":
        return compact(size, normalize, pooling)
    return ARCHITECTURES[arch](size, normalize)


def load_model(path):
    """Load a saved .keras model (this module registers the custom layers it may contain); a damaged or
    truncated file is one line naming it (Keras says "File not found" for a cut-short zip)."""
    import zipfile

    from inspection.errors import UserError

    try:
        return keras.models.load_model(path)
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        if not Path(path).exists():
            raise UserError(f"{path} is missing; run the train stage first (dvc repro train)") from None
        raise UserError(f"{path} cannot be loaded ({type(exc).__name__}: {' '.join(str(exc).split())[:100]}): the "
                        f"file is damaged or cut short; `dvc checkout {path}` restores the recorded one, or re-run "
                        "the train stage (dvc repro -f train)") from None
