"""keras_bridge.optimizers against Keras 3 itself: same weights after every step, same defaults."""

from __future__ import annotations

import copy
import functools
import pickle

import numpy as np
import pytest
import torch

from keras_bridge import optimizers as O
from keras_bridge.utils.keras import import_keras

keras = import_keras()

SHAPES = [(3, 4), (4,)]
STEPS = 5


def _initial_weights(seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=s).astype("float32") for s in SHAPES]


def _gradients(steps: int = STEPS, seed: int = 1):
    rng = np.random.default_rng(seed)
    return [[rng.normal(scale=1.5, size=s).astype("float32") for s in SHAPES] for _ in range(steps)]


def _keras_and_torch(weights):
    kvars = [keras.Variable(w) for w in weights]
    params = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    return kvars, params


def _step_both(kopt, kvars, opt, params, grads) -> None:
    kopt.apply([None if g is None else torch.tensor(g) for g in grads], kvars)
    for p, g in zip(params, grads):
        p.grad = None if g is None else torch.tensor(g)
    opt.step()


def _assert_same(kvars, params, step) -> None:
    for i, (kv, p) in enumerate(zip(kvars, params)):
        np.testing.assert_allclose(
            p.detach().numpy(), kv.numpy(), rtol=1e-5, atol=1e-7, err_msg=f"variable {i} after step {step}"
        )


CASES = [
    ("SGD", {"learning_rate": 0.1}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True}),
    ("RMSprop", {}),
    ("RMSprop", {"learning_rate": 0.01, "momentum": 0.5}),
    ("RMSprop", {"learning_rate": 0.01, "centered": True}),
    ("RMSprop", {"learning_rate": 0.01, "rho": 0.8, "momentum": 0.3, "centered": True, "epsilon": 1e-3}),
    ("Adam", {}),
    ("Adam", {"learning_rate": 0.05, "beta_1": 0.8, "epsilon": 1e-4}),
    ("Adam", {"learning_rate": 0.05, "amsgrad": True}),
    ("AdamW", {"learning_rate": 0.05}),
    ("AdamW", {"learning_rate": 0.05, "weight_decay": 0.5, "amsgrad": True}),
    ("Adagrad", {"learning_rate": 0.1}),
    ("Adagrad", {"learning_rate": 0.1, "initial_accumulator_value": 0.5, "epsilon": 1e-3}),
    ("Adadelta", {"learning_rate": 1.0}),
    ("Adadelta", {"learning_rate": 1.0, "rho": 0.5, "epsilon": 1e-3}),
    ("Adamax", {"learning_rate": 0.05}),
    ("Nadam", {"learning_rate": 0.05}),
    ("Nadam", {"learning_rate": 0.05, "beta_1": 0.5, "beta_2": 0.9}),
    # Keras's common arguments: clipping, then decoupled weight decay, then the update.
    ("SGD", {"learning_rate": 0.1, "clipnorm": 1.0}),
    ("Adam", {"learning_rate": 0.05, "clipvalue": 0.3}),
    ("RMSprop", {"learning_rate": 0.01, "global_clipnorm": 1.0}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.9, "weight_decay": 0.1}),
    ("Adam", {"learning_rate": 0.05, "weight_decay": 0.2, "global_clipnorm": 0.5}),
    ("Nadam", {"learning_rate": 0.05, "weight_decay": 0.2, "clipnorm": 0.5}),
    ("SGD", {"learning_rate": 0.1, "momentum": 0.5, "use_ema": True, "ema_momentum": 0.8}),
    ("Adam", {"learning_rate": 0.05, "use_ema": True, "ema_momentum": 0.7, "ema_overwrite_frequency": 2}),
    ("Adam", {"learning_rate": 0.05, "gradient_accumulation_steps": 2}),
    ("Nadam", {"learning_rate": 0.05, "gradient_accumulation_steps": 3, "clipnorm": 1.0}),
]


def _case_id(case) -> str:
    name, kwargs = case
    return name + "".join(f"-{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize(("name", "kwargs"), CASES, ids=[_case_id(c) for c in CASES])
def test_same_weights_as_keras_after_every_step(name, kwargs):
    kvars, params = _keras_and_torch(_initial_weights())
    kopt = getattr(keras.optimizers, name)(**kwargs)
    opt = getattr(O, name)(params, **kwargs)
    grads = _gradients(steps=6 if kwargs.get("gradient_accumulation_steps") else STEPS)
    for step, g in enumerate(grads):
        _step_both(kopt, kvars, opt, params, g)
        _assert_same(kvars, params, step)
    assert opt.iterations == int(kopt.iterations.numpy()) * (kwargs.get("gradient_accumulation_steps") or 1)
    if kwargs.get("use_ema"):
        kopt.finalize_variable_values(kvars)
        opt.finalize_variable_values()
        _assert_same(kvars, params, "finalize_variable_values")


@pytest.mark.parametrize("name", ["Adam", "Nadam", "SGD"])
def test_missing_gradient_keeps_keras_global_step(name):
    kvars, params = _keras_and_torch(_initial_weights())
    kopt = (
        getattr(keras.optimizers, name)(learning_rate=0.05, momentum=0.9)
        if name == "SGD"
        else getattr(keras.optimizers, name)(learning_rate=0.05)
    )
    opt = getattr(O, name)(params, learning_rate=0.05, **({"momentum": 0.9} if name == "SGD" else {}))
    grads = _gradients()
    grads[1][1] = None  # the bias gets no gradient at step 1: Keras still counts the iteration
    with pytest.warns(UserWarning):  # Keras's "Gradients do not exist for variables"
        for step, g in enumerate(grads):
            _step_both(kopt, kvars, opt, params, g)
            _assert_same(kvars, params, step)


def test_learning_rate_is_read_from_the_param_group_every_step():
    kvars, params = _keras_and_torch(_initial_weights())
    kopt = keras.optimizers.Adam(learning_rate=0.05)
    opt = O.Adam(params, learning_rate=0.05)
    for step, g in enumerate(_gradients()):
        if step == 2:
            kopt.learning_rate = 0.01
            O.set_learning_rate(opt, 0.01)
        if step == 3:  # what a torch/Lightning scheduler does
            kopt.learning_rate = 0.2
            opt.param_groups[0]["lr"] = 0.2
        _step_both(kopt, kvars, opt, params, g)
        _assert_same(kvars, params, step)
    assert O.get_learning_rate(opt) == pytest.approx(0.2)
    assert opt.learning_rate == pytest.approx(0.2)


@pytest.mark.parametrize("name", ["Adam", "Nadam", "RMSprop", "Adagrad"])
def test_state_dict_round_trip_resumes_exactly(name):
    weights, grads = _initial_weights(), _gradients(steps=6)
    params_a = [torch.nn.Parameter(torch.tensor(w)) for w in weights]
    opt_a = getattr(O, name)(params_a, learning_rate=0.05)
    for g in grads[:3]:
        for p, x in zip(params_a, g):
            p.grad = torch.tensor(x)
        opt_a.step()
    saved = pickle.loads(pickle.dumps(opt_a.state_dict()))
    params_b = [torch.nn.Parameter(p.detach().clone()) for p in params_a]
    opt_b = getattr(O, name)(params_b, learning_rate=0.05)
    opt_b.load_state_dict(saved)
    assert opt_b.iterations == 3
    for g in grads[3:]:
        for pa, pb, x in zip(params_a, params_b, g):
            pa.grad, pb.grad = torch.tensor(x), torch.tensor(x)
        opt_a.step()
        opt_b.step()
    for pa, pb in zip(params_a, params_b):
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["sgd", "rmsprop", "adam", "adamw", "adagrad", "adadelta", "adamax", "nadam"])
def test_string_gives_keras_defaults(name):
    opt, schedule = O.get_optimizer(name.upper()).build([torch.nn.Parameter(torch.zeros(2))])
    assert schedule is None
    config = keras.optimizers.get(name).get_config()
    group = opt.param_groups[0]
    assert group["lr"] == pytest.approx(config["learning_rate"], rel=1e-7)
    for key, value in config.items():
        if key in group:
            assert group[key] == value, key
    assert type(opt).__name__.lower() == name


def test_keras_object_is_translated_with_its_config():
    kopt = keras.optimizers.SGD(0.1, momentum=0.9, nesterov=True, clipnorm=1.0)
    spec = O.get_optimizer(kopt)
    assert spec.name == "SGD"
    kvars, params = _keras_and_torch(_initial_weights())
    opt, schedule = spec.build(params)
    assert isinstance(opt, O.SGD) and schedule is None and opt.param_groups[0]["lr"] == 0.1
    for step, g in enumerate(_gradients()):
        _step_both(kopt, kvars, opt, params, g)
        _assert_same(kvars, params, step)


def test_keras_config_dict_and_class_are_translated():
    spec = O.get_optimizer({"class_name": "RMSprop", "config": {"learning_rate": 0.01, "centered": True}})
    opt, _ = spec.build([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, O.RMSprop) and opt.param_groups[0]["centered"] and opt.param_groups[0]["lr"] == 0.01
    opt, _ = O.get_optimizer(keras.optimizers.Adamax).build([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, O.Adamax)


def test_our_classes_as_config_and_as_optimizer():
    spec = O.Adam(1e-2, beta_1=0.5)
    assert isinstance(spec, O.OptimizerSpec) and spec.name == "Adam"
    assert O.get_optimizer(spec) is spec
    pickle.dumps(spec)  # ddp_spawn pickles the module and its compile arguments
    params = [torch.nn.Parameter(torch.zeros(2))]
    opt, schedule = spec.build(params)
    assert isinstance(opt, O.Adam) and opt.param_groups[0]["lr"] == 1e-2 and opt.param_groups[0]["beta_1"] == 0.5
    assert isinstance(O.Adam(learning_rate=1e-3), O.OptimizerSpec) and isinstance(O.Nadam(), O.OptimizerSpec)
    direct = O.Adam(params, learning_rate=1e-3)
    assert isinstance(direct, torch.optim.Optimizer)
    assert isinstance(copy.deepcopy(direct), O.Adam) and isinstance(pickle.loads(pickle.dumps(direct)), O.Adam)
    opt, _ = O.get_optimizer(O.Adagrad).build(params)
    assert isinstance(opt, O.Adagrad) and opt.param_groups[0]["lr"] == 0.001


def test_torch_optimizers_factories_and_instances():
    params = [torch.nn.Parameter(torch.zeros(2))]
    spec = O.get_optimizer(torch.optim.Adam)
    assert spec.name == "torch.optim.Adam"
    assert isinstance(spec.build(params)[0], torch.optim.Adam)
    opt, _ = O.get_optimizer(functools.partial(torch.optim.SGD, lr=0.3)).build(params)
    assert opt.param_groups[0]["lr"] == 0.3
    opt, _ = O.get_optimizer(lambda ps: torch.optim.SGD(ps, lr=0.2)).build(params)
    assert opt.param_groups[0]["lr"] == 0.2
    built = torch.optim.SGD(params, lr=0.1)
    assert O.get_optimizer(built).build(params)[0] is built
    with pytest.raises(ValueError, match="other parameters"):
        O.get_optimizer(built).build([torch.nn.Parameter(torch.zeros(3))])
    with pytest.raises(TypeError, match="optimizer"):
        O.get_optimizer(lambda ps: "not an optimizer").build(params)
    opt, schedule = O.from_torch(torch.optim.SGD, learning_rate=0.5, momentum=0.9).build(params)
    assert opt.param_groups[0]["lr"] == 0.5 and opt.param_groups[0]["momentum"] == 0.9 and schedule is None
    with pytest.raises(TypeError, match="do not fit"):
        O.from_torch(torch.optim.SGD, learning_rate=0.5, momentom=0.9)


@pytest.mark.parametrize(
    ("identifier", "error", "fragments"),
    [
        ("adamm", ValueError, ["`optimizer`", "'adamm'", "'rmsprop'"]),
        ("lion", ValueError, ["`optimizer`", "'lion'", "does not reproduce"]),
        (42, TypeError, ["`optimizer`", "42", "int"]),
        (None, TypeError, ["`optimizer`", "None", "NoneType"]),
        (torch.nn.Linear(2, 2), TypeError, ["`optimizer`", "Linear"]),
    ],
    ids=["unknown-string", "unsupported-keras-string", "int", "none", "module"],
)
def test_bad_identifiers(identifier, error, fragments):
    with pytest.raises(error) as info:
        O.get_optimizer(identifier)
    for fragment in fragments:
        assert fragment in str(info.value)


@pytest.mark.parametrize("keras_cls", ["Lion", "Ftrl", "Adafactor", "Lamb"])
def test_unsupported_keras_optimizer_objects(keras_cls):
    with pytest.raises(ValueError) as info:
        O.get_optimizer(getattr(keras.optimizers, keras_cls)())
    assert "`optimizer`" in str(info.value) and keras_cls in str(info.value) and "Adam" in str(info.value)


def test_keras_loss_scale_optimizer_and_custom_subclass_are_rejected():
    with pytest.raises(ValueError, match="LossScaleOptimizer"):
        O.get_optimizer(keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD()))

    class MyAdam(keras.optimizers.Adam):
        def update_step(self, gradient, variable, learning_rate):
            raise NotImplementedError

    with pytest.raises(ValueError, match="MyAdam.update_step"):
        O.get_optimizer(MyAdam())


def test_argument_errors_are_raised_before_training():
    with pytest.raises(ValueError, match="Only one of `clipnorm`"):
        O.Adam(1e-3, clipnorm=1.0, clipvalue=1.0)
    with pytest.raises(ValueError, match="momentum"):
        O.SGD(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="loss_scale_factor"):
        O.get_optimizer(keras.optimizers.Adam(loss_scale_factor=128.0))
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        O.RMSprop(gradient_accumulation_steps=1)
    with pytest.raises(ValueError, match="weight_decay"):
        O.AdamW(weight_decay=None)
    with pytest.raises(TypeError, match="learning_rate"):
        O.Adam(lr=1e-3)
    with pytest.raises(TypeError, match="not recognized"):
        O.Adam(1e-3, betas=(0.9, 0.99))
    with pytest.raises(TypeError, match="model.parameters"):
        O.Adam(torch.nn.Linear(2, 2), learning_rate=1e-3)


def test_set_learning_rate_refuses_a_schedule_driven_optimizer():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    opt = O.SGD([torch.nn.Parameter(torch.zeros(2))], learning_rate=schedule)
    assert opt.keras_schedule is schedule and opt.param_groups[0]["lr"] == pytest.approx(0.1)
    with pytest.raises(TypeError, match="not settable"):
        O.set_learning_rate(opt, 0.5)
    with pytest.raises(TypeError, match="not settable"):
        opt.learning_rate = 0.5
    torch_opt, _ = O.from_torch(torch.optim.SGD, learning_rate=schedule).build([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(TypeError, match="not settable"):
        O.set_learning_rate(torch_opt, 0.5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("Adam", {"learning_rate": 0.05, "global_clipnorm": 1.0, "weight_decay": 0.1, "use_ema": True}),
        ("Nadam", {"clipnorm": 1.0}),
        ("RMSprop", {"centered": True, "momentum": 0.5, "gradient_accumulation_steps": 2}),
    ],
)
def test_step_never_synchronizes_with_the_device(name, kwargs):
    params = [torch.nn.Parameter(torch.tensor(w, device="cuda")) for w in _initial_weights()]
    opt = getattr(O, name)(params, **kwargs)
    for grads in _gradients(steps=3):
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            opt.step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert all(torch.isfinite(p).all() for p in params)
