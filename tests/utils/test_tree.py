"""``unpack_x_y_sample_weight``: Keras's own rules, checked against ``keras.utils.unpack_x_y_sample_weight``."""

import keras
import numpy as np
import pytest

from keras_bridge.utils.tree import unpack_x_y_sample_weight

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
