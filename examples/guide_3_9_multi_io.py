"""The Keras guide, section 3.9 "Passing data to multi-input, multi-output models", on the bridge.

The guide's model (an image input and a time-series input; a score output and a 5-class output) and
its ``compile`` variants: losses and metrics as lists and as dicts, ``loss_weights``, and outputs left
without a loss (a ``None`` list entry, or a dict that omits them). Then ``fit`` on lists of arrays, on
dicts of arrays, and on a dataset yielding tuples of dicts (the guide's ``tf.data`` pipeline becomes a
shuffling torch ``DataLoader``). The one change from the guide: the model is wrapped in
``kb.KerasModule``. Each variant starts from the same seed, so the list and dict fits give the same
History. Writes no files (the guide's ``plot_model`` needs pydot and graphviz and is left out). About
15 seconds on 2 CPU cores.

Run: python examples/guide_3_9_multi_io.py
"""

import keras_bridge as kb  # first: it selects keras's torch backend (see README, "Migrating from Keras")

# isort: split
import keras
import numpy as np
import torch
from keras import layers


def get_model():
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


def compiled_model(**compile_arguments):
    """A fresh model from seed 0 (not in the guide: it makes the variants comparable), wrapped and compiled."""
    keras.utils.set_random_seed(0)
    model = kb.KerasModule(get_model())  # the one change from the guide
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3), **compile_arguments)
    return model


class DictTupleDataset(torch.utils.data.Dataset):
    """The guide's ``tf.data.Dataset.from_tensor_slices((inputs_dict, targets_dict))``, as a torch Dataset."""

    def __init__(self, inputs, targets):
        self.inputs = inputs
        self.targets = targets

    def __len__(self):
        return len(next(iter(self.inputs.values())))

    def __getitem__(self, i):
        return {k: v[i] for k, v in self.inputs.items()}, {k: v[i] for k, v in self.targets.items()}


def main(out_dir=None, epochs=2):
    """Run every compile variant and fit form of the guide; returns ``{variant: History.history}``. No files."""
    # Generate dummy NumPy data
    img_data = np.random.default_rng(0).random(size=(100, 32, 32, 3))
    ts_data = np.random.default_rng(1).random(size=(100, 20, 10))
    score_targets = np.random.default_rng(2).random(size=(100, 1))
    class_targets = np.random.default_rng(3).random(size=(100, 5))
    x_list, y_list = [img_data, ts_data], [score_targets, class_targets]
    x_dict = {"img_input": img_data, "ts_input": ts_data}
    y_dict = {"score_output": score_targets, "class_output": class_targets}
    histories = {}

    def fit(name, model, x, y=None, **kwargs):
        print(f"== {name}")
        histories[name] = model.fit(x, y, epochs=epochs, verbose=2, **kwargs).history

    # Losses and metrics as lists, one entry per output.
    model = compiled_model(
        loss=[keras.losses.MeanSquaredError(), keras.losses.CategoricalCrossentropy()],
        metrics=[
            [keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
            [keras.metrics.CategoricalAccuracy()],
        ],
    )
    fit("list_metrics", model, x_list, y_list, batch_size=32)

    # The same as dicts keyed by output name, with the score loss weighted twice the class loss.
    model = compiled_model(
        loss={"score_output": keras.losses.MeanSquaredError(), "class_output": keras.losses.CategoricalCrossentropy()},
        metrics={
            "score_output": [keras.metrics.MeanAbsolutePercentageError(), keras.metrics.MeanAbsoluteError()],
            "class_output": [keras.metrics.CategoricalAccuracy()],
        },
        loss_weights={"score_output": 2.0, "class_output": 1.0},
    )
    fit("dict_loss_weights", model, x_dict, y_dict, batch_size=32)

    # No loss for an output that is only used for prediction: list version, then dict version.
    model = compiled_model(loss=[None, keras.losses.CategoricalCrossentropy()])
    fit("list_none_loss", model, x_list, y_list, batch_size=32)
    model = compiled_model(loss={"class_output": keras.losses.CategoricalCrossentropy()})
    fit("dict_partial_loss", model, x_list, y_list, batch_size=32)

    # Fit on lists, alternatively on dicts.
    losses = [keras.losses.MeanSquaredError(), keras.losses.CategoricalCrossentropy()]
    fit("fit_lists", compiled_model(loss=losses), x_list, y_list, batch_size=32)
    fit("fit_dicts", compiled_model(loss=losses), x_dict, y_dict, batch_size=32)

    # A dataset of (inputs dict, targets dict) tuples, shuffled and batched by 64.
    train_dataset = DictTupleDataset(
        {k: v.astype("float32") for k, v in x_dict.items()}, {k: v.astype("float32") for k, v in y_dict.items()}
    )
    train_dataset = torch.utils.data.DataLoader(train_dataset, batch_size=64, shuffle=True)
    fit("fit_dataset", compiled_model(loss=losses), train_dataset)

    predictions = model.predict(x_dict, verbose=0)  # one array per output, in the model's output order
    return {"histories": histories, "prediction_shapes": [p.shape for p in predictions]}


if __name__ == "__main__":
    main()
