"""A pickled ``KerasModule`` (what ``ddp_spawn`` / ``ddp_notebook`` send to their processes) trains on as the original.

Keras keeps one optimizer per compile, so a second ``fit()`` continues the first one's momentum, step count and
schedule position; a copy made by pickle must continue them too, and Keras callbacks must reach the optimizer the
copy steps. Each case fits once, pickles, then fits the original and the copy alike: History and weights are equal.
"""

import io
import pickle
from multiprocessing.reduction import ForkingPickler

import keras
import numpy as np
import pytest
import torch
import torch.multiprocessing  # noqa: F401  (registers torch's reductions with ForkingPickler)
from helpers import seeded_mlp

import keras_bridge as kb

OPTIMIZERS = {
    "keras_adam": lambda: keras.optimizers.Adam(0.01),
    "keras_schedule": lambda: keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(0.1, 2, 0.5)),
    "bridge_adam": lambda: "adam",
    "torch_sgd_momentum": lambda: kb.optimizers.from_torch(torch.optim.SGD, learning_rate=0.1, momentum=0.9),
}


def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(96, 5)).astype("float32"), rng.integers(0, 3, 96)


def trained(kind, optimizer):
    module = kb.KerasModule(seeded_mlp(kind, 8))
    module.compile(optimizer=OPTIMIZERS[optimizer](), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    module.fit(*data(), batch_size=32, epochs=1, shuffle=False, verbose=0)
    return module


def fit_again(module, **kwargs):
    history = module.fit(*data(), batch_size=32, epochs=2, shuffle=False, verbose=0, **kwargs).history
    weights = [p.detach().clone() for p in module.parameters()]
    return history, weights


@pytest.mark.parametrize(
    "kind, optimizer",
    [("keras", "keras_adam"), ("keras", "keras_schedule"), ("keras", "torch_sgd_momentum"), ("torch", "bridge_adam"),
     ("torch", "keras_schedule"), ("torch", "torch_sgd_momentum")],
)  # fmt: skip
def test_a_pickled_module_continues_the_optimizer_of_its_last_fit(kind, optimizer):
    original = trained(kind, optimizer)
    copy = pickle.loads(pickle.dumps(original))
    history, weights = fit_again(original)
    copy_history, copy_weights = fit_again(copy)
    assert copy_history == history
    assert len(copy_weights) == len(weights)
    for a, b in zip(weights, copy_weights):
        assert torch.equal(a, b)


def test_a_pickled_module_that_never_trained_pickles_no_optimizer_state():
    module = kb.KerasModule(seeded_mlp("keras", 8))
    module.compile(optimizer="adam", loss="mse")
    assert pickle.loads(pickle.dumps(module)).optimizer_cache.restored_state is None


def test_callbacks_of_a_pickled_keras_model_reach_the_optimizer_it_steps():
    original = trained("keras", "keras_adam")
    copy = pickle.loads(pickle.dumps(original))
    assert copy.model.optimizer is copy.optimizer_spec.keras_optimizer
    halve = lambda: keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5)  # noqa: E731
    history, weights = fit_again(original, callbacks=[halve()])
    copy_history, copy_weights = fit_again(copy, callbacks=[halve()])
    assert copy_history == history
    assert history["learning_rate"] == pytest.approx([0.005, 0.0025])
    for a, b in zip(weights, copy_weights):
        assert torch.equal(a, b)


@pytest.mark.parametrize("kind, optimizer", [("keras", "keras_adam"), ("torch", "torch_sgd_momentum")])
def test_a_trained_module_pickles_as_a_spawning_launcher_sends_it(kind, optimizer):
    # multiprocessing's pickler refuses a tensor with an autograd graph (the last batch's losses, once kept).
    original = trained(kind, optimizer)
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump(original)
    # Its tensors come back sharing memory with the original's (a launched process clones them): copied again here.
    copy = pickle.loads(pickle.dumps(pickle.loads(buffer.getvalue())))
    history, weights = fit_again(original)
    copy_history, copy_weights = fit_again(copy)
    assert copy_history == history
    for a, b in zip(weights, copy_weights):
        assert torch.equal(a, b)


class TaggedSGD(torch.optim.SGD):
    """A custom optimizer whose param groups hold a value a state file cannot store (a set)."""

    def __init__(self, params, lr=0.1):
        super().__init__(params, lr=lr)
        for group in self.param_groups:
            group["tags"] = {"custom"}


def test_an_optimizer_state_that_cannot_travel_is_said_and_the_copy_starts_it_afresh():
    module = kb.KerasModule(seeded_mlp("torch", 8))
    module.compile(optimizer=kb.optimizers.from_torch(TaggedSGD, learning_rate=0.1), loss="mse")
    x, y = data()
    module.fit(x, np.eye(3, dtype="float32")[y], batch_size=32, epochs=1, verbose=0)
    with pytest.warns(UserWarning, match="cannot travel with the pickled KerasModule"):
        copy = pickle.loads(pickle.dumps(module))
    assert copy.optimizer_cache.restored_state is None
    history = copy.fit(x, np.eye(3, dtype="float32")[y], batch_size=32, epochs=1, verbose=0).history
    assert np.isfinite(history["loss"][0])
