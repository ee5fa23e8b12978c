"""Errors that point at the user: a wrong label names itself, a user's code failing surfaces as its own error.

An exception raised in a user's loss, metric or callback reaches the caller of ``fit`` as that very
exception, with the user's frame innermost and none of Lightning's frames between it and the call of
``fit`` (Keras's traceback filtering; ``keras.config.disable_traceback_filtering()`` keeps them all).
"""

import traceback

import keras
import numpy as np
import pytest
import torch

import keras_bridge as kb

X = np.random.default_rng(0).normal(size=(32, 4)).astype("float32")
Y = np.random.default_rng(1).integers(0, 3, size=32)


class UserError(Exception):
    pass


def user_loss(y_true, y_pred):
    raise UserError("the user's loss failed")


def user_metric(y_true, y_pred):
    raise UserError("the user's metric failed")


class UserMetric(keras.metrics.Metric):
    def update_state(self, y_true, y_pred, sample_weight=None):
        raise UserError("the user's Keras metric failed")

    def result(self):
        return 0.0


class UserCallback(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        raise UserError("the user's callback failed")


def module_for(kind, **compile_kwargs):
    if kind == "torch":
        module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Softmax(-1)))
    else:
        inputs = keras.Input((4,))
        module = kb.KerasModule(keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(inputs)))
    module.compile(**{"optimizer": "sgd", "loss": "sparse_categorical_crossentropy", **compile_kwargs})
    return module


CASES = {
    "loss": (dict(loss=user_loss), {}, "user_loss"),
    "metric": (dict(metrics=[user_metric]), {}, "user_metric"),
    "keras-metric": (dict(metrics=[UserMetric(name="mine")]), {}, "update_state"),
    "callback": ({}, dict(callbacks=[UserCallback()]), "on_epoch_end"),
}


@pytest.mark.parametrize("kind", ["torch", "keras"])
@pytest.mark.parametrize("where", list(CASES))
def test_a_user_error_surfaces_with_the_users_frame_on_top(kind, where):
    compile_kwargs, fit_kwargs, function = CASES[where]
    module = module_for(kind, **compile_kwargs)
    with pytest.raises(UserError) as info:
        module.fit(X, Y, batch_size=8, epochs=1, verbose=0, **fit_kwargs)
    frames = traceback.extract_tb(info.value.__traceback__)
    assert frames[-1].name == function  # the user's frame is where the error stops
    assert not [f.filename for f in frames if "/lightning/" in f.filename or "/torch/" in f.filename]
    # Only the entry point's frame stands between the caller and the user's code.
    assert [f.filename.rsplit("/", 2)[-2:] for f in frames[1:-1]] == [["trainer", "engine.py"]], frames


def test_traceback_filtering_off_keeps_every_frame():
    module = module_for("torch", loss=user_loss)
    keras.config.disable_traceback_filtering()
    try:
        with pytest.raises(UserError) as info:
            module.fit(X, Y, epochs=1, verbose=0)
    finally:
        keras.config.enable_traceback_filtering()
    assert any("/lightning/" in f.filename for f in traceback.extract_tb(info.value.__traceback__))


@pytest.mark.parametrize("kind", ["torch", "keras"])
def test_a_label_outside_the_classes_names_the_value_the_classes_and_the_batch(kind):
    y = Y.copy()
    y[21] = 12  # batch 2 (of 8 samples), sample 5
    module = module_for(kind, metrics=["accuracy"])
    with pytest.raises(ValueError) as info:
        module.fit(X, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    assert str(info.value) == (
        "Received a label value of 12 in `y` (sample 5 of training batch 2 of epoch 1), but the model outputs "
        "3 classes, so sparse_categorical_crossentropy accepts labels in [0, 2]."
    )
    frames = traceback.extract_tb(info.value.__traceback__)
    assert len(frames) <= 4 and info.value.__cause__ is None  # not the 36 frames ending in torch's IndexError
    with pytest.raises(ValueError, match=r"label value of 7 .*sample 0 of validation batch 0 of epoch 1"):
        module.fit(X, Y, batch_size=8, epochs=1, validation_data=(X, np.full(32, 7)), verbose=0)
