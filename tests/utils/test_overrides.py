"""``overridden``: the methods a class redefines, as the fused step, the captured step and Keras's hooks ask it."""

import keras
import pytest
import torch

import keras_bridge as kb
from keras_bridge.utils.overrides import overridden


class Stepping(kb.KerasModule):
    def compute_loss(self, *args, **kwargs):
        return super().compute_loss(*args, **kwargs)


class OwnMetrics(keras.Model):
    def compute_metrics(self, *args, **kwargs):
        return super().compute_metrics(*args, **kwargs)


@pytest.mark.parametrize(
    "obj, base, names, expected",
    [
        (kb.KerasModule(torch.nn.Linear(2, 1)), kb.KerasModule, ("forward", "compute_loss"), []),
        (Stepping(torch.nn.Linear(2, 1)), kb.KerasModule, ("forward", "compute_loss"), ["compute_loss"]),
        (OwnMetrics(), keras.Model, ("compute_loss", "compute_metrics", "train_step"), ["compute_metrics"]),
        (OwnMetrics(), keras.Model, ("no_such_method",), []),
    ],
)
def test_overridden_names_what_the_class_redefines(obj, base, names, expected):
    assert overridden(obj, base, names) == expected
