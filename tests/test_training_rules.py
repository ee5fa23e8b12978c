"""Keras's training-step rules on the bridge: weight constraints after every update, no side effect Keras would not
have (the build runs nothing the model can observe), and a model without trainable weights fits as under Keras."""

import keras
import numpy as np
import pytest
from helpers import assert_history_close, twin_models

import keras_bridge as kb


def _constrained():
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(6, activation="tanh", kernel_constraint=keras.constraints.MaxNorm(0.5))(inputs)
    dense = keras.layers.Dense(
        2, kernel_constraint=keras.constraints.NonNeg(), bias_constraint=keras.constraints.MaxNorm(0.1)
    )
    return keras.Model(inputs, dense(hidden))


@pytest.fixture
def regression():
    rng = np.random.default_rng(0)
    return rng.normal(size=(48, 4)).astype("float32"), -np.abs(rng.normal(size=(48, 2))).astype("float32")


@pytest.mark.parametrize("optimizer", ["keras", "bridge"], ids=["keras_optimizer", "kb_optimizer"])
def test_weight_constraints_apply_after_every_update_as_in_keras(regression, optimizer):
    x, y = regression
    keras_model, bridge_model = twin_models(_constrained)
    keras_model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    expected = keras_model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    module = kb.KerasModule(bridge_model)
    module.compile(
        optimizer=keras.optimizers.SGD(0.05) if optimizer == "keras" else kb.optimizers.SGD(0.05), loss="mse"
    )
    got = module.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert_history_close(expected, got, rtol=1e-5)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    kernel, bias = bridge_model.layers[-1].get_weights()
    assert kernel.min() >= 0.0 and np.linalg.norm(bias) <= 0.1 + 1e-6


class CountingLayer(keras.layers.Layer):
    """Counts its calls in a non-trainable variable, as a user's stateful layer might."""

    def build(self, input_shape):
        self.counter = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        self.counter.assign_add(1.0)
        return x


def test_the_build_runs_nothing_the_model_observes(regression):
    x, y = regression

    def build():
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(2)(CountingLayer()(inputs)))

    keras_model, bridge_model = twin_models(build)
    keras_model.compile(optimizer="sgd", loss="mse")
    keras_model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    module = kb.KerasModule(bridge_model)
    module.compile(optimizer="sgd", loss="mse")
    module.fit(x, y, batch_size=16, epochs=2, verbose=0)
    calls = [float(m.layers[1].counter.numpy()) for m in (keras_model, bridge_model)]
    assert calls == [6.0, 6.0]  # 2 epochs x 3 batches, no extra call


def test_a_model_without_trainable_weights_fits_and_evaluates_as_in_keras(regression):
    x, _ = regression
    y = np.tanh(x[:, :2])

    def build():
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Activation("tanh")(keras.layers.Lambda(lambda t: t[:, :2])(inputs)))

    keras_model, bridge_model = twin_models(build)
    keras_model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        expected = keras_model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    module = kb.KerasModule(bridge_model)
    module.compile(optimizer="adam", loss="mse", metrics=["mae"])
    with pytest.warns(UserWarning, match="does not have any trainable weights"):
        got = module.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert_history_close(expected, got, rtol=1e-6)
    assert int(bridge_model.optimizer.iterations.numpy()) == int(keras_model.optimizer.iterations.numpy()) == 0
    np.testing.assert_allclose(module.evaluate(x, y, verbose=0), keras_model.evaluate(x, y, verbose=0), rtol=1e-6)
