import numpy as np
import pytest

from inspection.decision.perturb import KINDS, apply
from inspection.evaluation.batteries import perturbation
from inspection.data.synthetic import render_part


@pytest.fixture(scope="module")
def part():
    img, _ = render_part(np.random.default_rng(0), 96, 1)
    return img


@pytest.mark.parametrize("kind,value", [("gain", 1.25), ("gamma", 0.8), ("contrast", 0.75), ("blur", 1.5),
                                        ("noise", 8), ("jpeg", 40), ("rotate", None), ("rotate", 30.0),
                                        ("shift", 0.05), ("scale", 1.05)])
def test_perturbations_are_deterministic_uint8_and_change_the_image(part, kind, value):
    a = apply(kind, value, part, np.random.default_rng(3))
    b = apply(kind, value, part, np.random.default_rng(3))
    assert a.dtype == np.uint8 and a.shape == part.shape
    assert np.array_equal(a, b)
    assert not np.array_equal(a, part)


def test_gain_scales_and_clips(part):
    brighter = apply("gain", 1.25, part, np.random.default_rng(0)).astype(float)
    assert brighter.mean() == pytest.approx(min(255, 1.25 * part.mean()), rel=0.05)
    assert apply("gain", 10.0, part, np.random.default_rng(0)).max() == 255
    darker = apply("gain", 0.75, part, np.random.default_rng(0))
    assert darker.mean() < part.mean()


def test_blur_lowers_sharpness_and_noise_has_the_asked_sigma(part):
    import cv2

    sharp = cv2.Laplacian(part, cv2.CV_32F).var()
    assert cv2.Laplacian(apply("blur", 1.5, part, None), cv2.CV_32F).var() < 0.5 * sharp
    flat = np.full((200, 200), 128, np.uint8)
    assert apply("noise", 8, flat, np.random.default_rng(1)).astype(float).std() == pytest.approx(8, rel=0.05)


def test_random_rotation_differs_per_image_but_repeats_per_seed(part):
    change = perturbation("rotate", None, seed=5)   # the robustness battery's: photo i has its own stream
    one = [change(i, part) for i in range(2)]
    assert not np.array_equal(one[0], one[1])
    again = perturbation("rotate", None, seed=5)
    assert all(np.array_equal(x, again(i, part)) for i, x in enumerate(one))
    assert perturbation(None, None, seed=5) is None


def test_unknown_kind_is_named():
    with pytest.raises(ValueError, match="unknown perturbation kind 'fog'"):
        apply("fog", 1.0, np.zeros((40, 40), np.uint8), np.random.default_rng(0))
    assert "jpeg" in KINDS
