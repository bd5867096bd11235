import numpy as np

from inspection.data.imagestats import confound_check, drift_reference, feature_table, features
from inspection.decision.route import camera_reasons
from inspection.decision.perturb import apply
from inspection.data.synthetic import render_part


def parts(n, seed, defects, gain=1.0):
    rng = np.random.default_rng(seed)
    return [apply("gain", gain, render_part(rng, 96, defects)[0], rng) for _ in range(n)]


def test_features_measure_what_they_say():
    flat = np.full((64, 64), 100, np.uint8)
    f = features(flat)
    assert f["brightness"] == 100 and f["contrast"] == 0 and f["sharpness"] == 0 and f["background"] == 100
    checker = (np.indices((64, 64)).sum(0) % 2 * 255).astype(np.uint8)
    assert features(checker)["sharpness"] > 1e5


def test_confound_is_flagged_when_defects_are_photographed_darker():
    ok, bad = parts(60, 1, 0, gain=1.0), parts(60, 2, 1, gain=0.7)
    table = feature_table(ok + bad)
    labels = np.array([0] * 60 + [1] * 60)
    train = np.arange(120) % 3 != 0
    res = confound_check(table, labels, train, ~train, warn_auc=0.75)
    assert res["flagged"] and res["feature_auc"]["brightness"] > 0.95
    assert "brightness" in res["message"] or "background" in res["message"]


def test_no_confound_when_lighting_is_the_same():
    ok, bad = parts(60, 1, 0), parts(60, 2, 1)
    table = feature_table(ok + bad)
    labels = np.array([0] * 60 + [1] * 60)
    train = np.arange(120) % 3 != 0
    res = confound_check(table, labels, train, ~train, warn_auc=0.75)
    assert res["feature_auc"]["brightness"] < 0.75


def test_drift_flag_fires_on_exposure_and_blur_not_on_clean_images():
    train = parts(80, 3, 0) + parts(80, 4, 1)
    ref = drift_reference(train, margin=0.1)
    fresh = parts(20, 5, 0)
    assert sum(bool(camera_reasons(features(img), ref["features"])) for img in fresh) <= 1
    bright = apply("gain", 2.0, fresh[0], None)
    assert any(r.startswith("brightness high") for r in camera_reasons(features(bright), ref["features"]))
    blurred = apply("blur", 3.0, fresh[0], None)
    assert any(r.startswith("sharpness low") for r in camera_reasons(features(blurred), ref["features"]))
    assert ref["features"]["brightness"]["min"] < ref["features"]["brightness"]["median"] < ref["features"]["brightness"]["max"]


def test_16_bit_images_are_refused_the_same_way_by_split_and_predict(tmp_path):
    """A 12-bit sensor image in a 16-bit PNG: one reason from the one decoder split (quarantine) and the batch CLI
    (RETAKE) share, instead of training on a nearly black 8-bit squeeze."""
    import cv2
    import numpy as np

    from inspection.data.images import decode_gray

    img16 = (np.random.default_rng(0).integers(0, 4096, (64, 64))).astype(np.uint16)
    ok, buf = cv2.imencode(".png", img16)
    img, why = decode_gray(buf.tobytes())
    assert img is None and why.startswith("16-bit image") and "8-bit JPEG or PNG" in why
    ok, buf8 = cv2.imencode(".png", (img16 >> 4).astype(np.uint8))
    assert decode_gray(buf8.tobytes())[0] is not None
