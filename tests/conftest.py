"""pytest setup: keras's torch backend before anything imports keras, and the shared fixtures.

Plain helper functions live in ``helpers.py`` (import them with ``from helpers import ...``); this file
only holds fixtures, which call those helpers.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import pytest
from helpers import load_digits_data

import keras_bridge  # noqa: F401  (selects the torch backend)


@pytest.fixture
def digits_data():
    """``(x, y)`` of scikit-learn's digits: float32 features in [0, 1], int64 labels."""
    return load_digits_data()
