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
