"""What a replayed graph would lose of autograd is noted while the forward pass runs (and only that)."""

import pytest
import torch

from keras_bridge.autograd_watch import AutogradWatch


class Tenfold(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * 10.0


def watched(run, variables=(), ambient_grad=True):
    watch = AutogradWatch(variables=list(variables))
    with torch.set_grad_enabled(ambient_grad):
        with watch:
            out = run()
        watch.check_outputs(out)
    return watch.reason


WEIGHT = torch.ones(3, requires_grad=True)
MOVING = torch.zeros(3)  # a non-trainable variable Keras assigns under no_grad


def _no_grad_scale():
    with torch.no_grad():
        scale = WEIGHT.sum()
    return WEIGHT / scale


def _hook():
    y = WEIGHT * 2.0
    y.register_hook(lambda g: g)
    return y


def _variable_update():
    y = WEIGHT * 2.0
    with torch.no_grad():
        MOVING.copy_(y)
    return y


def _no_grad_on_constants():
    with torch.no_grad():
        offset = torch.ones(3) * 2.0
    return WEIGHT + offset


@pytest.mark.parametrize(
    "run, ambient_grad, noted",
    [
        (lambda: Tenfold.apply(WEIGHT * 1.0), True, "custom gradient (Tenfold"),
        (_no_grad_scale, True, "gradient recording"),
        (_hook, True, "gradient hook"),
        (_variable_update, True, None),  # Keras's own variable updates are replayed detached
        (_no_grad_on_constants, True, None),  # nothing to track either way
        (lambda: WEIGHT * 2.0, False, None),  # an evaluation pass: no switch of mode inside it
        (lambda: WEIGHT * 2.0, True, None),
    ],
    ids=["custom_function", "no_grad", "hook", "variable_update", "constants", "no_grad_call", "plain"],
)
def test_what_a_replay_would_lose_is_noted(run, ambient_grad, noted):
    reason = watched(run, variables=[MOVING], ambient_grad=ambient_grad)
    if noted is None:
        assert reason is None
    else:
        assert noted in reason


def test_the_hook_methods_of_tensors_are_put_back():
    before = (torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook)
    with pytest.raises(RuntimeError):
        with AutogradWatch(variables=[]):
            raise RuntimeError("trace failed")
    assert (torch.Tensor.register_hook, torch.Tensor.register_post_accumulate_grad_hook) == before
