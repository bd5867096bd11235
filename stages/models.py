"""Model architectures. Every model takes raw 0-255 grayscale pixels [N, H, W, 1]
(the first layer is Rescaling(1/255)) and returns one sigmoid: P(defect)."""
from __future__ import annotations

import keras
from keras import layers


def seed_article(size: int) -> keras.Model:
    """The seed article's baseline: 3 x (Conv2D + MaxPool), Flatten, Dense(128)."""
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
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
    x = layers.BatchNormalization()(x)
    return layers.ReLU()(x)


def compact(size: int) -> keras.Model:
    """A small strided CNN: BatchNorm, global average pooling instead of Flatten->Dense.

    Two full-resolution-ish blocks keep small defects (pin holes, burrs) visible;
    the rest downsample quickly, so a 150 px image costs ~40 M multiply-adds.
    """
    inputs = keras.Input((size, size, 1), name="image")
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = _conv_bn(x, 16, 3, 2)
    x = _conv_bn(x, 32, 3, 1)
    x = layers.MaxPooling2D()(x)
    for filters in (48, 64, 96):
        x = _conv_bn(x, filters, 3, 1)
        x = layers.MaxPooling2D()(x)
    x = _conv_bn(x, 128, 3, 1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.2)(x)
    outputs = layers.Dense(1, activation="sigmoid", name="defect_probability")(x)
    return keras.Model(inputs, outputs, name="compact")


ARCHITECTURES = {"seed": seed_article, "compact": compact}


def build(arch: str, size: int) -> keras.Model:
    return ARCHITECTURES[arch](size)
