"""keras_bridge/saving/state.py: training state as plain data in HDF5, without pickle.

Covers ``write_tree``/``read_tree`` round trips of nested states (dicts with int and str keys, lists,
tuples, ints, floats incl. inf/nan, strings, bools, None) and of tensors of every common dtype
(bfloat16 included, which HDF5 lacks), shapes (0-dim, empty) and values; what is stored in the file
(JSON structure + one dataset per tensor, nothing pickled); ``states_to_bytes``/``states_from_bytes``;
and ``model_state``/``load_model_state`` for a torch module and for two instances of one Keras model
(whose auto-generated variable names differ).
"""

import io
import json
import math

import h5py
import keras
import pytest
import torch

import keras_bridge as kb
from keras_bridge.saving.state import (
    load_model_state,
    model_state,
    read_tree,
    states_from_bytes,
    states_to_bytes,
    write_tree,
)


def tree_round_trip(obj, name="tree"):
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write_tree(f, name, obj)
    with h5py.File(io.BytesIO(buffer.getvalue()), "r") as f:
        return read_tree(f, name)


def assert_same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), (a, b)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize(
    "tensor",
    [
        torch.tensor([1.0, -3.140625, 1e30, -0.0, 2.0**-126], dtype=torch.bfloat16),
        torch.tensor([[0.1, 2.5], [float("inf"), -7.0]], dtype=torch.float32),
        torch.tensor([1e-300, 0.1], dtype=torch.float64),
        torch.tensor([65504.0, 1e-3], dtype=torch.float16),
        torch.tensor([-(2**62), 0, 2**62], dtype=torch.int64),
        torch.tensor([1, -2], dtype=torch.int32),
        torch.tensor([0, 255], dtype=torch.uint8),
        torch.tensor([True, False]),
        torch.tensor(3.0),
        torch.zeros(0, 4),
        torch.arange(24.0).reshape(2, 3, 4).to(torch.bfloat16),
    ],
    ids=[
        "bfloat16",
        "float32",
        "float64",
        "float16",
        "int64",
        "int32",
        "uint8",
        "bool",
        "0-dim",
        "empty",
        "bfloat16-3d",
    ],
)
def test_tensor_round_trip_keeps_dtype_shape_and_values(tensor):
    assert_same(tree_round_trip({"t": tensor}), {"t": tensor})


def test_nested_state_round_trip():
    state = {
        "state": {0: {"step": torch.tensor(3.0), "m": torch.ones(2, 2, dtype=torch.bfloat16)}, 2: {}},
        "param_groups": [
            {
                "lr": 0.001,
                "betas": (0.9, 0.999),
                "params": [0, 2],
                "amsgrad": False,
                "foreach": None,
                "name": "dense",
                "iterations": 12,
            }
        ],
        "scheduler": {"last_epoch": 4, "_step_count": 5, "base_lrs": [0.1], "min_lr": -math.inf, "nan": math.nan},
        "text": "naïve – ünïcode",
    }
    restored = tree_round_trip(state)
    assert_same(restored, state)
    assert list(restored["state"]) == [0, 2]  # int keys stay ints
    assert isinstance(restored["param_groups"][0]["betas"], tuple)


@pytest.mark.parametrize(
    "value",
    [3, 2.5, "mse", True, None, [1, "a", None], (1, 2.0)],
    ids=["int", "float", "str", "bool", "none", "list", "tuple"],
)
def test_plain_values_round_trip(value):
    assert_same(tree_round_trip(value), value)


def test_the_file_holds_json_and_one_dataset_per_tensor():
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write_tree(f, "opt", {"a": torch.ones(2, dtype=torch.bfloat16), "b": [torch.arange(3), 7]})
    with h5py.File(io.BytesIO(buffer.getvalue()), "r") as f:
        group = f["opt"]
        assert sorted(group.keys()) == ["0", "1"]
        assert json.loads(group.attrs["dtypes"]) == ["bfloat16", "int64"]
        assert group["0"].dtype == "float32"  # HDF5 has no bfloat16: stored as float32, exactly
        tree = json.loads(group.attrs["tree"])
        assert tree["items"][1] == ["b", [{"__kb__": "tensor", "index": 1}, 7]]


def test_several_trees_in_one_file():
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        write_tree(f, "optimizer", {"x": torch.ones(1)})
        write_tree(f, "scheduler", {"last_epoch": 3})
    with h5py.File(io.BytesIO(buffer.getvalue()), "r") as f:
        assert read_tree(f, "scheduler") == {"last_epoch": 3}
        assert_same(read_tree(f, "optimizer"), {"x": torch.ones(1)})


def test_states_to_bytes_and_back():
    states = {
        "optimizer": {
            "state": {0: {"step": torch.tensor(2.0), "v": torch.full((2,), 0.5, dtype=torch.bfloat16)}},
            "param_groups": [{"lr": 0.1, "params": [0]}],
        },
        "scheduler": {"last_epoch": 7},
        "note": "epoch 3",
    }
    data = states_to_bytes(states)
    assert isinstance(data, bytes) and data.startswith(b"\x89HDF")
    restored = states_from_bytes(data)
    assert sorted(restored) == sorted(states)
    for key in states:
        assert_same(restored[key], states[key])


def test_empty_states():
    assert states_from_bytes(states_to_bytes({})) == {}


# ---------------------------------------------------------------------------- model tensors
def test_torch_module_state_round_trip():
    torch.manual_seed(0)
    source, target = kb.KerasModule(torch.nn.Linear(3, 2)), kb.KerasModule(torch.nn.Linear(3, 2))
    state = model_state(source)
    assert list(state) == ["weight", "bias"]
    load_model_state(target, states_from_bytes(states_to_bytes({"model": state}))["model"])
    for a, b in zip(source.model.parameters(), target.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_module_state_that_does_not_fit():
    with pytest.raises(RuntimeError, match="size mismatch"):
        load_model_state(kb.KerasModule(torch.nn.Linear(3, 3)), model_state(kb.KerasModule(torch.nn.Linear(3, 2))))


def _keras_model():
    inputs = keras.Input((3,))
    return keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Dense(4, activation="relu")(inputs)))


def test_keras_model_state_lands_by_position_across_instances():
    source, target = kb.KerasModule(_keras_model()), kb.KerasModule(_keras_model())
    state = model_state(source)
    # Keras's auto-generated layer names differ between the two instances; positions do not.
    assert [k.split(":", 1)[0] for k in state] == ["00000", "00001", "00002", "00003"]
    assert list(state) != list(model_state(target))
    load_model_state(target, states_from_bytes(states_to_bytes({"model": state}))["model"])
    for a, b in zip(source.model.variables, target.model.variables):
        torch.testing.assert_close(torch.as_tensor(b.value), torch.as_tensor(a.value), rtol=0, atol=0)


def test_keras_model_state_with_another_number_of_variables():
    other = kb.KerasModule(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="the backup holds 4 variables, the model has 2"):
        load_model_state(other, model_state(kb.KerasModule(_keras_model())), source="the backup")
