"""The Keras guide, section 3.9 (multi-input, multi-output models), on the bridge.

Only the model object changes: ``model = kb.KerasModule(keras_model)``. Runs in a few seconds on CPU.
Run: python examples/guide_multi_io.py
"""

import keras
import numpy as np
import torch
from keras import layers

import keras_bridge as kb  # selects keras's torch backend


def get_model() -> keras.Model:
    image_input = keras.Input(shape=(32, 32, 3), name="img_input")
    timeseries_input = keras.Input(shape=(None, 10), name="ts_input")
    x1 = layers.Conv2D(3, 3)(image_input)
    x1 = layers.GlobalMaxPooling2D()(x1)
    x2 = layers.Conv1D(3, 3)(timeseries_input)
    x2 = layers.GlobalMaxPooling1D()(x2)
    x = layers.concatenate([x1, x2])
    score_output = layers.Dense(1, name="score_output")(x)
    class_output = layers.Dense(5, name="class_output")(x)
    return keras.Model(inputs=[image_input, timeseries_input], outputs=[score_output, class_output])


class DictDataset(torch.utils.data.Dataset):
    """The guide's tf.data example of dict tuples, as a torch Dataset."""

    def __init__(self, inputs, targets):
        self.inputs, self.targets = inputs, targets

    def __len__(self):
        return len(next(iter(self.inputs.values())))

    def __getitem__(self, i):
        return ({k: v[i] for k, v in self.inputs.items()}, {k: v[i] for k, v in self.targets.items()})


def main() -> None:
    keras.utils.set_random_seed(0)
    model = kb.KerasModule(get_model())

    # Losses and metrics as lists ...
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss=[keras.losses.MeanSquaredError(), keras.losses.CategoricalCrossentropy()],
        metrics=[
            [keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
            [keras.metrics.CategoricalAccuracy()],
        ],
    )
    # ... or as dicts, with loss weights
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss={"score_output": keras.losses.MeanSquaredError(), "class_output": keras.losses.CategoricalCrossentropy()},
        metrics={
            "score_output": [keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
            "class_output": [keras.metrics.CategoricalAccuracy()],
        },
        loss_weights={"score_output": 2.0, "class_output": 1.0},
    )
    # Outputs without a loss, as a list or as a (partial) dict
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), loss=[None, keras.losses.CategoricalCrossentropy()])
    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3), loss={"class_output": keras.losses.CategoricalCrossentropy()}
    )

    model.compile(
        optimizer=keras.optimizers.RMSprop(1e-3),
        loss=[keras.losses.MeanSquaredError(), keras.losses.CategoricalCrossentropy()],
    )
    img_data = np.random.random_sample(size=(100, 32, 32, 3))
    ts_data = np.random.random_sample(size=(100, 20, 10))
    score_targets = np.random.random_sample(size=(100, 1))
    class_targets = np.random.random_sample(size=(100, 5))

    # Fit on lists
    model.fit([img_data, ts_data], [score_targets, class_targets], batch_size=32, epochs=1)
    # Alternatively, fit on dicts
    model.fit(
        {"img_input": img_data, "ts_input": ts_data},
        {"score_output": score_targets, "class_output": class_targets},
        batch_size=32,
        epochs=1,
    )
    # A dataset of dict tuples, shuffled and batched by a DataLoader
    train_dataset = DictDataset(
        {"img_input": img_data.astype("float32"), "ts_input": ts_data.astype("float32")},
        {"score_output": score_targets.astype("float32"), "class_output": class_targets.astype("float32")},
    )
    history = model.fit(torch.utils.data.DataLoader(train_dataset, batch_size=64, shuffle=True), epochs=1)
    print("History keys:", sorted(history.history))


if __name__ == "__main__":
    main()
