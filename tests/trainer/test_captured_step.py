"""The captured training step (``keras_bridge.trainer.captured_step``): forward, loss and gradients replayed from one
graph give bit for bit the fit of the eager step, follow a loss attribute a callback changes, and step aside for a
loss with Python side effects.

Every expected value comes from a second run: the same fit with ``module.allow_captured_step = False`` (the eager
step: the captured forward pass, the loss in Python, ``loss.backward()``), or Keras's own ``fit``.
"""

import logging

import keras
import numpy as np
import pytest
import torch
from helpers import assert_history_close, twin_models

import keras_bridge as kb

CE_LOGITS = keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def _mlp(regularizer=None):
    inputs = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", kernel_regularizer=regularizer)(inputs)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _dropout():
    inputs = keras.Input((6,))
    h = keras.layers.Dropout(0.4)(keras.layers.Dense(8, activation="relu")(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _batchnorm():
    inputs = keras.Input((6,))
    h = keras.layers.BatchNormalization()(keras.layers.Dense(8)(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Activation("relu")(h)))


def _conv():
    inputs = keras.Input((6,))
    h = keras.layers.Conv1D(4, 3)(keras.layers.Reshape((6, 1))(inputs))
    h = keras.layers.Dropout(0.3)(keras.layers.BatchNormalization()(h))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))


def _lstm():
    inputs = keras.Input((6,))
    h = keras.layers.LSTM(5)(keras.layers.Reshape((3, 2))(inputs))
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def _multi_io():
    a, b = keras.Input((6,), name="a"), keras.Input((4,), name="b")
    h = keras.layers.Dense(8, activation="relu")(keras.layers.concatenate([a, b]))
    score = keras.layers.Dense(1, name="score")(h)
    label = keras.layers.Dense(3, name="label")(h)
    return keras.Model({"a": a, "b": b}, {"score": score, "label": label})


def _data(n=72, multi=False):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype("float32")
    y = rng.integers(0, 3, n)
    if multi:
        inputs = {"a": x, "b": rng.normal(size=(n, 4)).astype("float32")}
        return inputs, {"score": rng.normal(size=(n, 1)).astype("float32"), "label": y}
    return x, y


def _multi_compile():
    return dict(
        optimizer="adam",
        loss={"score": "mse", "label": CE_LOGITS},
        loss_weights={"score": 0.5, "label": 2.0},
        metrics={"label": ["accuracy"], "score": ["mae"]},
    )


# (id, model, compile arguments (a fresh optimizer each fit), fit arguments)
CASES = [
    (
        "mlp_rmsprop",
        _mlp,
        lambda: dict(optimizer=keras.optimizers.RMSprop(1e-2), loss=CE_LOGITS, metrics=["accuracy"]),
        {},
    ),
    ("dropout_adam", _dropout, lambda: dict(optimizer=keras.optimizers.Adam(1e-2), loss=CE_LOGITS), {}),
    ("batchnorm_sgd", _batchnorm, lambda: dict(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=CE_LOGITS), {}),
    ("conv_batchnorm_dropout", _conv, lambda: dict(optimizer="adam", loss=CE_LOGITS, metrics=["accuracy"]), {}),
    ("lstm", _lstm, lambda: dict(optimizer="rmsprop", loss=CE_LOGITS), {}),
    ("multi_io_loss_weights", _multi_io, _multi_compile, {}),
    ("sample_weight", _mlp, lambda: dict(optimizer="rmsprop", loss=CE_LOGITS, weighted_metrics=["accuracy"]), "sw"),
    ("class_weight", _mlp, lambda: dict(optimizer="adam", loss=CE_LOGITS), {"class_weight": {0: 1.0, 1: 3.0, 2: 0.5}}),
    (
        "kernel_regularizer",
        lambda: _mlp(keras.regularizers.L2(1e-2)),
        lambda: dict(optimizer="adam", loss=CE_LOGITS),
        {},
    ),
    ("torch_optimizer", _dropout, lambda: dict(optimizer=torch.optim.AdamW, loss=CE_LOGITS, metrics=["accuracy"]), {}),
]


def _fit(build, compile_args, fit_args, captured, epochs=3):
    _, model = twin_models(build)
    multi = build is _multi_io
    x, y = _data(multi=multi)
    if fit_args == "sw":
        fit_args = {"sample_weight": np.linspace(0.2, 2.0, len(y)).astype("float32")}
    module = kb.KerasModule(model)
    module.allow_captured_step = captured
    module.captured_step_min_steps = 0  # these fits are short
    module.compile(**compile_args())
    keras.utils.set_random_seed(7)
    # 72 samples, batch 16, validation_split 0.25: 54 training samples in 3 full batches and a partial one.
    history = module.fit(
        x, y, batch_size=16, epochs=epochs, shuffle=False, validation_split=0.25, verbose=0, **fit_args
    )
    return module, history, torch.get_rng_state()


def _assert_state_equal(a, b, where=""):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_state_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_state_equal(u, v, f"{where}/{i}")
    else:
        assert a == b, where


@pytest.mark.parametrize("build, compile_args, fit_args", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_captured_step_gives_the_eager_steps_fit_bit_for_bit(build, compile_args, fit_args):
    eager, expected, eager_rng = _fit(build, compile_args, fit_args, captured=False)
    module, got, rng = _fit(build, compile_args, fit_args, captured=True)
    assert eager.captured_step is None
    step = module.captured_step
    # every signature (full and partial batch) captured; 3 epochs x 4 steps, each signature eager until captured
    assert step.eager_reason is None and step.captured == 2 and step.replays >= 7
    assert got.history == expected.history
    for a, b in zip(eager.model.variables, module.model.variables):  # weights, moving statistics, seed states
        assert torch.equal(a.value, b.value), a.path
    _assert_state_equal(eager.optimizer_cache.optimizer.state_dict(), module.optimizer_cache.optimizer.state_dict())
    assert torch.equal(eager_rng, rng)  # the same draws from torch's global generator (Dropout)


def test_captured_step_gives_keras_fits_numbers():
    keras_model, bridge_model = twin_models(_dropout)
    x, y = _data()
    compile_args = dict(optimizer="adam", loss=CE_LOGITS, metrics=["accuracy"])
    keras_model.compile(**compile_args)
    keras.utils.set_random_seed(7)
    expected = keras_model.fit(x, y, batch_size=16, epochs=3, shuffle=False, validation_split=0.25, verbose=0)
    module = kb.KerasModule(bridge_model)
    module.captured_step_min_steps = 0  # these fits are short
    module.compile(**compile_args)
    keras.utils.set_random_seed(7)
    got = module.fit(x, y, batch_size=16, epochs=3, shuffle=False, validation_split=0.25, verbose=0)
    assert module.captured_step.replays >= 7
    assert_history_close(expected, got, rtol=1e-5, atol=1e-6)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


@keras.saving.register_keras_serializable("test_captured_step")
class ScaledCrossentropy(keras.losses.Loss):
    """Crossentropy times a Python float ``scale`` (read in ``call``, so a captured graph bakes it in)."""

    def __init__(self, scale=1.0, **kwargs):
        super().__init__(**kwargs)
        self.scale = scale
        self.calls = 0

    def call(self, y_true, y_pred):
        return keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True) * self.scale


class CountingCrossentropy(ScaledCrossentropy):
    """A loss with a Python side effect: it counts its calls."""

    def call(self, y_true, y_pred):
        self.calls += 1
        return super().call(y_true, y_pred)


class SetScale(keras.callbacks.Callback):
    def __init__(self, loss):
        super().__init__()
        self.loss = loss

    def on_epoch_begin(self, epoch, logs=None):
        self.loss.scale = 1.0 + epoch


def _keras_and_bridge(loss_class, callbacks=False):
    """The same fit by Keras and by the bridge, each with its own loss object: (loss, history) of each, the module."""
    keras_model, bridge_model = twin_models(_mlp)
    x, y = _data()
    runs = []
    module = kb.KerasModule(bridge_model)
    module.captured_step_min_steps = 0  # these fits are short
    for target in (keras_model, module):
        loss = loss_class()
        target.compile(optimizer="adam", loss=loss)
        keras.utils.set_random_seed(7)
        history = target.fit(
            x, y, batch_size=16, epochs=3, shuffle=False, validation_split=0.25, verbose=0,
            callbacks=[SetScale(loss)] if callbacks else None,
        )  # fmt: skip
        runs.append((loss, history))
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    return runs, target


@keras.ops.custom_gradient
def _tenfold_gradient(x):
    def grad(*args, upstream=None):
        return (args[0] if upstream is None else upstream) * 10.0

    return x, grad


class CustomGradientCrossentropy(ScaledCrossentropy):
    """The logits pass a ``torch.autograd.Function`` (Keras's ``custom_gradient``) scaling their gradient by 10."""

    def call(self, y_true, y_pred):
        return super().call(y_true, _tenfold_gradient(y_pred))


class NoGradNormalizedCrossentropy(ScaledCrossentropy):
    """Divided by a normalizer computed without gradient recording."""

    def call(self, y_true, y_pred):
        with torch.no_grad():
            norm = torch.mean(torch.abs(y_pred)) + 1.0
        return super().call(y_true, y_pred) / norm


class HookedCrossentropy(ScaledCrossentropy):
    """A tensor hook halves the gradient reaching the logits."""

    def call(self, y_true, y_pred):
        logits = y_pred * 1.0
        if logits.requires_grad:
            logits.register_hook(lambda g: g * 0.5)
        return super().call(y_true, logits)


@pytest.mark.parametrize(
    "loss_class", [CustomGradientCrossentropy, NoGradNormalizedCrossentropy, HookedCrossentropy],
    ids=["custom_gradient", "no_grad", "tensor_hook"],
)  # fmt: skip
def test_a_loss_with_its_own_autograd_behaviour_gives_keras_numbers_from_the_captured_step(loss_class):
    """The captured step traces ``torch.autograd.grad`` itself: a custom backward, a hook and a no-grad region of the
    loss run in that trace, so the replayed gradients are Keras's."""
    [(_, expected), (_, got)], module = _keras_and_bridge(loss_class)
    assert_history_close(expected, got, rtol=1e-5, atol=1e-6)
    assert module.captured_step.replays > 0


def test_a_loss_attribute_changed_by_a_callback_is_followed():
    [(_, expected), (_, got)], module = _keras_and_bridge(ScaledCrossentropy, callbacks=True)
    assert_history_close(expected, got, rtol=1e-5, atol=1e-6)
    losses = expected.history["loss"]
    assert losses[2] > 2 * losses[0]  # the scale does change the loss: a stale graph would show it
    step = module.captured_step
    # a graph per scale: each epoch's first full batch runs eagerly (the guard saw the change), then it is captured
    assert step.eager_reason is None and step.traces == 3 and step.replays >= 3


def test_a_loss_with_a_side_effect_runs_eagerly_and_counts_exactly(caplog):
    with caplog.at_level(logging.INFO, logger="keras_bridge"):
        [(keras_loss, expected), (bridge_loss, got)], module = _keras_and_bridge(CountingCrossentropy)
    assert_history_close(expected, got, rtol=1e-5, atol=1e-6)
    assert bridge_loss.calls == keras_loss.calls > 0
    step = module.captured_step
    assert "changes Python state" in step.eager_reason and step.replays == 0
    said = [r for r in caplog.records if "runs eagerly" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.INFO


class OwnLoss(kb.KerasModule):
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, y, y_pred, sample_weight, training) * 2.0


class KerasOwnLoss(keras.Model):
    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        return super().compute_loss(x, y, y_pred, sample_weight, training) * 2.0


def _keras_own_loss():
    inputs = keras.Input((6,))
    return KerasOwnLoss(inputs, keras.layers.Dense(3)(inputs))


class Refusal(keras.callbacks.Callback):
    def __init__(self, module):
        super().__init__()
        self.module, self.said = module, []

    def on_epoch_end(self, epoch, logs=None):
        self.said.append(self.module.fused_step.captured_step_refusal)


@pytest.mark.parametrize(
    "module_class, build, allow, reason",
    [
        (OwnLoss, _mlp, True, "OwnLoss overrides compute_loss"),
        (kb.KerasModule, _keras_own_loss, True, "the forward pass is not captured"),  # compile keeps it eager
        (kb.KerasModule, _mlp, False, "module.allow_captured_step is False"),
    ],
    ids=["module_compute_loss", "keras_model_compute_loss", "switched_off"],
)
def test_refusals_keep_the_eager_step_and_say_why(module_class, build, allow, reason):
    _, model = twin_models(build)
    module = module_class(model)
    module.allow_captured_step = allow
    module.captured_step_min_steps = 0  # these fits are short
    module.compile(optimizer="adam", loss=CE_LOGITS)
    x, y = _data()
    refusal = Refusal(module)
    module.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[refusal])
    assert module.captured_step is None
    assert refusal.said and all(r is not None and r.startswith(reason) for r in refusal.said)


def _fit_bad_label(captured):
    _, model = twin_models(_conv)  # BatchNormalization statistics assigned in place, Dropout's random draws
    x, y = _data()
    y[40] = 12  # the third training batch: its step is the first replayed from the graph
    module = kb.KerasModule(model)
    module.allow_captured_step = captured
    module.captured_step_min_steps = 0  # these fits are short
    module.compile(optimizer="adam", loss=CE_LOGITS)
    keras.utils.set_random_seed(7)
    with pytest.raises(ValueError) as info:
        module.fit(x, y, batch_size=16, epochs=1, shuffle=False, validation_split=0.25, verbose=0)
    return module, str(info.value), torch.get_rng_state()


def test_a_replay_that_raises_is_undone_and_the_eager_step_raises_keras_error():
    eager, expected, eager_rng = _fit_bad_label(captured=False)
    module, message, rng = _fit_bad_label(captured=True)
    assert module.captured_step.traces == 1 and module.captured_step.replays == 0
    assert message == expected and "label value of 12" in message
    for a, b in zip(eager.model.variables, module.model.variables):
        assert torch.equal(a.value, b.value), a.path
    assert torch.equal(eager_rng, rng)


class DoubleGradients(keras.callbacks.Callback):
    """Registers a gradient hook on the first kernel at the start of the second epoch: ``backward`` doubles it."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            self.module.model.layers[1].kernel.value.register_hook(lambda g: g * 2)


def _eager_then(allow, optimizer, make_loss, callbacks=lambda module: None):
    """The same fit of the MLP twice: with the eager step, then with ``allow_captured_step=allow``."""
    results = []
    for allowed in (False, allow):
        _, model = twin_models(_mlp)
        x, y = _data()
        module = kb.KerasModule(model)
        module.allow_captured_step = allowed
        module.captured_step_min_steps = 0  # these fits are short
        module.compile(optimizer=optimizer, loss=make_loss())
        keras.utils.set_random_seed(7)
        history = module.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=callbacks(module))
        results.append((module, history))
    return results


@pytest.mark.parametrize("captured", [False, True])
def test_a_gradient_hook_on_a_weight_keeps_the_eager_step(captured):
    results = _eager_then(captured, "sgd", lambda: CE_LOGITS, lambda module: [DoubleGradients(module)])
    (_, expected), (module, got) = results
    assert got.history == expected.history
    for a, b in zip(results[0][0].model.variables, module.model.variables):
        assert torch.equal(a.value, b.value), a.path
    if captured:
        assert module.captured_step.replays > 0  # the first epoch replayed, the others ran eagerly


class ValueBranchCrossentropy(ScaledCrossentropy):
    """Python control flow on a tensor's value: the loss cannot be traced into a graph."""

    def call(self, y_true, y_pred):
        scale = 2.0 if float(keras.ops.convert_to_numpy(keras.ops.mean(y_pred))) > 0.0 else 1.0
        return super().call(y_true, y_pred) * scale


def test_a_loss_that_cannot_be_traced_runs_eagerly_said_once(caplog):
    with caplog.at_level(logging.INFO, logger="keras_bridge"):
        (eager, expected), (module, got) = _eager_then(True, "adam", ValueBranchCrossentropy)
    assert got.history == expected.history
    assert module.captured_step.replays == 0 and module.captured_step.captured == 0
    said = [r.getMessage() for r in caplog.records if "runs eagerly" in r.getMessage()]
    assert len(said) == 1 and "could not be captured as one graph" in said[0]


@pytest.mark.parametrize("minimum, captured", [(10, True), (11, False)], ids=["long_enough", "too_short"])
def test_a_fit_too_short_to_pay_for_the_trace_keeps_the_eager_step(minimum, captured):
    module = kb.KerasModule(_mlp())
    module.captured_step_min_steps = minimum
    module.compile(optimizer="rmsprop", loss=CE_LOGITS)
    x, y = _data()  # 72 samples in batches of 16: 5 steps per epoch, 10 in the fit
    refusal = Refusal(module)
    module.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[refusal])
    assert (module.captured_step is not None) is captured
    if captured:
        assert module.captured_step.captured == 1 and refusal.said == [None, None]
    else:
        assert refusal.said == ["this fit has 10 training steps left, fewer than module.captured_step_min_steps=11 "
                                "(a trace would cost more than the steps save)"] * 2  # fmt: skip
