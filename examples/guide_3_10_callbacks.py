"""The Keras guide, section 3.10 "Using callbacks", on the bridge.

The guide's code with one change: the model is wrapped in ``kb.KerasModule``. scikit-learn's bundled
digits stand in for MNIST (no download). In order:

* ``EarlyStopping(monitor="val_loss", min_delta=1e-2, patience=2, verbose=1)`` on a 20-epoch fit;
* the guide's ``LossHistory`` callback, collecting the loss at every batch end;
* ``ModelCheckpoint("mymodel_{epoch}.keras", save_best_only=True, monitor="val_loss")``, with the
  ``TensorBoard`` and ``CSVLogger`` callbacks the guide lists (TensorBoard needs no TensorFlow here);
* fault tolerance: checkpoints every N batches named ``model-loss={loss:.2f}.keras``, and
  ``make_or_restore_model()`` restoring the newest one (run twice, as after an interruption);
* beyond the guide: ``BackupAndRestore``, resuming an interrupted ``fit`` at the epoch it reached.

Every file goes under ``out_dir`` (default: a new temporary folder, printed at the end). About 20
seconds on 2 CPU cores.

Run: python examples/guide_3_10_callbacks.py [out_dir]
"""

import keras_bridge as kb  # first: it selects keras's torch backend (see README, "Migrating from Keras")

# isort: split
import os
import sys
import tempfile

import keras
from keras import layers
from sklearn.datasets import load_digits


def load_data():
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    return x[:1500], y[:1500]


def get_uncompiled_model():
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def get_compiled_model():
    model = kb.KerasModule(get_uncompiled_model())  # the one change from the guide
    model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


class LossHistory(keras.callbacks.Callback):
    def on_train_begin(self, logs):
        self.per_batch_losses = []

    def on_batch_end(self, batch, logs):
        self.per_batch_losses.append(logs.get("loss"))


class InterruptAfterEpoch(keras.callbacks.Callback):
    """Not in the guide: stands for a crash (a killed job, a lost machine) at the end of an epoch."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError(f"simulated crash after epoch {epoch + 1}")


def backup_and_restore(out_dir, x_train, y_train):
    """Beyond the guide: ``BackupAndRestore`` resumes an interrupted ``fit`` at the epoch it reached.

    It restores the weights, the optimizer and the epoch, not the global random streams: with
    ``shuffle=True`` the resumed epochs draw other shuffles than the same epochs of an uninterrupted fit,
    so their numbers are close to it, not equal (Keras gives the same numbers as here).
    """
    print("== BackupAndRestore: an interrupted fit resumes where it stopped")
    backup_dir = os.path.join(out_dir, "backup")
    keras.utils.set_random_seed(0)
    model = get_compiled_model()
    try:
        model.fit(
            x_train,
            y_train,
            epochs=4,
            batch_size=64,
            callbacks=[keras.callbacks.BackupAndRestore(backup_dir), InterruptAfterEpoch(1)],
            verbose=2,
        )
    except RuntimeError as interruption:
        print(interruption, "- backup files:", sorted(os.listdir(backup_dir)))
    model = get_compiled_model()  # a new process would start from scratch, then restore the backup
    resumed = model.fit(
        x_train, y_train, epochs=4, batch_size=64, callbacks=[keras.callbacks.BackupAndRestore(backup_dir)], verbose=2
    )
    # For comparison: the same fit without interruption.
    keras.utils.set_random_seed(0)
    uninterrupted = get_compiled_model().fit(x_train, y_train, epochs=4, batch_size=64, verbose=0)
    return {
        "epoch": resumed.epoch,
        "history": resumed.history,
        "uninterrupted": uninterrupted.history,
        "backup_dir": backup_dir,
    }


def main(out_dir=None, save_freq=20):
    """Run the guide's callbacks; every file goes under ``out_dir``. Returns a dict of results.

    ``save_freq`` is the fault-tolerance checkpoint period in batches (the guide's 100 is for MNIST's
    1563 batches per epoch; the digits give 47).
    """
    out_dir = out_dir or tempfile.mkdtemp(prefix="guide_3_10_")
    os.makedirs(out_dir, exist_ok=True)
    keras.utils.set_random_seed(0)
    x_train, y_train = load_data()
    results = {"out_dir": out_dir}

    print("== EarlyStopping")
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
        x_train, y_train, epochs=20, batch_size=64, callbacks=callbacks, validation_split=0.2, verbose=2
    )
    results["early_stopping"] = {"history": history.history, "stopped_epoch": callbacks[0].stopped_epoch}

    print("== A callback of your own: the loss at every batch end")
    loss_history = LossHistory()
    history = model.fit(x_train, y_train, epochs=1, batch_size=64, callbacks=[loss_history], verbose=0)
    results["loss_history"] = {"per_batch_losses": loss_history.per_batch_losses, "history": history.history}

    print("== ModelCheckpoint (best only), TensorBoard, CSVLogger")
    model = get_compiled_model()
    callbacks = [
        keras.callbacks.ModelCheckpoint(
            # Path where to save the model
            # The two parameters below mean that we will overwrite
            # the current checkpoint if and only if
            # the `val_loss` score has improved.
            # The saved model name will include the current epoch.
            filepath=os.path.join(out_dir, "mymodel_{epoch}.keras"),
            save_best_only=True,  # Only save a model if `val_loss` has improved.
            monitor="val_loss",
            verbose=1,
        ),
        keras.callbacks.TensorBoard(log_dir=os.path.join(out_dir, "logs")),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "training.csv")),
    ]
    history = model.fit(x_train, y_train, epochs=2, batch_size=64, callbacks=callbacks, validation_split=0.2, verbose=2)
    results["checkpoint"] = {"history": history.history, "model": model}

    print("== Fault tolerance: a checkpoint every", save_freq, "batches, restore the newest")
    # Prepare a directory to store all the checkpoints.
    checkpoint_dir = os.path.join(out_dir, "ckpt")
    if not os.path.exists(checkpoint_dir):
        os.makedirs(checkpoint_dir)

    def make_or_restore_model():
        # Either restore the latest model, or create a fresh one
        # if there is no checkpoint available.
        checkpoints = [checkpoint_dir + "/" + name for name in os.listdir(checkpoint_dir)]
        if checkpoints:
            latest_checkpoint = max(checkpoints, key=os.path.getctime)
            print("Restoring from", latest_checkpoint)
            results["restored_from"] = latest_checkpoint
            return kb.load_model(latest_checkpoint)  # keras.models.load_model reads the file too
        print("Creating a new model")
        return get_compiled_model()

    runs = []
    for _ in range(2):  # the second run finds the first one's checkpoints, as after an interruption
        model = make_or_restore_model()
        callbacks = [
            # This callback saves the model every `save_freq` batches.
            # We include the training loss in the saved model name.
            keras.callbacks.ModelCheckpoint(
                filepath=checkpoint_dir + "/model-loss={loss:.2f}.keras", save_freq=save_freq
            )
        ]
        runs.append(model.fit(x_train, y_train, epochs=1, callbacks=callbacks, verbose=2).history)
    results["fault_tolerance"] = {"runs": runs, "restored_model": model}

    results["backup"] = backup_and_restore(out_dir, x_train, y_train)

    print("Files written under", out_dir)
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
