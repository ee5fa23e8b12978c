"""The guide's sections 3.10-3.11 run unchanged on the bridge (digits instead of MNIST, model = KerasModule)."""

import os

import keras
import numpy as np
import pytest
import torch
from keras import layers

import keras_bridge as kb


def get_uncompiled_model():
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def get_compiled_model():
    model = kb.KerasModule(get_uncompiled_model())
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


@pytest.fixture(autouse=True)
def one_torch_thread():
    """A 64-unit MLP gains nothing from intra-op threads, and loses a lot when the two cores are shared."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def digits(digits_data):
    keras.utils.set_random_seed(0)
    return digits_data


def test_early_stopping_stops_where_keras_rule_says(digits, capsys):
    x_train, y_train = digits
    model = get_compiled_model()
    callbacks = [
        keras.callbacks.EarlyStopping(
            # Stop training when `val_loss` is no longer improving
            monitor="val_loss",
            # "no longer improving" being defined as "no better than 1e-2 less"
            min_delta=1e-2,
            # "no longer improving" being further defined as "for at least 2 epochs"
            patience=2,
            verbose=1,
        )
    ]
    history = model.fit(
        x_train, y_train, epochs=20, batch_size=64, callbacks=callbacks, validation_split=0.2, verbose=0
    )
    # Keras's own EarlyStopping, replayed on the History, stops at the same epoch
    referee = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-2, patience=2, mode="min")
    referee.set_model(keras.Sequential())
    referee.model.stop_training = False
    referee.on_train_begin()
    for epoch, value in enumerate(history.history["val_loss"]):
        referee.on_epoch_end(epoch, {"val_loss": value})
        if referee.model.stop_training:
            break
    assert history.epoch[-1] == epoch and len(history.epoch) < 20
    assert callbacks[0].stopped_epoch == referee.stopped_epoch == epoch
    assert f"Epoch {epoch + 1}: early stopping" in capsys.readouterr().out


def test_checkpoint_best_models_by_epoch(digits, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    x_train, y_train = digits
    model = get_compiled_model()
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            # Path where to save the model
            # The two parameters below mean that we will overwrite
            # the current checkpoint if and only if
            # the `val_loss` score has improved.
            # The saved model name will include the current epoch.
            filepath="mymodel_{epoch}.keras",
            save_best_only=True,  # Only save a model if `val_loss` has improved.
            monitor="val_loss",
            verbose=1,
        )
    ]
    model.fit(x_train, y_train, epochs=2, batch_size=64, callbacks=callbacks, validation_split=0.2, verbose=0)
    assert sorted(os.listdir()) == ["mymodel_1.keras", "mymodel_2.keras"]
    out = capsys.readouterr().out
    assert "Epoch 1: val_loss improved from None to" in out and "saving model to mymodel_2.keras" in out
    restored = keras.models.load_model("mymodel_2.keras")  # a Keras model, loadable by Keras itself
    np.testing.assert_allclose(
        restored.predict(x_train[:5], verbose=0), model.predict(x_train[:5], verbose=0), rtol=1e-5
    )


class LossHistory(keras.callbacks.Callback):
    def on_train_begin(self, logs):
        self.per_batch_losses = []

    def on_batch_end(self, batch, logs):
        self.per_batch_losses.append(logs.get("loss"))


class SaveLogs(keras.callbacks.Callback):
    """The batch logs ModelCheckpoint formats its file name with, at every 100th batch."""

    def on_train_begin(self, logs=None):
        self.count, self.names = 0, []

    def on_train_batch_end(self, batch, logs=None):
        self.count += 1
        if self.count % 100 == 0:
            self.names.append("model-loss={loss:.2f}.keras".format(**logs))


def test_fault_tolerance_checkpoints_and_restore_newest(digits, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x_train, y_train = digits
    # Prepare a directory to store all the checkpoints.
    checkpoint_dir = "./ckpt"
    if not os.path.exists(checkpoint_dir):
        os.makedirs(checkpoint_dir)

    def make_or_restore_model():
        # Either restore the latest model, or create a fresh one
        # if there is no checkpoint available.
        checkpoints = [checkpoint_dir + "/" + name for name in os.listdir(checkpoint_dir)]
        if checkpoints:
            latest_checkpoint = max(checkpoints, key=os.path.getctime)
            print("Restoring from", latest_checkpoint)
            return kb.load_model(latest_checkpoint)  # keras.models.load_model, for a KerasModule
        print("Creating a new model")
        return get_compiled_model()

    model = make_or_restore_model()
    loss_history, names = LossHistory(), SaveLogs()
    callbacks = [
        # This callback saves the model every 100 batches.
        # We include the training loss in the saved model name.
        keras.callbacks.ModelCheckpoint(filepath=checkpoint_dir + "/model-loss={loss:.2f}.keras", save_freq=100),
        loss_history,
        names,
    ]
    model.fit(x_train, y_train, epochs=4, callbacks=callbacks, verbose=0)
    batches = 4 * int(np.ceil(len(x_train) / 32))
    assert len(loss_history.per_batch_losses) == batches
    assert all(isinstance(v, float) for v in loss_history.per_batch_losses)
    assert len(names.names) == batches // 100
    assert sorted(os.listdir(checkpoint_dir)) == sorted(set(names.names))
    for name in os.listdir(checkpoint_dir):
        os.utime(os.path.join(checkpoint_dir, name))  # make getctime order the files as written
    restored = make_or_restore_model()
    assert isinstance(restored, kb.KerasModule) and restored.compiled
    assert restored.evaluate(x_train, y_train, verbose=0)[0] < 1.0
    restored.fit(x_train, y_train, epochs=1, verbose=0)


def test_learning_rate_schedules_and_plateau(digits):
    x_train, y_train = digits
    initial_learning_rate = 0.1
    lr_schedule = keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate, decay_steps=100000, decay_rate=0.96, staircase=True
    )
    optimizer = keras.optimizers.RMSprop(learning_rate=lr_schedule)
    model = kb.KerasModule(get_uncompiled_model())
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    model = get_compiled_model()
    history = model.fit(
        x_train,
        y_train,
        epochs=3,
        batch_size=64,
        validation_split=0.2,
        verbose=0,
        callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=10)],
    )
    assert history.history["learning_rate"] == pytest.approx([1e-3, 1e-3, 5e-4])
