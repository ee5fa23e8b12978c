"""The Keras guide's sections 3.6-3.8 on the bridge: PyDataset (threads and processes), torch DataLoader, weights.

Run: python examples/train_datasets.py
Trains on scikit-learn's bundled digits (no download); about half a minute on 2 CPU cores.
"""

import keras
import numpy as np
import torch
from keras import layers
from sklearn.datasets import load_digits

import keras_bridge as kb  # selects the torch backend for keras


class ExamplePyDataset(keras.utils.PyDataset):
    def __init__(self, x, y, batch_size, **kwargs):
        super().__init__(**kwargs)
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self):
        return int(np.ceil(len(self.x) / float(self.batch_size)))

    def __getitem__(self, idx):
        batch = slice(idx * self.batch_size, (idx + 1) * self.batch_size)
        return self.x[batch], self.y[batch]


class ExampleTorchDataset(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, idx):
        return self.x[idx], self.y[idx]


def get_compiled_model() -> kb.KerasModule:
    inputs = keras.Input(shape=(64,), name="digits")
    x = layers.Dense(64, activation="relu", name="dense_1")(inputs)
    x = layers.Dense(64, activation="relu", name="dense_2")(x)
    outputs = layers.Dense(10, activation="softmax", name="predictions")(x)
    module = kb.KerasModule(keras.Model(inputs=inputs, outputs=outputs))
    module.compile(
        optimizer=keras.optimizers.RMSprop(learning_rate=1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        metrics=[keras.metrics.SparseCategoricalAccuracy()],
    )
    return module


def main() -> None:
    keras.utils.set_random_seed(0)
    digits = load_digits()
    x = (digits.data / 16.0).astype("float32")
    y = digits.target.astype("int64")
    x_train, y_train, x_val, y_val = x[:1500], y[:1500], x[1500:], y[1500:]

    # 3.6 PyDataset: 4 threads, then 2 worker processes (guard multiprocessing code with __main__).
    for settings in (dict(workers=4), dict(workers=2, use_multiprocessing=True)):
        train_py_dataset = ExamplePyDataset(x_train, y_train, batch_size=32, **settings)
        val_py_dataset = ExamplePyDataset(x_val, y_val, batch_size=32, **settings)
        model = get_compiled_model()
        model.fit(train_py_dataset, batch_size=64, validation_data=val_py_dataset, epochs=5, verbose=2)
        print(settings, "evaluate:", model.evaluate(val_py_dataset, verbose=0))

    # 3.7 torch Dataset in a shuffled DataLoader.
    train_dataloader = torch.utils.data.DataLoader(ExampleTorchDataset(x_train, y_train), batch_size=32, shuffle=True)
    val_dataloader = torch.utils.data.DataLoader(ExampleTorchDataset(x_val, y_val), batch_size=32, shuffle=True)
    model = get_compiled_model()
    model.fit(train_dataloader, batch_size=64, validation_data=val_dataloader, epochs=5, verbose=2)
    print("DataLoader evaluate:", model.evaluate(val_dataloader, verbose=0))

    # 3.8 class weights, sample weights, and a dataset yielding (x, y, w).
    class_weight = {i: 1.0 for i in range(10)}
    class_weight[5] = 2.0
    get_compiled_model().fit(x_train, y_train, class_weight=class_weight, batch_size=64, epochs=1, verbose=2)
    sample_weight = np.ones(shape=(len(y_train),))
    sample_weight[y_train == 5] = 2.0
    get_compiled_model().fit(x_train, y_train, sample_weight=sample_weight, batch_size=64, epochs=1, verbose=2)
    weighted = torch.utils.data.TensorDataset(
        torch.from_numpy(x_train), torch.from_numpy(y_train), torch.from_numpy(sample_weight)
    )
    get_compiled_model().fit(torch.utils.data.DataLoader(weighted, batch_size=64, shuffle=True), epochs=1, verbose=2)

    # Lightning-native: the same data as a LightningDataModule for a plain Trainer.
    import lightning as L

    dm = kb.data.KerasDataModule(
        ExamplePyDataset(x_train, y_train, 32, workers=2, use_multiprocessing=True),
        validation_data=ExamplePyDataset(x_val, y_val, 32),
    )
    trainer = L.Trainer(
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(get_compiled_model(), datamodule=dm)
    print("KerasDataModule:", {k: round(float(v), 4) for k, v in trainer.callback_metrics.items()})


if __name__ == "__main__":
    main()
