"""NaN during training: TerminateOnNaN stops at the bad batch, History is Keras's, no good checkpoint is replaced.

The same Keras model (same initial weights) is trained by Keras and by the bridge; a callback blows the
weights up after batch 1 of epoch 2, so batch 2 has an infinite loss.
"""

import keras
import numpy as np
import pytest
from helpers import twin_models

import keras_bridge as kb


def build():
    inputs = keras.Input((4,))
    return keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(8, activation="tanh")(inputs)))


class Poison(keras.callbacks.Callback):
    """Counts the batches trained; multiplies the last kernel by 1e30 after batch 1 of epoch 1 (0-based)."""

    def __init__(self):
        super().__init__()
        self.epoch, self.batches = None, []

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append((self.epoch, batch))
        if (self.epoch, batch) == (1, 1):
            kernel = self.model.layers[-1].kernel
            kernel.assign(kernel * 1e30)


def run(fit, model, folder):
    poison = Poison()
    best = keras.callbacks.ModelCheckpoint(str(folder / "best.keras"), monitor="loss", save_best_only=True)
    every = keras.callbacks.ModelCheckpoint(str(folder / "every_epoch.weights.h5"), save_weights_only=True)
    history = fit(model, [poison, keras.callbacks.TerminateOnNaN(), best, every])
    return history, poison


def finite_weights_of(path, model):
    model.load_weights(str(path))
    return all(np.isfinite(w).all() for w in model.get_weights())


def test_terminate_on_nan_stops_at_the_bad_batch_and_keeps_the_good_checkpoints(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(48, 4)).astype("float32"), rng.normal(size=(48, 1)).astype("float32")
    k_model, b_model = twin_models(build)
    k_model.compile(optimizer="sgd", loss="mse")
    module = kb.KerasModule(b_model)
    module.compile(optimizer="sgd", loss="mse")
    (tmp_path / "keras").mkdir()
    (tmp_path / "bridge").mkdir()
    fit_args = dict(batch_size=8, epochs=4, shuffle=False, verbose=0)
    keras_fit = lambda m, cbs: m.fit(x, y, callbacks=cbs, **fit_args)  # noqa: E731
    keras_history, keras_poison = run(keras_fit, k_model, tmp_path / "keras")
    with pytest.warns(UserWarning, match="Not writing .*every_epoch.weights.h5.*NaN or infinite loss"):
        history, poison = run(lambda m, cbs: module.fit(x, y, callbacks=cbs, **fit_args), module, tmp_path / "bridge")
    # Stopped at the bad batch, exactly where Keras stops; History as Keras leaves it.
    assert poison.batches == keras_poison.batches == [(0, b) for b in range(6)] + [(1, 0), (1, 1), (1, 2)]
    assert history.epoch == keras_history.epoch == [0, 1]
    assert list(history.history) == list(keras_history.history) == ["loss"]
    np.testing.assert_allclose(history.history["loss"], keras_history.history["loss"], rtol=1e-5)
    assert not np.isfinite(history.history["loss"][1])
    # Keras's per-epoch checkpoint is overwritten with the broken weights; the bridge keeps epoch 1's.
    assert not finite_weights_of(tmp_path / "keras" / "every_epoch.weights.h5", build())
    assert finite_weights_of(tmp_path / "bridge" / "every_epoch.weights.h5", build())
    # save_best_only never takes the NaN epoch, in both.
    for side in ("keras", "bridge"):
        restored = keras.models.load_model(str(tmp_path / side / "best.keras"))
        assert all(np.isfinite(w).all() for w in restored.get_weights())
    # Saving works again once the fit is over.
    module.save_weights(str(tmp_path / "after.weights.h5"))
    assert (tmp_path / "after.weights.h5").exists()
