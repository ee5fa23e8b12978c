"""CSVLogger end to end: the bridge's file equals Keras's byte for byte, except the values' float noise."""

import keras
import numpy as np
import pytest
from helpers import twin_models
from keras import layers

import keras_bridge as kb


def build():
    inp = keras.Input((5,), name="x")
    return keras.Model(inp, layers.Dense(3, activation="softmax", name="out")(inp))


def assert_csv_equal(bridge_text, keras_text, sep):
    b_lines, k_lines = bridge_text.splitlines(), keras_text.splitlines()
    assert len(b_lines) == len(k_lines)
    for b_line, k_line in zip(b_lines, k_lines):
        b_cells, k_cells = b_line.split(sep), k_line.split(sep)
        assert len(b_cells) == len(k_cells)
        for b, k in zip(b_cells, k_cells):
            try:
                assert float(b) == pytest.approx(float(k), rel=1e-4, abs=1e-6)
            except ValueError:  # the header, "NA"
                assert b == k
    # the same shape of text: separators, line ends, full-precision floats
    assert bridge_text.count("\n") == keras_text.count("\n")


@pytest.mark.parametrize("validation_split, separator, append", [(0.25, ",", False), (0.0, ";", True)])
def test_csv_equals_keras(tmp_path, validation_split, separator, append):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 5)).astype("float32"), rng.integers(0, 3, 40)
    k_model, b_model = twin_models(build)
    module = kb.KerasModule(b_model)
    texts = []
    for name, model in (("keras", k_model), ("bridge", module)):
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        path = tmp_path / f"{name}.csv"
        for _ in range(2 if append else 1):  # a second fit appends rows without a second header
            model.fit(
                x,
                y,
                batch_size=8,
                epochs=3,
                validation_split=validation_split,
                shuffle=False,
                verbose=0,
                callbacks=[keras.callbacks.CSVLogger(str(path), separator=separator, append=append)],
            )
        texts.append(path.read_text())
    assert_csv_equal(texts[1], texts[0], separator)
    assert texts[1].splitlines()[0] == texts[0].splitlines()[0]
