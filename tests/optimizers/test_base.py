"""keras_bridge/optimizers/base.py: the machinery every Keras-exact optimizer shares, checked by hand.

Covers ``get_learning_rate``/``set_learning_rate`` (on torch and bridge optimizers, every param group,
refused with TypeError when a schedule drives the lr), the ``learning_rate`` property, calling a class
with or without parameters (optimizer or ``OptimizerSpec``), ``OptimizerSpec.build``, the
``iterations`` counter, ``add_param_group``, and one ``step`` of SGD with weight decay / clipnorm /
clipvalue / global_clipnorm / gradient accumulation against numbers computed by hand. (Step-by-step
parity with Keras for every rule is in test_optimizers.py.)
"""

import warnings

import keras
import pytest
import torch

import keras_bridge.optimizers as O
from keras_bridge.optimizers.base import OptimizerSpec, get_learning_rate, set_learning_rate


def param(*values):
    return torch.nn.Parameter(torch.tensor(values, dtype=torch.float32))


def step_with(optimizer, params, grads):
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.tensor(g, dtype=torch.float32)
    optimizer.step()


# ---------------------------------------------------------------------------- learning rate
@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.SGD(ps, lr=0.5),
        lambda ps: O.SGD(ps, learning_rate=0.5),
        lambda ps: O.Adam(ps, learning_rate=0.5),
    ],
    ids=["torch-sgd", "bridge-sgd", "bridge-adam"],
)
def test_get_and_set_learning_rate(make):
    optimizer = make([param(1.0)])
    assert get_learning_rate(optimizer) == 0.5 and type(get_learning_rate(optimizer)) is float
    set_learning_rate(optimizer, 0.25)
    assert get_learning_rate(optimizer) == 0.25
    set_learning_rate(optimizer, torch.tensor(0.125))  # any number-like value is stored as a float
    assert optimizer.param_groups[0]["lr"] == 0.125 and type(optimizer.param_groups[0]["lr"]) is float


def test_set_learning_rate_sets_every_param_group():
    optimizer = O.SGD([{"params": [param(1.0)], "lr": 0.1}, {"params": [param(2.0)], "lr": 0.3}], learning_rate=0.2)
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, 0.3]
    assert get_learning_rate(optimizer) == 0.1  # the first group's, as Keras callbacks read it
    set_learning_rate(optimizer, 0.05)
    assert [g["lr"] for g in optimizer.param_groups] == [0.05, 0.05]


def test_learning_rate_property():
    optimizer = O.RMSprop([param(1.0)], learning_rate=0.01)
    assert optimizer.learning_rate == pytest.approx(0.01)
    optimizer.learning_rate = 0.02
    assert optimizer.param_groups[0]["lr"] == 0.02


@pytest.mark.parametrize(
    "schedule",
    [
        keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5),
        keras.optimizers.schedules.PiecewiseConstantDecay([5], [0.1, 0.01]),
        lambda step: 0.1 / (1.0 + step),
    ],
    ids=["exponential-decay", "piecewise", "callable"],
)
def test_a_schedule_driven_optimizer_refuses_set_learning_rate(schedule):
    optimizer = O.SGD([param(1.0)], learning_rate=schedule)
    assert optimizer.keras_schedule is schedule
    assert get_learning_rate(optimizer) == pytest.approx(0.1)  # the schedule at step 0
    with pytest.raises(TypeError) as info:
        set_learning_rate(optimizer, 0.5)
    assert "`LearningRateSchedule`" in str(info.value) and "not settable" in str(info.value)
    with pytest.raises(TypeError, match="not settable"):
        optimizer.learning_rate = 0.5
    assert get_learning_rate(optimizer) == pytest.approx(0.1)  # unchanged


@pytest.mark.parametrize("learning_rate", ["0.1", None, [0.1], True])
def test_learning_rate_must_be_a_number_or_a_schedule(learning_rate):
    with pytest.raises((ValueError, TypeError)) as info:
        O.SGD([param(1.0)], learning_rate=learning_rate)
    assert "learning_rate" in str(info.value)


# ---------------------------------------------------------------------------- specs
@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        ((0.1,), {}),
        ((), {"learning_rate": 0.1}),
        ((None,), {"learning_rate": 0.1}),
        ((), {"params": None, "learning_rate": 0.1}),
    ],
    ids=["positional-lr", "keyword-lr", "params-None", "params-keyword-None"],
)
def test_a_class_called_without_parameters_gives_a_spec(args, kwargs):
    spec = O.SGD(*args, momentum=0.5, **kwargs)
    assert isinstance(spec, OptimizerSpec) and spec.name == "SGD"
    optimizer, schedule = spec.build([param(1.0)])
    assert isinstance(optimizer, O.SGD) and schedule is None
    assert optimizer.param_groups[0]["lr"] == 0.1 and optimizer.param_groups[0]["momentum"] == 0.5


def test_a_class_called_with_parameters_gives_an_optimizer():
    p = param(1.0)
    assert isinstance(O.SGD([p], 0.1), O.SGD)
    assert isinstance(O.SGD(params=[p], learning_rate=0.1), O.SGD)
    assert isinstance(O.SGD(iter([p])), O.SGD)


def test_a_spec_checks_its_arguments_at_once():
    with pytest.raises(ValueError, match="momentum"):
        O.SGD(0.1, momentum=2.0)


def test_spec_build_returns_the_schedule():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=10, decay_rate=0.5)
    optimizer, built_schedule = O.SGD(schedule).build([param(1.0)])
    assert built_schedule is schedule and optimizer.keras_schedule is schedule
    other = lambda step: 0.2  # noqa: E731
    optimizer, built_schedule = OptimizerSpec("sgd", lambda ps: torch.optim.SGD(ps, lr=0.2), schedule=other).build(
        [param(1.0)]
    )
    assert built_schedule is other and isinstance(optimizer, torch.optim.SGD)


def test_spec_build_refuses_a_factory_that_returns_something_else():
    spec = OptimizerSpec("my_factory", lambda params: "an optimizer")
    with pytest.raises(TypeError) as info:
        spec.build([param(1.0)])
    assert "my_factory" in str(info.value) and "torch.optim.Optimizer" in str(info.value) and "str" in str(info.value)


# ---------------------------------------------------------------------------- argument checks
@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"lr": 0.1}, TypeError, "`learning_rate`, not `lr`"),
        ({"betas": (0.9, 0.99)}, TypeError, "not recognized"),
        ({"clipnorm": 1.0, "global_clipnorm": 1.0}, ValueError, "Only one of `clipnorm`"),
        ({"loss_scale_factor": 128.0}, ValueError, "`loss_scale_factor`"),
        ({"gradient_accumulation_steps": 1}, ValueError, "`gradient_accumulation_steps` must be an integer >= 2"),
        ({"use_ema": True, "ema_momentum": 1.5}, ValueError, "`ema_momentum`"),
        ({"use_ema": True, "ema_overwrite_frequency": 0.5}, ValueError, "`ema_overwrite_frequency`"),
    ],
    ids=["lr", "unknown", "two-clips", "loss-scale", "accumulation-1", "ema-momentum", "ema-frequency"],
)
def test_argument_errors(kwargs, error, fragment):
    with pytest.raises(error, match=fragment):
        O.SGD([param(1.0)], **kwargs)


def test_decay_is_ignored_with_a_warning():
    with pytest.warns(UserWarning, match="`decay` is no longer supported"):
        O.SGD([param(1.0)], decay=0.1)


def test_a_module_instead_of_its_parameters():
    with pytest.raises(TypeError, match=r"`model.parameters\(\)`.*Linear"):
        O.SGD(torch.nn.Linear(2, 2), learning_rate=0.1)


# ---------------------------------------------------------------------------- one step, by hand
def test_iterations_count_steps_with_gradients_only():
    p = param(1.0)
    optimizer = O.SGD([p], learning_rate=0.1)
    optimizer.step()  # no gradient: a no-op
    assert optimizer.iterations == 0 and p.item() == 1.0
    step_with(optimizer, [p], [[0.5]])
    step_with(optimizer, [p], [[0.5]])
    assert optimizer.iterations == 2 and p.item() == pytest.approx(0.9)


def test_closure_is_evaluated_and_its_loss_returned():
    p = param(2.0)
    optimizer = O.SGD([p], learning_rate=0.25)

    def closure():
        optimizer.zero_grad()
        loss = (p**2).sum()  # d/dp = 2p = 4
        loss.backward()
        return loss

    assert float(optimizer.step(closure).detach()) == 4.0
    assert p.item() == pytest.approx(2.0 - 0.25 * 4.0)


@pytest.mark.parametrize(
    ("kwargs", "grads", "expected"),
    [
        ({"learning_rate": 0.1}, [[0.5, -1.0]], [1.0 - 0.05, 2.0 + 0.1]),
        # Decoupled decay before the update: v *= 1 - wd*lr, then v -= lr*g.
        ({"learning_rate": 0.1, "weight_decay": 0.1}, [[0.5, -1.0]], [1.0 * 0.99 - 0.05, 2.0 * 0.99 + 0.1]),
        # clipnorm: g * c / max(||g||, c); ||(3, 4)|| = 5.
        ({"learning_rate": 1.0, "clipnorm": 1.0}, [[3.0, 4.0]], [1.0 - 0.6, 2.0 - 0.8]),
        ({"learning_rate": 1.0, "clipnorm": 10.0}, [[3.0, 4.0]], [1.0 - 3.0, 2.0 - 4.0]),
        ({"learning_rate": 1.0, "clipvalue": 1.0}, [[3.0, -0.5]], [1.0 - 1.0, 2.0 + 0.5]),
    ],
    ids=["plain", "weight-decay", "clipnorm", "clipnorm-inactive", "clipvalue"],
)
def test_one_sgd_step(kwargs, grads, expected):
    p = param(1.0, 2.0)
    step_with(O.SGD([p], **kwargs), [p], grads)
    assert p.tolist() == pytest.approx(expected, rel=1e-6)


def test_global_clipnorm_scales_all_tensors_together():
    a, b = param(0.0), param(0.0)
    step_with(O.SGD([a, b], learning_rate=1.0, global_clipnorm=1.0), [a, b], [[3.0], [4.0]])  # global norm 5
    assert (a.item(), b.item()) == pytest.approx((-0.6, -0.8))


def test_gradient_accumulation_updates_with_the_mean_every_n_steps():
    p = param(1.0)
    optimizer = O.SGD([p], learning_rate=0.1, gradient_accumulation_steps=2)
    step_with(optimizer, [p], [[1.0]])
    assert p.item() == 1.0 and optimizer.iterations == 1
    step_with(optimizer, [p], [[3.0]])
    assert p.item() == pytest.approx(1.0 - 0.1 * 2.0) and optimizer.iterations == 2
    step_with(optimizer, [p], [[5.0]])
    assert p.item() == pytest.approx(0.8)  # the accumulator was reset after the update


def test_add_param_group_accepts_learning_rate_and_shares_the_counter():
    a, b = param(1.0), param(1.0)
    optimizer = O.SGD([a], learning_rate=0.1)
    step_with(optimizer, [a], [[1.0]])
    optimizer.add_param_group({"params": [b], "learning_rate": 0.5})
    group = optimizer.param_groups[1]
    assert group["lr"] == 0.5 and "learning_rate" not in group and group["iterations"] == 1
    step_with(optimizer, [a, b], [[1.0], [1.0]])
    assert b.item() == pytest.approx(0.5) and optimizer.iterations == 2
    assert [g["iterations"] for g in optimizer.param_groups] == [2, 2]


def test_state_dict_carries_the_counter():
    p = param(1.0)
    optimizer = O.Adam([p], learning_rate=0.1)
    for _ in range(3):
        step_with(optimizer, [p], [[1.0]])
    fresh = O.Adam([param(1.0)], learning_rate=0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_state_dict(optimizer.state_dict())
    assert fresh.iterations == 3
