"""Training-time augmentation in TensorFlow: camera drift (``photometric``) and part pose (``geometric``).

Both take a float32 batch [B, H, W, 1] of 0-255 pixels, a stateless seed and the train.augment params, and use
only stateless random ops, so the same seed gives the same augmented batch. ``photometric`` applies exposure
gain, gamma, contrast, Gaussian blur and sensor noise, each to a random share of the images; ``geometric``
composes flips, rotation, zoom, shift and tilt into one projective warp per image with reflected borders.
inspection.model.input_pipeline maps them over the training batches. TensorFlow is imported inside the functions.

Why not Keras preprocessing layers (RandomFlip, RandomRotation, RandomZoom, RandomTranslation, RandomBrightness,
RandomContrast): (1) they draw from a layer's own seed generator, not from a per-batch stateless seed, so a
training run could not be repeated batch for batch from train.seed inside tf.data; (2) each geometric layer warps
and resamples the image once, so flip + rotation + zoom + shift would interpolate four times and blur the fine
cracks and pores the model must see, where ``geometric`` composes them into one warp; (3) Keras has no layer for
gamma, blur, sensor noise or tilt (a projective warp) at all.
"""
from __future__ import annotations

import numpy as np


def photometric(x, seed, augment):
    """Random camera drift on a float32 batch [B, H, W, 1] of 0-255 pixels (train.augment):
    exposure gain, gamma, contrast, Gaussian blur, sensor noise, each applied to a random
    share (train.augment.probability) of the images. Stateless ops: same seed, same batch."""
    import tensorflow as tf

    b = tf.shape(x)[0]
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 12))

    def uniform(i, lo_hi, shape=None):
        shape = [b, 1, 1, 1] if shape is None else shape
        return tf.random.stateless_uniform(shape, seeds[i], lo_hi[0], lo_hi[1])

    def sometimes(i, changed, original):
        return tf.where(tf.random.stateless_uniform([b, 1, 1, 1], seeds[i]) < augment.probability, changed, original)

    if augment.gain is not None:
        x = sometimes(7, tf.clip_by_value(x * uniform(0, augment.gain), 0.0, 255.0), x)
    if augment.gamma is not None:
        g = tf.exp(uniform(1, (float(np.log(augment.gamma[0])), float(np.log(augment.gamma[1])))))
        x = sometimes(8, 255.0 * tf.pow(x / 255.0 + 1e-6, g), x)
    if augment.contrast is not None:
        mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
        x = sometimes(9, tf.clip_by_value((x - mean) * uniform(2, augment.contrast) + mean, 0.0, 255.0), x)
    if augment.blur_sigma is not None:
        sigma = uniform(3, augment.blur_sigma, [])
        k = tf.exp(-0.5 * tf.square(tf.range(-4.0, 5.0) / sigma))
        k = k / tf.reduce_sum(k)
        blurred = tf.nn.conv2d(x, tf.reshape(k, [9, 1, 1, 1]), 1, "SAME")
        x = sometimes(4, tf.nn.conv2d(blurred, tf.reshape(k, [1, 9, 1, 1]), 1, "SAME"), x)
    if augment.noise_sigma is not None:
        noise = tf.random.stateless_normal(tf.shape(x), seeds[5]) * uniform(6, augment.noise_sigma)
        x = sometimes(10, tf.clip_by_value(x + noise, 0.0, 255.0), x)
    return x


def geometric(x, seed, augment):
    """One random projective warp per image (train.augment): flips, rotation by any angle, zoom,
    shift and camera tilt (perspective) composed into a single bilinear resampling with reflected
    borders. The matrix maps output pixels to input pixels."""
    import tensorflow as tf

    b, size = tf.shape(x)[0], tf.cast(tf.shape(x)[1], tf.float32)
    s = tf.unstack(tf.random.experimental.stateless_split(seed, 8))
    u = lambda i, lo, hi: tf.random.stateless_uniform([b], s[i], lo, hi)  # noqa: E731
    one, zero = tf.ones([b]), tf.zeros([b])
    theta = u(0, 0.0, 2 * np.pi) if augment.rotate else zero
    scale = u(1, 1.0 - augment.zoom, 1.0 + augment.zoom)
    fx = tf.where(u(2, 0, 1) < 0.5, -one, one) if augment.flip else one
    fy = tf.where(u(3, 0, 1) < 0.5, -one, one) if augment.flip else one
    tx, ty = u(4, -augment.shift, augment.shift) * size, u(5, -augment.shift, augment.shift) * size
    # tilt: the far side of the image shrinks by up to `perspective` relative to the near side
    tilt = augment.perspective
    g, h = (u(6, -tilt, tilt) / size, u(7, -tilt, tilt) / size) if tilt > 0 else (zero, zero)
    cos, sin = tf.cos(theta) / scale, tf.sin(theta) / scale
    c = (size - 1) / 2

    def mat(*rows):  # 9 [b] tensors -> [b, 3, 3]
        return tf.reshape(tf.stack(rows, axis=1), [-1, 3, 3])

    rotate = mat(cos * fx, -sin * fy, zero, sin * fx, cos * fy, zero, zero, zero, one)  # R(theta) F / scale
    tilt = mat(one, zero, zero, zero, one, zero, g, h, one)
    to_centre = mat(one, zero, -(c + tx), zero, one, -(c + ty), zero, zero, one)
    back = mat(one, zero, c * one, zero, one, c * one, zero, zero, one)
    m = back @ rotate @ tilt @ to_centre
    m = m / m[:, 2:3, 2:3]
    transforms = tf.reshape(m, [-1, 9])[:, :8]
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=x, transforms=transforms, output_shape=tf.shape(x)[1:3], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="REFLECT")
