"""Test-time averaging over the 8 symmetries of the square (the dihedral group D4), inside the model graph.

A top view of a round impeller has no preferred orientation: a defect is a defect at any rotation or mirror
image. ``with_views`` runs the CNN on the 4 right-angle rotations of the photo and their mirror images (one batch
of 8N) and averages the 8 logits, so the probability is exactly invariant to those 8 poses and less noisy
than a single view. It is part of the deployed graph (``inspection.model.ood.serving_model``), so the
SavedModel, the TF.js page, the batch CLI and the registry model all compute the same averaged number; the
evaluate stage chooses the threshold and the band on the same averaged probabilities. Cost: 8x the CNN's
multiply-adds per photo (measured in README Results). ``evaluate.tta: none`` keeps the single view.
"""
from __future__ import annotations

import keras
from keras import layers, ops

VIEWS = {"none": 1, "d4": 8}
EPS = 1e-7   # probabilities are clipped to [EPS, 1 - EPS] before the logit (float32: 1 - p resolves ~6e-8)


@keras.saving.register_keras_serializable(package="inspection")
class D4Views(layers.Layer):
    """[N, S, S, C] -> [8N, S, S, C]: identity, 90, 180, 270 degree rotations, then the same mirrored (view-major)."""

    def call(self, x):
        rotations = [x]
        for _ in range(3):   # rot90 = transpose the spatial axes, then flip the rows
            rotations.append(ops.flip(ops.transpose(rotations[-1], (0, 2, 1, 3)), axis=1))
        return ops.concatenate(rotations + [ops.flip(r, axis=2) for r in rotations], axis=0)


class _PerView(layers.Layer):
    """A layer over a view-major batch of ``views`` views (its one setting, saved with the model)."""

    def __init__(self, views: int = 8, **kwargs):
        super().__init__(**kwargs)
        self.views = views

    def get_config(self):
        return {**super().get_config(), "views": self.views}


@keras.saving.register_keras_serializable(package="inspection")
class ViewMean(_PerView):
    """[V*N, 1] probabilities (view-major) -> [N, 1]: the sigmoid of the mean logit over the V views."""

    def call(self, p):
        p = ops.clip(p, EPS, 1 - EPS)
        logit = ops.log(p) - ops.log(1 - p)
        return ops.sigmoid(ops.mean(ops.reshape(logit, (self.views, -1, 1)), axis=0))


@keras.saving.register_keras_serializable(package="inspection")
class FirstView(_PerView):
    """[V*N, F] (view-major) -> [N, F]: the identity view's rows."""

    def call(self, x):
        return ops.reshape(x, (self.views, -1, ops.shape(x)[-1]))[0]


def with_views(model: keras.Model, tta: str, extra_output=None) -> tuple:
    """(input, probability [N, 1], extra [N, ...] or None): ``model``'s probability averaged over the views of
    ``tta`` (none | d4); ``extra_output``, a tensor of ``model``'s graph (e.g. the pooled features), is
    returned for the identity view."""
    inputs = keras.Input(model.inputs[0].shape[1:], name="image")
    if VIEWS[tta] == 1:
        inner = keras.Model(model.inputs, [model.output] + ([extra_output] if extra_output is not None else []))
        out = inner(inputs)
        out = out if isinstance(out, (list, tuple)) else [out]
        return inputs, out[0], (out[1] if extra_output is not None else None)
    inner = keras.Model(model.inputs, [model.output] + ([extra_output] if extra_output is not None else []),
                        name="single_view")
    out = inner(D4Views(name="d4_views")(inputs))
    out = out if isinstance(out, (list, tuple)) else [out]
    prob = ViewMean(VIEWS[tta], name="view_mean")(out[0])
    extra = FirstView(VIEWS[tta], name="first_view")(out[1]) if extra_output is not None else None
    return inputs, prob, extra


def probability_model(model: keras.Model, tta: str) -> keras.Model:
    """image -> defect probability [N, 1], averaged over the views of ``tta``."""
    if VIEWS[tta] == 1:
        return model
    inputs, prob, _ = with_views(model, tta)
    return keras.Model(inputs, prob, name=f"{model.name}_{tta}")
