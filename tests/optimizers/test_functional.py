"""The shared update maths of the bridge's optimizers (``keras_bridge.optimizers.functional``)."""

from __future__ import annotations

import pytest
import torch

from keras_bridge.optimizers.functional import step_down
from keras_bridge.utils.compat import foreach


def _three_ops(params, numerators, denominators, scale):
    """What the update rules wrote before ``step_down``: Keras's ``v -= (n * s) / d`` as three ops."""
    steps = foreach.mul(numerators, scale)
    foreach.div_(steps, denominators)
    foreach.sub_(params, steps)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("size", [1, 17, 50_177])
def test_step_down_is_the_three_op_update_bit_for_bit(dtype, size):
    generator = torch.Generator().manual_seed(size)

    def tensor(positive=False):
        # magnitudes from 1e-17 to 1e17, so rounding, subnormal steps and cancellation all occur
        values = torch.randn(size, generator=generator, dtype=torch.float64)
        values = values * torch.exp(8 * torch.randn(size, generator=generator, dtype=torch.float64))
        return (values.abs() + 1e-30 if positive else values).to(dtype)

    params = [tensor(), tensor()[: size // 2 + 1]]
    numerators = [tensor(), tensor()[: size // 2 + 1]]
    denominators = [tensor(positive=True), tensor(positive=True)[: size // 2 + 1]]
    scale = float(torch.tensor(3.7e-3, dtype=torch.float32))  # a float32 learning rate, as the rules pass it
    expected = [p.clone() for p in params]
    _three_ops(expected, numerators, denominators, scale)
    step_down(params, numerators, denominators, scale)
    for got, want in zip(params, expected):
        assert torch.equal(got, want)
