import numpy as np
import pytest

keras = pytest.importorskip("keras")

from stages.models import build  # noqa: E402


@pytest.mark.parametrize("arch", ["compact", "seed"])
def test_rescaling_first_and_probability_out(arch):
    model = build(arch, 64)
    assert model.input_shape == (None, 64, 64, 1) and model.output_shape == (None, 1)
    first = model.layers[1]
    assert isinstance(first, keras.layers.Rescaling) and first.scale == pytest.approx(1 / 255)
    x = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 1)).astype(np.float32)
    p = model.predict(x, verbose=0)
    assert p.shape == (3, 1) and np.all((p >= 0) & (p <= 1))


def test_seed_matches_the_article_and_compact_is_far_smaller():
    seed = build("seed", 300).count_params()
    assert 11.1e6 < seed < 11.3e6  # the seed article's 11.2 M parameters at 300x300
    assert build("compact", 150).count_params() < 0.03 * seed


def test_train_input_path_augments_only_training_batches():
    from types import SimpleNamespace

    from stages.config import TrainParams
    from stages.train import class_weights, make_datasets

    rng = np.random.default_rng(0)
    data = SimpleNamespace(images=rng.integers(0, 256, (10, 32, 32), dtype=np.uint8), labels=np.array([1] * 7 + [0] * 3))
    p = TrainParams(batch_size=4, image_size=32)
    train_ds, val_ds = make_datasets(data, data, p)
    xv, yv = next(iter(val_ds))
    assert xv.shape == (4, 32, 32, 1) and xv.dtype.name == "float32"
    np.testing.assert_array_equal(xv.numpy()[..., 0], data.images[:4])  # val: raw pixels, unchanged, in order
    xt, _ = next(iter(train_ds))
    assert xt.shape == (4, 32, 32, 1) and float(xt.numpy().max()) <= 255.0
    w = class_weights(data.labels, "balanced")
    assert w[0] > w[1] and class_weights(data.labels, "none") is None
