"""Grad-CAM must point at the defect a model has learned to detect."""
import numpy as np
import pytest


def spot_images(n, rng, size=48):
    x = rng.normal(150, 6, (n, size, size)).astype(np.float32)
    centres = []
    yy, xx = np.mgrid[:size, :size]
    for i in range(n // 2):  # first half: a dark pit at a random place
        cy, cx = rng.integers(8, size - 8, 2)
        x[i][(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] -= 90
        centres.append((cy, cx))
    y = np.r_[np.ones(n // 2), np.zeros(n - n // 2)].astype(np.float32)
    return np.clip(x, 0, 255)[..., None], y, centres


@pytest.fixture(scope="module")
def learned():
    import keras
    from keras import layers

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = spot_images(256, rng)
    inputs = keras.Input((48, 48, 1))
    h = layers.Rescaling(1 / 255)(inputs)
    h = layers.Conv2D(8, 3, padding="same", activation="relu")(h)
    h = layers.Conv2D(16, 3, padding="same", activation="relu", name="features")(h)
    h = layers.GlobalMaxPooling2D()(h)
    model = keras.Model(inputs, layers.Dense(1, activation="sigmoid")(h))
    model.compile(keras.optimizers.Adam(0.01), "binary_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    return model


def test_model_learned_the_defect(learned):
    x, y, _ = spot_images(40, np.random.default_rng(1))
    acc = ((learned.predict(x, verbose=0)[:, 0] >= 0.5) == y).mean()
    assert acc >= 0.95


def test_heatmap_peaks_on_the_defect(learned):
    from inspection.model.gradcam import gradcam, last_feature_layer, overlay

    assert last_feature_layer(learned) == "features"
    x, _, centres = spot_images(20, np.random.default_rng(2))
    heat = gradcam(learned, x[:10])
    assert heat.shape == (10, 48, 48) and heat.min() >= 0 and heat.max() <= 1
    hits = 0
    for h, (cy, cx) in zip(heat, centres):
        py, px = np.unravel_index(np.argmax(h), h.shape)
        hits += np.hypot(py - cy, px - cx) <= 5
    assert hits >= 9
    img = overlay(x[0, ..., 0].astype(np.uint8), heat[0])
    assert img.shape == (48, 48, 3) and img.dtype == np.uint8
