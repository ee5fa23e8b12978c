"""The Keras guide, section 3.6 "Training and evaluation with a PyDataset", on the bridge.

The guide's code with one change: the model is wrapped in ``kb.KerasModule``. scikit-learn's bundled
digits stand in for MNIST (no download). The same fit runs three times, with the PyDataset's default
settings, with ``workers=4`` (threads) and with ``use_multiprocessing=True`` (worker processes): the
bridge delivers the batches in the same order either way, so the three Histories are identical.
Writes no files. About 10 seconds on 2 CPU cores.

Run: python examples/guide_3_6_pydataset.py
"""

import keras_bridge as kb  # first: it selects keras's torch backend (see README, "Migrating from Keras")

# isort: split
import keras
import numpy as np
from keras import layers
from sklearn.datasets import load_digits


def load_data():
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    return (x[:1500], y[:1500]), (x[1500:], y[1500:])


def get_uncompiled_model():
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs=inputs, outputs=outputs)


def get_compiled_model():
    model = kb.KerasModule(get_uncompiled_model())  # the one change from the guide
    model.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return model


class ExamplePyDataset(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x = x
        self.y = y
        self.batch_size = batch_size
        self.epochs_ended = 0  # not in the guide: counts on_epoch_end() calls

    def __len__(self):
        return int(np.ceil(len(self.x) / float(self.batch_size)))

    def __getitem__(self, idx):
        batch_x = self.x[idx * self.batch_size : (idx + 1) * self.batch_size]
        batch_y = self.y[idx * self.batch_size : (idx + 1) * self.batch_size]
        return batch_x, batch_y

    def on_epoch_end(self):
        self.epochs_ended += 1


def train(settings, data, epochs):
    """The guide's fit and evaluate calls, for one set of PyDataset worker settings."""
    (x_train, y_train), (x_val, y_val) = data
    keras.utils.set_random_seed(0)  # same initial weights and shuffles for every setting
    train_py_dataset = ExamplePyDataset(x_train, y_train, batch_size=32, **settings)
    val_py_dataset = ExamplePyDataset(x_val, y_val, batch_size=32, **settings)

    model = get_compiled_model()
    # The dataset is already batched: `batch_size` is ignored, as in Keras.
    history = model.fit(train_py_dataset, batch_size=64, validation_data=val_py_dataset, epochs=epochs, verbose=2)
    evaluation = model.evaluate(val_py_dataset, verbose=0)  # [loss, sparse_categorical_accuracy]
    return {
        "history": history.history,
        "evaluate": evaluation,
        "train_epochs_ended": train_py_dataset.epochs_ended,
        "steps": len(train_py_dataset),
    }


def main(out_dir=None, epochs=3):
    """Fit on PyDatasets with three worker settings; returns ``{setting: results}``. ``out_dir`` is unused."""
    data = load_data()
    results = {}
    for name, settings in [
        ("default", {}),  # no worker pool: batches are read inline
        ("threads", {"workers": 4}),  # the guide's 4-thread example
        ("processes", {"workers": 2, "use_multiprocessing": True}),  # keep it under `if __name__ == "__main__"`
    ]:
        print(f"== PyDataset with {settings or 'default settings'}")
        results[name] = train(settings, data, epochs)
        print("evaluate(val_py_dataset):", results[name]["evaluate"])
    return results


if __name__ == "__main__":
    main()
