"""A Keras model's own train_step / test_step / predict_step and compile, on the bridge == on Keras itself.

Every case trains twin models (same initial weights, data and seeds) once with ``keras.Model.fit`` and
once with ``kb.KerasModule(model).fit``, and compares History (keys and order), ``evaluate``,
``predict``, the final weights (rtol 1e-5) and how many times each overridden method ran.
"""

import re

import keras
import lightning as L
import numpy as np
import pytest
import torch
from _keras_step_models import GuideModel, LowLevelModel, OwnCompileModel, dense, make_gan, regression_data

import keras_bridge as kb

RTOL = 1e-5


def twins(build, compile_model):
    """Two models with the same initial weights, each compiled by `compile_model(model)` (Keras's own compile)."""
    keras.utils.set_random_seed(7)
    a = build()
    b = build()
    b.set_weights(a.get_weights())
    compile_model(a)
    compile_model(b)
    return a, b


def run(target, fit_args, evaluate_args=None, predict_x=None):
    history = target.fit(**fit_args, verbose=0)
    out = {"history": history.history, "epoch": history.epoch}
    if evaluate_args is not None:
        out["evaluate"] = target.evaluate(**evaluate_args, verbose=0)
        out["evaluate_dict"] = target.evaluate(**evaluate_args, verbose=0, return_dict=True)
    if predict_x is not None:
        out["predict"] = target.predict(predict_x, verbose=0)
    return out


def assert_same(keras_out, bridge_out, keras_model, bridge_model):
    assert list(bridge_out["history"]) == list(keras_out["history"])
    assert bridge_out["epoch"] == keras_out["epoch"]
    for key, values in keras_out["history"].items():
        np.testing.assert_allclose(bridge_out["history"][key], values, rtol=RTOL, err_msg=key)
    for key in ("evaluate", "predict"):
        if key in keras_out:
            np.testing.assert_allclose(bridge_out[key], keras_out[key], rtol=RTOL, err_msg=key)
    if "evaluate_dict" in keras_out:
        assert list(bridge_out["evaluate_dict"]) == list(keras_out["evaluate_dict"])
    for a, b in zip(keras_model.get_weights(), bridge_model.get_weights()):
        np.testing.assert_allclose(b, a, rtol=RTOL, atol=1e-7)
    assert bridge_model.calls == keras_model.calls


def compile_guide(model):
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])


def compile_low_level(model):
    model.compile(optimizer="adam")


def compile_own(model):
    model.compile(keras.optimizers.SGD(0.05), keras.losses.MeanSquaredError(), [keras.metrics.MeanAbsoluteError()])


@pytest.mark.parametrize(
    "cls, compile_model, validate",
    [
        (GuideModel, compile_guide, True),
        (LowLevelModel, compile_low_level, False),
        (OwnCompileModel, compile_own, True),
    ],
    ids=["guide-train-test-step", "low-level-metrics-property", "own-compile-signature"],
)
def test_compiled_by_keras_trains_as_keras(cls, compile_model, validate):
    """Compiled by Keras, then `kb.KerasModule(model).fit(...)` with no second compile."""
    x, y = regression_data()
    keras_model, bridge_model = twins(lambda: dense(cls), compile_model)
    fit_args = dict(x=x, y=y, batch_size=16, epochs=2, shuffle=False)
    evaluate_args = None
    if validate:  # the low-level model has no loss for Keras's default test_step: Keras fits it only
        fit_args["validation_split"] = 0.25
        evaluate_args = dict(x=x, y=y, batch_size=32)
    keras_out = run(keras_model, fit_args, evaluate_args, x[:10])
    bridge_out = run(kb.KerasModule(bridge_model), fit_args, evaluate_args, x[:10])
    assert_same(keras_out, bridge_out, keras_model, bridge_model)
    assert keras_model.calls["train_step"] == (10 if validate else 12)


def test_module_compile_passes_arguments_as_written():
    """`module.compile(...)` hands positional and keyword arguments to the model's own compile."""
    x, y = regression_data()
    keras.utils.set_random_seed(7)
    keras_model, bridge_model = dense(OwnCompileModel), dense(OwnCompileModel)
    bridge_model.set_weights(keras_model.get_weights())
    compile_own(keras_model)
    module = kb.KerasModule(bridge_model)
    module.compile(keras.optimizers.SGD(0.05), loss_fn=keras.losses.MeanSquaredError(),
                   metrics=[keras.metrics.MeanAbsoluteError()])  # fmt: skip
    fit_args = dict(x=x, y=y, batch_size=16, epochs=2, shuffle=False, validation_data=(x[:32], y[:32]))
    assert_same(run(keras_model, fit_args, dict(x=x, y=y), x[:5]), run(module, fit_args, dict(x=x, y=y), x[:5]),
                keras_model, bridge_model)  # fmt: skip


def test_two_optimizer_gan_on_a_tuple_dataset():
    images = np.random.default_rng(1).uniform(-1, 1, size=(40, 6)).astype("float32")

    def data():
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(images)), batch_size=8)

    def build_compiled():
        gan = make_gan()
        gan.compile(keras.optimizers.Adam(3e-3), keras.optimizers.Adam(3e-3), keras.losses.BinaryCrossentropy(True))
        return gan

    keras.utils.set_random_seed(3)
    keras_gan = build_compiled()
    bridge_gan = build_compiled()
    bridge_gan.set_weights(keras_gan.get_weights())
    bridge_gan.seed_generator.state.assign(keras_gan.seed_generator.state.value)
    keras_out = run(keras_gan, dict(x=data(), epochs=2))
    bridge_out = run(kb.KerasModule(bridge_gan), dict(x=data(), epochs=2))
    assert list(keras_out["history"]) == ["d_loss", "g_loss"]
    assert keras_gan.calls["train_step"] == 10
    assert_same(keras_out, bridge_out, keras_gan, bridge_gan)
    for a, b in zip(keras_gan.d_optimizer.variables, bridge_gan.d_optimizer.variables):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=RTOL, atol=1e-7)


class TorchNetModel(keras.Model):
    """The documented door for a torch module: wrapped in a Keras model whose class defines Keras's train_step."""

    def __init__(self, net):
        super().__init__()
        self.net = keras.layers.TorchModuleWrapper(net)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.steps_run = 0

    @property
    def metrics(self):
        return [self.loss_tracker]

    def call(self, x):
        return self.net(x)

    def train_step(self, data):
        self.steps_run += 1
        x, y = data
        self.zero_grad()
        loss = self.compute_loss(y=y, y_pred=self(x, training=True))
        loss.backward()
        with torch.no_grad():
            self.optimizer.apply([v.value.grad for v in self.trainable_weights], self.trainable_weights)
        self.loss_tracker.update_state(loss)
        return {"loss": self.loss_tracker.result()}


def test_torch_module_gets_a_custom_step_through_a_keras_model():
    x, y = regression_data()

    def build():
        torch.manual_seed(0)
        model = TorchNetModel(torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)))
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        return model

    keras_model, bridge_model = build(), build()
    fit_args = dict(x=x, y=y, batch_size=16, epochs=2, shuffle=False)
    keras_out = run(keras_model, fit_args, predict_x=x[:5])
    bridge_out = run(kb.KerasModule(bridge_model), fit_args, predict_x=x[:5])
    assert list(bridge_out["history"]) == list(keras_out["history"]) == ["loss"]
    np.testing.assert_allclose(bridge_out["history"]["loss"], keras_out["history"]["loss"], rtol=RTOL)
    np.testing.assert_allclose(bridge_out["predict"], keras_out["predict"], rtol=RTOL)
    assert bridge_model.steps_run == keras_model.steps_run == 12


def test_saving_a_model_with_its_own_steps(tmp_path):
    """Keras's own file holds it (weights and optimizer state); a Lightning checkpoint, which could not, is refused."""
    x, y = regression_data()
    model = dense(GuideModel)
    compile_guide(model)
    module = kb.KerasModule(model)
    module.fit(x, y, epochs=1, verbose=0, callbacks=[keras.callbacks.ModelCheckpoint(str(tmp_path / "m.keras"))])
    loaded = keras.models.load_model(tmp_path / "m.keras", custom_objects={"GuideModel": GuideModel})
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy()) == 3
    with pytest.raises(ValueError, match="trains with its own steps and optimizers, which a Lightning checkpoint"):
        module.fit(x, y, epochs=1, verbose=0, callbacks=[kb.callbacks.ModelCheckpoint(str(tmp_path / "m.ckpt"))])


@pytest.mark.parametrize(
    "asks_for_a_ckpt, received",
    [
        (lambda tmp: {"callbacks": [kb.callbacks.ModelCheckpoint(str(tmp / "m.ckpt"))]}, "`ModelCheckpoint(filepath="),
        (
            lambda tmp: {"callbacks": [L.pytorch.callbacks.ModelCheckpoint(dirpath=str(tmp))]},
            "a Lightning `ModelCheckpoint`",
        ),
        (
            lambda tmp: {"trainer": {"enable_checkpointing": True, "default_root_dir": str(tmp)}},
            "the Trainer's Lightning",
        ),
    ],
    ids=["kb-ModelCheckpoint-ckpt", "lightning-ModelCheckpoint", "trainer-enable_checkpointing"],
)
def test_a_lightning_checkpoint_of_own_steps_is_refused_before_training(tmp_path, asks_for_a_ckpt, received):
    x, y = regression_data()
    model = dense(GuideModel)
    compile_guide(model)
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(ValueError, match=f"trains with its own steps.*Received: {re.escape(received)}"):
        kb.KerasModule(model).fit(x, y, epochs=1, verbose=0, **asks_for_a_ckpt(tmp_path))
    assert model.calls["train_step"] == 0  # refused before the first step
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert not list(tmp_path.rglob("*.ckpt"))
