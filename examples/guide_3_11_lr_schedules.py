"""The Keras guide, section 3.11 "Using learning rate schedules", on the bridge.

The guide's code with one change: the model is wrapped in ``kb.KerasModule``. scikit-learn's bundled
digits stand in for MNIST (no download).

* Static schedules: a ``keras.optimizers.schedules`` object as the optimizer's ``learning_rate``. The
  bridge evaluates it at every optimizer step, as Keras does (update ``k`` uses ``schedule(k)``). The
  four schedules the guide names are trained in turn; a small callback records the learning rate of
  every batch. The guide's ``decay_steps=100000`` would keep the rate constant over this short run, so
  the decays here take tens of steps.
* Dynamic schedules: the ``ReduceLROnPlateau`` callback halves the learning rate when ``val_loss``
  stops improving; History gains a ``learning_rate`` column.

Writes no files. About 15 seconds on 2 CPU cores.

Run: python examples/guide_3_11_lr_schedules.py
"""

import keras_bridge as kb  # first: it selects keras's torch backend (see README, "Migrating from Keras")

# isort: split
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


def get_compiled_model(optimizer):
    keras.utils.set_random_seed(0)  # not in the guide: every run starts from the same weights
    model = kb.KerasModule(get_uncompiled_model())  # the one change from the guide
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["sparse_categorical_accuracy"])
    return model


class LearningRateRecorder(keras.callbacks.Callback):
    """Not in the guide: the optimizer's step count and learning rate when each batch begins."""

    def on_train_begin(self, logs=None):
        self.steps, self.learning_rates = [], []

    def on_train_batch_begin(self, batch, logs=None):
        optimizer = self.model.optimizer
        self.steps.append(int(keras.ops.convert_to_numpy(optimizer.iterations)))
        self.learning_rates.append(float(keras.ops.convert_to_numpy(optimizer.learning_rate)))


def main(out_dir=None, epochs=2):
    """Train with the four schedules and with ReduceLROnPlateau; returns a dict of results. No files."""
    x_train, y_train = load_data()
    results = {}

    # The guide's schedule object, as written there.
    initial_learning_rate = 0.1
    lr_schedule = keras.optimizers.schedules.ExponentialDecay(
        initial_learning_rate, decay_steps=100000, decay_rate=0.96, staircase=True
    )
    optimizer = keras.optimizers.RMSprop(learning_rate=lr_schedule)
    results["guide_schedule_config"] = lr_schedule.get_config()

    # The four built-in schedules the guide names, with decays short enough to see in two epochs.
    schedules = {
        "ExponentialDecay": keras.optimizers.schedules.ExponentialDecay(
            1e-3, decay_steps=10, decay_rate=0.8, staircase=True
        ),
        "PiecewiseConstantDecay": keras.optimizers.schedules.PiecewiseConstantDecay(
            boundaries=[15, 30], values=[1e-3, 5e-4, 1e-4]
        ),
        "PolynomialDecay": keras.optimizers.schedules.PolynomialDecay(
            1e-3, decay_steps=40, end_learning_rate=1e-4, power=2.0
        ),
        "InverseTimeDecay": keras.optimizers.schedules.InverseTimeDecay(1e-3, decay_steps=10, decay_rate=0.5),
    }
    for name, lr_schedule in schedules.items():
        print(f"== {name} as the learning rate")
        optimizer = keras.optimizers.RMSprop(learning_rate=lr_schedule)
        recorder = LearningRateRecorder()
        model = get_compiled_model(optimizer)
        history = model.fit(x_train, y_train, batch_size=64, epochs=epochs, callbacks=[recorder], verbose=2)
        results[name] = {
            "schedule": lr_schedule,
            "steps": recorder.steps,
            "learning_rates": recorder.learning_rates,
            "history": history.history,
        }

    print("== ReduceLROnPlateau: halve the learning rate when val_loss stops improving")
    model = get_compiled_model(keras.optimizers.RMSprop(learning_rate=1e-2))
    reduce_lr = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, verbose=1)
    history = model.fit(
        x_train, y_train, batch_size=64, epochs=6, validation_split=0.2, callbacks=[reduce_lr], verbose=2
    )
    results["ReduceLROnPlateau"] = {"history": history.history, "callback": reduce_lr}
    return results


if __name__ == "__main__":
    main()
