"""keras_bridge/data/batches.py: what every dataset batch goes through on its way to the module.

Covers ``check_class_weight`` (what it accepts, what it refuses, each message naming ``class_weight``),
``class_weight_to_sample_weight`` for sparse, one-hot, ``(N, 1)`` and float targets against Keras's
own ``class_weight_to_sample_weights``, ``standardize`` / ``prepare_batch`` (Keras's batch structures,
NumPy to torch with float64 as float32, class weights appended), ``empty_like``, ``to_tensor`` and
``reraise_with_context``.
"""

import numpy as np
import pytest
import torch
from keras.src.trainers.data_adapters.data_adapter_utils import class_weight_to_sample_weights as keras_class_weights

from keras_bridge.data.batches import (
    add_class_weight,
    check_class_weight,
    class_weight_to_sample_weight,
    empty_like,
    prepare_batch,
    reraise_with_context,
    standardize,
    to_tensor,
    to_torch,
)


# ---------------------------------------------------------------------------- check_class_weight
@pytest.mark.parametrize(
    "class_weight",
    [None, {}, {0: 1.0, 1: 2}, {0: 0.5, 3: 2.0}, {np.int64(1): np.float32(2.0)}],
    ids=["none", "empty", "ints-and-floats", "sparse-classes", "numpy-scalars"],
)
def test_check_class_weight_accepts(class_weight):
    check_class_weight(class_weight)
    check_class_weight(class_weight, y=[np.zeros(3)])  # one target in a list is one output


@pytest.mark.parametrize(
    "class_weight",
    [[1.0, 2.0], 5, "balanced", {0: "x"}, {"a": 1.0}, {None: 1.0}, {0: None}, {0: [1.0]}],
    ids=["list", "number", "string", "string-weight", "string-class", "none-class", "none-weight", "list-weight"],
)
def test_check_class_weight_refuses(class_weight):
    with pytest.raises(ValueError) as info:
        check_class_weight(class_weight)
    message = str(info.value)
    assert "`class_weight`" in message and f"class_weight={class_weight!r}" in message


def test_check_class_weight_refuses_sample_weight_too():
    with pytest.raises(ValueError, match=r"both `class_weight` and `sample_weight`"):
        check_class_weight({0: 1.0}, sample_weight=np.ones(3))


@pytest.mark.parametrize(
    "y",
    [[np.zeros(3), np.zeros(3)], (np.zeros(3), np.zeros(3)), {"a": np.zeros(3), "b": np.zeros(3)}],
    ids=["list", "tuple", "dict"],
)
def test_check_class_weight_refuses_several_outputs(y):
    with pytest.raises(ValueError) as info:
        check_class_weight({0: 1.0}, y=y)
    assert "`class_weight`" in str(info.value) and "2 targets" in str(info.value)


# ---------------------------------------------------------------------------- class_weight_to_sample_weight
CLASS_WEIGHT_CASES = {
    "sparse": (np.array([0, 1, 2, 1]), {0: 1.0, 1: 5.0}, [1.0, 5.0, 1.0, 5.0]),
    "sparse-torch": (torch.tensor([2, 2, 0]), {2: 0.25}, [0.25, 0.25, 1.0]),
    "one-hot": (np.eye(3, dtype="float32")[[2, 0, 1]], {1: 9.0, 2: 3.0}, [3.0, 1.0, 9.0]),
    "column": (np.array([[0.0], [1.0], [2.0]]), {2: 0.5}, [1.0, 1.0, 0.5]),
    "int-column": (np.array([[1], [0]]), {0: 4.0}, [1.0, 4.0]),
    "floats-rounded": (np.array([0.2, 0.6, 1.5, 2.5]), {0: 2.0, 1: 3.0, 2: 4.0}, [2.0, 3.0, 4.0, 4.0]),
    "unknown-classes": (np.array([0, 5]), {7: 2.0}, [1.0, 1.0]),
    "empty-dict": (np.array([0, 1, 2]), {}, [1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize(("y", "class_weight", "expected"), CLASS_WEIGHT_CASES.values(), ids=CLASS_WEIGHT_CASES.keys())
def test_class_weight_to_sample_weight(y, class_weight, expected):
    weights = class_weight_to_sample_weight(y, class_weight)
    assert isinstance(weights, torch.Tensor) and weights.dtype == torch.float32
    assert weights.tolist() == expected
    assert weights.tolist() == keras_class_weights(torch.as_tensor(y), class_weight).tolist()


@pytest.mark.parametrize(
    ("class_weight", "expected"),
    [({0: 3.0}, [1.0, 3.0]), ({-1: 2.0, 0: 3.0}, [2.0, 3.0])],
    ids=["unweighted-negative-label", "weighted-negative-label"],
)
def test_class_weight_of_a_negative_label_is_keras_s(class_weight, expected):
    # `expected` is what Keras's class_weight_to_sample_weights gives for these labels.
    assert class_weight_to_sample_weight(np.array([-1, 0]), class_weight).tolist() == expected


def test_add_class_weight_appends_weights_of_the_batch_s_kind():
    x, y = np.zeros((3, 2)), np.array([0, 1, 1])
    batch = add_class_weight((x, y), {1: 2.0}, "batch 0")
    assert len(batch) == 3 and isinstance(batch[2], np.ndarray) and batch[2].tolist() == [1.0, 2.0, 2.0]
    batch = add_class_weight((torch.zeros(3, 2), torch.tensor([0, 1, 1])), {1: 2.0}, "batch 0")
    assert isinstance(batch[2], torch.Tensor) and batch[2].tolist() == [1.0, 2.0, 2.0]
    batch = add_class_weight((x, {"out": y}), {0: 3.0}, "batch 0")  # one output given as a dict
    assert batch[2].tolist() == [3.0, 1.0, 1.0]
    assert add_class_weight((x,), {0: 3.0}, "batch 0") == (x,)  # no targets: nothing to weight


def test_add_class_weight_refuses_sample_weight_and_several_targets():
    x, y = np.zeros((3, 2)), np.array([0, 1, 1])
    expected = r"PyDataset.__getitem__\(2\) yields `\(x, y, sample_weight\)`.*`class_weight`"
    with pytest.raises(ValueError, match=expected):
        add_class_weight((x, y, np.ones(3)), {0: 1.0}, "PyDataset.__getitem__(2)")
    with pytest.raises(ValueError, match=r"`class_weight` is only supported .* batch 4 yields 2 targets"):
        add_class_weight((x, [y, y]), {0: 1.0}, "batch 4")


# ---------------------------------------------------------------------------- standardize / prepare_batch
X, Y, W = np.zeros((2, 3)), np.array([0, 1]), np.ones(2)


@pytest.mark.parametrize(
    ("batch", "expected_len"),
    [((X,), 1), ((X, Y), 2), ((X, Y, W), 3), ([X, Y], 2), ([X, Y, W], 3)],
    ids=["x", "x-y", "x-y-w", "list-x-y", "list-x-y-w"],
)
def test_standardize_tuples_and_lists(batch, expected_len):
    out = standardize(batch, "batch 0")
    assert isinstance(out, tuple) and len(out) == expected_len
    assert all(a is b for a, b in zip(out, batch))


@pytest.mark.parametrize("x", [X, torch.zeros(2, 3)], ids=["numpy", "torch"])
def test_standardize_an_array_is_x_alone(x):
    out = standardize(x, "batch 0")
    assert isinstance(out, tuple) and len(out) == 1 and out[0] is x


def test_standardize_a_dict_is_x():
    batch = {"a": X, "b": Y}
    assert standardize(batch, "batch 0") is batch


@pytest.mark.parametrize(
    ("batch", "received"),
    [((X, Y, W, W), "a tuple of length 4"), ((), "a tuple of length 0"), (5, "a int"), (None, "a NoneType")],
    ids=["long-tuple", "empty-tuple", "number", "none"],
)
def test_standardize_refuses_other_structures(batch, received):
    with pytest.raises(ValueError) as info:
        standardize(batch, "PyDataset.__getitem__(3)")
    message = str(info.value)
    assert message.startswith("PyDataset.__getitem__(3) must return a batch") and f"Received {received}" in message


def test_prepare_batch_converts_to_torch():
    x64, y = np.arange(6, dtype="float64").reshape(2, 3), np.array([0, 1])
    out = prepare_batch([x64, y], "batch 0")
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].dtype == torch.float32 and out[1].dtype == torch.int64  # float64 -> floatx, as Keras feeds it
    assert out[0].tolist() == x64.tolist() and out[1].tolist() == [0, 1]


def test_prepare_batch_with_class_weight():
    out = prepare_batch((X, Y), "batch 0", class_weight={1: 4.0})
    assert len(out) == 3 and all(isinstance(t, torch.Tensor) for t in out)
    assert out[2].tolist() == [1.0, 4.0]


def test_prepare_batch_without_conversion_keeps_numpy():
    out = prepare_batch((X, Y), "batch 0", class_weight={1: 4.0}, convert=False)
    assert out[0] is X and out[1] is Y and isinstance(out[2], np.ndarray) and out[2].tolist() == [1.0, 4.0]


def test_prepare_batch_nested_structures():
    batch = ({"image": np.zeros((2, 4)), "ids": np.array([3, 4])}, [np.zeros((2, 1)), np.ones((2, 2))])
    x, y = prepare_batch(batch, "batch 0")
    assert set(x) == {"image", "ids"} and x["image"].dtype == torch.float32 and x["ids"].dtype == torch.int64
    assert isinstance(y, list) and [t.shape for t in y] == [torch.Size([2, 1]), torch.Size([2, 2])]


def test_to_torch_leaves_non_arrays_and_object_arrays_alone():
    strings = np.array(["a", "bc"], dtype=object)
    out = to_torch((strings, "label", 3, None))
    assert out[0] is strings and out[1:] == ("label", 3, None)


def test_to_tensor():
    assert to_tensor(np.zeros(2)).dtype == torch.float32
    # Keras's array adapters cast every float array to floatx (float32), float16 included.
    assert to_tensor(np.zeros(2, dtype="float16")).dtype == torch.float32
    t = torch.ones(2, dtype=torch.int32)
    assert to_tensor(t) is t
    with pytest.raises(TypeError, match="array of Python objects"):
        to_tensor(np.array([{"a": 1}], dtype=object))


# ---------------------------------------------------------------------------- empty_like
def test_empty_like_keeps_the_structure_with_zero_rows():
    batch = ({"a": torch.ones(4, 3), "b": np.ones((4, 2), "float32")}, [torch.arange(4), None], torch.tensor(2.0))
    out = empty_like(batch)
    assert isinstance(out, tuple) and isinstance(out[0], dict) and isinstance(out[1], list)
    assert out[0]["a"].shape == (0, 3) and out[0]["a"].dtype == torch.float32
    assert out[0]["b"].shape == (0, 2) and isinstance(out[0]["b"], np.ndarray)
    assert out[1][0].shape == (0,) and out[1][0].dtype == torch.int64 and out[1][1] is None
    assert out[2].shape == () and float(out[2]) == 2.0  # a 0-dim tensor has no rows to drop


# ---------------------------------------------------------------------------- reraise_with_context
def test_reraise_with_context_keeps_the_type():
    new = reraise_with_context(IndexError("list index out of range"), "PyDataset.__getitem__(7)")
    assert type(new) is IndexError
    assert str(new) == "PyDataset.__getitem__(7): IndexError: list index out of range"


def test_reraise_with_context_falls_back_to_runtime_error():
    original = UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")
    new = reraise_with_context(original, "batch 2")
    assert type(new) is RuntimeError and str(new).startswith("batch 2: UnicodeDecodeError: ")
