"""The progress output is Keras's own: same lines as keras.Model.fit/evaluate/predict, times masked."""

import re

import keras
import numpy as np
import pytest
from helpers import twin_models
from keras import layers

import keras_bridge as kb

ANSI = re.compile(r"\x1b\[[0-9;]*m")
TIMES = re.compile(r"\d+(ms|us)?/step|\b\d+s\b|\d+:\d\d(:\d\d)?")


def build():
    inp = keras.Input((5,), name="x")
    out = layers.Dense(3, activation="softmax", name="out")(layers.Dense(8, activation="relu")(inp))
    return keras.Model(inp, out)


def final_lines(text):
    """What a terminal shows: the text after the last carriage return of each line, times masked."""
    text = ANSI.sub("", text).replace("\b", "")
    lines = [line.split("\r")[-1].rstrip() for line in text.split("\n")]
    return [TIMES.sub("T", line) for line in lines if line.strip()]


@pytest.mark.parametrize("verbose", [1, 2])
def test_fit_evaluate_predict_output_equals_keras(capsys, verbose):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")
    y = rng.integers(0, 3, 40)
    k_model, b_model = twin_models(build)
    compile_kwargs = dict(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    k_model.compile(**compile_kwargs)
    module = kb.KerasModule(b_model)
    module.compile(**compile_kwargs)

    outputs = []
    for model in (k_model, module):
        capsys.readouterr()
        model.fit(x, y, batch_size=8, epochs=2, validation_split=0.25, shuffle=False, verbose=verbose)
        model.evaluate(x, y, batch_size=16, verbose=verbose)
        model.predict(x, batch_size=16, verbose=verbose)
        outputs.append(final_lines(capsys.readouterr().out))
    keras_lines, bridge_lines = outputs
    assert bridge_lines == keras_lines
    assert bridge_lines[0] == "Epoch 1/2"
    assert any(line.startswith("4/4") and "val_loss" in line for line in bridge_lines)


def test_verbose_zero_prints_nothing(capsys):
    module = kb.KerasModule(build())
    module.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    module.fit(np.zeros((8, 5), "float32"), np.zeros(8, "int64"), epochs=2, verbose=0)
    module.evaluate(np.zeros((8, 5), "float32"), np.zeros(8, "int64"), verbose=0)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "GPU available" not in captured.err and "LOCAL_RANK" not in captured.err
