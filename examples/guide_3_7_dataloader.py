"""The Keras guide, section 3.7 "Training and evaluation with a PyTorch DataLoader", on the bridge.

The guide's code with one change: the model is wrapped in ``kb.KerasModule``. scikit-learn's bundled
digits stand in for MNIST (no download). A sample-centric ``torch.utils.data.Dataset`` is wrapped in a
shuffling ``DataLoader`` and passed as ``x`` and as ``validation_data``; ``evaluate`` takes the
DataLoader too. The bridge also accepts the ``Dataset`` itself (batched by ``batch_size``, reshuffled
every epoch), which plain Keras does not: the second fit shows it. Writes no files. About 10 seconds
on 2 CPU cores.

Run: python examples/guide_3_7_dataloader.py
"""

import keras_bridge as kb  # first: it selects keras's torch backend (see README, "Migrating from Keras")

# isort: split
import keras
import torch
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


class ExampleTorchDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x = x
        self.y = y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, idx):
        return self.x[idx], self.y[idx]


def main(out_dir=None, epochs=3):
    """Fit on DataLoaders (the guide), then on the Dataset itself; returns a dict of results. Writes no files."""
    keras.utils.set_random_seed(0)
    (x_train, y_train), (x_val, y_val) = load_data()
    train_torch_dataset = ExampleTorchDataset(x_train, y_train)
    val_torch_dataset = ExampleTorchDataset(x_val, y_val)

    # The DataLoader does the batching and the shuffling.
    train_dataloader = torch.utils.data.DataLoader(train_torch_dataset, batch_size=32, shuffle=True)
    val_dataloader = torch.utils.data.DataLoader(val_torch_dataset, batch_size=32, shuffle=True)

    print("== fit / evaluate on DataLoaders")
    model = get_compiled_model()
    # The loaders are already batched: `batch_size` is ignored, as in Keras.
    history = model.fit(train_dataloader, batch_size=64, validation_data=val_dataloader, epochs=epochs, verbose=2)
    evaluation = model.evaluate(val_dataloader, verbose=0)  # [loss, sparse_categorical_accuracy]
    print("evaluate(val_dataloader):", evaluation)

    print("== fit on the Dataset itself (a bridge extension: batched by batch_size, reshuffled every epoch)")
    model = get_compiled_model()
    dataset_history = model.fit(
        train_torch_dataset, batch_size=32, validation_data=val_torch_dataset, epochs=epochs, verbose=2
    )
    return {
        "history": history.history,
        "evaluate": evaluation,
        "steps": len(train_dataloader),
        "dataset_history": dataset_history.history,
    }


if __name__ == "__main__":
    main()
