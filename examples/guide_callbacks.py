"""The Keras guide's sections 3.10 (callbacks) and 3.11 (learning-rate schedules) on the bridge.

The guide's code, with the model wrapped in ``kb.KerasModule`` and scikit-learn's digits instead of
MNIST (no download). Every file goes to a temporary folder that is removed at the end.
Run: python examples/guide_callbacks.py
"""

import os
import shutil
import tempfile

import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits

import keras_bridge as kb  # selects the torch backend for keras


def get_uncompiled_model() -> keras.Model:
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def get_compiled_model() -> kb.KerasModule:
    model = kb.KerasModule(get_uncompiled_model())
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


class LossHistory(keras.callbacks.Callback):
    def on_train_begin(self, logs):
        self.per_batch_losses = []

    def on_batch_end(self, batch, logs):
        self.per_batch_losses.append(logs.get("loss"))


def main() -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x_train, y_train = (digits.data / 16.0).astype("float32"), digits.target.astype("int64")

    print("== 3.10 EarlyStopping")
    model = get_compiled_model()
    callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=1e-2, patience=2, verbose=1)]
    model.fit(x_train, y_train, epochs=20, batch_size=64, callbacks=callbacks, validation_split=0.2)

    print("== 3.10 a custom callback")
    loss_history = LossHistory()
    model.fit(x_train, y_train, epochs=1, batch_size=64, callbacks=[loss_history], verbose=0)
    print("per-batch losses:", len(loss_history.per_batch_losses))

    print("== 3.10 ModelCheckpoint, TensorBoard, CSVLogger")
    workdir = tempfile.mkdtemp()
    model = get_compiled_model()
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            filepath=os.path.join(workdir, "mymodel_{epoch}.keras"), save_best_only=True, monitor="val_loss", verbose=1
        ),
        keras.callbacks.TensorBoard(log_dir=os.path.join(workdir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(workdir, "training.csv")),
    ]
    model.fit(x_train, y_train, epochs=2, batch_size=64, callbacks=callbacks, validation_split=0.2)
    print("written:", sorted(os.listdir(workdir)))

    print("== 3.10 fault tolerance: checkpoints every 100 batches, restore the newest")
    checkpoint_dir = os.path.join(workdir, "ckpt")
    if not os.path.exists(checkpoint_dir):
        os.makedirs(checkpoint_dir)

    def make_or_restore_model():
        checkpoints = [checkpoint_dir + "/" + name for name in os.listdir(checkpoint_dir)]
        if checkpoints:
            latest_checkpoint = max(checkpoints, key=os.path.getctime)
            print("Restoring from", latest_checkpoint)
            return kb.load_model(latest_checkpoint)
        print("Creating a new model")
        return get_compiled_model()

    model = make_or_restore_model()
    callbacks = [
        keras.callbacks.ModelCheckpoint(filepath=checkpoint_dir + "/model-loss={loss:.2f}.keras", save_freq=100)
    ]
    model.fit(x_train, y_train, epochs=4, callbacks=callbacks)
    model = make_or_restore_model()
    print("restored model evaluates to", model.evaluate(x_train, y_train, verbose=0))

    print("== 3.11 a schedule as the learning rate, and ReduceLROnPlateau")
    lr_schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=100000, decay_rate=0.96, staircase=True)
    model = kb.KerasModule(get_uncompiled_model())
    model.compile(optimizer=keras.optimizers.RMSprop(learning_rate=lr_schedule), loss="sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=1, batch_size=64, verbose=2)
    model = get_compiled_model()
    history = model.fit(
        x_train,
        y_train,
        epochs=4,
        batch_size=64,
        validation_split=0.2,
        verbose=2,
        callbacks=[keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, verbose=1)],
    )
    print("learning rates:", history.history["learning_rate"])
    shutil.rmtree(workdir)
    if np.isnan(history.history["loss"][-1]):
        raise SystemExit("training diverged")


if __name__ == "__main__":
    main()
