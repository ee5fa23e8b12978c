"""``keras_bridge.utils.tree`` against Keras: ``unpack_x_y_sample_weight`` against
``keras.utils.unpack_x_y_sample_weight``, and the walks done while keras is not loaded against ``keras.tree`` on the
torch backend."""

import collections

import keras
import numpy as np
import pytest
import torch

from keras_bridge.utils.compat import pytree_map
from keras_bridge.utils.tree import _torch_backend_leaves, is_config, unpack_x_y_sample_weight

X, Y, W = np.zeros((4, 2)), np.ones((4, 1)), np.full(4, 0.5)


@pytest.mark.parametrize(
    "data",
    [X, (X,), (X, Y), (X, Y, W), [X, Y], [X], {"a": X}, ({"a": X}, Y), ([X, X], Y), (X, None, W), ()],
    ids=["array", "1-tuple", "2-tuple", "3-tuple", "2-list", "1-list", "dict", "dict-x", "list-x", "no-y", "empty"],
)
def test_unpack_matches_keras(data):
    if isinstance(data, tuple) and not data:
        with pytest.raises(ValueError) as keras_err:
            keras.utils.unpack_x_y_sample_weight(data)
        with pytest.raises(ValueError) as ours:
            unpack_x_y_sample_weight(data)
        assert str(ours.value).split("found:")[0] == str(keras_err.value).split("found:")[0]
        return
    expected = keras.utils.unpack_x_y_sample_weight(data)
    got = unpack_x_y_sample_weight(data)
    assert len(got) == 3 and all(g is e for g, e in zip(got, expected))


def test_a_tuple_of_four_is_refused_with_keras_message():
    data = (X, Y, W, W)
    with pytest.raises(ValueError) as keras_err:
        keras.utils.unpack_x_y_sample_weight(data)
    with pytest.raises(ValueError, match="found: a tuple of length 4") as ours:
        unpack_x_y_sample_weight(data)
    assert str(ours.value).split("found:")[0] == str(keras_err.value).split("found:")[0]


Pair = collections.namedtuple("Pair", ["second", "first"])


class Sub(dict):
    pass


STRUCTURES = [
    1,
    None,
    [1, None, (2, 3)],
    {"b": 1, "a": [2, {"d": 3, "c": 4}]},
    collections.OrderedDict([("b", 1), ("a", 2)]),
    collections.defaultdict(list, {"z": 1, "y": 2}),
    Pair(second=1, first=(2, 3)),
    collections.deque([3, 1, 2]),
    torch.max(torch.tensor([[1.0, 2.0]]), dim=1),  # a torch.return_types structseq
    Sub(b=1, a=2),  # a dict subclass: a leaf for both
    ({"x": torch.ones(2), "w": None}, [torch.zeros(1)]),
    [],
    {},
]


@pytest.mark.parametrize("structure", STRUCTURES, ids=lambda s: type(s).__name__)
def test_leaves_and_map_match_keras_tree(structure):
    ours, expected_leaves = _torch_backend_leaves(structure), keras.tree.flatten(structure)
    assert len(ours) == len(expected_leaves) and all(a is b for a, b in zip(ours, expected_leaves))
    mark = lambda v: f"<{v!r}>"  # noqa: E731
    mapped, expected = pytree_map(mark, structure), keras.tree.map_structure(mark, structure)
    assert type(mapped) is type(expected)
    assert repr(mapped) == repr(expected)


def test_config_dicts_are_leaves():
    config = {"class_name": "AUC", "config": {}}
    assert _torch_backend_leaves({"b": config, "a": ["acc"]}, is_config) == ["acc", config]
