"""The evaluate stage streams: model-size images from the shards and full-resolution photos a chunk at a time give
the numbers of the one-shot computation on the whole split (chunks smaller than the split, across shard files)."""
import numpy as np
import pytest
import yaml

keras = pytest.importorskip("keras")

from stages import download
from inspection.evaluation import batteries, scoring
from stages import shards
from stages import split
from inspection.config import set_dotted
from inspection.data.dataset import load_split, manifest_rows, open_shards
from inspection.data.images import read_many, resize
from inspection.data.imagestats import drift_reference, feature_table
from inspection.decision.metrics import choose_threshold
from inspection.model.ood import distances, feature_extractor, fit, serving_model
from inspection.decision.perturb import OOD_KINDS, apply
from inspection.decision.route import make_rule

from conftest import REPO, make_class_tree, section  # noqa: E402

SIZE = 32
CHUNK = 5  # smaller than every split; reads cross the shard files of 7; the model's batch is set to 5 too
# noise and rotate draw from the random stream seeded by the photo's index: a chunk-local index would change them
ROBUSTNESS = {"seed": 3, "perturbations": {"noise 8": {"kind": "noise", "value": 8, "gated": True},
                                "rotate any": {"kind": "rotate", "value": None, "gated": True},
                                "exposure x1.3": {"kind": "gain", "value": 1.3, "gated": False}}}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """40 JPEGs per class (64 px), split, shards of 7 images at 32 px; an untrained (seeded) model and its serving
    model with a gate fitted on train. Shared by the tests of this module (read-only)."""
    root = tmp_path_factory.mktemp("evaluate-stream")
    params = set_dotted(yaml.safe_load((REPO / "params.yaml").read_text()),
                        {"data.source": "local", "data.local.path": str(root / "plant"), "train.image_size": SIZE,
                         "train.shard_images": 7})
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        make_class_tree(root / "plant", {"defect": "defect", "ok": "ok"}, n=40)
        download.main()
        split.main()
        shards.main()
        keras.utils.set_random_seed(0)
        from inspection.model.architectures import build

        model = build("compact", SIZE, "per_image")
        extractor = feature_extractor(model)
        gate = fit(one_shot(extractor, load_split("train", SIZE, "defect").images))
    gate["limit"] = 1e9
    return root, model, extractor, serving_model(model, gate)


@pytest.fixture
def setup(built, monkeypatch):
    """In the built project, with the model's batch = CHUNK: as in the stage, whose CHUNK is a multiple of its BATCH,
    the model gets the batches of the one-shot run (other batches change float32 outputs in the last bits)."""
    monkeypatch.chdir(built[0])
    monkeypatch.setattr(scoring, "BATCH", CHUNK)
    return built[1:]


def one_shot(model, images, batch=CHUNK):
    return model.predict(images[..., None].astype(np.float32), batch_size=batch, verbose=0)


def test_streamed_shards_equal_the_whole_split(setup):
    """Probabilities, pooled features (and the gate fitted on them), camera statistics and the drift reference
    from the shards, CHUNK images at a time, are bit-identical to the whole split in memory."""
    model, extractor, _ = setup
    for name in ("train", "test"):
        reader = open_shards(name, SIZE, "defect")
        assert len(reader) > 2 * CHUNK
        got = scoring.stream_split(reader, {"probability": lambda x: scoring.predict(model, x),
                                             "features": lambda x: one_shot(extractor, x, scoring.BATCH),
                                             "stats": feature_table}, chunk=CHUNK)
        images = load_split(name, SIZE, "defect").images  # the whole split in memory, as evaluate did before
        table = feature_table(images)
        assert got["stats"].keys() == table.keys()
        for k in table:
            np.testing.assert_array_equal(got["stats"][k], table[k])
        assert drift_reference(None, 0.1, table=got["stats"]) == drift_reference(images, 0.1)
        np.testing.assert_array_equal(got["probability"], one_shot(model, images)[:, 0].astype(np.float64))
        feats = one_shot(extractor, images)
        np.testing.assert_array_equal(got["features"], feats)
        a, b = fit(got["features"]), fit(feats)
        np.testing.assert_array_equal(distances(got["features"], a), distances(feats, b))
    with pytest.raises(ValueError, match="one of them"):
        drift_reference(images, 0.1, table=table)


def test_photo_chunks_give_the_one_shot_battery_threshold_and_routes(setup):
    model, _, serving = setup
    e = section("evaluate", policy="min_recall", min_recall=1.0, robust_threshold=True, robustness=ROBUSTNESS)
    r = e.robustness
    rows = manifest_rows("test")
    paths, y = [row["path"] for row in rows], np.array([row["label"] == "defect" for row in rows], np.int32)
    assert len(paths) > 2 * CHUNK
    photos = read_many(paths)  # the one-shot reference: every photo in memory

    def change(kind, value):
        return None if kind is None else (lambda i, img: apply(kind, value, img, np.random.default_rng([r.seed, i])))

    runs = batteries.battery(r)
    got = batteries.perturbed(serving, paths, SIZE, r, runs, chunk=CHUNK)
    for name, kind, value, _ in runs:
        want = scoring.scored(serving, photos, SIZE, change(kind, value))
        np.testing.assert_array_equal(got[name]["probability"], want["probability"], err_msg=name)
        np.testing.assert_array_equal(got[name]["ood"], want["ood"], err_msg=name)
        assert got[name]["stats"] == want["stats"], name
    assert not np.array_equal(got["noise 8"]["probability"], got["clean"]["probability"])

    per = batteries.robust_threshold(model, paths, y, e, SIZE, chunk=CHUNK)
    assert list(per) == ["clean", "noise 8", "rotate any"]  # gated only
    for name, kind, value, _ in batteries.battery(r, gated_only=True):
        small = np.stack([resize(img if kind is None else change(kind, value)(i, img), SIZE)
                          for i, img in enumerate(photos)])
        assert per[name] == choose_threshold(y, one_shot(model, small)[:, 0].astype(np.float64), e), name

    camera = {k: {"min": v["min"], "max": v["max"]} for k, v in
              drift_reference(load_split("train", SIZE, "defect").images, 0.1)["features"].items()}
    rule = make_rule(per["clean"], (0.02, 0.9), camera, 1e9)
    rob = batteries.robustness(got, y, rule, r, 0.95, camera)
    assert [row["perturbation"] for row in rob] == [name for name, *_ in runs]
    # the OOD battery reads only its first photos: paths after those need not even exist
    ood = batteries.ood_battery(serving, paths[:2] + ["data/raw/not-there.png"] * 20, SIZE, rule, 2, r.seed)
    assert [row["index"] for row in ood] == [0, 1] * len(OOD_KINDS)
