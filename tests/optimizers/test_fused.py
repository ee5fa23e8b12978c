"""The fused Keras update against Keras's own ``optimizer.apply``: bit for bit, and Keras's apply where not covered."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from keras_bridge.optimizers.fused import FusedKerasUpdate
from keras_bridge.utils.keras import import_keras

keras = import_keras()
STEPS = 6


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="relu", kernel_constraint=keras.constraints.MaxNorm(0.5))(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(hidden))


def _gradients(variables, steps=STEPS):
    generator = torch.Generator().manual_seed(1)
    return [[torch.randn(tuple(v.shape), generator=generator) for v in variables] for _ in range(steps)]


def _schedule():
    return keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=2, decay_rate=0.5)


OPTIMIZERS = {
    "rmsprop": lambda: keras.optimizers.RMSprop(1e-2),
    "rmsprop_momentum_centered": lambda: keras.optimizers.RMSprop(1e-2, momentum=0.9, centered=True),
    "rmsprop_schedule": lambda: keras.optimizers.RMSprop(_schedule()),
    "adam": lambda: keras.optimizers.Adam(1e-2),
    "adam_amsgrad_schedule": lambda: keras.optimizers.Adam(_schedule(), beta_1=0.8, amsgrad=True),
    "sgd": lambda: keras.optimizers.SGD(0.1),
    "sgd_momentum": lambda: keras.optimizers.SGD(0.1, momentum=0.5),
    "sgd_nesterov": lambda: keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True),
}


def _train(make_optimizer, fused: bool, between_steps=None):
    model = _model()
    variables = model.trainable_variables
    optimizer = make_optimizer()
    optimizer.build(variables)
    update = FusedKerasUpdate.for_optimizer(optimizer, variables) if fused else None
    taken = []
    for step, grads in enumerate(_gradients(variables)):
        if between_steps is not None:
            between_steps(optimizer, step)
        if update is None or not update.apply(grads):
            optimizer.apply(grads, variables)
            taken.append("keras")
        else:
            taken.append("fused")
    values = [v.numpy() for v in variables] + [v.numpy() for v in optimizer.variables]
    return values, taken


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_update_is_keras_apply_bit_for_bit(name):
    expected, _ = _train(OPTIMIZERS[name], fused=False)
    got, taken = _train(OPTIMIZERS[name], fused=True)
    assert taken == ["fused"] * STEPS
    assert len(got) == len(expected)
    for a, b in zip(expected, got):  # weights (a constraint included), slots, iterations, the learning rate
        np.testing.assert_array_equal(b, a)


def _clip_from_step_3(optimizer, step):
    if step == 3:
        optimizer.clipnorm = 0.1


def test_a_setting_apply_would_honour_sends_the_step_to_keras_apply():
    expected, _ = _train(OPTIMIZERS["rmsprop"], fused=False, between_steps=_clip_from_step_3)
    got, taken = _train(OPTIMIZERS["rmsprop"], fused=True, between_steps=_clip_from_step_3)
    assert taken == ["fused"] * 3 + ["keras"] * 3
    for a, b in zip(expected, got):
        np.testing.assert_array_equal(b, a)


@pytest.mark.parametrize(
    "make",
    [
        lambda: keras.optimizers.Nadam(1e-3),  # another rule: Keras's apply
        lambda: type("MyRMSprop", (keras.optimizers.RMSprop,), {})(1e-3),  # a subclass may change the update
    ],
    ids=["nadam", "rmsprop_subclass"],
)
def test_optimizers_it_does_not_cover_get_no_fused_update(make):
    model = _model()
    optimizer = make()
    optimizer.build(model.trainable_variables)
    assert FusedKerasUpdate.for_optimizer(optimizer, model.trainable_variables) is None


def test_a_missing_gradient_leaves_the_step_to_keras():
    model = _model()
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    update = FusedKerasUpdate.for_optimizer(optimizer, model.trainable_variables)
    grads = [torch.ones(tuple(v.shape)) for v in model.trainable_variables]
    grads[0] = None
    before = [v.numpy() for v in model.trainable_variables]
    assert update is not None and not update.apply(grads)
    assert int(optimizer.iterations.numpy()) == 0
    for a, v in zip(before, model.trainable_variables):
        np.testing.assert_array_equal(v.numpy(), a)
