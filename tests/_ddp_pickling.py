"""Script for tests/test_ddp_pickling.py: every model kind x optimizer kind, fitted on 1 process and by a launcher
that pickles what it sends to its processes (``ddp_spawn``, ``ddp_notebook``).

Usage: python tests/_ddp_pickling.py OUT_JSON LAUNCHER

Writes ``{case: {"single": {...}, "launched": {...}}}`` with History and weights of each fit, and for the
``BETWEEN`` cases also ``between-{case}``: a fit on 1 process, one by the launcher, one on 1 process again, against
three on 1 process.
"""

import json
import sys

import numpy as np
import torch

import keras_bridge as kb  # isort: split

import keras


@keras.saving.register_keras_serializable(package="kb_tests")
class TwoDense(keras.Model):
    """A subclassed Keras model (Keras pickles it through its own saving format)."""

    def __init__(self, units=16, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.dense_hidden = keras.layers.Dense(units, activation="relu")
        self.dense_out = keras.layers.Dense(10, activation="softmax")

    def call(self, x):
        return self.dense_out(self.dense_hidden(x))

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def functional():
    inputs = keras.Input((64,))
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(hidden))


def subclassed():
    model = TwoDense()
    model(np.zeros((1, 64), "float32"))
    return model


def torch_module():
    return torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10), torch.nn.Softmax(-1))


MODELS = {"torch": torch_module, "functional": functional, "subclassed": subclassed}
OPTIMIZERS = {
    "keras_optimizer": lambda: keras.optimizers.Adam(0.01),
    "torch_optimizer": lambda: kb.optimizers.from_torch(torch.optim.SGD, learning_rate=0.1, momentum=0.9),
}


def weights(module):
    if module.is_keras:
        return [w.tolist() for w in module.model.get_weights()]
    return [p.detach().numpy().tolist() for p in module.model.parameters()]


def fit(model_kind, optimizer_kind, trainers):
    """One fit of 2 epochs per entry of ``trainers`` (None: this process), in turn on the same module."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x, y = (digits.data / 16.0).astype("float32")[:128], digits.target.astype("int64")[:128]
    keras.utils.set_random_seed(7)
    module = kb.KerasModule(MODELS[model_kind]())
    optimizer = OPTIMIZERS[optimizer_kind]()
    if model_kind == "torch" and optimizer_kind == "keras_optimizer":
        optimizer = "adam"  # a torch module takes Keras's optimizers by name (the bridge's own update)
    module.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = {}
    for trainer in trainers:
        fitted = module.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0, trainer=trainer).history
        for key, values in fitted.items():
            history.setdefault(key, []).extend(values)
    return {"history": history, "weights": weights(module)}


#: Cases also fitted between two fits on this process: the launcher's fit continues the optimizer of the first,
#: and the last continues the launcher's.
BETWEEN = ("functional-keras_optimizer", "torch-keras_optimizer")


def main(out, launcher):
    trainer = {"accelerator": "cpu", "devices": 2, "strategy": launcher}
    results = {}
    for model_kind in MODELS:
        for optimizer_kind in OPTIMIZERS:
            case = f"{model_kind}-{optimizer_kind}"
            results[case] = {"single": fit(model_kind, optimizer_kind, [None]),
                             "launched": fit(model_kind, optimizer_kind, [trainer])}  # fmt: skip
            if case in BETWEEN:
                results[f"between-{case}"] = {
                    "single": fit(model_kind, optimizer_kind, [None, None, None]),
                    "launched": fit(model_kind, optimizer_kind, [None, trainer, None]),
                }
    with open(out, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
