"""Bad inputs fail before any weight changes, with a message that names the argument and the value."""

import numpy as np
import pytest
import torch

import keras
import keras_bridge as kb


class TwoHeads(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.body = torch.nn.Linear(4, 8)
        self.a = torch.nn.Linear(8, 1)
        self.b = torch.nn.Linear(8, 3)

    def forward(self, features, extra=None):
        h = torch.relu(self.body(features))
        return {"score": self.a(h), "cls": self.b(h)}


X = np.random.default_rng(0).normal(size=(20, 4)).astype("float32")
Y = {"score": np.zeros((20, 1), "float32"), "cls": np.zeros(20, "int64")}


def weights(module):
    return [p.detach().clone() for p in module.parameters()]


def compiled(**kwargs):
    module = kb.KerasModule(TwoHeads())
    module.compile(**{"optimizer": "sgd", "loss": {"score": "mse", "cls": "sparse_categorical_crossentropy"}, **kwargs})
    return module


CASES = [
    # (compile kwargs, fit kwargs, exception, fragments that must appear in the message)
    (dict(loss={"scroe": "mse"}), {}, ValueError, ["scroe", "loss", "score", "cls"]),
    (dict(metrics={"clss": ["acc"]}), {}, ValueError, ["clss", "metrics", "score"]),
    (dict(loss_weights={"bogus": 2.0}), {}, ValueError, ["bogus", "loss_weights"]),
    ({}, dict(y={"score": np.zeros((19, 1), "float32"), "cls": np.zeros(20, "int64")}), ValueError, ["19", "20"]),
    ({}, dict(sample_weight=np.ones(7)), ValueError, ["7", "20", "sample_weight"]),
    ({}, dict(validation_split=1.5), ValueError, ["validation_split", "1.5"]),
    ({}, dict(validation_split=-0.1), ValueError, ["validation_split", "-0.1"]),
    ({}, dict(batch_size=0), ValueError, ["batch_size", "0"]),
    ({}, dict(class_weight={0: 1.0, 1: 2.0}), ValueError, ["class_weight", "single output"]),
    ({}, dict(x={"featurez": X}), ValueError, ["featurez", "features"]),
]


@pytest.mark.parametrize("compile_kwargs, fit_kwargs, exc, fragments", CASES)
def test_bad_input_fails_before_training(compile_kwargs, fit_kwargs, exc, fragments):
    module = kb.KerasModule(TwoHeads())
    before = weights(module)
    with pytest.raises(exc) as info:
        module.compile(**{"optimizer": "sgd", "loss": {"score": "mse", "cls": "sparse_categorical_crossentropy"}, **compile_kwargs})
        module.fit(**{"x": X, "y": Y, "verbose": 0, **fit_kwargs})
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))
    for a, b in zip(before, weights(module)):
        assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs, fragments",
    [
        (dict(loss="mean_squared_errror"), ["loss", "mean_squared_errror", "Did you mean 'mean_squared_error'?"]),
        (dict(loss="mse", metrics=["acuracy"]), ["metrics", "acuracy", "Did you mean 'accuracy'?"]),
        (dict(loss="mse", optimizer="adamm"), ["optimizer", "adamm", "rmsprop", "Did you mean 'adam'?"]),
        (dict(loss="mse", metrics="mae"), ["metrics", "mae", "list"]),
    ],
)
def test_unknown_identifiers_fail_at_compile(kwargs, fragments):
    module = kb.KerasModule(torch.nn.Linear(4, 1))
    with pytest.raises((ValueError, TypeError)) as info:
        module.compile(**kwargs)
    for fragment in fragments:
        assert fragment in str(info.value)


def test_fit_before_compile():
    module = kb.KerasModule(torch.nn.Linear(4, 1))
    with pytest.raises(ValueError, match="compile"):
        module.fit(X, np.zeros((20, 1), "float32"), verbose=0)


def test_keras_list_output_model_rejects_unknown_loss_key_at_compile():
    inp = keras.Input((4,), name="x")
    model = keras.Model(inp, [keras.layers.Dense(1, name="a")(inp), keras.layers.Dense(1, name="b")(inp)])
    module = kb.KerasModule(model)
    with pytest.raises(ValueError, match=r"\['a', 'b'\]"):
        module.compile(loss={"c": "mse"})


def test_not_a_module():
    with pytest.raises(TypeError, match="model"):
        kb.KerasModule(lambda x: x)
