"""Grad-CAM (Selvaraju et al. 2017): where in the image the model found evidence for a defect.

The gradient of the defect probability with respect to the last convolutional feature map,
averaged per channel, weights that map; the positive part, normalised to 0-1 and resized
to the input, is the heatmap.
"""
from __future__ import annotations

import cv2
import numpy as np


def last_feature_layer(model) -> str:
    """Name of the last layer with a spatial (4-D) output: the map Grad-CAM explains."""
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and min(shape[1], shape[2]) > 1:
            return layer.name
    raise ValueError(f"model {model.name!r} has no spatial layer to explain")


def gradcam(model, images: np.ndarray, layer: str | None = None, batch: int = 32) -> np.ndarray:
    """Heatmaps in [0, 1], shape [N, H, W], for float32 images [N, H, W, 1] of raw 0-255 pixels."""
    import keras
    import tensorflow as tf

    layer = layer or last_feature_layer(model)
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])
    out = []
    for i in range(0, len(images), batch):
        x = tf.constant(images[i:i + batch], tf.float32)
        with tf.GradientTape() as tape:
            fmap, prob = probe(x, training=False)
            score = prob[:, 0]
        grads = tape.gradient(score, fmap)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        cam = tf.nn.relu(tf.reduce_sum(weights * fmap, axis=-1)).numpy()
        for c in cam:
            c = c / c.max() if c.max() > 0 else c
            out.append(cv2.resize(c.astype(np.float32), (images.shape[2], images.shape[1]),
                                  interpolation=cv2.INTER_LINEAR))
    return np.clip(np.stack(out), 0.0, 1.0)


def overlay(gray: np.ndarray, heat: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """BGR image: the grayscale photo with the heatmap in OpenCV's JET colour map on top."""
    heat = cv2.resize(heat, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    colour = cv2.applyColorMap(np.uint8(np.round(255 * heat)), cv2.COLORMAP_JET)
    return cv2.addWeighted(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR), 1 - alpha, colour, alpha, 0)
