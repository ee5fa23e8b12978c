"""Shared test helpers: identical Keras models for Keras-vs-bridge parity runs."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np
import pytest

import keras_bridge  # noqa: F401  (selects the torch backend)
import keras


def twin_models(build):
    """Two Keras models with the same architecture and the same initial weights."""
    keras.utils.set_random_seed(1234)
    a = build()
    b = build()
    b.set_weights(a.get_weights())
    return a, b


def assert_history_close(keras_history, bridge_history, rtol=1e-4, atol=1e-6):
    kh, bh = keras_history.history, bridge_history.history
    assert list(kh.keys()) == list(bh.keys()), (list(kh), list(bh))
    for key in kh:
        np.testing.assert_allclose(bh[key], kh[key], rtol=rtol, atol=atol, err_msg=key)


@pytest.fixture
def digits_data():
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16.0).astype("float32")
    y = d.target.astype("int64")
    return x, y
