import numpy as np
import pytest

keras = pytest.importorskip("keras")

from inspection.model.architectures import build

from conftest import section  # noqa: E402


@pytest.mark.parametrize("arch", ["compact", "seed"])
def test_rescaling_first_and_probability_out(arch):
    model = build(arch, 64)
    assert model.input_shape == (None, 64, 64, 1) and model.output_shape == (None, 1)
    first = model.layers[1]
    assert isinstance(first, keras.layers.Rescaling) and first.scale == pytest.approx(1 / 255)
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (3, 1) and np.all((p >= 0) & (p <= 1))


def test_avg_max_pooling_sees_one_small_spot_that_the_average_dilutes():
    """pooling avg+max: the pooled features are the average and the maximum of the last feature map side by side
    (the OOD score's input doubles); a bright spot in one corner moves the max half a lot more than the average."""
    from inspection.model.ood import FEATURE_LAYER, feature_extractor

    model = build("compact", 64, "none", "avg+max")
    assert model.get_layer("pooled").output.shape[-1] == 256 and model.output_shape == (None, 1)
    feats = feature_extractor(model)
    flat = np.full((1, 64, 64, 1), 120.0, np.float32)
    spot = flat.copy()
    spot[0, 2:6, 2:6, 0] = 255.0
    a, b = feats.predict(flat, verbose=0)[0], feats.predict(spot, verbose=0)[0]
    assert np.abs(b[128:] - a[128:]).sum() > np.abs(b[:128] - a[:128]).sum()
    assert model.get_layer(FEATURE_LAYER).input.shape[-1] == 256


def test_seed_matches_the_article_and_compact_is_far_smaller():
    seed = build("seed", 300).count_params()
    assert 11.1e6 < seed < 11.3e6  # the seed article's 11.2 M parameters at 300x300
    assert build("compact", 150).count_params() < 0.03 * seed


def test_train_input_path_augments_only_training_batches():
    from types import SimpleNamespace

    from inspection.model.training import class_weights
    from inspection.model.input_pipeline import make_datasets

    rng = np.random.default_rng(0)
    data = SimpleNamespace(images=rng.integers(0, 256, (10, 32, 32), dtype=np.uint8), labels=np.array([1] * 7 + [0] * 3))
    p = section("train", batch_size=4, image_size=32)
    train_ds, val_ds = make_datasets(data, data, p)
    xv, yv = next(iter(val_ds))
    assert xv.shape == (4, 32, 32, 1) and xv.dtype.name == "float32"
    np.testing.assert_array_equal(xv.numpy()[..., 0], data.images[:4])  # val: raw pixels, unchanged, in order
    xt, _ = next(iter(train_ds))
    assert xt.shape == (4, 32, 32, 1) and float(xt.numpy().max()) <= 255.0
    w = class_weights(data.labels, "balanced")
    assert w[0] > w[1] and class_weights(data.labels, "none") is None


def test_per_image_standardization_makes_the_model_blind_to_exposure_and_survives_saving(tmp_path):
    from inspection.model.architectures import PerImageStandardization, load_model

    model = build("compact", 64, "per_image")
    assert isinstance(model.layers[1], keras.layers.Rescaling)
    assert isinstance(model.layers[2], PerImageStandardization)
    rng = np.random.default_rng(1)
    x = rng.integers(40, 200, (4, 64, 64, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    np.testing.assert_allclose(model.predict(x * 1.25, verbose=0), p, atol=1e-5)   # exposure
    np.testing.assert_allclose(model.predict((x - 120) * 0.8 + 120, verbose=0), p, atol=1e-5)  # contrast
    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(again.predict(x, verbose=0), p, atol=1e-6)


def test_photometric_and_geometric_augmentation_are_seeded_and_stay_in_range():
    import tensorflow as tf

    from inspection.model.augment import geometric, photometric

    a = section("train.augment", probability=1.0)
    x = tf.constant(np.random.default_rng(2).integers(0, 256, (6, 32, 32, 1)).astype(np.float32))
    seed = tf.constant([0, 7], tf.int64)
    one, two = photometric(x, seed, a), photometric(x, seed, a)
    np.testing.assert_array_equal(one.numpy(), two.numpy())
    assert float(tf.reduce_min(one)) >= 0 and float(tf.reduce_max(one)) <= 255
    assert not np.allclose(one.numpy(), x.numpy())
    assert not np.array_equal(photometric(x, tf.constant([0, 8], tf.int64), a).numpy(), one.numpy())
    none = section("train.augment", gain=None, gamma=None, contrast=None, blur_sigma=None, noise_sigma=None)
    np.testing.assert_array_equal(photometric(x, seed, none).numpy(), x.numpy())
    w = geometric(x, seed, a)
    assert w.shape == x.shape
    np.testing.assert_array_equal(w.numpy(), geometric(x, seed, a).numpy())
    still = section("train.augment", flip=False, rotate=False, shift=0.0, zoom=0.0)
    np.testing.assert_allclose(geometric(x, seed, still).numpy(), x.numpy(), atol=1e-3)  # identity warp


def test_perspective_tilt_keeps_the_centre_and_foreshortens_one_side():
    import tensorflow as tf

    from inspection.model.augment import geometric

    tilt_only = section("train.augment", flip=False, rotate=False, shift=0.0, zoom=0.0, perspective=0.4)
    x = np.zeros((8, 65, 65, 1), np.float32)
    x[:, 32, 32] = 255  # a dot in the centre
    x[:, :, [4, 60]] = 100  # two vertical lines near the left and right edges
    w = geometric(tf.constant(x), tf.constant([3, 1], tf.int64), tilt_only).numpy()
    assert not np.allclose(w, x)
    for img in w[..., 0]:
        assert np.unravel_index(np.argmax(img), img.shape) == (32, 32)  # the optical centre stays put
    # a tilt changes the length of a straight edge along the image: the lines' brightness profiles differ top vs bottom
    mass_top = (w[:, :16, :, 0] > 50).sum(axis=(1, 2))
    mass_bottom = (w[:, -16:, :, 0] > 50).sum(axis=(1, 2))
    assert (mass_top != mass_bottom).any()


def _views(x):
    """The 8 symmetries of the square, in numpy (rotations by 0/90/180/270 degrees and their mirror images)."""
    rotations = [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    return rotations + [r[:, :, ::-1] for r in rotations]


def test_d4_views_average_the_logits_and_make_the_probability_pose_invariant(tmp_path):
    """inspection/model/tta.py: the graph's probability is the sigmoid of the mean logit of the 8 views (checked
    against numpy), identical for any of the 8 poses of a photo, and it survives saving (custom layers)."""
    from inspection.model.tta import probability_model

    keras.utils.set_random_seed(0)
    model = build("compact", 32, "per_image")
    x = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 1)).astype(np.float32)
    tta = probability_model(model, "d4")

    def logit(p):
        p = np.clip(p, 1e-7, 1 - 1e-7)
        return np.log(p / (1 - p))

    expected = 1 / (1 + np.exp(-np.mean([logit(model.predict(v, verbose=0)) for v in _views(x)], axis=0)))
    got = tta.predict(x, verbose=0)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    for v in _views(x)[1:]:
        np.testing.assert_allclose(tta.predict(np.ascontiguousarray(v), verbose=0), got, atol=1e-6)
    single = model.predict(_views(x)[1], verbose=0)
    assert np.abs(single - model.predict(x, verbose=0)).max() > 1e-4   # the CNN alone is not invariant
    tta.save(tmp_path / "tta.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "tta.keras").predict(x, verbose=0), got, atol=1e-6)
    assert probability_model(model, "none") is model


def test_serving_model_with_views_keeps_the_identity_view_ood_score():
    from inspection.model.ood import FEATURE_LAYER, feature_extractor, fit, distances, predict_both, serving_model

    keras.utils.set_random_seed(1)
    model = build("compact", 32, "per_image")
    x = np.random.default_rng(1).integers(0, 256, (6, 32, 32)).astype(np.uint8)
    feats = feature_extractor(model).predict(x[..., None].astype(np.float32), verbose=0)
    gate = fit(np.concatenate([feats, feats + 0.01]))
    p1, o1 = predict_both(serving_model(model, gate, "none"), x)
    p8, o8 = predict_both(serving_model(model, gate, "d4"), x)
    np.testing.assert_allclose(o8, o1, rtol=1e-5)                     # the OOD score: the identity view's
    np.testing.assert_allclose(o1, distances(feats, gate), rtol=1e-4)
    assert np.abs(p8 - p1).max() > 1e-5 and model.get_layer(FEATURE_LAYER) is not None


def test_precise_batchnorm_sets_the_statistics_from_the_current_weights():
    """recalibrate_batchnorm: the first BatchNorm layer's moving mean becomes the mean of its inputs over the
    calibration images (momentum restored afterwards); settled() flags a run that still swings at its end."""
    from inspection.model.training import batchnorm_layers, recalibrate_batchnorm, settled

    keras.utils.set_random_seed(2)
    model = build("compact", 32, "per_image")
    bn = batchnorm_layers(model)
    assert len(bn) == 6 and all(layer.momentum == 0.9 for layer in bn)
    x = np.random.default_rng(2).integers(0, 256, (128, 32, 32, 1)).astype(np.float32)
    before = bn[0].moving_mean.numpy().copy()
    recalibrate_batchnorm(model, x, batch=32)
    conv = keras.Model(model.inputs, bn[0].input)
    inputs = conv.predict(x, verbose=0)
    np.testing.assert_allclose(bn[0].moving_mean.numpy(), inputs.mean(axis=(0, 1, 2)), rtol=1e-4, atol=1e-5)
    assert not np.allclose(before, bn[0].moving_mean.numpy())
    assert all(layer.momentum == 0.9 for layer in bn)
    assert settled([2.0, 0.5, 0.12, 0.1, 0.11], 3, 2.0)
    assert not settled([2.0, 0.5, 0.12, 0.1, 1.4], 3, 2.0)      # a swing at the end
    assert not settled([0.5, 0.4], 3, 2.0)                      # too short to tell
    from types import SimpleNamespace

    from inspection.model.training import unsettled_warning
    line = unsettled_warning([2.0, 0.5, 0.12, 0.1, 1.4], SimpleNamespace(settle_epochs=3, settle_ratio=2.0))
    assert line.startswith("train: WARNING: training did not settle") and "(0.120, 0.100, 1.400)" in line
    assert "over 2x the lowest (0.100)" in line and "\n" not in line
