"""compile() with Keras's contract: re-compiling keeps what Keras keeps; Keras's execution options keep their meaning.

Re-compile sequences run on Keras itself and on the bridge from the same initial weights, and compare every
fit's History and the final weights (rtol 1e-5).
"""

import keras
import numpy as np
import pytest
import torch

import keras_bridge as kb
from keras_bridge.compile.keras_compile import bind_compile_arguments, check_keras_options

RTOL = 1e-5


def regularized_model():
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(4, activation="relu", kernel_regularizer=keras.regularizers.l2(0.05))(inputs)
    return keras.Model(inputs, keras.layers.Dense(1)(hidden))


def data():
    rng = np.random.default_rng(0)
    x = rng.random((48, 5)).astype("float32")
    return x, (x.sum(axis=1, keepdims=True) * 0.3).astype("float32")


SEQUENCES = {
    # The second compile gives no loss: Keras keeps MSE (plus the regularization loss).
    "loss-kept": [dict(optimizer="adam", loss="mse"), dict(optimizer="adam")],
    # The second compile gives a loss but no metrics: Keras keeps the compiled metrics.
    "metrics-kept": [dict(optimizer="adam", loss="mse", metrics=["mae"]), dict(optimizer="sgd", loss="mae")],
    # New metrics replace the old ones; the loss is kept.
    "metrics-replaced": [dict(optimizer="adam", loss="mse", metrics=["mae"]), dict(optimizer="adam", metrics=["mse"])],
}


@pytest.mark.parametrize("sequence", SEQUENCES.values(), ids=SEQUENCES.keys())
def test_recompile_keeps_what_keras_keeps(sequence):
    x, y = data()
    keras.utils.set_random_seed(5)
    keras_model = regularized_model()
    bridge_model = regularized_model()
    bridge_model.set_weights(keras_model.get_weights())
    module = kb.KerasModule(bridge_model)
    for arguments in sequence:
        keras_model.compile(**arguments)
        module.compile(**arguments)
        expected = keras_model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
        got = module.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
        assert list(got) == list(expected)
        for key, values in expected.items():
            np.testing.assert_allclose(got[key], values, rtol=RTOL, err_msg=key)
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-7)


def test_run_eagerly_captures_nothing():
    module = kb.KerasModule(regularized_model())
    module.compile(optimizer="sgd", loss="mse", run_eagerly=True)
    module.fit(*data(), epochs=1, verbose=0)
    assert module.captured_forward is None
    assert module.model.run_eagerly is True


def test_run_eagerly_turns_jit_compile_off_with_keras_warning():
    with pytest.warns(UserWarning, match="If `run_eagerly` is True, then `jit_compile` cannot also be True"):
        assert check_keras_options(True, 1, True, True) is False


@pytest.mark.parametrize("model", ["keras", "torch"])
def test_steps_per_execution_above_one_is_refused_with_keras_message(model):
    net = regularized_model() if model == "keras" else torch.nn.Linear(5, 1)
    module = kb.KerasModule(net)
    with pytest.raises(ValueError, match=r"`steps_per_execution` must be 1 with the PyTorch backend. Received: "
                                         r"steps_per_execution=4"):  # fmt: skip
        module.compile(optimizer="sgd", loss="mse", steps_per_execution=4)


def test_keras_options_accepted_positionally_as_in_keras():
    bound = bind_compile_arguments(("sgd", "mse", None, ["mae"], None, False, 1, False, True), {})
    assert bound["metrics"] == ["mae"] and bound["jit_compile"] is False
    with pytest.raises(TypeError, match="unexpected keyword argument 'loss_fn'"):
        bind_compile_arguments((), {"loss_fn": "mse"})
    with pytest.raises(TypeError, match="multiple values for argument 'optimizer'"):
        bind_compile_arguments(("sgd",), {"optimizer": "adam"})


@pytest.mark.parametrize("value", ["yes", 0.5, -1])
def test_bad_keras_options_name_the_argument(value):
    with pytest.raises(ValueError, match="Received: (run_eagerly|steps_per_execution)="):
        check_keras_options(value if isinstance(value, str) else False, 1 if isinstance(value, str) else value,
                            "auto", True)  # fmt: skip


def test_own_compile_model_refuses_bridge_arguments_in_keras_words():
    """A model with its own compile signature gets what the user wrote: Python's TypeError says what is wrong."""

    class OwnCompile(keras.Model):
        def compile(self, d_optimizer, loss_fn):
            super().compile(optimizer=d_optimizer)
            self.loss_fn = loss_fn

    inputs = keras.Input((5,))
    module = kb.KerasModule(OwnCompile(inputs, keras.layers.Dense(1)(inputs)))
    with pytest.raises(TypeError, match="unexpected keyword argument .optimizer."):
        module.compile(optimizer="adam", loss="mse")


def test_jit_compile_true_on_a_torch_module_is_refused():
    module = kb.KerasModule(torch.nn.Linear(5, 1))
    with pytest.raises(ValueError, match=r"torch.compile\(module.model\).*Received: jit_compile=True"):
        module.compile(optimizer="sgd", loss="mse", jit_compile=True)
