"""keras_bridge/saving/serialization.py: objects described as JSON and rebuilt without unpickling.

Covers round trips (through ``json.dumps``/``json.loads``) of torch modules (Linear, Conv2d, Sequential /
ModuleList / ModuleDict of layers), torch losses (``CrossEntropyLoss(label_smoothing=0.1)``), a Keras
loss and metric, a torchmetrics metric, functions and classes, optimizer specs; what cannot be
described (``NotSerializable``); ``safe_mode`` refusing imports outside torch / torchmetrics / keras /
keras_bridge unless given in ``custom_objects``; broken descriptions; and ``flatten_state`` /
``unflatten_state`` round trips of optimizer-like states.
"""

import json
import math

import keras
import pytest
import torch
import torchmetrics
from torch import nn

import keras_bridge.optimizers as O
from keras_bridge.saving.serialization import (
    TAG,
    NotSerializable,
    deserialize,
    flatten_state,
    resolve,
    serialize,
    unflatten_state,
)


class Block(nn.Module):
    """A user's module outside the trusted packages: its constructor arguments are stored as attributes."""

    def __init__(self, width, activation="relu"):
        super().__init__()
        self.width, self.activation = width, activation
        self.linear = nn.Linear(width, width)


def round_trip(obj, **kwargs):
    config = json.loads(json.dumps(serialize(obj)))
    return config, deserialize(config, **kwargs)


def same_parameter_shapes(a, b):
    return [(k, v.shape) for k, v in a.state_dict().items()] == [(k, v.shape) for k, v in b.state_dict().items()]


# ---------------------------------------------------------------------------- torch modules
@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Linear(3, 2),
        lambda: nn.Linear(3, 2, bias=False),
        lambda: nn.Conv2d(1, 4, 3, stride=2, padding=1),
        lambda: nn.LayerNorm(4, eps=1e-3),
        lambda: nn.Embedding(5, 2, padding_idx=0),
        lambda: nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.25), nn.Linear(4, 1), nn.Softmax(dim=-1)),
        lambda: nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.Tanh()), nn.Linear(2, 1)),
        lambda: nn.ModuleList([nn.Linear(1, 2), nn.GELU(approximate="tanh")]),
        lambda: nn.ModuleDict({"encoder": nn.Linear(3, 2), "head": nn.Linear(2, 1)}),
    ],
    ids=[
        "linear",
        "linear-no-bias",
        "conv2d",
        "layer-norm",
        "embedding",
        "sequential",
        "nested-sequential",
        "module-list",
        "module-dict",
    ],
)
def test_torch_module_round_trip(make):
    module = make()
    config, rebuilt = round_trip(module)
    assert type(rebuilt) is type(module)
    assert serialize(rebuilt) == config
    assert same_parameter_shapes(module, rebuilt)
    assert repr(rebuilt) == repr(module)


def test_linear_description():
    assert serialize(nn.Linear(3, 2, bias=False)) == {
        TAG: "object",
        "module": "torch.nn.modules.linear",
        "name": "Linear",
        "config": {"in_features": 3, "out_features": 2, "bias": False},
    }


def test_sequential_keeps_child_names_and_order():
    module = nn.Sequential()
    module.add_module("hidden", nn.Linear(2, 3))
    module.add_module("act", nn.ReLU())
    _, rebuilt = round_trip(module)
    assert [name for name, _ in rebuilt.named_children()] == ["hidden", "act"]
    assert rebuilt.hidden.out_features == 3


def test_rebuilt_modules_compute_the_same_function_after_loading_the_weights():
    torch.manual_seed(0)
    module = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    _, rebuilt = round_trip(module)
    rebuilt.load_state_dict(module.state_dict())
    x = torch.randn(5, 3)
    torch.testing.assert_close(rebuilt(x), module(x))


# ---------------------------------------------------------------------------- losses and metrics
def test_torch_loss_round_trip():
    loss = nn.CrossEntropyLoss(label_smoothing=0.1, ignore_index=2)
    config, rebuilt = round_trip(loss)
    assert config["config"]["label_smoothing"] == 0.1 and config["config"]["ignore_index"] == 2
    assert isinstance(rebuilt, nn.CrossEntropyLoss)
    assert (rebuilt.label_smoothing, rebuilt.ignore_index, rebuilt.reduction) == (0.1, 2, "mean")
    logits, target = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]]), torch.tensor([0, 1])
    torch.testing.assert_close(rebuilt(logits, target), loss(logits, target))


def test_keras_loss_round_trip():
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, name="cce")
    config, rebuilt = round_trip(loss)
    assert config[TAG] == "keras"
    assert isinstance(rebuilt, keras.losses.CategoricalCrossentropy)
    assert rebuilt.get_config() == loss.get_config()
    y_true, y_pred = torch.tensor([[0.0, 1.0], [1.0, 0.0]]), torch.tensor([[0.3, 1.2], [0.5, -0.4]])
    assert float(rebuilt(y_true, y_pred)) == pytest.approx(float(loss(y_true, y_pred)))


def test_keras_metric_round_trip():
    metric = keras.metrics.AUC(num_thresholds=50, curve="PR", name="pr_auc")
    config, rebuilt = round_trip(metric)
    assert config[TAG] == "keras" and isinstance(rebuilt, keras.metrics.AUC)
    assert rebuilt.get_config() == metric.get_config()


def test_torchmetrics_metric_round_trip():
    metric = torchmetrics.Accuracy(task="multiclass", num_classes=3, top_k=2)
    config, rebuilt = round_trip(metric)
    assert config["module"].startswith("torchmetrics.") and config["name"] == "MulticlassAccuracy"
    assert type(rebuilt) is type(metric)
    assert (rebuilt.num_classes, rebuilt.top_k, rebuilt.average) == (3, 2, "micro")
    preds, target = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.6, 0.3, 0.1]]), torch.tensor([1, 0, 2])
    metric.update(preds, target)
    rebuilt.update(preds, target)
    assert float(rebuilt.compute()) == pytest.approx(float(metric.compute())) == pytest.approx(1 / 3)


@pytest.mark.parametrize(
    "obj",
    [
        pytest.param(torch.nn.functional.mse_loss, id="function"),
        pytest.param(torch.optim.Adam, id="class"),
        pytest.param(nn.Linear, id="module-class"),
        pytest.param(torch.tanh, id="torch-builtin"),
        pytest.param(torch.nn.functional.cosine_similarity, id="functional-builtin"),
    ],
)
def test_functions_and_classes_are_symbols(obj):
    config, rebuilt = round_trip(obj)
    assert config[TAG] == "symbol" and rebuilt is obj


@pytest.mark.parametrize(
    "value",
    [None, True, 3, 2.5, "mse", [1, "a", None], {"a": [1, 2], "b": {"c": False}}, (1, 2)],
    ids=["none", "bool", "int", "float", "str", "list", "dict", "tuple"],
)
def test_plain_data_is_itself(value):
    config, rebuilt = round_trip(value)
    assert rebuilt == (list(value) if isinstance(value, tuple) else value)


def test_numpy_like_numbers_become_python_numbers():
    import numpy as np

    assert serialize(np.int64(3)) == 3 and type(serialize(np.int64(3))) is int
    assert serialize(np.float32(0.5)) == 0.5 and type(serialize(np.float32(0.5))) is float


def test_optimizer_specs_round_trip():
    spec = O.Adam(1e-2, beta_1=0.5)
    _, rebuilt = round_trip(spec)
    optimizer, _ = rebuilt.build([nn.Parameter(torch.zeros(2))])
    assert isinstance(optimizer, O.Adam)
    assert optimizer.param_groups[0]["lr"] == 1e-2 and optimizer.param_groups[0]["beta_1"] == 0.5
    _, rebuilt = round_trip(O.from_torch(torch.optim.SGD, learning_rate=0.5, momentum=0.9))
    optimizer, _ = rebuilt.build([nn.Parameter(torch.zeros(2))])
    assert type(optimizer) is torch.optim.SGD
    assert optimizer.param_groups[0]["lr"] == 0.5 and optimizer.param_groups[0]["momentum"] == 0.9


# ---------------------------------------------------------------------------- not describable
@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        (nn.CrossEntropyLoss(weight=torch.ones(3)), "'weight' is a tensor"),
        (lambda y_true, y_pred: y_pred, "no import path"),
        (object(), "cannot be described as JSON"),
        ({1: "a"}, "dict keys must be strings"),
        (nn.Sequential(nn.Linear(1, 1), nn.CrossEntropyLoss(weight=torch.ones(2))), "'weight' is a tensor"),
    ],
    ids=["tensor-argument", "lambda", "object", "int-keys", "nested"],
)
def test_not_serializable(obj, fragment):
    with pytest.raises(NotSerializable, match=fragment):
        serialize(obj)


def test_local_definitions_have_no_import_path():
    def local_loss(y_true, y_pred):
        return y_pred

    with pytest.raises(NotSerializable, match="local definition"):
        serialize(local_loss)


# ---------------------------------------------------------------------------- safe mode
def test_safe_mode_refuses_a_class_outside_the_trusted_packages():
    config = json.loads(json.dumps(serialize(Block(3, activation="tanh"))))
    assert config["config"] == {"width": 3, "activation": "tanh"}
    with pytest.raises(ValueError) as info:
        deserialize(config)
    message = str(info.value)
    assert f"`{Block.__module__}.Block`" in message and "custom_objects={'Block':" in message
    assert "safe_mode=False" in message


@pytest.mark.parametrize("key", ["Block", "qualified"])
def test_custom_objects_allow_it(key):
    config = serialize(Block(3, activation="tanh"))
    key = f"{Block.__module__}.Block" if key == "qualified" else key
    rebuilt = deserialize(config, custom_objects={key: Block})
    assert isinstance(rebuilt, Block) and (rebuilt.width, rebuilt.activation) == (3, "tanh")


def test_safe_mode_off_imports_it():
    rebuilt = deserialize(serialize(Block(2)), safe_mode=False)
    assert isinstance(rebuilt, Block) and rebuilt.width == 2


def test_safe_mode_refuses_arbitrary_functions():
    with pytest.raises(ValueError, match="`os.system`"):
        deserialize({TAG: "symbol", "module": "os", "name": "system"})
    with pytest.raises(ValueError, match="`builtins.eval`"):
        resolve("builtins", "eval")


@pytest.mark.parametrize("module", ["torch.nn", "torchmetrics", "keras.losses", "keras_bridge.optimizers"])
def test_trusted_packages_resolve(module):
    name = {
        "torch.nn": "Linear",
        "torchmetrics": "MeanMetric",
        "keras.losses": "Huber",
        "keras_bridge.optimizers": "Adam",
    }[module]
    assert resolve(module, name) is getattr(__import__(module, fromlist=[name]), name)


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        ({TAG: "symbol", "module": "torch.nn", "name": "NoSuchLayer"}, "Could not import `torch.nn.NoSuchLayer`"),
        ({TAG: "object", "module": "torch.nn.functional", "name": "relu"}, "is not a torch.nn.Module class"),
        ({TAG: "optimizer", "module": "torch.nn", "name": "Linear"}, "is not a torch optimizer class"),
        ({TAG: "weird", "module": "torch", "name": "nn"}, "Unknown entry kind 'weird'"),
    ],
    ids=["missing-name", "object-not-a-module", "optimizer-not-an-optimizer", "unknown-kind"],
)
def test_broken_descriptions(config, fragment):
    with pytest.raises(ValueError, match=fragment):
        deserialize(config)


# ---------------------------------------------------------------------------- nested state
def optimizer_like_state():
    return {
        "state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.arange(4.0).reshape(2, 2)}, 3: {}},
        "param_groups": [
            {
                "lr": 0.1,
                "betas": (0.9, 0.999),
                "params": [0, 3],
                "nesterov": False,
                "foreach": None,
                "name": "group0",
                "max_norm": math.inf,
            }
        ],
    }


def assert_same_state(a, b):
    assert type(a) is type(b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same_state(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_state(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


def test_flatten_state_round_trip_through_json():
    state, arrays = optimizer_like_state(), []
    tree = json.loads(json.dumps(flatten_state(state, arrays), allow_nan=False))
    assert len(arrays) == 2 and all(isinstance(t, torch.Tensor) for t in arrays)
    rebuilt = unflatten_state(tree, arrays)
    assert_same_state(rebuilt, state)
    assert list(rebuilt["state"]) == [0, 3]  # int keys stay ints


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan], ids=["inf", "-inf", "nan"])
def test_non_finite_floats_survive_strict_json(value):
    arrays = []
    tree = json.loads(json.dumps(flatten_state({"x": value}, arrays), allow_nan=False))
    assert_same_state(unflatten_state(tree, arrays), {"x": value})


def test_flatten_state_detaches_and_moves_to_cpu():
    arrays = []
    flatten_state({"w": torch.ones(2, requires_grad=True) * 2}, arrays)
    assert not arrays[0].requires_grad and arrays[0].device.type == "cpu"


def test_flatten_state_refuses_what_needs_pickle():
    with pytest.raises(NotSerializable, match="cannot be saved without pickle"):
        flatten_state({"fn": print}, [])


def test_unflatten_state_refuses_unknown_entries():
    with pytest.raises(ValueError, match="Unknown state entry"):
        unflatten_state({TAG: "pickle", "data": "..."}, [])
