"""Learning rates end to end: Keras's six schedules per step, and LR callbacks' History column, as Keras."""

import keras
import numpy as np
import pytest
import torch
from helpers import assert_history_close, twin_models
from keras import layers

import keras_bridge as kb

S = keras.optimizers.schedules
SCHEDULES = {
    "exponential": lambda: S.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5),
    "exponential_staircase": lambda: S.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5, staircase=True),
    "piecewise": lambda: S.PiecewiseConstantDecay([3, 7], [0.1, 0.05, 0.01]),
    "polynomial": lambda: S.PolynomialDecay(0.1, decay_steps=6, end_learning_rate=0.01, power=2.0, cycle=True),
    "inverse_time": lambda: S.InverseTimeDecay(0.1, decay_steps=3, decay_rate=0.5, staircase=True),
    "cosine_warmup": lambda: S.CosineDecay(0.0, decay_steps=8, alpha=0.1, warmup_target=0.1, warmup_steps=4),
    "cosine_restarts": lambda: S.CosineDecayRestarts(0.1, first_decay_steps=3, t_mul=2.0, m_mul=0.5, alpha=0.1),
}


class StepLR(keras.callbacks.Callback):
    """The learning rate each optimizer step uses (read at batch begin, as Keras applies it)."""

    def on_train_begin(self, logs=None):
        self.lrs = []

    def on_train_batch_begin(self, batch, logs=None):
        self.lrs.append(self.model.optimizer.learning_rate)


def build():
    inp = keras.Input((5,), name="x")
    return keras.Model(inp, layers.Dense(1, name="out")(layers.Dense(8, activation="tanh")(inp)))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype("float32")
    return x, (x[:, :2].sum(1, keepdims=True) ** 2).astype("float32")


@pytest.mark.parametrize("optimizer", ["keras", "torch"])
@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_schedules_give_keras_learning_rate_at_every_step(data, name, optimizer):
    x, y = data
    schedule = SCHEDULES[name]()
    if optimizer == "keras":
        module = kb.KerasModule(build())
        module.compile(optimizer=keras.optimizers.SGD(learning_rate=schedule), loss="mse")
    else:
        module = kb.KerasModule(torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)))
        module.compile(optimizer=kb.optimizers.from_torch(torch.optim.SGD, learning_rate=schedule), loss="mse")
    recorder = StepLR()
    module.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[recorder])
    expected = [float(np.float32(float(schedule(step)))) for step in range(15)]
    assert recorder.lrs == expected


def test_setting_the_lr_of_a_scheduled_optimizer_fails_like_keras(data):
    x, y = data
    module = kb.KerasModule(build())
    module.compile(optimizer=keras.optimizers.SGD(learning_rate=SCHEDULES["exponential"]()), loss="mse")
    with pytest.raises(TypeError, match="not settable"):
        module.fit(
            x,
            y,
            epochs=2,
            verbose=0,
            callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="loss", patience=0, min_delta=100)],
        )


@pytest.mark.parametrize(
    "callback",
    [
        lambda: keras.callbacks.ReduceLROnPlateau(
            monitor="loss", patience=1, min_delta=100, factor=0.5, cooldown=1, min_lr=0.02
        ),
        lambda: keras.callbacks.ReduceLROnPlateau(monitor="val_loss", patience=0, min_delta=100, factor=0.3),
        lambda: keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.7 if epoch else lr),
    ],
    ids=["plateau_loss", "plateau_val_loss", "scheduler"],
)
def test_history_learning_rate_column_equals_keras(data, callback):
    x, y = data
    k_model, b_model = twin_models(build)
    k_model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    module = kb.KerasModule(b_model)
    module.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    kwargs = dict(batch_size=8, epochs=6, validation_split=0.2, shuffle=False, verbose=0)
    k_history = k_model.fit(x, y, callbacks=[callback()], **kwargs)
    b_history = module.fit(x, y, callbacks=[callback()], **kwargs)
    assert b_history.history["learning_rate"] == k_history.history["learning_rate"]
    assert_history_close(k_history, b_history)


class HalvingLR(keras.callbacks.Callback):
    """A user's callback written for Keras: reads and writes the learning rate as Keras code does."""

    def on_epoch_begin(self, epoch, logs=None):
        current = float(self.model.optimizer.learning_rate.numpy())
        self.model.optimizer.learning_rate = current * 0.5 if epoch else 0.2

    def on_epoch_end(self, epoch, logs=None):
        logs["learning_rate"] = float(self.model.optimizer.learning_rate.value)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_lr_set_in_on_epoch_begin_gives_keras_history_and_weights(optimizer):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(48, 5)).astype("float32")
    y = rng.normal(size=(48, 1)).astype("float32")
    keras_model, bridge_model = twin_models(build)
    keras_model.compile(optimizer=optimizer, loss="mse")
    expected = keras_model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[HalvingLR()])
    module = kb.KerasModule(bridge_model)
    module.compile(optimizer=optimizer, loss="mse")
    got = module.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[HalvingLR()])
    assert_history_close(expected, got, rtol=1e-5)
    np.testing.assert_allclose(got.history["learning_rate"], [0.2, 0.1, 0.05], rtol=1e-6)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    # and between fits, as a user sets it: the next optimizer step uses it
    bridge_model.optimizer.learning_rate.assign(0.01)
    assert float(module.model.optimizer.learning_rate) == pytest.approx(0.01)
