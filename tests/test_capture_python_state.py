"""The captured forward never changes the numbers: Python state a forward pass reads is guarded, and a forward
pass with Python side effects runs eagerly. Each pattern is fitted by Keras itself (default ``jit_compile``) and
by the bridge (default ``jit_compile="auto"``) from the same weights, data and random states."""

import logging
import random

import keras
import numpy as np
import pytest
import torch
from helpers import assert_history_close, load_digits_data, twin_models

import keras_bridge as kb

SCALE = 1.0  # read by GlobalScale.call; changed by a callback


class Scale(keras.layers.Layer):
    """Multiplies by a Python float (KL-annealing style ``beta``)."""

    def __init__(self, beta=1.0, **kwargs):
        super().__init__(**kwargs)
        self.beta = beta

    def call(self, x):
        return x * self.beta


class Switch(keras.layers.Layer):
    """A bool attribute picks the branch."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.square = False

    def call(self, x):
        return x * x if self.square else x


class Counter(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.calls = 0

    def call(self, x):
        self.calls += 1
        return x


class Appender(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.seen = []

    def call(self, x):
        self.seen.append(tuple(x.shape))
        return x


class Printer(keras.layers.Layer):
    def call(self, x):
        print("Printer.call")
        return x


class PythonNoise(keras.layers.Layer):
    def call(self, x):
        return x * (1.0 + 0.1 * random.random())


class NumpyNoise(keras.layers.Layer):
    def call(self, x):
        return x * float(1.0 + 0.1 * np.random.uniform())


class ValueBranch(keras.layers.Layer):
    """Python control flow on a tensor's value."""

    def call(self, x):
        if float(keras.ops.convert_to_numpy(keras.ops.mean(x))) > 0.5:
            return x * 0.5
        return x


class TrainingBranch(keras.layers.Layer):
    def call(self, x, training=False):
        return x * 0.5 if training else x


class ShapeAttribute(keras.layers.Layer):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.width = None

    def call(self, x):
        self.width = x.shape[-1]
        return x / float(self.width)


class GlobalScale(keras.layers.Layer):
    def call(self, x):
        return x * SCALE


class ClassAttribute(keras.layers.Layer):
    factor = 1.0

    def call(self, x):
        return x * type(self).factor


@keras.ops.custom_gradient
def _tenfold_gradient(x):
    def grad(*args, upstream=None):
        return (args[0] if upstream is None else upstream) * 10.0

    return x, grad


class CustomGradient(keras.layers.Layer):
    """Identity whose gradient is scaled by 10 (a ``torch.autograd.Function`` on the torch backend)."""

    def call(self, x):
        return _tenfold_gradient(x)


class NoGradScale(keras.layers.Layer):
    """Divides by a scale computed without gradient recording."""

    def call(self, x):
        with torch.no_grad():
            scale = torch.mean(torch.abs(x)) + 1.0
        return x / scale


class HalfGradientHook(keras.layers.Layer):
    """Halves the gradient flowing back through it with a tensor hook."""

    def call(self, x):
        y = x * 1.0
        if y.requires_grad:
            y.register_hook(lambda g: g * 0.5)
        return y


class SetEachEpoch(keras.callbacks.Callback):
    """Sets ``target.attribute = values[epoch]`` at the start of each epoch (target found from the model)."""

    def __init__(self, find, attribute, values):
        super().__init__()
        self.find, self.attribute, self.values = find, attribute, values

    def on_epoch_begin(self, epoch, logs=None):
        setattr(self.find(self.model), self.attribute, self.values[epoch])


def layer_named(name):
    return lambda model: model.get_layer(name)


class GlobalSetter(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        global SCALE
        SCALE = 1.0 + 0.5 * epoch


def build(middle):
    def make():
        inputs = keras.Input((64,))
        h = keras.layers.Dense(16, activation="relu")(inputs)
        h = middle()(h)
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(h))

    return make


def one_fit(callbacks=None):
    def drive(model, compile, fit):
        compile()
        return [fit(epochs=3, callbacks=callbacks() if callbacks else None)]

    return drive


def between_fits(change):
    def drive(model, compile, fit):
        compile()
        first = fit(epochs=2)
        change(model)
        return [first, fit(epochs=2)]

    return drive


def toggle_trainable(model, compile, fit):
    compile()
    first = fit(epochs=2)
    model.get_layer("middle").trainable = False
    compile()
    return [first, fit(epochs=2)]


def set_attr(name, attribute, value):
    def change(model):
        setattr(model.get_layer(name), attribute, value)

    return change


def set_class_factor(model):
    ClassAttribute.factor = 1.5


def probe(attribute):
    return lambda model: getattr(model.get_layer("middle"), attribute)


def bn():
    return keras.layers.BatchNormalization(name="middle")


def named(cls, **kwargs):
    return lambda: cls(name="middle", **kwargs)


def dropout():
    return keras.layers.Dropout(0.2, name="middle")


# (id, middle layer, scenario, what must be equal besides History and weights, captured or eager at the end)
PATTERNS = [
    (
        "float_set_by_callback",
        named(Scale),
        one_fit(lambda: [SetEachEpoch(layer_named("middle"), "beta", [1.0, 1.5, 2.0])]),
        None,
        "captured",
    ),
    ("dropout_rate_between_fits", dropout, between_fits(set_attr("middle", "rate", 0.6)), None, "captured"),
    ("bool_switch_between_fits", named(Switch), between_fits(set_attr("middle", "square", True)), None, "captured"),
    ("trainable_toggled_with_recompile", bn, toggle_trainable, None, "captured"),
    ("counter_in_call", named(Counter), one_fit(), probe("calls"), "eager"),
    ("list_append_in_call", named(Appender), one_fit(), probe("seen"), "eager"),
    ("print_in_call", named(Printer), one_fit(), None, "eager"),
    ("python_random_in_call", named(PythonNoise), one_fit(), None, "eager"),
    ("numpy_random_in_call", named(NumpyNoise), one_fit(), None, "eager"),
    ("tensor_value_branch", named(ValueBranch), one_fit(), None, "eager"),
    ("training_branch", named(TrainingBranch), one_fit(), None, "captured"),
    ("attribute_from_input_shape", named(ShapeAttribute), one_fit(), probe("width"), "captured"),
    ("global_set_by_callback", named(GlobalScale), one_fit(lambda: [GlobalSetter()]), None, "captured"),
    ("class_attribute_between_fits", named(ClassAttribute), between_fits(set_class_factor), None, "captured"),
    # Autograd behaviour a replayed graph would lose: found while tracing, so the forward pass runs eagerly.
    ("custom_gradient_in_call", named(CustomGradient), one_fit(), None, "eager"),
    ("no_grad_region_in_call", named(NoGradScale), one_fit(), None, "eager"),
    ("gradient_hook_in_call", named(HalfGradientHook), one_fit(), None, "eager"),
]


def run(model, compile_args, x, y, drive, use_bridge, captured_step=False):
    target = kb.KerasModule(model) if use_bridge else model
    if captured_step:  # these fits are short: the captured training step runs only when asked to
        target.captured_step_min_steps = 0

    def fit(**kwargs):
        keras.utils.set_random_seed(3)  # Python, NumPy and torch random states, as for Keras
        return target.fit(x, y, batch_size=32, shuffle=False, validation_split=0.25, verbose=0, **kwargs)

    histories = drive(model, lambda: target.compile(**compile_args), fit)
    return target, histories


@pytest.mark.parametrize("captured_step", [False, True], ids=["captured_forward", "captured_step"])
@pytest.mark.parametrize("middle, drive, extra, path", [p[1:] for p in PATTERNS], ids=[p[0] for p in PATTERNS])
def test_python_state_pattern_gives_keras_numbers(middle, drive, extra, path, captured_step, capsys, caplog):
    global SCALE
    x, y = load_digits_data()
    x, y = x[:160], y[:160]
    compile_args = dict(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    keras_model, bridge_model = twin_models(build(middle))
    capsys.readouterr()  # the symbolic calls that built the twins
    SCALE, ClassAttribute.factor = 1.0, 1.0
    _, expected = run(keras_model, compile_args, x, y, drive, use_bridge=False)
    keras_printed = capsys.readouterr().out
    SCALE, ClassAttribute.factor = 1.0, 1.0
    with caplog.at_level(logging.INFO, logger="keras_bridge"):
        module, got = run(bridge_model, compile_args, x, y, drive, use_bridge=True, captured_step=captured_step)
    bridge_printed = capsys.readouterr().out

    for want, have in zip(expected, got):
        assert_history_close(want, have, rtol=1e-5, atol=1e-6)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    if extra is not None:
        assert extra(bridge_model) == extra(keras_model)
    assert bridge_printed.count("Printer.call") == keras_printed.count("Printer.call")
    capture = module.captured_forward
    if path == "captured":
        assert capture.eager_reason is None and capture.captured >= 1
        # The captured step replays the forward graph inside its own: it is guarded by what that graph read too.
        step = module.captured_step
        assert (step is not None and step.replays > 0) == captured_step
    else:
        assert capture.eager_reason is not None or capture.captured == 0
        # said once, whatever the number of steps
        assert sum("runs eagerly" in r.getMessage() for r in caplog.records) == 1


def test_state_changed_before_every_step_runs_eagerly_once_said(caplog):
    """A callback changing ``beta`` before every batch: captured again a few times, then eager; Keras's numbers."""

    class EveryBatch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            layer = self.model.get_layer("middle")
            layer.beta = layer.beta * 1.01

    x, y = load_digits_data()
    x, y = x[:160], y[:160]
    compile_args = dict(optimizer="adam", loss="sparse_categorical_crossentropy")
    keras_model, bridge_model = twin_models(build(named(Scale)))
    _, expected = run(keras_model, compile_args, x, y, one_fit(lambda: [EveryBatch()]), use_bridge=False)
    with caplog.at_level(logging.INFO, logger="keras_bridge"):
        module, got = run(bridge_model, compile_args, x, y, one_fit(lambda: [EveryBatch()]), use_bridge=True)
    assert_history_close(expected[0], got[0], rtol=1e-5, atol=1e-6)
    assert bridge_model.get_layer("middle").beta == keras_model.get_layer("middle").beta
    assert "changed before each" in module.captured_forward.eager_reason
    assert sum("runs eagerly" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("captured_step", [False, True], ids=["captured_forward", "captured_step"])
def test_an_attribute_no_forward_reads_set_each_epoch_drops_no_graph(captured_step):
    """Only what traces read is guarded: a ``beta`` kept on a Dense layer changes nothing; nothing is traced again."""
    x, y = load_digits_data()
    x, y = x[:160], y[:160]
    compile_args = dict(optimizer="adam", loss="sparse_categorical_crossentropy")
    middle = named(keras.layers.Dense, units=16)
    annealing = one_fit(lambda: [SetEachEpoch(layer_named("middle"), "beta", [0.0, 0.5, 1.0])])
    keras_model, bridge_model = twin_models(build(middle))
    _, expected = run(keras_model, compile_args, x, y, annealing, use_bridge=False)
    module, got = run(bridge_model, compile_args, x, y, annealing, use_bridge=True, captured_step=captured_step)
    assert_history_close(expected[0], got[0], rtol=1e-5, atol=1e-6)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)

    _, plain_model = twin_models(build(middle))
    plain, _ = run(plain_model, compile_args, x, y, one_fit(), use_bridge=True, captured_step=captured_step)
    assert module.captured_forward.traces == plain.captured_forward.traces
    if captured_step:
        assert module.captured_step.traces == plain.captured_step.traces and module.captured_step.replays > 0
