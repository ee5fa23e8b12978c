"""The History of a fit that never imports keras records what Keras's ``keras.callbacks.History`` records."""

import keras
import pytest

from keras_bridge.callbacks.history import History, new_history


class Holder:
    history = None


def _drive(history):
    model = Holder()
    history.set_model(model)
    history.set_params({"verbose": 0, "epochs": 3, "steps": 2})
    history.on_train_begin()
    for epoch, logs in enumerate([{"loss": 1.0, "acc": 0.5}, {"loss": 0.5, "acc": 0.75, "val_loss": 0.4}]):
        history.on_epoch_begin(epoch)
        history.on_train_batch_end(0, {"loss": 9.0})
        history.on_epoch_end(epoch, logs)
    history.on_train_end()
    return model, history


def test_records_as_keras_history():
    model, ours = _drive(History())
    keras_model, theirs = _drive(keras.callbacks.History())
    assert (ours.history, ours.epoch, ours.params) == (theirs.history, theirs.epoch, theirs.params)
    assert model.history is ours and keras_model.history is theirs


@pytest.mark.parametrize("hook", sorted(n for n in dir(keras.callbacks.Callback) if n.startswith("on_")))
def test_has_every_keras_hook(hook):
    assert callable(getattr(History(), hook))


def test_keras_loaded_gives_keras_class():
    assert isinstance(new_history(), keras.callbacks.History)  # this test process has keras loaded
