"""keras_bridge.optimizers.schedules against the Keras schedule objects, and KerasScheduleLR driving optimizers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from keras_bridge import optimizers as O
from keras_bridge.optimizers.schedules import KerasScheduleLR, is_schedule, learning_rate_at
from keras_bridge.utils.keras import import_keras

keras = import_keras()
S = keras.optimizers.schedules

SCHEDULES = {
    "exponential": lambda: S.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.5),
    "exponential-staircase": lambda: S.ExponentialDecay(0.1, decay_steps=7, decay_rate=0.5, staircase=True),
    "piecewise": lambda: S.PiecewiseConstantDecay([5, 10], [0.1, 0.05, 0.01]),
    "piecewise-float-boundaries": lambda: S.PiecewiseConstantDecay([5.5, 10.0, 20.9], [1.0, 0.5, 0.25, 0.125]),
    "polynomial": lambda: S.PolynomialDecay(0.1, decay_steps=10, end_learning_rate=0.001, power=2.0),
    "polynomial-cycle": lambda: S.PolynomialDecay(0.1, decay_steps=10, power=0.5, cycle=True),
    "inverse-time": lambda: S.InverseTimeDecay(0.1, decay_steps=5, decay_rate=0.3),
    "inverse-time-staircase": lambda: S.InverseTimeDecay(0.1, decay_steps=5, decay_rate=0.3, staircase=True),
    "cosine": lambda: S.CosineDecay(0.1, decay_steps=20, alpha=0.1),
    "cosine-warmup": lambda: S.CosineDecay(0.0, decay_steps=20, warmup_target=0.1, warmup_steps=10),
    "cosine-warmup-alpha": lambda: S.CosineDecay(0.01, decay_steps=15, alpha=0.05, warmup_target=0.1, warmup_steps=7),
    "restarts": lambda: S.CosineDecayRestarts(0.1, first_decay_steps=5),
    "restarts-t_mul=1": lambda: S.CosineDecayRestarts(0.1, first_decay_steps=4, t_mul=1.0, m_mul=0.8, alpha=0.1),
    "restarts-t_mul=1.5": lambda: S.CosineDecayRestarts(0.1, first_decay_steps=3, t_mul=1.5, m_mul=0.5),
}


@pytest.mark.parametrize("key", list(SCHEDULES))
def test_learning_rate_at_equals_keras(key):
    schedule = SCHEDULES[key]()
    ours = [learning_rate_at(schedule, k) for k in range(41)]
    theirs = [float(schedule(k)) for k in range(41)]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-12)
    assert len(set(theirs)) > 1  # the schedule really varies over these steps


class _Halving(S.LearningRateSchedule):
    def __call__(self, step):
        return 0.1 * 0.5**step


class _ShiftedExponential(S.ExponentialDecay):
    def __call__(self, step):
        return super().__call__(step + 1)


def test_custom_schedules_callables_and_numbers():
    assert learning_rate_at(_Halving(), 3) == pytest.approx(0.0125)
    shifted = _ShiftedExponential(0.1, 7, 0.5)
    assert learning_rate_at(shifted, 3) == float(shifted(3))  # overridden __call__ is honoured
    assert learning_rate_at(lambda step: 1.0 / (step + 1), 4) == 0.2
    assert learning_rate_at(0.5, 10) == 0.5
    assert is_schedule(_Halving()) and not is_schedule(lambda step: 0.1)
    with pytest.raises(TypeError, match="schedule"):
        learning_rate_at("fast", 0)


def _lrs_used_by_updates(optimizer: torch.optim.Optimizer, scheduler: KerasScheduleLR, updates: int):
    used = []
    params = optimizer.param_groups[0]["params"]
    for _ in range(updates):
        used.append(optimizer.param_groups[0]["lr"])
        for p in params:
            p.grad = torch.ones_like(p)
        optimizer.step()
        scheduler.step()
    return used


@pytest.mark.parametrize("key", ["exponential", "cosine-warmup", "restarts", "piecewise"])
@pytest.mark.parametrize("kind", ["torch-sgd", "our-sgd"])
def test_update_k_uses_schedule_k(key, kind):
    schedule = SCHEDULES[key]()
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.SGD(params, lr=123.0) if kind == "torch-sgd" else O.SGD(params, learning_rate=schedule)
    scheduler = KerasScheduleLR(opt, schedule)
    used = _lrs_used_by_updates(opt, scheduler, 11)
    np.testing.assert_allclose(used, [float(schedule(k)) for k in range(11)], rtol=1e-6, atol=1e-12)


def test_scheduler_state_dict_round_trip():
    schedule = SCHEDULES["restarts"]()
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt = torch.optim.SGD(params, lr=0.1)
    scheduler = KerasScheduleLR(opt, schedule)
    _lrs_used_by_updates(opt, scheduler, 4)
    state = pickle.loads(pickle.dumps(scheduler.state_dict()))
    assert "schedule" not in state and state["last_epoch"] == 4
    opt_b = torch.optim.SGD([torch.nn.Parameter(torch.zeros(3))], lr=0.1)
    opt_b.load_state_dict(opt.state_dict())
    resumed = KerasScheduleLR(opt_b, schedule)
    resumed.load_state_dict(state)
    assert resumed.schedule is schedule
    used = _lrs_used_by_updates(opt_b, resumed, 3)
    np.testing.assert_allclose(used, [float(schedule(k)) for k in range(4, 7)], rtol=1e-6)


@pytest.mark.parametrize(
    ("optimizer_name", "kwargs", "key"),
    [
        ("SGD", {}, "exponential"),
        ("SGD", {"momentum": 0.9}, "piecewise"),
        ("Adam", {"weight_decay": 0.1}, "cosine-warmup"),
        ("RMSprop", {"momentum": 0.5}, "restarts-t_mul=1.5"),
    ],
)
def test_keras_optimizer_with_schedule_gives_keras_weights(optimizer_name, kwargs, key):
    rng = np.random.default_rng(0)
    weights = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    kvars = [keras.Variable(w) for w in weights]
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    schedule = SCHEDULES[key]()
    kopt = getattr(keras.optimizers, optimizer_name)(learning_rate=schedule, **kwargs)
    opt, translated = O.get_optimizer(kopt).build(params)
    assert translated is schedule and isinstance(opt, getattr(O, optimizer_name))
    scheduler = KerasScheduleLR(opt, translated)
    for step in range(10):
        grads = [rng.normal(size=w.shape).astype("float32") for w in weights]
        kopt.apply([torch.tensor(g) for g in grads], kvars)
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        opt.step()
        scheduler.step()
        for kv, p in zip(kvars, params):
            np.testing.assert_allclose(p.detach().numpy(), kv.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"step {step}")


def test_from_torch_with_a_keras_schedule_matches_keras_sgd():
    rng = np.random.default_rng(1)
    weights = [rng.normal(size=(3, 4)).astype("float32"), rng.normal(size=(4,)).astype("float32")]
    kvars = [keras.Variable(w) for w in weights]
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    schedule = SCHEDULES["polynomial-cycle"]()
    kopt = keras.optimizers.SGD(learning_rate=schedule)
    opt, translated = O.from_torch(torch.optim.SGD, learning_rate=schedule).build(params)
    assert translated is schedule and opt.param_groups[0]["lr"] == learning_rate_at(schedule, 0)
    scheduler = KerasScheduleLR(opt, translated)
    for step in range(10):
        grads = [rng.normal(size=w.shape).astype("float32") for w in weights]
        kopt.apply([torch.tensor(g) for g in grads], kvars)
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        opt.step()
        scheduler.step()
        for kv, p in zip(kvars, params):
            np.testing.assert_allclose(p.detach().numpy(), kv.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"step {step}")


def test_spec_with_schedule_pickles():
    spec = O.get_optimizer(keras.optimizers.Adam(learning_rate=SCHEDULES["cosine-warmup"]()))
    restored = pickle.loads(pickle.dumps(spec))
    opt, schedule = restored.build([torch.nn.Parameter(torch.zeros(2))])
    assert opt.param_groups[0]["lr"] == learning_rate_at(schedule, 0)
    assert learning_rate_at(schedule, 12) == float(SCHEDULES["cosine-warmup"]()(12))


def test_scheduler_rejects_a_non_callable():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    with pytest.raises(TypeError, match="schedule"):
        KerasScheduleLR(opt, 0.1)
