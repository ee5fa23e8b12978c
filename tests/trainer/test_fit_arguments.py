"""Keras 3.15's fit / evaluate / predict arguments and the *_on_batch methods, against Keras itself.

Twin Keras models (same initial weights) go once through ``keras.Model`` and once through the bridge;
History (keys and order), results and final weights are compared (rtol 1e-5).
"""

import keras
import numpy as np
import pytest
import torch
from _keras_step_models import GuideModel, dense, regression_data

import keras_bridge as kb

RTOL = 1e-5


def plain_model():
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(4, activation="relu")(inputs)))


def twins(build=plain_model):
    keras.utils.set_random_seed(11)
    a, b = build(), build()
    b.set_weights(a.get_weights())
    return a, b


def assert_close(expected, got):
    if isinstance(expected, dict):
        assert list(got) == list(expected)
        for key in expected:
            np.testing.assert_allclose(got[key], expected[key], rtol=RTOL, err_msg=key)
    else:
        np.testing.assert_allclose(got, expected, rtol=RTOL)


def loader(x, y, batch_size=8):
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                       batch_size=batch_size)  # fmt: skip


VALIDATION = {
    "arrays": lambda x, y: dict(validation_data=(x[:40], y[:40]), validation_steps=2),
    "arrays-default-batch": lambda x, y: dict(validation_data=(x[:40], y[:40]), validation_steps=3, batch_size=None),
    "split-validation-batch-size": lambda x, y: dict(
        validation_split=0.25, validation_batch_size=5, validation_steps=2
    ),  # fmt: skip
    "dataloader": lambda x, y: dict(validation_data=loader(x[:40], y[:40]), validation_steps=2),
}


@pytest.mark.parametrize("make_args", VALIDATION.values(), ids=VALIDATION.keys())
@pytest.mark.parametrize("model_kind", ["compiled-by-bridge", "own-steps"])
def test_validation_steps_and_batch_size(make_args, model_kind):
    x, y = regression_data()
    arguments = dict(x=x, y=y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    arguments.update(make_args(x, y))
    build = plain_model if model_kind == "compiled-by-bridge" else (lambda: dense(GuideModel))
    keras_model, bridge_model = twins(build)
    compile_args = dict(optimizer="adam", loss="mse", metrics=["mae"])
    keras_model.compile(**compile_args)
    module = kb.KerasModule(bridge_model)
    module.compile(**compile_args)
    expected = keras_model.fit(**arguments).history
    got = module.fit(**arguments).history
    assert "val_loss" in expected
    assert_close(expected, got)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-7)
    if model_kind == "own-steps":
        assert bridge_model.calls == keras_model.calls


@pytest.mark.parametrize("steps", [None, 2])
def test_evaluate_and_predict_steps_and_return_dict(steps):
    x, y = regression_data()
    keras_model, bridge_model = twins()
    keras_model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    module = kb.KerasModule(bridge_model)
    module.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    for return_dict in (False, True):
        assert_close(keras_model.evaluate(x, y, steps=steps, return_dict=return_dict, verbose=0),
                     module.evaluate(x, y, steps=steps, return_dict=return_dict, verbose=0))  # fmt: skip
    expected = keras_model.predict(x, steps=steps, verbose=0)
    got = module.predict(x, steps=steps, verbose=0)
    assert got.shape == expected.shape
    assert_close(expected, got)


def test_on_batch_methods_return_what_keras_returns():
    x, y = regression_data(n=16)
    keras_model, bridge_model = twins()
    keras_model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    module = kb.KerasModule(bridge_model)
    module.compile(optimizer="adam", loss="mse", metrics=["mae"])
    sample_weight = np.linspace(0.5, 1.5, 16).astype("float32")
    for return_dict in (False, True):
        assert_close(keras_model.train_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict),
                     module.train_on_batch(x, y, sample_weight=sample_weight, return_dict=return_dict))  # fmt: skip
        assert_close(keras_model.test_on_batch(x, y, return_dict=return_dict),
                     module.test_on_batch(x, y, return_dict=return_dict))  # fmt: skip
    assert_close(keras_model.predict_on_batch(x), module.predict_on_batch(x))
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-7)


def test_on_batch_methods_on_a_torch_module():
    """A torch module: one bridge step; the logs equal a one-batch fit's and evaluate's."""
    x, y = regression_data(n=16)
    torch.manual_seed(0)
    net = torch.nn.Linear(8, 1)
    twin = torch.nn.Linear(8, 1)
    twin.load_state_dict(net.state_dict())
    module, reference = kb.KerasModule(net), kb.KerasModule(twin)
    for m in (module, reference):
        m.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    logs = module.train_on_batch(x, y, return_dict=True)
    expected = reference.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0).history
    assert_close({k: v[0] for k, v in expected.items()}, logs)
    assert module.history is None  # History is fit's alone, as in Keras
    assert module.train_on_batch(x, y) == pytest.approx(list(reference.train_on_batch(x, y)), rel=RTOL)
    assert_close(reference.evaluate(x, y, batch_size=16, verbose=0), module.test_on_batch(x, y))
    assert_close(reference.predict(x, verbose=0), module.predict_on_batch(x))


@pytest.mark.parametrize("name", ["validation_steps", "validation_batch_size"])
def test_bad_validation_arguments_name_the_argument(name):
    module = kb.KerasModule(torch.nn.Linear(8, 1))
    module.compile(optimizer="sgd", loss="mse")
    x, y = regression_data()
    with pytest.raises(ValueError, match=f"Received: {name}=0"):
        module.fit(x, y, validation_split=0.25, verbose=0, **{name: 0})
